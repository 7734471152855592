"""The L-layer bounds and their gradients by hand, written once over the list of stochastic layers.

The NumPy specification for npvae.vae.ladder's model; it follows npvae.objectives step by step and runs
npvae.maths.estimators' bounds (BOUND) and latent estimators. Noise is passed in, eps_l (K, N, Z_l), and
z_1 = mu_1(x) + s_1(x) eps_1, z_l = mu_l(z_{l-1}) + s_l(z_{l-1}) eps_l. Log-weights (Burda et al. 2016, section 5):
    a_k = log p(x|z_1k) + beta [sum_{l<L} log p(z_lk|z_{l+1,k}) + log p(z_Lk) - sum_l log q(z_lk|z_{l-1,k})],
beta = 1 the true one. kl="analytic" replaces the top pair log p(z_L) - log q(z_L|z_{L-1}) by -KL(q(z_L|z_{L-1,k}) || N(0, I))
in closed form, once per sample k (for L = 1, once per point: Kingma & Welling's analytic ELBO); every other
term stays Monte Carlo. `bound_and_grad_core` returns the bound per point (N,) and the gradient of its batch mean; these
cores check nothing: npvae.objectives (objective, log_weights, bound_value, log_px) is their public boundary.

What each estimator holds fixed (phi = the encoders' parameters, theta = the decoders'; "o" = stop-gradient):
- reparam: nothing; the total derivative. log q is written in eps, so d/dlv of -log q is +1/2 per dimension.
- stl (Roeder et al. 2017): the surrogate (1/K) sum_k [log p(x, z_k) - sum_l log q(z_lk|z_{l-1,k}; phi_l o)], z_k(phi)
  live. In log q(z_l|z_{l-1}; phi_l o) only enc_l's PARAMETERS are held: its input z_{l-1} stays live, so the
  layers below reach it both through z_l and through (mu_l, lv_l)(z_{l-1}). Dropped: the score
  d/dphi log q(z; phi) at fixed z, whose expectation is zero.
- dreg (Tucker et al. 2018, eq. 7): LME_k a_k(theta; phi o) for the decoders, plus
  sum_k (w_k o)^2 a_k(theta o; z_k(phi), q at phi o) for the encoders, w = softmax(a), the same stop-gradients.
  In the backward this is STL's encoder pass with every sample's weight wn_k replaced by wn_k w_k.
npvae.vae.ladder_surrogate.surrogate is that scalar, built from forward passes only, for the finite-difference checks.
Shapes: as npvae.vae.ladder; weights w, wn (K, N). Layer l is index l - 1 of every list.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from .. import likelihoods as lik
from ..maths.estimators import BOUND, ESTIMATORS, reparam, stl
from ..maths.gaussian import (
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
from .ladder import LadderArch, LadderParams, gaussian_head
from ..nn.mlp import mlp_backward, mlp_forward


def conditional_prior_forward(z, mp, lvp):
    """log p(z_l|z_{l+1}) = log N(z_l; mp, diag(exp(lvp))), z-form: (K, N, Z_l) -> ((K, N), cache of r = (z - mp) / sd)."""
    sd = std(lvp)
    return log_prob(z, mp, lvp), ((z - mp) / sd, sd)


def conditional_prior_backward(c, cache):
    """c (K, N) times d/d(z, mp, lvp) = (-r / sd, r / sd, -(1 - r^2) / 2), each (K, N, Z_l) (docs/theory.md, section 1: the Gaussian likelihood)."""
    r, sd = cache
    c = c[..., None]
    g = c * r / sd
    return -g, g, c * r.dtype.type(-0.5) * (r.dtype.type(1) - r * r)


def prior_backward(dz, c, layer):
    """dz (K, N, Z_l) + c d log p(z_l|z_{l+1}) / dz_l, and c d log p / d[mp, lvp] (K, N, 2 Z_l): what dec_{l+1}'s backward reads."""
    dzb, dmp, dlvp = conditional_prior_backward(c, layer.p_cache)
    return dz + dzb, np.concatenate([dmp, dlvp], axis=-1)


