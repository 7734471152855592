"""The two-stochastic-layer bounds and their gradients by hand: decoders -> z2 = mu2 + s2 eps2 -> enc2 -> z1 -> enc1.

The NumPy specification for npvae.two_layer's model; it follows npvae.objectives step by step and runs
npvae.estimators' bounds (BOUND) and latent estimators. Noise is passed in: eps1 (K, N, Z1), eps2 (K, N, Z2),
z1 = mu1(x) + s1(x) eps1, z2 = mu2(z1) + s2(z1) eps2. Log-weights (Burda et al. 2016, section 5):
    a_k = log p(x|z1_k) + beta [log p(z1_k|z2_k) + log p(z2_k) - log q(z1_k|x) - log q(z2_k|z1_k)],   beta = 1 the true one;
kl="analytic" replaces log p(z2_k) - log q(z2_k|z1_k) by -KL(q(z2|z1_k) || N(0, I)) in closed form, once per
sample k (q(z2|z1) depends on z1_k); log p(z1|z2) - log q(z1|x) stay Monte Carlo. `bound_and_grad` returns
the bound per point (N,) and the gradient of its batch mean.

What each estimator holds fixed (phi = enc1's and enc2's parameters, theta = dec2's and dec1's; "o" = stop-gradient):
- reparam: nothing; the total derivative. log q is written in eps, so d/dlv of -log q is +1/2 per dimension.
- stl (Roeder et al. 2017): the surrogate (1/K) sum_k [log p(x, z1_k, z2_k) - log q(z1_k|x; phi1o) - log q(z2_k|z1_k; phi2o)]
  with z1_k(phi1), z2_k(phi1, phi2) live. In log q(z2|z1; phi2o) = log N(z2; mu2(z1; phi2o), exp(lv2(z1; phi2o)))
  only enc2's PARAMETERS are held: its input z1 stays live, so phi1 reaches it both through z2 and through
  (mu2, lv2)(z1). Dropped: the score d/dphi log q(z1, z2; phi) at fixed (z1, z2), whose expectation is zero.
- dreg (Tucker et al. 2018, eq. 7): LME_k a_k(theta; phi o) for the decoders, plus
  sum_k (w_k o)^2 a_k(theta o; z_k(phi), q at phi o) for the encoders, w = softmax(a), the same stop-gradients.
  In the backward this is STL's encoder pass with every sample's weight wn_k replaced by wn_k w_k.
npvae.two_layer_surrogate.surrogate is that scalar, built from forward passes only, for the finite-difference checks.
Shapes: as npvae.two_layer; weights w, wn (K, N).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from . import _validate
from . import likelihoods as lik
from .estimators import BOUND, ESTIMATORS, VALID, reparam, stl
from .gaussian import (
    kl_std_normal_backward,
    kl_std_normal_forward,
    log_prob,
    log_prob_eps,
    log_prob_path_backward,
    log_std_normal,
    sample_backward,
    sample_forward,
    std,
)
from .importance import log_px_stream
from .inputs import check_options, check_x_data
from .mlp import mlp_backward, mlp_forward
from .two_layer import TwoLayerArch, TwoLayerParams, check_params


def conditional_prior_forward(z1, mp, lvp):
    """log p(z1|z2) = log N(z1; mp, diag(exp(lvp))), z-form: (K, N, Z1) -> ((K, N), cache of r = (z1 - mp) / sd)."""
    sd = std(lvp)
    return log_prob(z1, mp, lvp), ((z1 - mp) / sd, sd)


def conditional_prior_backward(c, cache):
    """c (K, N) times d/d(z1, mp, lvp) = (-r / sd, r / sd, -(1 - r^2) / 2), each (K, N, Z1) (MATHS.md, Gaussian likelihood)."""
    r, sd = cache
    c = c[..., None]
    g = c * r / sd
    return -g, g, c * r.dtype.type(-0.5) * (r.dtype.type(1) - r * r)


class Ops(NamedTuple):
    """The loops a backend supplies; the maths around them (latent layers, estimators) is this module's, for every backend.

    mlp(tag, layers, h (M, H_0), activation) -> (out (M, H_L), cache); tags "enc1", "enc2", "dec2", "dec1" are distinct.
    mlp_back(tag, layers, cache, d (M, H_L), activation, need_dx) -> (grads, d input or None); may overwrite d.
    head(arch, out (K N, D_out), x, lp_lq (K, N), bound, kl, beta, grad) -> (value (N,), a (K, N), w, wn, dout (K N, D_out)
        or None): a = log p(x|z1_k) + beta lp_lq, the bound's value and weights, and wn_k d log p(x|z1_k) / d out.
    """

    mlp: Callable
    mlp_back: Callable
    head: Callable


def _numpy_mlp(tag, layers, h, activation):
    return mlp_forward(layers, h, activation)


def _numpy_mlp_back(tag, layers, cache, d, activation, need_dx):
    return mlp_backward(d, cache, need_dx)


def _numpy_head(arch, out, x, lp_lq, bound, kl, beta, grad):
    K, N = lp_lq.shape
    log_px, lik_cache = lik.forward(arch.likelihood, out.reshape(K, N, -1), x)
    a = log_px + beta * lp_lq
    value, w = BOUND[(bound, kl)](a)
    wn = w / x.dtype.type(N)  # (K, N): d(batch mean of the bound) / d a_k
    dout = lik.backward(arch.likelihood, wn, lik_cache).reshape(K * N, -1) if grad else None
    return value, a, w, wn, dout


NUMPY = Ops(_numpy_mlp, _numpy_mlp_back, _numpy_head)


class Forward(NamedTuple):
    """Everything one forward pass up to the likelihood computes; the backward reuses it and recomputes nothing."""

    mu1: np.ndarray  # (N, Z1)
    lv1: np.ndarray  # (N, Z1)
    eps1: np.ndarray  # (K, N, Z1)
    s1_cache: tuple  # (sd1, eps1)
    mu2: np.ndarray  # (K, N, Z2)
    lv2: np.ndarray  # (K, N, Z2)
    z2: np.ndarray  # (K, N, Z2)
    eps2: np.ndarray  # (K, N, Z2)
    s2_cache: tuple  # (sd2, eps2)
    out: np.ndarray  # (K N, D_out): dec1's output, the likelihood's parameters
    log_pz1: np.ndarray  # (K, N)  log p(z1_k|z2_k)
    pz1_cache: tuple
    enc1_cache: tuple
    enc2_cache: tuple
    dec2_cache: tuple
    dec1_cache: tuple


def _head_forward(ops, tag, layers, h, activation):
    """An MLP whose output is [mean, log_var] of a diagonal Gaussian: (..., H_in) -> ((..., Z), (..., Z), cache)."""
    lead = h.shape[:-1]
    out, cache = ops.mlp(tag, layers, h.reshape(-1, h.shape[-1]), activation)  # (M, 2Z), M = prod(lead)
    out = out.reshape(*lead, out.shape[-1])
    Z = out.shape[-1] // 2
    return out[..., :Z], out[..., Z:], cache


def forward(params: TwoLayerParams, arch: TwoLayerArch, x, eps1, eps2, ops: Ops = NUMPY) -> Forward:
    """Both encoders and samples, both decoders and the conditional prior; no checking."""
    act = arch.activation
    mu1, lv1, enc1_cache = _head_forward(ops, "enc1", params.enc1, x, act)  # (N, Z1)
    z1, s1_cache = sample_forward(mu1, lv1, eps1)  # (K, N, Z1)
    mu2, lv2, enc2_cache = _head_forward(ops, "enc2", params.enc2, z1, act)  # (K, N, Z2), at the sampled z1
    z2, s2_cache = sample_forward(mu2, lv2, eps2)  # (K, N, Z2)
    mp, lvp, dec2_cache = _head_forward(ops, "dec2", params.dec2, z2, act)  # (K, N, Z1)
    log_pz1, pz1_cache = conditional_prior_forward(z1, mp, lvp)
    out, dec1_cache = ops.mlp("dec1", params.dec1, z1.reshape(-1, arch.latent1), act)  # (K N, D_out)
    return Forward(mu1, lv1, eps1, s1_cache, mu2, lv2, z2, eps2, s2_cache, out, log_pz1, pz1_cache,
                   enc1_cache, enc2_cache, dec2_cache, dec1_cache)


def latent_log_weights(f: Forward, analytic: bool = False):
    """lp_lq (K, N) = log p(z1_k|z2_k) + log p(z2_k) - log q(z1_k|x) - log q(z2_k|z1_k), so that a_k = log p(x|z1_k) + beta lp_lq;
    with `analytic` the top pair is -KL(q(z2|z1_k) || N(0, I))."""
    if analytic:
        top = -kl_std_normal_forward(f.mu2, f.lv2)  # (K, N): one KL per sample k
    else:
        top = log_std_normal(f.z2) - log_prob_eps(f.lv2, f.eps2)
    return f.log_pz1 - log_prob_eps(f.lv1, f.eps1) + top


def _mlp_back(ops, tag, layers, cache, d, activation, need_dx: bool = True):
    """ops.mlp_back for inputs with leading axes: d (..., H_out) -> (grads, d input (..., H_in) or None)."""
    lead = d.shape[:-1]
    grads, dh = ops.mlp_back(tag, layers, cache, np.ascontiguousarray(d.reshape(-1, d.shape[-1])), activation, need_dx)
    return grads, (None if dh is None else dh.reshape(*lead, dh.shape[-1]))


def _head_back(ops, tag, layers, cache, dmean, dlog_var, activation, need_dx: bool = True):
    """Back through a Gaussian head: (dmean, dlog_var) (..., Z) -> (grads, d input)."""
    return _mlp_back(ops, tag, layers, cache, np.concatenate([dmean, dlog_var], axis=-1), activation, need_dx)


def top_latent_backward(dz2, f: Forward, ce, kl: str, q_held: bool):
    """dz2 and the weights ce = beta e (K, N) of the top layer's terms -> (live, held) pairs (dmu2, dlv2), (K, N, Z2).

    `live` goes back through enc2's parameters and input; `held` (STL/DReG) is the derivative of -log q(z2|z1; phi2o)
    w.r.t. its held (mu2, lv2), (-eps2 / s2, (1 - eps2^2) / 2) times ce, and goes back through enc2's input only.
    q(z2|z1)'s parameters are per sample: a leading axis of one makes the shared helpers sum over nothing.
    """
    c = ce[..., None]
    dmu, dlv = sample_backward(dz2[None], (f.s2_cache[0], f.eps2[None]))  # through z2 = mu2 + s2 eps2
    if kl == "analytic":
        kmu, klv = kl_std_normal_backward(-c, f.mu2, f.lv2)
        return (dmu + kmu, dlv + klv), None
    if not q_held:
        return (dmu, dlv + c * c.dtype.type(0.5)), None  # -log q(z2|z1) in eps: total derivative +1/2 per lv2_j
    pmu, plv = log_prob_path_backward(ce[None], f.lv2, f.eps2[None])  # path part of log q(z2|z1) through z2
    # pmu = -ce eps2 / s2 = -ce d log q / d mu2o; plv = -ce eps2^2 / 2, so -ce d log q / d lv2o = ce / 2 + plv.
    return (dmu - pmu, dlv - plv), (pmu, c * c.dtype.type(0.5) + plv)


def bound_and_grad_core(params, arch, x, eps, bound, kl, estimator, kl_weight=1.0, free_bits=0.0, ops: Ops = NUMPY):
    """The value (N,) and the gradient of its batch mean (TwoLayerParams) for eps = [eps1, eps2] (K, N, Z1 + Z2); no checking.

    free_bits is accepted for the Backend signature and is always 0 here (npvae.inputs.check_free_bits).
    """
    t = x.dtype.type
    beta = t(kl_weight)
    act = arch.activation
    est = ESTIMATORS[estimator]
    eps1, eps2 = arch.split_noise(eps)
    f = forward(params, arch, x, eps1, eps2, ops)
    value, _, w, wn, dout = ops.head(arch, f.out, x, latent_log_weights(f, kl == "analytic"), bound, kl, beta, True)

    # Generative side, weights wn on log p(x|z1), beta wn on log p(z1|z2) and log p(z2): the decoders' gradients
    # and the path gradients dz1, dz2.
    dec1_grads, dz1 = _mlp_back(ops, "dec1", params.dec1, f.dec1_cache, dout, act)
    dz1 = dz1.reshape(f.eps1.shape)
    pz1_dz1, dmp, dlvp = conditional_prior_backward(beta * wn, f.pz1_cache)
    dec2_grads, dz2 = _head_back(ops, "dec2", params.dec2, f.dec2_cache, dmp, dlvp, act)
    dz1 = dz1 + pz1_dz1
    if kl == "mc":
        dz2 = dz2 - (beta * wn)[..., None] * f.z2  # d log N(z2; 0, I) / dz2 = -z2

    # Encoder side, every term of sample k weighted by e_k: wn_k, or wn_k w_k for DReG's squared weights.
    if est.squared_weights:
        dz1, dz2, e = dz1 * w[..., None], dz2 * w[..., None], wn * w
    else:
        e = wn
    live, held = top_latent_backward(dz2, f, beta * e, kl, est.q_held)
    enc2_grads, dz1_top = _head_back(ops, "enc2", params.enc2, f.enc2_cache, *live, act)
    dz1 = dz1 + dz1_top
    if held is not None:  # enc2's parameters held: its input gradient only
        dz1 = dz1 + _head_back(ops, "enc2", params.enc2, f.enc2_cache, *held, act)[1]
    # q(z1|x): estimators' one-layer rules; DReG's is STL's with e = wn w on the already reweighted dz1.
    dmu1, dlv1 = (stl if est.q_held else reparam)(dz1, f.s1_cache, f.lv1, w, e, beta)
    enc1_grads, _ = _head_back(ops, "enc1", params.enc1, f.enc1_cache, dmu1, dlv1, act, need_dx=False)  # x needs none
    return value, TwoLayerParams(enc1_grads, enc2_grads, dec2_grads, dec1_grads)


def bound_value_core(params, arch, x, eps, bound, kl, ops: Ops = NUMPY):
    """The bound per point (N,) without gradients; no checking."""
    f = forward(params, arch, x, *arch.split_noise(eps), ops)
    return ops.head(arch, f.out, x, latent_log_weights(f, kl == "analytic"), bound, kl, x.dtype.type(1), False)[0]


def log_weights_core(params, arch, x, eps, ops: Ops = NUMPY):
    """a_k = log p(x, z1_k, z2_k) - log q(z1_k, z2_k|x): (K, N), fresh; no checking."""
    f = forward(params, arch, x, *arch.split_noise(eps), ops)
    return ops.head(arch, f.out, x, latent_log_weights(f), "elbo", "mc", x.dtype.type(1), False)[1].copy()


def log_px_core(params, arch, x, k: int, rng, chunk: int, progress=None, ops: Ops = NUMPY):
    """Importance-sampled log p(x) (N,) as npvae.importance.log_px, from `log_weights_core` chunk by chunk; no checking."""
    return log_px_stream(lambda p, a, x_, eps: log_weights_core(p, a, x_, eps, ops), params, arch, x, k, rng, chunk, progress)


# ---- the public boundary: validates once, then calls the cores ----

def check_noise(arch: TwoLayerArch, x, eps1, eps2, dtype) -> None:
    """eps1: (K, N, Z1) and eps2: (K, N, Z2), float, finite, of the parameters' dtype, the same K >= 1."""
    for name, eps, Z in (("eps1", eps1, arch.latent1), ("eps2", eps2, arch.latent2)):
        _validate.float_array(name, eps, 3)
        _validate.shape(name, eps, (None, x.shape[0], Z))
        _validate.same_dtype(dtype, **{name: eps})
        if eps.shape[0] == 0:
            raise ValueError(f"{name} has K = 0 samples: need at least one")
    if eps1.shape[0] != eps2.shape[0]:
        raise ValueError(f"eps1 and eps2 need the same number of samples K, got {eps1.shape[0]} and {eps2.shape[0]}")


