"""The gaps topic on the linear-Gaussian model (docs/theory.md, section 4), every term exact (npvae.explain.gaps).

p(z|x) = N(mu(x), Lam^-1), Lam = M / sigma2, M = W^T W + sigma2 I, mu(x) = V (x - b), V = M^-1 W^T. For q = N(m, diag(s)),
    KL(q || p(z|x)) = 1/2 [sum_j Lam_jj s_j - Z - sum_j log s_j - log|Lam| + (m - mu)^T Lam (m - mu)];
d/dm = Lam (m - mu) = 0 and d/ds_j = (Lam_jj - 1/s_j) / 2 = 0 give q*: m = mu(x), 1/s_j = Lam_jj (the posterior mean,
precisions the diagonal of the posterior precision). Left at q*: 1/2 [sum_j log Lam_jj - log|Lam|] = 1/2 [sum_j log M_jj
- log|M|], the approximation gap, the same at every x. An encoder's amortisation gap is the rest of its KL,
    1/2 [sum_j (e^u_j - 1 - u_j) + (m - mu)^T Lam (m - mu)],   u_j = log s_j + log Lam_jj.
q*(x) is affine in x and its variance does not depend on x, so a linear encoder with a shared log-variance CAN be q*
at every x: an amortisation gap here comes from an encoder trained too briefly, or from one whose mean map A has rank
r < Z. The best rank-r encoder for data of mean xbar and covariance Sx is reduced-rank regression in the posterior's
metric: with Lam = L L^T, Sx = R R^T and C = L^T V R = sum_i sigma_i u_i w_i^T (SVD), A = L^-T C_r R^-1 (C_r: the r
leading terms, Eckart & Young 1936), a = V (xbar - b) - A xbar, s = 1 / diag(Lam); its amortisation gap averaged over
the data is 1/2 sum_{i > r} sigma_i^2, where sigma_i^2 are the eigenvalues of Lam Cov_x[mu(x)]: how far the posterior
mean moves across the data, in posterior standard deviations, along the directions the encoder cannot follow.
The per-point optimiser and the estimators (npvae.explain.gaps_estimators) run here first, where these exact values
check them: the optimiser against q*, the estimated gaps against the exact ones on the same points.
Shapes: x (N, D), mu/log_var (N, Z).
"""
from __future__ import annotations

import numpy as np
from scipy.linalg import solve_triangular

from ..oracle.linear_chain import LinearGaussian
from ..oracle.linear_vae import linear_arch
from . import _common as c
from .gaps_estimators import LR, estimate_gaps, optimise_q, summarise
from .iwae import weight_second_moment
from .posterior import train_linear

# Data points, Adam steps of the "brief" and the "long" encoder, points and steps of the per-point optimiser,
# k for log p(x), n per ELBO.
LINEAR = {"quick": dict(n=2000, brief=100, long=1000, n_opt=200, steps=500, k=2000, n_elbo=2000),
          "full": dict(n=2000, brief=100, long=3000, n_opt=500, steps=500, k=5000, n_elbo=5000)}


# ---- the linear-Gaussian model: closed forms ----

def posterior_precision(model: LinearGaussian):
    """Lam = M / sigma2 = (W^T W + sigma2 I) / sigma2, the precision of p(z|x) (the same for every x): (Z, Z)."""
    s2 = float(model.sigma2)
    return (model.W.T @ model.W + s2 * np.eye(model.Z)) / s2


def diagonal_q_star(model: LinearGaussian, x):
    """q* of the diagonal family in closed form (module docstring): (posterior mean (N, Z), log-variances -log diag(Lam) (N, Z))."""
    mean, _ = model.posterior(x)
    return mean, np.broadcast_to(-np.log(np.diag(posterior_precision(model))), mean.shape).copy()


def best_rank_r_encoder(model: LinearGaussian, xbar, Sx, r: int):
    """The encoder N(A x + a, diag(s)), rank(A) <= r, of the highest ELBO averaged over data with moments xbar (D,), Sx (D, D).

    Returns (A (Z, D), a (Z,), log_S (Z,), its data-averaged amortisation gap 1/2 sum_{i>r} sigma_i^2, sigma (Z,)): the
    reduced-rank regression of the module docstring. Sx must be positive definite.
    """
    Lam = posterior_precision(model)
    V = np.linalg.solve(Lam * float(model.sigma2), model.W.T)  # (Z, D): mu(x) = V (x - b)
    L, R = np.linalg.cholesky(Lam), np.linalg.cholesky(Sx)
    U, sigma, Wt = np.linalg.svd(L.T @ V @ R, full_matrices=False)  # C = L^T V R, (Z, D)
    Cr = (U[:, :r] * sigma[:r]) @ Wt[:r]
    A = solve_triangular(R, solve_triangular(L, Cr, trans="T", lower=True).T, trans="T", lower=True).T  # L^-T C_r R^-1
    a = V @ (xbar - model.b) - A @ xbar
    return A, a, -np.log(np.diag(Lam)), 0.5 * float(np.sum(sigma[r:] ** 2)), sigma


