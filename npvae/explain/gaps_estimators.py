"""The gaps topic's per-point optimiser and estimators, for any decoder of the one-layer family (npvae.explain.gaps).

q*(x), the best q of the diagonal family for one x, by Adam on that point's reparameterised ELBO from a starting q
(`optimise_q`), through the package's sampler, decoder and likelihood forward and `latent_grads` (the backward without
the encoder). Then, with standard errors: log p(x) by importance sampling with proposal q (`log_px_q`, Burda et al.
2016), each ELBO from n samples with the analytic KL (`elbo_q`), and the two gaps from them (`estimate_gaps`,
`summarise`). No checking: the experiment builds its own inputs; the linear model (npvae.explain.gaps_linear) checks
them against exact values.
Shapes: x (N, D), mu/log_var (N, Z), eps (S, N, Z).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import logsumexp

from .. import likelihoods as lik
from ..maths.gaussian import kl_std_normal_forward, log_prob_eps, log_std_normal, sample_forward
from ..nn.optim import adam_init, adam_update
from ..objectives import Forward, latent_grads
from ..vae.model import Arch, decode
from . import _common as c

LR = (0.05, 0.0005)  # the per-point optimiser's learning rate, decaying geometrically over its steps
ROWS = 1000  # (sample, point) pairs decoded at a time: larger chunks run slower (the elementwise work leaves the cache)


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
