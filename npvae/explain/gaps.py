"""Topic `gaps`: how much of log p(x) - ELBO is the Gaussian family's fault, and how much the encoder's?

Cremer, Li & Duvenaud 2018 split the gap of an amortised q(z|x) (the encoder's output, q_enc) at the best q of its family:
    log p(x) - ELBO(q_enc) = [log p(x) - ELBO(q*)] + [ELBO(q*) - ELBO(q_enc)],   q*(x) = argmax_{q in family} ELBO(x, q),
the approximation gap (= KL(q* || p(z|x)): the family cannot do better) and the amortisation gap (the one encoder
shared by all x does not give each x its own best q). Both are >= 0; the family is N(m, diag(exp(v))).

1. Linear-Gaussian model (docs/theory.md, section 4), every term exact. p(z|x) = N(mu(x), Lam^-1), Lam = M / sigma2,
   M = W^T W + sigma2 I, mu(x) = V (x - b), V = M^-1 W^T. For q = N(m, diag(s)),
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
2. A tanh VAE trained on binarised MNIST (the embedded 8x8 digits in quick mode, or when the file is not found): q* by
   Adam on each point's reparameterised ELBO, started at the encoder's output, through the package's decoder forward and
   backward (`latent_grads`: the backward without the encoder); log p(x) by importance sampling with k samples from q*;
   each ELBO from n samples (analytic KL) with its standard error. The same estimators run on the linear model first,
   where the exact values check them. There the weights p(x, z) / q*(z) have infinite variance (q* is narrower than
   p(z|x) across its correlation: 2 Lam - diag(Lam) is not positive definite, see npvae.explain.iwae), so log p^ sits
   slightly below log p(x), by more than its delta-method standard error: the approximation gap comes out a little low.
Shapes: x (N, D), mu/log_var (N, Z), eps (S, N, Z).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.linalg import solve_triangular
from scipy.special import logsumexp

from .. import likelihoods as lik
from ..maths.gaussian import kl_std_normal_forward, log_prob_eps, log_std_normal, sample_forward
from ..nn.optim import adam_init, adam_update
from ..objectives import Forward, latent_grads, objective
from ..oracle.linear_chain import LinearGaussian
from ..oracle.linear_vae import linear_arch
from ..store.data import DataNotFoundError, load, subset_indices
from ..vae.model import Arch, decode, encode, flatten, init_params, unflatten
from . import _common as c
from .iwae import weight_second_moment
from . import posterior_nonlinear as pn
from .posterior import train_linear
from .posterior_nonlinear import _search_dirs

# The linear part: data points, Adam steps of the "brief" and the "long" encoder, points and steps of the per-point optimiser.
LINEAR = {"quick": dict(n=2000, brief=100, long=1000, n_opt=200, steps=500, k=2000, n_elbo=2000),
          "full": dict(n=2000, brief=100, long=3000, n_opt=500, steps=500, k=5000, n_elbo=5000)}
# The VAE: arch, training points, epochs, test points, per-point Adam steps and samples per step, k for log p(x), n per ELBO.
NONLINEAR = {"quick": dict(arch="64-64-4", n_train=1297, epochs=8, n_points=50, steps=200, samples=8, k=1000, n_elbo=500),
             "digits": dict(arch="64-64-4", n_train=1297, epochs=40, n_points=250, steps=500, samples=8, k=5000, n_elbo=2000),
             "binarized-mnist": dict(arch="784-200-20", n_train=10_000, epochs=20, n_points=100, steps=500, samples=8, k=5000,
                                     n_elbo=1000)}
LR = (0.05, 0.0005)  # the per-point optimiser's learning rate, decaying geometrically over its steps
ROWS = 1000  # (sample, point) pairs decoded at a time: larger chunks run slower (the elementwise work leaves the cache)


# ---- the per-point optimiser and the estimators (any decoder of the one-layer family) ----

def elbo_grad_q(params, arch: Arch, x, mu, log_var, eps):
    """Each point's ELBO (analytic KL, reparameterised with eps (S, N, Z)) at q = N(mu, diag(exp(log_var))), and its gradient.

    -> value (N,), dmu, dlog_var (N, Z) = d value_n / d (mu_n, log_var_n). The package's sampler, decoder and likelihood
    forward, then `latent_grads` (the backward up to the encoder's output); no checking.
    """
    z, sample_cache = sample_forward(mu, log_var, eps)
    out, dec_cache = decode(params, arch, z)  # (S, N, D_out)
    log_px_z, lik_cache = lik.forward(arch.likelihood, out, x)
    f = Forward(mu, log_var, z, log_px_z, eps, None, sample_cache, dec_cache, lik_cache)
    value, dmu, dlog_var, _ = latent_grads(f, arch, "elbo", "analytic", "reparam", 1.0)
    n = mu.dtype.type(x.shape[0])  # latent_grads differentiates the batch mean; point n's q moves only its own term
    return value, n * dmu, n * dlog_var


def optimise_q(params, arch: Arch, x, mu, log_var, rng: np.random.Generator, *, steps: int, samples: int, lr=LR, record=()):
    """q*(x) per point: Adam on each point's ELBO from (mu, log_var) (N, Z), `samples` fresh eps a step, lr decaying lr[0] -> lr[1].

    Returns (mu, log_var) after `steps` steps, trace (steps,): the mean over the points of each step's sample ELBO, and
    snapshots {i: (mu, log_var)} before step i for i in `record` (i = steps: the end).
    """
    q, state = [mu.copy(), log_var.copy()], adam_init([mu, log_var])
    trace, snaps = np.empty(steps), {}
    for i in range(steps + 1):
        if i in record:
            snaps[i] = (q[0].copy(), q[1].copy())
        if i == steps:
            break
        value, dmu, dlog_var = elbo_grad_q(params, arch, x, q[0], q[1], rng.standard_normal((samples, *mu.shape)))
        trace[i] = value.mean()
        rate = lr[0] * (lr[1] / lr[0]) ** (i / max(steps - 1, 1))
        q, state = adam_update(q, [-dmu, -dlog_var], state, lr=rate)  # Adam descends: minus the ELBO's gradient
    return q[0], q[1], trace, snaps


def _chunks(n: int, N: int):
    """Sizes of the sample chunks: at most ROWS (sample, point) pairs each, n samples in all."""
    step = max(1, ROWS // N)
    return [min(step, n - j) for j in range(0, n, step)]


def log_weights_q(params, arch: Arch, x, mu, log_var, eps):
    """a_k = log p(x|z_k) + log p(z_k) - log q(z_k|x) at z_k = mu + sigma eps_k: (K, N); no checking."""
    z, _ = sample_forward(mu, log_var, eps)
    log_px_z, _ = lik.forward(arch.likelihood, decode(params, arch, z)[0], x)
    return log_px_z + log_std_normal(z) - log_prob_eps(log_var, eps)


def log_px_q(params, arch: Arch, x, mu, log_var, k: int, rng: np.random.Generator):
    """log p(x) by importance sampling with proposal q (Burda et al. 2016): estimate (N,) and its standard error (N,).

    SE by the delta method, Var log p^ ~ Var(w) / (k p(x)^2), estimated as sum w^2 / (sum w)^2 - 1/k = 1/ESS - 1/k.
    """
    s1 = s2 = np.full(x.shape[0], -np.inf)
    for size in _chunks(k, x.shape[0]):
        a = log_weights_q(params, arch, x, mu, log_var, rng.standard_normal((size, *mu.shape)))
        s1, s2 = np.logaddexp(s1, logsumexp(a, axis=0)), np.logaddexp(s2, logsumexp(2 * a, axis=0))
    return s1 - math.log(k), np.sqrt(np.maximum(np.exp(s2 - 2 * s1) - 1.0 / k, 0.0))


def elbo_q(params, arch: Arch, x, mu, log_var, n: int, rng: np.random.Generator):
    """ELBO of q = mean of n draws of log p(x|z) - KL(q || p(z)) (analytic KL): estimate (N,) and its standard error (N,)."""
    parts = []
    for size in _chunks(n, x.shape[0]):
        z, _ = sample_forward(mu, log_var, rng.standard_normal((size, *mu.shape)))
        parts.append(lik.forward(arch.likelihood, decode(params, arch, z)[0], x)[0])  # (size, N)
    m, se = c.mean_se(np.concatenate(parts))
    return m - kl_std_normal_forward(mu, log_var), se


def estimate_gaps(params, arch: Arch, x, q_enc, q_opt, rng: np.random.Generator, *, k: int, n_elbo: int) -> dict:
    """Per-point estimates (N,) and standard errors of log p(x) (proposal q_opt), both ELBOs and the two gaps.

    The draws of the three estimates are independent, so the SE of a difference is the root sum of squares.
    """
    lp, lp_se = log_px_q(params, arch, x, *q_opt, k, rng)
    eo, eo_se = elbo_q(params, arch, x, *q_opt, n_elbo, rng)
    ee, ee_se = elbo_q(params, arch, x, *q_enc, n_elbo, rng)
    return {"log_px": lp, "log_px_se": lp_se, "elbo_opt": eo, "elbo_opt_se": eo_se, "elbo_enc": ee, "elbo_enc_se": ee_se,
            "approximation": lp - eo, "approximation_se": np.hypot(lp_se, eo_se),
            "amortisation": eo - ee, "amortisation_se": np.hypot(eo_se, ee_se)}


def summarise(est: dict) -> dict:
    """Mean of each gap over the points, its SE over the points (test-set sampling and Monte Carlo) and its Monte Carlo SE alone."""
    out = {}
    for g in ("approximation", "amortisation"):
        m, se = c.mean_se(est[g])
        out[g] = {"mean": float(m), "se": float(se), "mc_se": float(np.sqrt(np.sum(est[f"{g}_se"] ** 2)) / len(est[g]))}
    out["total"] = float(np.mean(est["log_px"] - est["elbo_enc"]))
    out["log_px"], out["elbo_opt"], out["elbo_enc"] = (float(np.mean(est[key])) for key in ("log_px", "elbo_opt", "elbo_enc"))
    # E log p^ ~ log p(x) - Var(log p^) / 2: the estimate's own bias, which lowers the approximation gap by about this much
    out["log_px_bias_estimate"] = float(np.mean(est["log_px_se"] ** 2) / 2)
    return out


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


def _linear(cfg: dict, rng: np.random.Generator) -> dict:
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


# ---- the trained VAE ----

def train_vae(X, arch: Arch, epochs: int, rng: np.random.Generator, batch: int = 100, lr: float = 1e-3):
    """Adam on minus the ELBO (analytic KL, one sample) of a fresh VAE over X (N, D), as npvae.explain.posterior_nonlinear does."""
    flat = flatten(init_params(arch, rng))
    state = adam_init(flat)
    for _ in range(epochs):
        order = rng.permutation(X.shape[0])
        for j in range(0, X.shape[0], batch):
            xb = X[order[j : j + batch]]
            _, grads = objective(unflatten(arch, flat), arch, xb, rng.standard_normal((1, xb.shape[0], arch.latent_dim)))
            flat, state = adam_update(flat, [-g for g in flatten(grads)], state, lr=lr)
    return unflatten(arch, flat)


def _nonlinear(quick: bool, rng: np.random.Generator, data_dir) -> tuple[dict, list]:
    """Train the VAE, optimise q per test point from the encoder's output, estimate both gaps; returns (numbers, notes)."""
    notes, name = [], "digits" if quick else "binarized-mnist"
    try:
        ds = load(name, search_dirs=_search_dirs(data_dir))
    except DataNotFoundError as e:
        notes.append(f"gaps: {name} was not found, so the VAE was trained on the embedded 8x8 digits instead "
                     f"({pn.get_mnist('gaps')}). {str(e).splitlines()[0]}")
        name, ds = "digits", load("digits")
    cfg = NONLINEAR["quick" if quick else name]
    arch = Arch.parse(cfg["arch"], activation="tanh")
    X = ds.train[rng.permutation(ds.train.shape[0])[: cfg["n_train"]]]
    x = ds.test[subset_indices(cfg["n_points"], ds.test.shape[0], rng)]  # a seeded subset: MNIST's test split is sorted by class
    params = train_vae(X, arch, cfg["epochs"], rng)
    q_enc = encode(params, arch, x)[:2]
    mu_o, lv_o, trace, _ = optimise_q(params, arch, x, *q_enc, rng, steps=cfg["steps"], samples=cfg["samples"])
    est = estimate_gaps(params, arch, x, q_enc, (mu_o, lv_o), rng, k=cfg["k"], n_elbo=cfg["n_elbo"])
    return {"dataset": name, **cfg, "lr": LR, "summary": summarise(est), "per_point": est, "trace": trace}, notes


# ---- the answer ----

def finding(nb: dict) -> list[str]:
    """The answer in three lines, with the numbers of this run; nb: `run`'s numbers."""
    lin, nl = nb["linear"], nb["nonlinear"]
    full = [v for k, v in lin["amortisation_gap"].items() if k.startswith("full rank")]
    s = nl["summary"]
    ap, am = s["approximation"], s["amortisation"]
    mc = max(ap["mc_se"], am["mc_se"])
    return [f"Linear (exact): approximation gap {lin['approximation_gap']:.3f} nats at every x; amortisation gap "
            f"{lin['amortisation_gap']['best rank-1 encoder']:.3f} (rank-1 encoder), {full[0]:.3f} -> {full[1]:.4f} (full rank).",
            f"{nl['arch']} on {nl['dataset']} ({nl['n_points']} test points): gap {s['total']:.2f} = approximation "
            f"{ap['mean']:.2f} +- {ap['se']:.2f} + amortisation {am['mean']:.2f} +- {am['se']:.2f} nats.",
            f"Amortisation is {am['mean'] / s['total']:.0%} of the gap (MC SEs <= {mc:.3f}); per-point Adam ends "
            f"{lin['optimiser']['shortfall']['mean'][-1]:.1e} nats below the linear q*."]


def run(out_dir, *, quick: bool, rng: np.random.Generator, data_dir=None) -> dict:
    """The linear-Gaussian model, then the trained VAE; returns the numbers plotted, and writes gaps.png."""
    linear = _linear(LINEAR["quick" if quick else "full"], rng)
    nonlinear, notes = _nonlinear(quick, rng, data_dir)
    numbers = {"linear": linear, "nonlinear": nonlinear}
    return {"files": [c.save_png(draw(numbers), out_dir, "gaps.png")], "numbers": numbers, "notes": notes,
            "finding": finding(numbers)}


# ---- the picture ----

def _stacked(ax, names, approx, amort, approx_err, amort_err):
    """One bar per setting: the approximation gap (bottom) and the amortisation gap on top, each labelled with its value.

    *_err: (len(names),) standard errors, drawn as +- 2 SE where > 0 (0 for an exact value).
    """
    pos = np.arange(len(names))
    approx, amort, top = np.asarray(approx), np.asarray(amort), np.add(approx, amort)
    ax.bar(pos, approx, color=c.C_BEST, alpha=0.8, width=0.6, label="approximation gap: log p(x) - ELBO(q*)")
    ax.bar(pos, amort, bottom=approx, color=c.C_Q, alpha=0.8, width=0.6, label="amortisation gap: ELBO(q*) - ELBO(q_enc)")
    for shift, y, err in ((-0.12, approx, approx_err), (0.12, top, amort_err)):
        ok = np.asarray(err) > 0
        if ok.any():
            ax.errorbar(pos[ok] + shift, y[ok], yerr=2 * np.asarray(err)[ok], fmt="none", ecolor="k", capsize=3, lw=1)
    span = top.max()
    for p, lo, hi in zip(pos, approx, amort):
        ax.text(p, lo / 2, f"{lo:#.3g}", ha="center", va="center", fontsize=8)
        if hi > 0.08 * span:  # room inside the bar
            ax.text(p, lo + hi / 2, f"{hi:#.3g}", ha="center", va="center", fontsize=8, color="white")
        else:
            ax.text(p, lo + hi + 0.02 * span, f"+ {hi:.2g}", ha="center", va="bottom", fontsize=8, color=c.C_Q)
    ax.set_xticks(pos)
    ax.set_xticklabels(names, fontsize=8)
    ax.set_ylim(0, 1.25 * span)


def _binned(trace, n_bins: int = 30):
    """Means of trace (steps,) over log-spaced bins of steps 1..steps: (bin centres, means), for a readable noisy curve."""
    edges = np.unique(np.geomspace(1, len(trace) + 1, n_bins + 1).astype(int))
    return np.sqrt(edges[:-1] * edges[1:]), np.array([trace[a - 1 : b - 1].mean() for a, b in zip(edges[:-1], edges[1:])])


def draw(nb: dict):
    """Two rows (linear model, exact; trained VAE, estimated): the split in bars, where the gap comes from, the optimiser."""
    lin, nl = nb["linear"], nb["nonlinear"]
    fig = c.figure(17.0, 10.0)
    fig.subplots_adjust(left=0.05, right=0.99, bottom=0.14, top=0.91, wspace=0.24, hspace=0.75)
    ax = fig.add_subplot(2, 3, 1)
    names = list(lin["amortisation_gap"])
    e = lin["estimated"]["summary"]
    n_opt = lin["optimiser"]["n_points"]
    labels = [n.replace(", ", ",\n").replace("best rank-1", "best rank-1\n") for n in names]
    _stacked(ax, labels + [f"rank-1, estimated\non {n_opt} points"],
             [lin["approximation_gap"]] * len(names) + [e["approximation"]["mean"]],
             list(lin["amortisation_gap"].values()) + [e["amortisation"]["mean"]],
             [0] * len(names) + [e["approximation"]["mc_se"]], [0] * len(names) + [e["amortisation"]["mc_se"]])
    exact = [lin["approximation_gap"], lin["approximation_gap"] + lin["estimated"]["exact_amortisation"]]
    ax.hlines(exact, len(names) - 0.35, len(names) + 0.35, colors=c.C_POSTERIOR, lw=2, label="exact on the same points")
    c.style(ax, "linear model: exact gaps of three encoders; the estimators", None, "nats (average over the points)", legend=False)
    c.legend_below(ax)
    ax = fig.add_subplot(2, 3, 2)
    cur = lin["training_curve"]
    step = np.maximum(np.array(cur["step"], dtype=float), 0.5)
    ax.plot(step, cur["amortisation"], color=c.C_Q, lw=2, label="amortisation gap, full-rank encoder (Adam on the ELBO)")
    ax.axhline(lin["amortisation_gap"]["best rank-1 encoder"], color=c.C_Q, ls="--", lw=1.5,
               label="amortisation gap of the best rank-1 encoder")
    ax.axhline(lin["approximation_gap"], color=c.C_BEST, lw=1.5, label="approximation gap (any encoder)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    c.style(ax, "training closes the amortisation gap; low rank cannot", "Adam step (encoder training)", "nats", legend=False)
    c.legend_below(ax)
    ax = fig.add_subplot(2, 3, 3)
    o = lin["optimiser"]
    ax.plot(np.maximum(o["shortfall"]["step"], 0.5), o["shortfall"]["mean"], "o-", ms=3, color=c.C_BEST, lw=2,
            label=f"ELBO(q*) - ELBO(q), exact, mean of {o['n_points']} points")
    ax.set_xscale("log")
    ax.set_yscale("log")
    c.style(ax, "per-point Adam from the rank-1 encoder reaches q*", "Adam step (per-point optimiser)", "nats", legend=False)
    c.legend_below(ax)
    s, est = nl["summary"], nl["per_point"]
    ax = fig.add_subplot(2, 3, 4)
    _stacked(ax, [f"{nl['arch']}\non {nl['dataset']}"], [s["approximation"]["mean"]], [s["amortisation"]["mean"]],
             [s["approximation"]["se"]], [s["amortisation"]["se"]])
    ax.set_xlim(-1.2, 1.2)
    c.style(ax, f"trained VAE: estimated gaps ({nl['n_points']} test points, +- 2 SE)", None, "nats (average over the points)",
            legend=False)
    c.legend_below(ax)
    ax = fig.add_subplot(2, 3, 5)
    lo, hi = c.data_limits(est["approximation"], est["amortisation"], [0.0])
    bins = np.linspace(lo, hi, 31)
    ax.hist(est["approximation"], bins=bins, color=c.C_BEST, alpha=0.55, label="approximation gap per point")
    ax.hist(est["amortisation"], bins=bins, color=c.C_Q, alpha=0.55, label="amortisation gap per point")
    ax.axvline(s["approximation"]["mean"], color=c.C_BEST, ls="--", lw=2, label=f"mean {s['approximation']['mean']:.2f}")
    ax.axvline(s["amortisation"]["mean"], color=c.C_Q, ls="--", lw=2, label=f"mean {s['amortisation']['mean']:.2f}")
    c.style(ax, "the two gaps point by point", "nats", "test points", legend=False)
    c.legend_below(ax, ncol=2)
    ax = fig.add_subplot(2, 3, 6)
    centres, means = _binned(np.asarray(nl["trace"]))
    ax.plot(centres, means, "o-", ms=3, color=c.C_Q, lw=1.5,
            label=f"{nl['samples']}-sample ELBO of q during its optimisation (bin means)")
    ax.axhline(s["log_px"], color=c.C_POSTERIOR, lw=2, label=f"log p(x), importance sampled (k = {nl['k']}): {s['log_px']:.2f}")
    ax.axhline(s["elbo_opt"], color=c.C_BEST, ls="--", lw=2, label=f"ELBO(q*) ({nl['n_elbo']} samples): {s['elbo_opt']:.2f}")
    ax.axhline(s["elbo_enc"], color=c.C_Q, ls="--", lw=2, label=f"ELBO(q_enc), the encoder's: {s['elbo_enc']:.2f}")
    ax.set_xscale("log")
    ax.set_ylim(*c.data_limits(means, [s["log_px"], s["elbo_enc"]]))
    c.style(ax, "per-point Adam from the encoder's q (mean of the points)", "Adam step (per-point optimiser)", "nats",
            legend=False)
    c.legend_below(ax)
    fig.suptitle("log p(x) - ELBO = approximation gap (the diagonal Gaussian family) + amortisation gap (one encoder for all x)"
                 " (Cremer et al. 2018)", fontsize=12)
    return fig