def latent_backward(dz, layer: Layer, ce, analytic: bool, q_held: bool):
    """dz and the weights ce = beta e (K, N) of layer l >= 2's q terms -> (live, held) pairs (dmu, dlv), (K, N, Z_l).

    `live` goes back through enc_l's parameters and input; `held` (STL/DReG) is the derivative of -log q(z_l|z_{l-1}; phi_l o)
    w.r.t. its held (mu_l, lv_l), (-eps / s, (1 - eps^2) / 2) times ce, and goes back through enc_l's input only.
    q(z_l|z_{l-1})'s parameters are per sample: a leading axis of one makes the shared helpers sum over nothing.
    """
    c = ce[..., None]
    dmu, dlv = sample_backward(dz[None], (layer.sample_cache[0], layer.eps[None]))  # through z = mu + s eps
    if analytic:
        kmu, klv = kl_std_normal_backward(-c, layer.mu, layer.lv)
        return (dmu + kmu, dlv + klv), None
    if not q_held:
        return (dmu, dlv + c * c.dtype.type(0.5)), None  # -log q in eps: total derivative +1/2 per lv_j
    pmu, plv = log_prob_path_backward(ce[None], layer.lv, layer.eps[None])  # path part of log q through z
    # pmu = -ce eps / s = -ce d log q / d mu o; plv = -ce eps^2 / 2, so -ce d log q / d lv o = ce / 2 + plv.
    return (dmu - pmu, dlv - plv), (pmu, c * c.dtype.type(0.5) + plv)


def first_latent_backward(dz1, layer: Layer, w, e, beta, analytic: bool, q_held: bool):
    """q(z_1|x), per point: the estimators' one-layer rules (npvae.maths.estimators); DReG's is STL's with e = wn w on the
    already reweighted dz1. analytic (L = 1 only): the path through z_1 plus the analytic KL's, -beta sum_k e_k per point."""
    if analytic:
        dmu, dlv = sample_backward(dz1, layer.sample_cache)
        kmu, klv = kl_std_normal_backward(-beta * e.sum(axis=0), layer.mu, layer.lv)
        return dmu + kmu, dlv + klv
    return (stl if q_held else reparam)(dz1, layer.sample_cache, layer.lv, w, e, beta)


def layer_backward(l, top, dz, up, layer, w, wn, beta, analytic, est):
    """Layer l's d[mu_l, lv_l] for enc_l's backward, (live, held or None), each (..., 2 Z_l); est: an npvae.maths.estimators.Estimator.

    dz (K, N, Z_l) is the generative side's d/dz_l; `up` what enc_{l+1}'s backward passed down to z_l (live, then held),
    already weighted. At the top (MC): + beta wn d log N(z_L; 0, I) / dz_L. Every term of sample k is weighted by e_k:
    wn_k, or wn_k w_k for DReG's squared weights (so the generative side's dz is reweighted by w_k here).
    """
    if top and not analytic:
        dz = dz - (beta * wn)[..., None] * layer.z  # d log N(z_L; 0, I) / dz_L = -z_L
    e = wn
    if est.squared_weights:
        dz, e = dz * w[..., None], wn * w
    for d in up:
        dz = dz + d
    if l == 1:
        return np.concatenate(first_latent_backward(dz, layer, w, e, beta, analytic and top, est.q_held), axis=-1), None
    live, held = latent_backward(dz, layer, beta * e, analytic and top, est.q_held)
    return np.concatenate(live, axis=-1), (None if held is None else np.concatenate(held, axis=-1))


class Latent(NamedTuple):
    """The stochastic layers' (K, N, Z_l)-wide maths, the seams where a backend may fuse it; NUMPY_LATENT is the specification.

    sample(l, mu, lv, eps) -> (z (K, N, Z_l), sample_cache)           z_l = mu_l + exp(lv_l / 2) eps_l (gaussian.sample_forward)
    prior(l, z, mp, lvp) -> (log p(z_l|z_{l+1}) (K, N), p_cache)       l < L (conditional_prior_forward)
    log_weights(f, analytic) -> lp_lq (K, N)                          (latent_log_weights)
    prior_back(l, dz, c, layer) -> (dz, d[mp, lvp])                   (prior_backward)
    layer_back(l, top, dz, up, layer, w, wn, beta, analytic, est) -> (live, held or None)   (layer_backward)
    The caches are each backend's own: a backend that replaces one hook replaces them all.
    """

    sample: Callable
    prior: Callable
    log_weights: Callable
    prior_back: Callable
    layer_back: Callable


NUMPY_LATENT = Latent(
    sample=lambda l, mu, lv, eps: sample_forward(mu, lv, eps),
    prior=lambda l, z, mp, lvp: conditional_prior_forward(z, mp, lvp),
    log_weights=lambda f, analytic: latent_log_weights(f, analytic),
    prior_back=lambda l, dz, c, layer: prior_backward(dz, c, layer),
    layer_back=layer_backward,
)