def amortisation_gap_exact(model: LinearGaussian, x, mu, log_var):
    """ELBO(q*) - ELBO(q) per point (N,) from the oracle: KL(q || p(z|x)) minus the approximation gap."""
    return model.kl_to_posterior(x, mu, log_var) - c.correlation_gap(model)


# ---- the experiment ----

def linear_part(cfg: dict, rng: np.random.Generator) -> dict:
    """The linear part: exact gaps of three encoders, the per-point optimiser against q*, the estimators against the exact gaps."""
    truth = c.correlated_model(rng, D=5, sigma2=0.3, cos=0.8)
    X, _ = truth.sample(cfg["n"], rng)
    xbar, Sx = X.mean(axis=0), np.cov(X.T, bias=True)  # 1/N: the moments of these data
    approx = c.correlation_gap(truth)
    q_star = diagonal_q_star(truth, X)
    encoders = {}
    for steps in (cfg["brief"], cfg["long"]):
        history = train_linear(truth, X, rng, steps=steps, train_decoder=False, sigma2=float(truth.sigma2))
        encoders[f"full rank, {steps} Adam steps"] = history["encoder_end"]
    A, a, log_S, rank1_gap, sigma = best_rank_r_encoder(truth, xbar, Sx, 1)
    encoders["best rank-1 encoder"] = {"A": A, "a": a, "log_S": log_S}
    per_point = {}
    for name, e in encoders.items():
        mu = X @ e["A"].T + e["a"]
        per_point[name] = amortisation_gap_exact(truth, X, mu, np.broadcast_to(e["log_S"], mu.shape).copy())
    curve = {"step": history["step"], "amortisation": np.array(history["kl_to_posterior"]) - approx}  # the long run's
    # Per-point q* by Adam on the reparameterised ELBO, from the rank-1 encoder's output, on n_opt of the points.
    x = X[: cfg["n_opt"]]
    arch, params = linear_arch(truth.D, truth.Z, float(truth.sigma2)), c.encoder_params(truth, A, a, log_S)
    q_enc = (x @ A.T + a, np.broadcast_to(log_S, (len(x), truth.Z)).copy())
    record = sorted({0} | set(np.geomspace(1, cfg["steps"], 30).astype(int).tolist()))
    mu_o, lv_o, trace, snaps = optimise_q(params, arch, x, *q_enc, rng, steps=cfg["steps"], samples=8, record=record)
    elbo_star = truth.elbo(x, *diagonal_q_star(truth, x))
    shortfall = {"step": record, "mean": [float(np.mean(elbo_star - truth.elbo(x, *snaps[i]))) for i in record]}
    lam_sd = np.sqrt(np.diag(posterior_precision(truth)))  # 1 / sd of q*: distances in q*'s standard deviations
    est = estimate_gaps(params, arch, x, q_enc, (mu_o, lv_o), rng, k=cfg["k"], n_elbo=cfg["n_elbo"])
    # E_q*[(p(z|x) / q*(z))^2]: infinite unless 2 Lam - diag(Lam) is positive definite, and then log p^ (proposal q*) has
    # no finite-variance error: it converges slowly from below and its delta-method SE understates its error.
    post_mean, post_cov = truth.posterior(x[:1])
    second_moment = weight_second_moment(post_mean[0], post_cov, q_star[0][0], np.diag(np.exp(q_star[1][0])))
    return {"model": {"W": truth.W, "b": truth.b, "sigma2": truth.sigma2}, "data_moments": {"xbar": xbar, "Sx": Sx},
            "log_px": float(truth.log_marginal(X).mean()), "elbo_q_star": float(truth.elbo(X, *q_star).mean()),
            "approximation_gap": approx, "encoders": encoders,
            "amortisation_gap": {k: float(v.mean()) for k, v in per_point.items()},
            "amortisation_gap_sd_over_points": {k: float(v.std()) for k, v in per_point.items()},
            "rank1": {"closed_form_gap": rank1_gap, "singular_values": sigma}, "training_curve": curve,
            "optimiser": {"n_points": len(x), "steps": cfg["steps"], "samples": 8, "lr": LR, "shortfall": shortfall,
                          "max_shortfall": float(np.max(elbo_star - truth.elbo(x, mu_o, lv_o))),
                          "max_mean_error_sd": float(np.max(np.abs(mu_o - diagonal_q_star(truth, x)[0]) * lam_sd)),
                          "max_log_var_error": float(np.max(np.abs(lv_o - diagonal_q_star(truth, x)[1]))),
                          "trace": trace},
            "estimated": {"summary": summarise(est), "exact_amortisation": float(np.mean(amortisation_gap_exact(truth, x, *q_enc))),
                          "k": cfg["k"], "n_elbo": cfg["n_elbo"], "proposal_weight_second_moment": second_moment}}
