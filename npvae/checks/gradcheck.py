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

from .. import likelihoods as lik
from typing import NamedTuple

from ..maths.estimators import ESTIMATORS
from ..maths.gaussian import kl_std_normal_per_dim, log_prob, log_std_normal, sample_forward
from ..nn.layers import activation_forward
from ..maths.lme import log_mean_exp_core, softmax_core
from ..vae.model import Arch, VAEParams, decode, encode
from ..vae.models import flatten, unflatten

# Central differences in float64 with a fixed step h. Their error model (e.g. Nocedal & Wright, section 8.1):
#     |fd - f'|  <=  h^2 / 6 |f'''|  (truncation)  +  eps_mach |f| / h  (rounding of the two evaluations),
# with f''' estimated along the same direction from four more evaluations at the wider step WIDE_STEP. A check
# passes when |analytic - fd| <= FD_SAFETY * (that bound): the safety factor covers the rounding of computing f
# itself (sums of O(100) terms, each rounded), and bench/gradcheck_seeds.py measures how much of it is used.
# With |f| ~ 10 the tolerance is ~2e-7 absolute: a wrong factor, even 1 + 1e-4, on any directional derivative
# larger than ~1e-2 is far above it, and a tiny derivative is not held to a relative standard it cannot meet.
FD_STEP = {np.dtype(np.float64): 1e-6}
WIDE_STEP = 1e-4  # for f''': its own rounding, ~3 eps |f| / WIDE_STEP^3 ~ 1e-3 |f|, is negligible once times h^2 / 6
FD_SAFETY = 100.0
EPS_MACH = float(np.finfo(np.float64).eps)
RTOL = {np.dtype(np.float64): 1e-6}  # element-wise checks of small arrays (layers), where the error model is not used
# Non-smooth activations: a central difference across a kink measures neither one-sided derivative, so a
# direction is used only where every such pre-activation keeps its sign, with room to spare, over +- 2 WIDE_STEP.
KINKED = ("relu",)
KINK_MARGIN = 4.0  # |a(0)| must exceed this times its largest change over the points evaluated
DIRECTION_TRIES = 20


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
    """The scalar whose gradient at live == base is the estimator's gradient of the batch-mean bound.

    For an L-layer model (arch.FAMILY "ladder") it is npvae.vae.ladder_surrogate.surrogate on the split noise.
    """
    if arch.FAMILY == "ladder":
        from ..vae.ladder_surrogate import surrogate as ladder_surrogate

        return ladder_surrogate(live, base, arch, x, arch.split_noise(eps), bound, kl, estimator, kl_weight)
    if kl == "analytic":
        mu, log_var, _ = encode(live, arch, x)
        z, _ = sample_forward(mu, log_var, eps)
        out, _ = decode(live, arch, z)
        log_px_z, _ = lik.forward(arch.likelihood, out, x)
        kl_value = np.maximum(kl_std_normal_per_dim(mu, log_var), free_bits).sum(axis=-1)
        return float(np.mean(log_px_z.mean(axis=0) - kl_weight * kl_value))
    held = ESTIMATORS[estimator]  # what the estimator's surrogate holds fixed at `base` (npvae.maths.estimators)
    if held.squared_weights:
        dec_part = log_mean_exp_core(_log_weights_z(VAEParams(base.encoder, live.decoder), arch, x, eps), axis=0)
        w_base = softmax_core(_log_weights_z(base, arch, x, eps), axis=0)
        a_path = _log_weights_z(VAEParams(live.encoder, base.decoder), arch, x, eps, q_params=base)
        return float(np.mean(dec_part + (w_base**2 * a_path).sum(axis=0)))
    a = _log_weights_z(live, arch, x, eps, base if held.q_held else None, kl_weight)
    return float(np.mean(a.mean(axis=0) if bound == "elbo" else log_mean_exp_core(a, axis=0)))


def directional(f, arrays, grads, direction, h: float):
    """(<grad, u>, [f(theta + h u) - f(theta - h u)] / 2h) for one direction u over all arrays."""
    analytic = sum(float(np.sum(g * u)) for g, u in zip(grads, direction))
    plus = f([a + h * u for a, u in zip(arrays, direction)])
    minus = f([a - h * u for a, u in zip(arrays, direction)])
    return analytic, (plus - minus) / (2 * h)