class Ops(NamedTuple):
    """The loops a backend supplies; the maths around them (latent layers, estimators) is this module's; `latent` its seams.

    mlp(tag, layers, h (M, H_0), activation) -> (out (M, H_M), cache); tags "enc1", ..., "dec1" are distinct.
    mlp_back(tag, layers, cache, d (M, H_M), activation, need_dx) -> (grads, d input or None); may overwrite d.
    head(arch, out (K N, D_out), x, lp_lq (K, N), bound, kl, beta, grad) -> (value (N,), a (K, N), w, wn, dout (K N, D_out)
        or None): a = log p(x|z_1k) + beta lp_lq, the bound's value and weights, and wn_k d log p(x|z_1k) / d out.
    """

    mlp: Callable
    mlp_back: Callable
    head: Callable
    latent: Latent = NUMPY_LATENT  # the per-layer latent maths


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


class Layer(NamedTuple):
    """One stochastic layer's forward pass: q(z_l|z_{l-1}), its sample, and p(z_l|z_{l+1}) below the top."""

    mu: np.ndarray  # (N, Z) for l = 1, else (K, N, Z)
    lv: np.ndarray
    eps: np.ndarray  # (K, N, Z)
    z: np.ndarray  # (K, N, Z)
    sample_cache: tuple  # (sd, eps)
    enc_cache: tuple
    log_p: np.ndarray | None = None  # (K, N): log p(z_l|z_{l+1}); None at the top
    p_cache: tuple | None = None
    dec_cache: tuple | None = None  # dec_{l+1}'s, which gives p(z_l|z_{l+1})


class Forward(NamedTuple):
    """Everything one forward pass up to the likelihood computes; the backward reuses it and recomputes nothing."""

    layers: list  # [Layer], l = 1..L
    out: np.ndarray  # (K N, D_out): dec_1's output, the likelihood's parameters
    dec1_cache: tuple


def _head_forward(ops, tag, layers, h, activation):
    """ladder.gaussian_head through the backend's MLP ops.mlp, which takes rows (M, H_in)."""
    def mlp(layers, h, activation):
        out, cache = ops.mlp(tag, layers, h.reshape(-1, h.shape[-1]), activation)
        return out.reshape(*h.shape[:-1], out.shape[-1]), cache

    return gaussian_head(layers, h, activation, mlp)


def forward(params: LadderParams, arch: LadderArch, x, eps: list, ops: Ops = NUMPY) -> Forward:
    """Every encoder and sample bottom up, then every decoder and conditional prior; no checking."""
    act = arch.activation
    layers, h = [], x
    for l in range(1, arch.L + 1):
        mu, lv, enc_cache = _head_forward(ops, f"enc{l}", params.enc(l), h, act)  # at the sampled z_{l-1}
        h, sample_cache = ops.latent.sample(l, mu, lv, eps[l - 1])  # z_l (K, N, Z_l)
        layers.append(Layer(mu, lv, eps[l - 1], h, sample_cache, enc_cache))
    for l in range(2, arch.L + 1):  # p(z_{l-1}|z_l) from dec_l
        mp, lvp, dec_cache = _head_forward(ops, f"dec{l}", params.dec(l), layers[l - 1].z, act)
        log_p, p_cache = ops.latent.prior(l - 1, layers[l - 2].z, mp, lvp)
        layers[l - 2] = layers[l - 2]._replace(log_p=log_p, p_cache=p_cache, dec_cache=dec_cache)
    out, dec1_cache = ops.mlp("dec1", params.dec(1), layers[0].z.reshape(-1, arch.latents[0]), act)  # (K N, D_out)
    return Forward(layers, out, dec1_cache)


def latent_log_weights(f: Forward, analytic: bool = False):
    """lp_lq (K, N) = sum_{l<L} [log p(z_l|z_{l+1}) - log q(z_l|z_{l-1})] + log p(z_L) - log q(z_L|z_{L-1}), so that
    a_k = log p(x|z_1k) + beta lp_lq; with `analytic` the top pair is -KL(q(z_L|z_{L-1,k}) || N(0, I))."""
    top = f.layers[-1]
    if analytic:
        top_term = -kl_std_normal_forward(top.mu, top.lv)  # (K, N): one KL per sample k; (N,) when L = 1
    else:
        top_term = log_std_normal(top.z) - log_prob_eps(top.lv, top.eps)
    return sum_latent_terms(f, top_term, lambda layer: log_prob_eps(layer.lv, layer.eps))


def sum_latent_terms(f: Forward, top_term, log_q):
    """sum_{l<L} [layer.log_p - log_q(layer)] + top_term, broadcast to (K, N): latent_log_weights' sum, in its order,
    for a backend whose hooks computed log q (log_q(layer) -> (K, N)) and the top pair (top_term) its own way."""
    below = None
    for layer in f.layers[:-1]:
        term = layer.log_p - log_q(layer)
        below = term if below is None else below + term
    return np.broadcast_to(top_term if below is None else below + top_term, f.layers[-1].eps.shape[:2])


