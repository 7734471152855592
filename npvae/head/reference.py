"""npvae's bound per point at a user's head, and the gradients of the batch sum of it (or of the estimator's surrogate)
with respect to the head's tensors, all in float64: the reference the head check compares with.

The head, written as a function of independent inputs (as `jax.grad` over a head function sees it):
    x (N, D), mu (N, Z), s (N, Z) the encoder's scale output, z (K, N, Z), out (K, N, D) [, out_scale (K, N, D)]
    r_k   = log p(x | out_k)                                    (npvae.head.likelihood)
    a_k   = r_k + beta [log N(z_k; 0, I) - log N(z_k; mu, e^v)],  v = log_var_of(scale, s)   (npvae.head.scales)
    elbo, analytic:  b = mean_k r_k - beta sum_j max(lambda, KL_j),  KL_j = (mu_j^2 + expm1(v_j) - v_j) / 2
    elbo, mc:        b = mean_k a_k                 c_k = 1 / K
    iwae:            b = logsumexp_k a_k - log K    c_k = w_k = softmax_k a_k                 (Burda et al. 2016, eq. 8)
Partial derivatives of B = sum_n b_n (z and out independent of mu and s here; the chain rule through
z = mu + sigma eps and the decoder is the user's autograd's):
    dB/dout_k = c_k dr_k/dout_k
    dB/dz_k   = c_k beta [-z_k + (z_k - mu) e^-v]                         (mc, iwae; 0 for analytic)
    dB/dmu    = -beta 1[KL_j > lambda] mu                                (analytic)
              = -sum_k c_k beta (z_k - mu) e^-v                           (mc, iwae, reparam: d(-log q)/dmu)
    dB/dv     = -beta 1[KL_j > lambda] expm1(v) / 2                       (analytic)
              = sum_k c_k beta (1 - (z_k - mu)^2 e^-v) / 2                (mc, iwae, reparam: d(-log q)/dv)
    dB/ds     = dB/dv dv/ds
Estimators change what the encoder receives (npvae.maths.estimators; gradients of surrogates with stop-gradients):
    stl   (Roeder et al. 2017)  log q's mu and v held fixed: dB/dmu = dB/ds = 0; out and z as reparam's (c = 1/K)
    dreg  (Tucker et al. 2018)  the encoder's surrogate sum_k stop(w_k)^2 a_k with q's parameters held fixed:
                                c_k = w_k^2 for out and z, dB/dmu = dB/ds = 0. The decoder's own gradient is IWAE's
                                reparameterised one at the head: check it with estimator="reparam".
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..maths.lme import log_mean_exp_core, softmax_core
from .likelihood import LOG2PI, log_px
from .scales import dlog_var_ds, log_var_of


class Reference(NamedTuple):
    """The bound per point, its terms, and the partial gradients of the batch sum (of the estimator's surrogate);
    for DReG also the surrogate's value sum_k w_k^2 a_k per point, which a DReG loss may return instead of the bound."""

    values: np.ndarray  # (N,)
    recon: np.ndarray  # (N,) mean_k log p(x|z_k)
    kl: np.ndarray  # (N,) the analytic KL (with free bits), or mean_k [log q(z_k) - log p(z_k)]
    grads: dict  # "out", "out_scale", "z", "mu", "scale" -> arrays (None where the head has no such tensor)
    surrogate: np.ndarray | None = None  # (N,) DReG's sum_k w_k^2 a_k


def log_q(z, mu, v):
    """log N(z; mu, diag(e^v)) written in z: (K, N, Z) -> (K, N)."""
    r = z - mu
    return -0.5 * (LOG2PI + v + r * r * np.exp(-v)).sum(-1)


def log_prior(z):
    """log N(z; 0, I): (K, N, Z) -> (K, N)."""
    return -0.5 * (LOG2PI + z * z).sum(-1)


def kl_per_dim(mu, v):
    """KL(N(mu, e^v) || N(0, 1)) per dimension, (mu^2 + expm1(v) - v) / 2 (Kingma & Welling 2014, App. B)."""
    return 0.5 * (mu * mu + np.expm1(v) - v)


def reference(case, *, estimator: str | None = None, scale_kind: str | None = None, squared: bool | None = None, q_held: bool | None = None,
              flip=None) -> Reference:
    """The reference at `case` (npvae.head.case.HeadCase); keywords override what a hypothesis changes.

    scale_kind: read the scale output another way (the hypotheses of npvae.head.diagnose); squared, q_held: an
    estimator's weights w^2 or w, and whether q's parameters are held in log q (defaults: the estimator's own);
    flip: (N, Z) mask of free-bits dimensions to take on the other side of the floor (a KL_j equal to lambda in the
    user's rounding).
    """
    est = estimator or case.estimator
    beta, lam = case.kl_weight, case.free_bits
    kind = scale_kind or case.scale_kind
    v = log_var_of(kind, case.s)
    r, dr_out, dr_scale = log_px(case.lik, case.out, case.out_scale, case.t)  # (K, N), (K, N, D)
    K = r.shape[0]
    grads = {"out_scale": None}
    surrogate = None
    if case.kl == "analytic":
        kl_j = kl_per_dim(case.mu, v)
        above = kl_j > lam if flip is None else (kl_j > lam) ^ flip
        kl = np.where(above, kl_j, lam).sum(-1)
        values = r.mean(0) - beta * kl
        c = np.full(r.shape, 1.0 / K)
        grads["z"] = np.zeros_like(case.z)
        grads["mu"] = -beta * above * case.mu
        dv = -beta * above * 0.5 * np.expm1(v)
    else:
        lq = log_q(case.z, case.mu, v)
        a = r + beta * (log_prior(case.z) - lq)
        kl = (lq - log_prior(case.z)).mean(0)
        if case.bound == "iwae":
            values, w = log_mean_exp_core(a, axis=0), softmax_core(a, axis=0)
        else:
            values, w = a.mean(0), np.full(a.shape, 1.0 / K)
        sq = (est == "dreg") if squared is None else squared
        held = (est in ("stl", "dreg")) if q_held is None else q_held
        c = w * w if sq else w
        if sq:
            surrogate = (c * a).sum(0)
        e = case.z - case.mu
        iv = np.exp(-v)
        grads["z"] = c[..., None] * beta * (-case.z + e * iv)
        if held:
            grads["mu"], dv = np.zeros_like(case.mu), np.zeros_like(v)
        else:
            grads["mu"] = -(c[..., None] * beta * e * iv).sum(0)
            dv = (c[..., None] * beta * 0.5 * (1.0 - e * e * iv)).sum(0)
    grads["out"] = c[..., None] * dr_out
    if dr_scale is not None:
        grads["out_scale"] = c[..., None] * dr_scale
    grads["scale"] = dv * dlog_var_ds(kind, case.s)
    return Reference(values, r.mean(0), kl, grads, surrogate)
