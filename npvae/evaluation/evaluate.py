"""Evaluating a trained VAE: test log-likelihood by importance sampling, the ELBO's terms, and latent diagnostics.

- NLL: -log p(x) estimated with k importance samples per point (Burda et al. 2016, k = 5000), chunked,
  reported as the mean over points with its standard error.
- ELBO = reconstruction - KL, with the analytic KL (Kingma & Welling 2014) and the reconstruction
  term averaged over `elbo_k` samples.
- Active units: dimensions j with Var_x(E_q[z_j | x]) > 0.01 (Burda et al. 2016, section 5.2), over the
  points `x_active` (Burda et al. use the training split; by default the evaluated points).
- KL per latent dimension, averaged over the data.
- Mutual information I(x; z) under the aggregate posterior q(z) = (1/N) sum_n q(z|x_n):
  E_x E_q(z|x)[log q(z|x) - log q(z)] (Hoffman & Johnson 2016), with q(z) the mixture over the points.
L stochastic layers (npvae.vae.ladder): NLL as above; the ELBO with the top KL analytic and the rest Monte Carlo
over `elbo_k` samples (npvae.vae.ladder_objective), KL = reconstruction - ELBO (every layer's terms together);
active units per layer along the mean path: z1 from E_q[z1|x] = mu1(x), z_l from mu_l(mu_{l-1}(...)), each layer's
mean at the mean of the layer below (a deterministic stand-in for E_q[z_l|x], which needs samples); no per-dimension
KL or mutual information.
"""

from __future__ import annotations

import numpy as np

from .. import likelihoods as lik
from ..maths.gaussian import kl_std_normal_per_dim, log_prob, sample_forward
from ..objectives import log_px
from ..maths.lme import log_mean_exp_core
from ..vae.model import Arch, VAEParams, decode, encode
from ..store.data import as_float
from ..vae.inputs import check_x_storage
from ..vae.models import check_params


ELBO_K = 10  # reconstruction samples per point for the ELBO's terms


def _batches(n: int, size: int):
    for i in range(0, n, size):
        yield slice(i, min(n, i + size))