def _mlp_back(ops, tag, layers, cache, d, activation, need_dx: bool = True):
    """ops.mlp_back for inputs with leading axes: d (..., H_out) -> (grads, d input (..., H_in) or None)."""
    lead = d.shape[:-1]
    grads, dh = ops.mlp_back(tag, layers, cache, np.ascontiguousarray(d.reshape(-1, d.shape[-1])), activation, need_dx)
    return grads, (None if dh is None else dh.reshape(*lead, dh.shape[-1]))


def bound_and_grad_core(params, arch, x, eps, bound, kl, estimator, kl_weight=1.0, free_bits=0.0, ops: Ops = NUMPY):
    """The value (N,) and the gradient of its batch mean (LadderParams) for eps = [eps_1, ..., eps_L] (K, N, sum Z); no checking.

    free_bits is accepted for the Backend signature and must be 0 (npvae.vae.inputs.check_free_bits refuses it at the
    boundary; a backend's core called directly refuses it here rather than return a plain bound).
    DReG's squared weights are its gradient at beta = 1 only (Tucker et al. 2018, eq. 7; with beta they would be
    (1 - beta) w + beta w^2): npvae.vae.inputs.check_options refuses the IWAE with kl_weight != 1, which keeps it valid.
    """
    if free_bits:
        raise ValueError(f"free bits are implemented for the one-layer model only; got free_bits={free_bits} for {arch.spec}")
    t = x.dtype.type
    beta = t(kl_weight)
    act, L = arch.activation, arch.L
    est = ESTIMATORS[estimator]
    analytic = kl == "analytic"
    lat = ops.latent
    f = forward(params, arch, x, arch.split_noise(eps), ops)
    value, _, w, wn, dout = ops.head(arch, f.out, x, lat.log_weights(f, analytic), bound, kl, beta, True)

    # Generative side, weights wn on log p(x|z_1), beta wn on the latent priors: the decoders' gradients and the
    # path gradients dz_l.
    dec_grads = [None] * (L + 1)  # dec_grads[l]: dec_l's
    dec_grads[1], dz1 = _mlp_back(ops, "dec1", params.dec(1), f.dec1_cache, dout, act)
    dz = [dz1.reshape(f.layers[0].eps.shape)] + [None] * (L - 1)
    for l in range(2, L + 1):  # back through log p(z_{l-1}|z_l) and dec_l
        below = f.layers[l - 2]
        dz[l - 2], dp = lat.prior_back(l - 1, dz[l - 2], beta * wn, below)
        dec_grads[l], dz[l - 1] = _mlp_back(ops, f"dec{l}", params.dec(l), below.dec_cache, dp, act)

    # Encoder side, top down: each layer's rule (layer_backward), then enc_l's backward, whose input gradients
    # (live, and held for STL/DReG: enc_l's parameters held, its input gradient only) join the layer below's dz.
    enc_grads, up = [None] * (L + 1), []
    for l in range(L, 0, -1):
        layer = f.layers[l - 1]
        live, held = lat.layer_back(l, l == L, dz[l - 1], up, layer, w, wn, beta, analytic, est)
        enc_grads[l], dx = _mlp_back(ops, f"enc{l}", params.enc(l), layer.enc_cache, live, act, need_dx=l > 1)
        up = [dx]
        if held is not None:
            up.append(_mlp_back(ops, f"enc{l}", params.enc(l), layer.enc_cache, held, act)[1])
    return value, LadderParams(*enc_grads[1:], *dec_grads[:0:-1])


def bound_value_core(params, arch, x, eps, bound, kl, ops: Ops = NUMPY):
    """The bound per point (N,) without gradients; no checking."""
    f = forward(params, arch, x, arch.split_noise(eps), ops)
    return ops.head(arch, f.out, x, ops.latent.log_weights(f, kl == "analytic"), bound, kl, x.dtype.type(1), False)[0]


def log_weights_core(params, arch, x, eps, ops: Ops = NUMPY):
    """a_k = log p(x, z_k) - log q(z_k|x): (K, N), fresh; no checking."""
    f = forward(params, arch, x, arch.split_noise(eps), ops)
    return ops.head(arch, f.out, x, ops.latent.log_weights(f, False), "elbo", "mc", x.dtype.type(1), False)[1].copy()


def log_px_core(params, arch, x, k: int, rng, chunk: int, progress=None, ops: Ops = NUMPY):
    """Importance-sampled log p(x) (N,) as npvae.vae.importance.log_px, from `log_weights_core` chunk by chunk; no checking."""
    return log_px_stream(lambda p, a, x_, eps: log_weights_core(p, a, x_, eps, ops), params, arch, x, k, rng, chunk, progress)

