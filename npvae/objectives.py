"""The bounds on log p(x) and their gradients by hand: decoder -> reparameterisation -> encoder.

For a batch x: (N, D) and noise eps: (K, N, Z) (K samples per point, passed in), `objective` returns
the bound per data point, value: (N,), and the gradient of the batch MEAN of the objective,
d/dtheta (1/N) sum_n value_n, for every encoder and decoder parameter (a `VAEParams`). The objective
is maximised; a loss is its negative and appears only in the trainer.

Bounds (MATHS.md, "Bounds"), with log-weights a_k = log p(x|z_k) + log p(z_k) - log q(z_k|x):
- "elbo", kl="analytic": (1/K) sum_k log p(x|z_k) - KL(q(z|x) || p(z))   (Kingma & Welling 2014, eq. 10)
- "elbo", kl="mc":       (1/K) sum_k a_k
- "iwae":                LME_k(a_k) = logsumexp_k(a_k) - log K             (Burda et al. 2016, eq. 8)
Gradient estimators for the encoder (the decoder's gradient is the same for all):
- "reparam": the total derivative of the sample estimate through z = mu + sigma eps.
- "stl":  "sticking the landing", drops the score term of log q (Roeder et al. 2017); ELBO with MC KL.
- "dreg": doubly-reparameterised IWAE gradient, sum_k w_k^2 (d a_k / d z_k)(d z_k / d phi) (Tucker et al. 2018).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import _validate
from . import likelihoods as lik
from .backends import resolve
from .gaussian import (
    kl_std_normal_backward,
    kl_std_normal_forward,
    kl_std_normal_per_dim,
    log_prob_eps,
    log_prob_path_backward,
    log_std_normal,
    sample_backward,
    sample_forward,
)
from .lme import _log_mean_exp, _softmax
from .mlp import mlp_backward
from .model import Arch, VAEParams, check_params, decode, encode

BOUNDS = ("elbo", "iwae")
KL_MODES = ("analytic", "mc")
ESTIMATORS = ("reparam", "stl", "dreg")
# Which estimators each (bound, kl) pair has; anything else is refused with this table in the message.
VALID = {
    ("elbo", "analytic"): ("reparam",),
    ("elbo", "mc"): ("reparam", "stl"),
    ("iwae", "mc"): ("reparam", "dreg"),
}


class Forward(NamedTuple):
    """Everything one forward pass computes; the backward reuses it and recomputes nothing."""

    mu: np.ndarray  # (N, Z)
    log_var: np.ndarray  # (N, Z)
    z: np.ndarray  # (K, N, Z)
    log_px_z: np.ndarray  # (K, N)  log p(x|z_k)
    caches: tuple


def _forward(params: VAEParams, arch: Arch, x, eps) -> Forward:
    """Encoder, reparameterised sample, decoder and likelihood; no checking."""
    mu, log_var, enc_cache = encode(params, arch, x)
    z, s_cache = sample_forward(mu, log_var, eps)
    out, dec_cache = decode(params, arch, z)  # (K, N, D_out)
    log_px_z, l_cache = lik.forward(arch.likelihood, out, x)
    return Forward(mu, log_var, z, log_px_z, (enc_cache, s_cache, dec_cache, l_cache))


def _log_weights(f: Forward, eps, kl_weight: float = 1.0):
    """a_k = log p(x|z_k) + beta [log p(z_k) - log q(z_k|x)]: (K, N); beta = 1 is the true log-weight."""
    t = eps.dtype.type
    return f.log_px_z + t(kl_weight) * (log_std_normal(f.z) - log_prob_eps(f.log_var, eps))


def _decoder_backward(arch: Arch, f: Forward, w):
    """Backprop sample weights w: (K, N) on log p(x|z_k) through the likelihood and decoder -> (grads, dz (K, N, Z))."""
    _, _, dec_cache, l_cache = f.caches
    dout = lik.backward(arch.likelihood, w, l_cache)  # (K, N, D_out)
    K, N = w.shape
    grads, dz = mlp_backward(dout.reshape(K * N, -1), dec_cache)
    return grads, dz.reshape(K, N, -1)


def _encoder_backward(f: Forward, dmu, dlog_var):
    """Backprop (dmu, dlog_var): (N, Z) through the encoder MLP; the data x needs no gradient."""
    enc_cache = f.caches[0]
    grads, _ = mlp_backward(np.concatenate([dmu, dlog_var], axis=1), enc_cache, need_dx=False)
    return grads


def _free_bits_kl(mu, log_var, free_bits: float):
    """sum_j max(lambda, KL_j) per point, and the mask of dimensions above lambda (Kingma et al. 2016, eq. 13, per point)."""
    kl_j = kl_std_normal_per_dim(mu, log_var)  # (N, Z)
    above = kl_j > mu.dtype.type(free_bits)
    return np.where(above, kl_j, mu.dtype.type(free_bits)).sum(axis=-1), above


def _bound_and_grad(params, arch, x, eps, bound, kl, estimator, kl_weight, free_bits=0.0):
    """The value (N,) and the gradient of its batch mean; no checking (see `objective`)."""
    K, N = eps.shape[0], x.shape[0]
    t = x.dtype.type
    beta = t(kl_weight)
    f = _forward(params, arch, x, eps)
    s_cache = f.caches[1]

    if kl == "analytic":
        kl_value, above = _free_bits_kl(f.mu, f.log_var, free_bits)
        value = f.log_px_z.mean(axis=0) - beta * kl_value
        w = np.full((K, N), t(1.0 / (K * N)), dtype=x.dtype)  # d(batch mean)/d log p(x|z_k)
        dec_grads, dz = _decoder_backward(arch, f, w)
        dmu, dlog_var = sample_backward(dz, s_cache)
        # A dimension held at its floor lambda passes no gradient to its KL.
        kmu, klv = kl_std_normal_backward(np.where(above, -beta / t(N), t(0)), f.mu, f.log_var)
        return value, VAEParams(_encoder_backward(f, dmu + kmu, dlog_var + klv), dec_grads)

    a = _log_weights(f, eps, kl_weight)
    if bound == "elbo":
        value = a.mean(axis=0)
        w = np.full((K, N), t(1.0 / K), dtype=x.dtype)
    else:
        value = _log_mean_exp(a, axis=0)
        w = _softmax(a, axis=0)  # normalised importance weights: d LME / d a_k
    wn = w / t(N)  # (K, N): d(batch mean of the bound) / d a_k
    dec_grads, dz = _decoder_backward(arch, f, wn)  # dz = wn * d log p(x|z_k) / dz_k
    dz = dz - beta * wn[..., None] * f.z  # + wn * beta * d log p(z_k)/dz_k, with d log N(z; 0, I)/dz = -z

    if estimator == "reparam":
        dmu, dlog_var = sample_backward(dz, s_cache)
        # log q written in eps has total derivative (0, -1/2) w.r.t. (mu, log_var); a_k holds -beta log q; sum_k w_k = 1.
        dlog_var = dlog_var + beta * t(0.5) / t(N)
    else:
        # Path derivative only: a_k holds -beta log q(z_k|x) with (mu, log_var) held fixed.
        c = beta * wn
        if estimator == "dreg":
            dz = dz * w[..., None]  # squared normalised weights (Tucker et al. 2018, eq. 7)
            c = c * w
        dmu, dlog_var = sample_backward(dz, s_cache)
        pmu, plv = log_prob_path_backward(c, f.log_var, eps)
        dmu, dlog_var = dmu - pmu, dlog_var - plv
    return value, VAEParams(_encoder_backward(f, dmu, dlog_var), dec_grads)


def check_x(params: VAEParams, arch: Arch, x) -> np.dtype:
    """Validate params against arch and x: (N, D) float, finite, of the parameters' dtype, N >= 1; return the dtype."""
    dtype = check_params(arch, params)
    _validate.float_array("x", x, 2)
    _validate.shape("x", x, (None, arch.data_dim))
    _validate.same_dtype(dtype, x=x)
    if x.shape[0] == 0:
        raise ValueError("x is empty: need at least one data point")
    return dtype