class FDCheck(NamedTuple):
    """One directional check: analytic and central-difference derivatives, |difference|, and its error-model tolerance."""

    name: str
    analytic: float
    fd: float
    error: float
    tol: float
    status: str  # "ok", "FAIL", or "inconclusive" (no direction clear of every kink was found)


def fd_check(f, arrays, grads, direction, h: float, name: str = "") -> FDCheck:
    """The central difference along `direction` against <grad, u>, with the tolerance of the error model above."""
    H = WIDE_STEP

    def at(t):
        return f([a + t * u for a, u in zip(arrays, direction)])

    analytic = sum(float(np.sum(g * u)) for g, u in zip(grads, direction))
    fp, fm = at(h), at(-h)
    fd = (fp - fm) / (2 * h)
    third = (at(2 * H) - 2 * at(H) + 2 * at(-H) - at(-2 * H)) / (2 * H**3)
    tol = FD_SAFETY * (h * h / 6 * abs(third) + EPS_MACH * max(abs(fp), abs(fm)) / h)
    error = abs(analytic - fd)
    return FDCheck(name, analytic, fd, error, tol, "ok" if error <= tol else "FAIL")


def _hidden_preactivations(layers, h, activation: str) -> list:
    """The pre-activations of an MLP's hidden layers (those an activation is applied to), from forward passes only."""
    out = []
    for p in layers[:-1]:
        a = h @ p.W + p.b
        out.append(a)
        h = activation_forward(activation, a)[0]
    return out


def kink_preactivations(live: VAEParams, base: VAEParams, arch: Arch, x, eps) -> np.ndarray:
    """Every hidden pre-activation the surrogates evaluate, flattened: encoders and decoders mixed from live and base."""
    parts = _hidden_preactivations(live.encoder, x, arch.activation) + _hidden_preactivations(base.encoder, x, arch.activation)
    for enc in (live, base):
        mu, log_var, _ = encode(enc, arch, x)
        z, _ = sample_forward(mu, log_var, eps)
        for dec in (live, base):
            parts += _hidden_preactivations(dec.decoder, z.reshape(-1, arch.latent_dim), arch.activation)
    return np.concatenate([a.ravel() for a in parts]) if parts else np.zeros(0)


def clear_of_kinks(arrays, direction, arch: Arch, x, eps) -> bool:
    """True when no non-smooth activation's pre-activation comes near its kink over theta +- 2 WIDE_STEP u."""
    if arch.activation not in KINKED:
        return True
    if arch.FAMILY != "one-layer":
        raise ValueError(f"kink certificates are written for one stochastic layer; check {arch.spec} with a smooth activation")
    base = unflatten(arch, arrays)
    a0 = kink_preactivations(base, base, arch, x, eps)
    change = np.zeros_like(a0)
    for t in (-2 * WIDE_STEP, -WIDE_STEP, WIDE_STEP, 2 * WIDE_STEP):
        live = unflatten(arch, [a + t * u for a, u in zip(arrays, direction)])
        change = np.maximum(change, np.abs(kink_preactivations(live, base, arch, x, eps) - a0))
    return bool(np.all(np.abs(a0) >= KINK_MARGIN * change))  # a pre-activation the direction leaves alone cannot matter


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


def per_parameter(params: VAEParams, grads: VAEParams, arch: Arch, x, eps, options: dict, rng, names) -> list[FDCheck]:
    """For each named parameter array, a random-direction check in that array alone (see `fd_check`).

    Directions that bring a ReLU pre-activation near its kink are redrawn (up to DIRECTION_TRIES times); a
    parameter for which none is clear is reported "inconclusive", never compared across a kink. A point that
    sits on a kink (a pre-activation exactly 0, as with zero biases and zero inputs) is inconclusive for every
    direction: move the point (the check's models draw nonzero biases).
    """
    arrays, g = flatten(params), flatten(grads)
    h = FD_STEP[arrays[0].dtype]

    def f(perturbed):
        return surrogate(unflatten(arch, perturbed), params, arch, x, eps, **options)

    rows = []
    for i, name in enumerate(names):
        for _ in range(DIRECTION_TRIES):
            u = [np.zeros_like(a) for a in arrays]
            u[i] = rng.standard_normal(arrays[i].shape)
            if clear_of_kinks(arrays, u, arch, x, eps):
                rows.append(fd_check(f, arrays, g, u, h, name))
                break
        else:
            rows.append(FDCheck(name, float("nan"), float("nan"), float("nan"), float("nan"), "inconclusive"))
    return rows