def encoder_stats(params: VAEParams, arch: Arch, x, batch: int = 1000):
    """(mu, log_var): (N, Z) for all of x (float, or a compact uint8 split, cast batch by batch), in batches."""
    dtype = params_dtype(params)
    parts = [encode(params, arch, as_float(x[s], dtype))[:2] for s in _batches(x.shape[0], batch)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def mutual_information(mu, log_var, rng: np.random.Generator, max_points: int = 2000) -> float:
    """I(x; z) under the aggregate posterior of up to max_points points, one z ~ q(z|x_n) per point; in nats."""
    if mu.shape[0] > max_points:
        idx = rng.choice(mu.shape[0], max_points, replace=False)
        mu, log_var = mu[idx], log_var[idx]
    z, _ = sample_forward(mu, log_var, rng.standard_normal(mu.shape, dtype=mu.dtype)[None])  # (1, M, Z)
    log_q_own = log_prob(z, mu, log_var)[0]  # (M,) log q(z_n | x_n)
    # log q(z_n) = log (1/M) sum_m q(z_n | x_m): every sample against every point's posterior, 100 samples at a time
    # (a (100, M) block, not the whole (M, M) matrix: 16 MB in float32 for M = 2000, and as much again for its exp).
    log_q_agg = np.concatenate([
        log_mean_exp_core(np.stack([log_prob(z[0][n], mu, log_var) for n in range(s.start, s.stop)]), axis=1)
        for s in _batches(mu.shape[0], 100)])
    return float(np.mean(log_q_own - log_q_agg))


def evaluate(params: VAEParams, arch: Arch, x, rng: np.random.Generator, *, k: int = 5000, elbo_k: int = ELBO_K,
             batch: int = 100, progress=None, backend: str = "numpy", x_active=None) -> dict:
    """Metrics on x: (N, D), active units on x_active: (M, D) (default x); every random draw from `rng`. See the module docstring.

    x and x_active: float of the parameters' dtype, or compact binary splits (uint8, npvae.store.data), cast batch by batch.
    progress: called with the number of (sample, point) pairs of log p(x) done, N * k in all.
    """
    dtype = check_params(arch, params)
    check_x_storage(arch, x, dtype)
    if x_active is not None:
        check_x_storage(arch, x_active, dtype)
    terms = point_terms_core(params, arch, x, rng, k, elbo_k, batch, progress, backend)
    return summarise_core(params, arch, x, terms, rng, k, x_active)


def point_terms_core(params, arch, x, rng, k: int, elbo_k: int = ELBO_K, batch: int = 100, progress=None, backend: str = "numpy") -> dict:
    """The random per-point terms, (N,) each: log_p (k importance samples), recon (elbo_k samples) and, for a
    ladder of stochastic layers, elbo; drawn from rng batch by batch. No checking (evaluate and npvae.evaluation.chunks check)."""
    dtype = params_dtype(params)
    N = x.shape[0]
    ladder = arch.FAMILY == "ladder"
    terms = {"log_p": np.empty(N), "recon": np.empty(N), **({"elbo": np.empty(N)} if ladder else {})}
    for s in _batches(N, batch):
        xb = as_float(x[s], dtype)
        terms["log_p"][s] = log_px(params, arch, xb, k, rng, backend=backend, progress=progress)
        if ladder:
            terms["recon"][s], terms["elbo"][s] = _ladder_terms(params, arch, xb, rng, elbo_k, dtype)
            continue
        mu, log_var, _ = encode(params, arch, xb)
        eps = rng.standard_normal((elbo_k, xb.shape[0], arch.latent_dim), dtype=dtype)
        z, _ = sample_forward(mu, log_var, eps)
        out, _ = decode(params, arch, z)
        terms["recon"][s] = lik.forward(arch.likelihood, out, xb)[0].mean(axis=0)
    return terms


def params_dtype(params) -> np.dtype:
    """The dtype of either family's parameters (the first layer of VAEParams.encoder or LadderParams.enc1)."""
    return params[0][0].W.dtype


def summarise_core(params, arch, x, terms: dict, rng, k: int, x_active=None) -> dict:
    """The metrics from the per-point terms (point_terms_core) and the deterministic encoder statistics; rng draws
    only the mutual information's samples. No checking."""
    if arch.FAMILY == "ladder":
        return _summarise_ladder(params, arch, x, terms, k, x_active)
    log_p, recon = terms["log_p"], terms["recon"]
    N = x.shape[0]
    mu, log_var = encoder_stats(params, arch, x)
    kl_dim = kl_std_normal_per_dim(mu, log_var)  # (N, Z)
    kl = kl_dim.sum(axis=1)
    elbo = recon - kl
    var_of_mean = np.var(mu if x_active is None else encoder_stats(params, arch, x_active)[0], axis=0)
    active = var_of_mean > 0.01
    return {
        **_summary(log_p, elbo, recon, k),
        "kl": float(kl.mean()),  # the analytic KL itself, not _summary's recon - elbo (equal up to rounding)
        "active_units": int(active.sum()),
        "active_units_points": N if x_active is None else int(x_active.shape[0]),
        "latent_dim": arch.latent_dim,
        "kl_per_dim": [float(v) for v in kl_dim.mean(axis=0)],
        "var_of_mean_per_dim": [float(v) for v in var_of_mean],
        "mutual_information": mutual_information(mu, log_var, rng),
    }


def _summary(log_p, elbo, recon, k: int) -> dict:
    N = log_p.shape[0]
    se = (lambda v: float(v.std(ddof=1) / np.sqrt(N))) if N > 1 else (lambda v: float("nan"))
    return {"n_points": N, "k": k, "nll": float(-log_p.mean()), "nll_se": se(log_p), "elbo": float(elbo.mean()),
            "elbo_se": se(elbo), "recon": float(recon.mean()), "kl": float((recon - elbo).mean()),
            "gap_log_px_minus_elbo": float(log_p.mean() - elbo.mean())}


def _ladder_terms(params, arch, xb, rng, elbo_k: int, dtype):
    """(recon, elbo): (n,) each for one batch of a LadderArch: the top KL analytic, the rest over elbo_k samples."""
    from ..vae import ladder_objective as ladder

    eps = rng.standard_normal((elbo_k, xb.shape[0], arch.noise_dim), dtype=dtype)
    f = ladder.forward(params, arch, xb, arch.split_noise(eps))
    log_px_z = lik.forward(arch.likelihood, f.out.reshape(elbo_k, xb.shape[0], -1), xb)[0]  # (elbo_k, n)
    return log_px_z.mean(axis=0), (log_px_z + ladder.latent_log_weights(f, analytic=True)).mean(axis=0)


def _summarise_ladder(params, arch, x, terms, k, x_active) -> dict:
    """summarise_core for a LadderArch (module docstring)."""
    from ..vae.ladder import encoder_means

    dtype = params_dtype(params)
    xa = x if x_active is None else x_active
    batches = [encoder_means(params, arch, as_float(xa[s], dtype)) for s in _batches(xa.shape[0], 1000)]
    var = [np.var(np.concatenate([b[l] for b in batches]), axis=0) for l in range(arch.L)]
    per_layer = [int((v > 0.01).sum()) for v in var]
    return {**_summary(terms["log_p"], terms["elbo"], terms["recon"], k), "active_units": sum(per_layer),
            "active_units_per_layer": per_layer, "active_units_points": int(xa.shape[0]), "latent_dim": arch.noise_dim,
            "latent_dims": list(arch.latents), "var_of_mean_per_dim": [[float(u) for u in v] for v in var]}