def check_batch(params: VAEParams, arch: Arch, x, eps=None) -> np.dtype:
    """Validate params, x: (N, D) for the likelihood, and eps: (K, N, Z) at the boundary; return the common dtype."""
    dtype = check_x(params, arch, x)
    if arch.likelihood.name == "gaussian" and not 0 < dtype.type(arch.likelihood.sigma2) < np.inf:
        raise ValueError(f"sigma2 = {arch.likelihood.sigma2} is not a positive finite {dtype} number")
    if arch.likelihood.name == "bernoulli" and not np.all((x == 0) | (x == 1)):
        raise ValueError(
            "the Bernoulli likelihood needs binary x (every value 0 or 1); binarise grey-level data first "
            "(e.g. --binarize) or choose a Gaussian likelihood"
        )
    if eps is not None:
        _validate.float_array("eps", eps, 3)
        _validate.shape("eps", eps, (None, x.shape[0], arch.latent_dim))
        _validate.same_dtype(dtype, eps=eps)
        if eps.shape[0] == 0:
            raise ValueError("eps has K = 0 samples: need at least one")
    return dtype


def check_options(bound: str, kl: str, estimator: str, kl_weight: float, free_bits: float = 0.0) -> None:
    """Refuse unknown names and combinations that have no meaning, with the table of valid ones."""
    _validate.choice("bound", bound, BOUNDS)
    _validate.choice("kl", kl, KL_MODES)
    _validate.choice("estimator", estimator, ESTIMATORS)
    if bound == "iwae" and kl != "mc":
        raise ValueError("the IWAE bound has no analytic-KL form: use kl='mc'")
    if estimator not in VALID[(bound, kl)]:
        table = "; ".join(f"{b}/{k}: {', '.join(e)}" for (b, k), e in VALID.items())
        raise ValueError(f"estimator {estimator!r} is not defined for bound={bound!r}, kl={kl!r} (valid: {table})")
    kw = float(kl_weight)
    if not np.isfinite(kw) or kw < 0:
        raise ValueError(f"kl_weight must be a finite number >= 0, got {kl_weight!r}")
    if bound == "iwae" and kw != 1.0:
        raise ValueError("kl_weight must be 1 for the IWAE bound (a weighted IWAE is not a bound on log p(x))")
    fb = float(free_bits)
    if not np.isfinite(fb) or fb < 0:
        raise ValueError(f"free_bits must be a finite number >= 0 (nats per latent dimension), got {free_bits!r}")
    if fb > 0 and kl != "analytic":
        raise ValueError("free bits need the analytic KL (kl='analytic'): they floor each dimension's KL")


