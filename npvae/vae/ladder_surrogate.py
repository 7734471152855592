"""The L-layer estimators' surrogates: scalars whose gradient is each estimator's, from forward passes only.

What each estimator holds fixed is npvae.vae.ladder_objective's module docstring; log q is written in z-form
here (not in eps), so no line of the hand-written backward is reused. npvae.checks.gradcheck.surrogate calls this
for a LadderArch; tests/test_ladder.py differentiates it element by element.
"""

from __future__ import annotations

import numpy as np

from .. import likelihoods as lik
from ..maths.estimators import ESTIMATORS
from ..maths.gaussian import kl_std_normal_forward, log_prob, log_std_normal, sample_forward
from .ladder import LadderArch, LadderParams, decode_x, gaussian_head
from ..maths.lme import log_mean_exp_core, softmax_core


def _log_weights_z(live, arch, x, eps, q=None, kl_weight=1.0, analytic=False):
    """a_k (K, N) with the samples and the decoders from `live`, log q in z-form at `q`'s encoders (default live).

    Held encoders keep their live inputs: log q(z_l|z_{l-1}; phi_l o) is evaluated at the live z_{l-1}."""
    act, L = arch.activation, arch.L
    zs, h = [], x
    for l in range(1, L + 1):
        mu, lv, _ = gaussian_head(live.enc(l), h, act)
        h = sample_forward(mu, lv, eps[l - 1])[0]
        zs.append(h)
    enc = live if q is None else q
    below = [x] + zs[:-1]
    lq = [gaussian_head(enc.enc(l), below[l - 1], act)[:2] for l in range(1, L + 1)]  # (mu_l, lv_l)
    total = 0.0
    for l in range(1, L):  # log p(z_l|z_{l+1}) - log q(z_l|z_{l-1})
        mp, lvp, _ = gaussian_head(live.dec(l + 1), zs[l], act)
        total = total + log_prob(zs[l - 1], mp, lvp) - log_prob(zs[l - 1], *lq[l - 1])
    mu, lv = lq[-1]
    top = -kl_std_normal_forward(mu, lv) if analytic else log_std_normal(zs[-1]) - log_prob(zs[-1], mu, lv)
    log_px = lik.forward(arch.likelihood, decode_x(live, arch, zs[0]), x)[0]
    return log_px + kl_weight * (total + top)


def surrogate(live: LadderParams, base: LadderParams, arch: LadderArch, x, eps: list, bound, kl, estimator,
              kl_weight=1.0) -> float:
    """The scalar whose gradient at live == base is the estimator's gradient of the batch-mean bound; no checking."""
    held = ESTIMATORS[estimator]
    L = arch.L
    if held.squared_weights:
        dec = _log_weights_z(LadderParams(*base[:L], *live[L:]), arch, x, eps)
        w_base = softmax_core(_log_weights_z(base, arch, x, eps), axis=0)
        a_path = _log_weights_z(LadderParams(*live[:L], *base[L:]), arch, x, eps, base)
        return float(np.mean(log_mean_exp_core(dec, axis=0) + (w_base**2 * a_path).sum(axis=0)))
    a = _log_weights_z(live, arch, x, eps, base if held.q_held else None, kl_weight, kl == "analytic")
    return float(np.mean(a.mean(axis=0) if bound == "elbo" else log_mean_exp_core(a, axis=0)))
