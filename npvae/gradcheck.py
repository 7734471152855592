"""Finite-difference gradient checks, and the forward-only surrogates whose gradients STL and DReG are.

Used by `npvae check` and by the tests. Everything here is built from FORWARD passes only (encoder,
sample, decoder, likelihood, log densities written in z, not eps), so it is an independent oracle
for the hand-written backward passes in `objectives`.

STL and DReG are not gradients of the bound: they are gradients of surrogates in which some factors
are held fixed ("stop-gradient") at the point of evaluation `base` (Roeder et al. 2017; Tucker et al. 2018):
- STL:  (1/K) sum_k [log p(x, z_k(phi)) - log q(z_k(phi); phi_base)]
- DReG: LME_k a_k(theta; phi_base)  +  sum_k w_k(base)^2 a_k(theta_base; z_k(phi), q at phi_base)
  (the first term gives the decoder's gradient, the second the encoder's).
"""

from __future__ import annotations

import numpy as np

from . import likelihoods as lik
from .gaussian import kl_std_normal_per_dim, log_prob, log_std_normal, sample_forward
from .lme import _log_mean_exp, _softmax
from .model import Arch, VAEParams, decode, encode, flatten, unflatten

# Central differences in float64 with a fixed step: truncation O(h^2) and rounding O(1e-16 / h) are
# both far below RTOL, while a wrong factor (even 1 + 1e-4) is far above it.
FD_STEP = {np.dtype(np.float64): 1e-6}
RTOL = {np.dtype(np.float64): 1e-6}


def _log_weights_z(live: VAEParams, arch: Arch, x, eps, q_params: VAEParams | None = None, kl_weight=1.0):
    """a_k with z from `live`'s encoder and log q(z|x) in z-form at `q_params`'s encoder (default `live`): (K, N)."""
    mu, log_var, _ = encode(live, arch, x)
    z, _ = sample_forward(mu, log_var, eps)
    out, _ = decode(live, arch, z)
    log_px_z, _ = lik.forward(arch.likelihood, out, x)
    if q_params is not None:
        mu, log_var, _ = encode(q_params, arch, x)
    return log_px_z + kl_weight * (log_std_normal(z) - log_prob(z, mu, log_var))


def surrogate(live: VAEParams, base: VAEParams, arch: Arch, x, eps, bound, kl, estimator, kl_weight=1.0, free_bits=0.0) -> float:
    """The scalar whose gradient at live == base is the estimator's gradient of the batch-mean bound."""
    if kl == "analytic":
        mu, log_var, _ = encode(live, arch, x)
        z, _ = sample_forward(mu, log_var, eps)
        out, _ = decode(live, arch, z)
        log_px_z, _ = lik.forward(arch.likelihood, out, x)
        kl_value = np.maximum(kl_std_normal_per_dim(mu, log_var), free_bits).sum(axis=-1)
        return float(np.mean(log_px_z.mean(axis=0) - kl_weight * kl_value))
    if estimator == "dreg":
        dec_part = _log_mean_exp(_log_weights_z(VAEParams(base.encoder, live.decoder), arch, x, eps), axis=0)
        w_base = _softmax(_log_weights_z(base, arch, x, eps), axis=0)
        a_path = _log_weights_z(VAEParams(live.encoder, base.decoder), arch, x, eps, q_params=base)
        return float(np.mean(dec_part + (w_base**2 * a_path).sum(axis=0)))
    a = _log_weights_z(live, arch, x, eps, base if estimator == "stl" else None, kl_weight)
    return float(np.mean(a.mean(axis=0) if bound == "elbo" else _log_mean_exp(a, axis=0)))


def directional(f, arrays, grads, direction, h: float):
    """(<grad, u>, [f(theta + h u) - f(theta - h u)] / 2h) for one direction u over all arrays."""
    analytic = sum(float(np.sum(g * u)) for g, u in zip(grads, direction))
    plus = f([a + h * u for a, u in zip(arrays, direction)])
    minus = f([a - h * u for a, u in zip(arrays, direction)])
    return analytic, (plus - minus) / (2 * h)


def elementwise(f, arrays, index: int, h: float) -> np.ndarray:
    """The central-difference gradient of f w.r.t. every element of arrays[index] (small arrays only)."""
    base = arrays[index]
    out = np.empty_like(base)
    for j in np.ndindex(base.shape):
        e = np.zeros_like(base)
        e[j] = h
        plus = [a + e if i == index else a for i, a in enumerate(arrays)]
        minus = [a - e if i == index else a for i, a in enumerate(arrays)]
        out[j] = (f(plus) - f(minus)) / (2 * h)
    return out


def rel_err(a, b) -> float:
    """max |a - b| / max(|a|, |b|, tiny): relative error that does not blow up at an exact zero pair."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = max(float(np.max(np.abs(a))), float(np.max(np.abs(b))), 1e-300)
    return float(np.max(np.abs(a - b))) / scale


def per_parameter(params: VAEParams, grads: VAEParams, arch: Arch, x, eps, options: dict, rng, names):
    """For each named parameter array: a random-direction check in that array alone -> list of (name, analytic, fd, rel_err)."""
    arrays, g = flatten(params), flatten(grads)
    h = FD_STEP[arrays[0].dtype]

    def f(perturbed):
        return surrogate(unflatten(arch, perturbed), params, arch, x, eps, **options)

    rows = []
    for i, name in enumerate(names):
        u = [np.zeros_like(a) for a in arrays]
        u[i] = rng.standard_normal(arrays[i].shape)
        analytic, fd = directional(f, arrays, g, u, h)
        rows.append((name, analytic, fd, rel_err(analytic, fd)))
    return rows