def objective(
    params: VAEParams, arch: Arch, x, eps, *, bound="elbo", kl="analytic", estimator="reparam", kl_weight=1.0, free_bits=0.0,
    backend="numpy",
):
    """Bound per point (N,) and the gradient of its batch mean (VAEParams); x: (N, D), eps: (K, N, Z).

    kl_weight (beta) scales the KL term of the ELBO, or log p(z) - log q(z|x) in its MC form, for
    warm-up; free_bits (lambda, analytic KL only) replaces each dimension's KL_j by max(lambda, KL_j).
    The value is then the objective trained, a bound on log p(x) only at beta = 1, lambda = 0.
    backend: "numpy" (this module, the specification), "numba" (npvae.backends.numba_cpu), "cuda" (npvae.backends.cuda_gpu), or "auto".
    """
    check_options(bound, kl, estimator, kl_weight, free_bits)
    check_batch(params, arch, x, eps)
    name = resolve(backend)
    if name == "numba":
        from .backends import numba_cpu

        return numba_cpu.bound_and_grad(params, arch, x, eps, bound, kl, estimator, kl_weight, free_bits)
    if name == "cuda":
        from .backends import cuda_gpu

        return cuda_gpu.bound_and_grad(params, arch, x, eps, bound, kl, estimator, kl_weight, free_bits)
    return _bound_and_grad(params, arch, x, eps, bound, kl, estimator, kl_weight, free_bits)


def log_weights(params: VAEParams, arch: Arch, x, eps, *, backend="numpy"):
    """Log importance weights a_k = log p(x, z_k) - log q(z_k|x): (K, N), z_k = mu + sigma eps_k."""
    check_batch(params, arch, x, eps)
    name = resolve(backend)
    if name == "numba":
        from .backends import numba_cpu

        return numba_cpu.log_weights(params, arch, x, eps)
    if name == "cuda":
        from .backends import cuda_gpu

        return cuda_gpu.log_weights(params, arch, x, eps)
    return _log_weights(_forward(params, arch, x, eps), eps)


def bound_value(params: VAEParams, arch: Arch, x, eps, *, bound="elbo", kl="analytic", backend="numpy"):
    """The bound per point (N,) without gradients (for evaluation)."""
    check_options(bound, kl, VALID[(bound, kl)][0] if (bound, kl) in VALID else "reparam", 1.0)
    check_batch(params, arch, x, eps)
    name = resolve(backend)
    if name == "numba":
        from .backends import numba_cpu

        return numba_cpu.bound_value(params, arch, x, eps, bound, kl)
    if name == "cuda":
        from .backends import cuda_gpu

        return cuda_gpu.bound_value(params, arch, x, eps, bound, kl)
    f = _forward(params, arch, x, eps)
    if kl == "analytic":
        return f.log_px_z.mean(axis=0) - kl_std_normal_forward(f.mu, f.log_var)
    a = _log_weights(f, eps)
    return a.mean(axis=0) if bound == "elbo" else _log_mean_exp(a, axis=0)
