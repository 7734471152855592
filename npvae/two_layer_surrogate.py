"""The two-layer estimators' surrogates: scalars whose gradient is each estimator's, from forward passes only.

What each estimator holds fixed is npvae.two_layer_objective's module docstring; log q is written in z-form
here (not in eps), so no line of the hand-written backward is reused. npvae.gradcheck.surrogate calls this
for a TwoLayerArch; tests/test_two_layer.py differentiates it element by element.
"""

from __future__ import annotations

import numpy as np

from . import likelihoods as lik
from .estimators import ESTIMATORS
from .gaussian import kl_std_normal_forward, log_prob, log_std_normal, sample_forward
from .lme import log_mean_exp_core, softmax_core
from .two_layer import TwoLayerArch, TwoLayerParams, decode1, gaussian_head


def _log_weights_z(live, arch, x, eps1, eps2, q=None, kl_weight=1.0, analytic=False):
    """a_k (K, N) with z1, z2 and the decoders from `live`, log q in z-form at `q`'s encoders (default live)."""
    act = arch.activation
    mu1, lv1, _ = gaussian_head(live.enc1, x, act)
    z1 = sample_forward(mu1, lv1, eps1)[0]
    mu2, lv2, _ = gaussian_head(live.enc2, z1, act)
    z2 = sample_forward(mu2, lv2, eps2)[0]
    mp, lvp, _ = gaussian_head(live.dec2, z2, act)
    log_px = lik.forward(arch.likelihood, decode1(live, arch, z1)[0], x)[0]
    if q is not None:
        mu1, lv1, _ = gaussian_head(q.enc1, x, act)
        mu2, lv2, _ = gaussian_head(q.enc2, z1, act)  # held parameters, live input z1: the z1 path is kept
    top = -kl_std_normal_forward(mu2, lv2) if analytic else log_std_normal(z2) - log_prob(z2, mu2, lv2)
    return log_px + kl_weight * (log_prob(z1, mp, lvp) - log_prob(z1, mu1, lv1) + top)


def surrogate(live: TwoLayerParams, base: TwoLayerParams, arch: TwoLayerArch, x, eps1, eps2, bound, kl, estimator,
              kl_weight=1.0) -> float:
    """The scalar whose gradient at live == base is the estimator's gradient of the batch-mean bound; no checking."""
    held = ESTIMATORS[estimator]
    if held.squared_weights:
        dec = _log_weights_z(TwoLayerParams(base.enc1, base.enc2, live.dec2, live.dec1), arch, x, eps1, eps2)
        w_base = softmax_core(_log_weights_z(base, arch, x, eps1, eps2), axis=0)
        a_path = _log_weights_z(TwoLayerParams(live.enc1, live.enc2, base.dec2, base.dec1), arch, x, eps1, eps2, base)
        return float(np.mean(log_mean_exp_core(dec, axis=0) + (w_base**2 * a_path).sum(axis=0)))
    a = _log_weights_z(live, arch, x, eps1, eps2, base if held.q_held else None, kl_weight, kl == "analytic")
    return float(np.mean(a.mean(axis=0) if bound == "elbo" else log_mean_exp_core(a, axis=0)))