def check_batch(params: TwoLayerParams, arch: TwoLayerArch, x, eps1, eps2) -> np.dtype:
    """Validate params, x: (N, D) for the likelihood, eps1 and eps2 at the boundary; return the common dtype."""
    if not isinstance(arch, TwoLayerArch):
        raise ValueError(f"arch must be a TwoLayerArch, got {type(arch).__name__}")
    dtype = check_params(arch, params)
    check_x_data(arch, x, dtype)
    check_noise(arch, x, eps1, eps2, dtype)
    return dtype


def bound_and_grad(params: TwoLayerParams, arch: TwoLayerArch, x, eps1, eps2, bound="elbo", kl="mc",
                   estimator="reparam", kl_weight=1.0):
    """Bound per point (N,) and the gradient of its batch mean (TwoLayerParams); x (N, D), eps1 (K, N, Z1), eps2 (K, N, Z2).

    (bound, kl, estimator) as npvae.estimators.VALID; kl_weight (beta, ELBO only) scales everything but log p(x|z1).
    The NumPy specification; npvae.objectives.objective(params, arch, x, [eps1, eps2], backend=...) runs any backend.
    """
    check_options(bound, kl, estimator, kl_weight)
    check_batch(params, arch, x, eps1, eps2)
    return bound_and_grad_core(params, arch, x, np.concatenate([eps1, eps2], axis=-1), bound, kl, estimator, kl_weight)


def log_weights(params: TwoLayerParams, arch: TwoLayerArch, x, eps1, eps2):
    """a_k = log p(x, z1_k, z2_k) - log q(z1_k, z2_k|x): (K, N)."""
    check_batch(params, arch, x, eps1, eps2)
    return log_weights_core(params, arch, x, np.concatenate([eps1, eps2], axis=-1))


def bound_value(params: TwoLayerParams, arch: TwoLayerArch, x, eps1, eps2, bound="elbo", kl="mc"):
    """The bound per point (N,) without gradients (for evaluation)."""
    check_options(bound, kl, VALID[(bound, kl)][0] if (bound, kl) in VALID else "reparam", 1.0)
    check_batch(params, arch, x, eps1, eps2)
    return bound_value_core(params, arch, x, np.concatenate([eps1, eps2], axis=-1), bound, kl)
