"""The bounds and the encoder-gradient estimators, each a short function of its own, and the registry that names them.

The NumPy specification. A bound maps the log-weights of one batch, a: (K, N), to its value (N,) and
w = d value_n / d a_k: (K, N) (docs/theory.md, sections 2, 3 and 8):
- elbo_analytic: (1/K) sum_k log p(x|z_k), w = 1/K; the caller subtracts KL(q(z|x) || p(z))  (Kingma & Welling 2014, eq. 10)
- elbo_mc:       (1/K) sum_k a_k, w = 1/K,  a_k = log p(x|z_k) + log p(z_k) - log q(z_k|x)
- iwae:          LME_k a_k = logsumexp_k a_k - log K, w = softmax_k a_k       (Burda et al. 2016, eq. 8)
An estimator turns dz, the gradient of the batch mean through the decoder and the prior at the samples
z = mu + sigma eps, into (dmu, dlog_var) for the encoder; the decoder's gradient is the same for all:
- reparam: the total derivative of the sample estimate: log q written in eps has total derivative (0, -1/2) per dimension.
- stl:     "sticking the landing": drops the score term of log q (q's parameters held fixed) (Roeder et al. 2017).
- dreg:    doubly-reparameterised IWAE gradient, sum_k w_k^2 (d a_k / d z_k)(d z_k / d phi) (Tucker et al. 2018, eq. 7).
`ESTIMATORS` is the one table of which estimator applies to which (bound, kl) and what it holds fixed:
`VALID`, the input checks, the gradient checker's surrogates (npvae.checks.gradcheck) and the docs read it.
Shapes: mu, log_var (N, Z); eps, z, dz (K, N, Z); weights (K, N).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from .gaussian import log_prob_path_backward, sample_backward
from .lme import log_mean_exp_core, softmax_core

BOUNDS = ("elbo", "iwae")
KL_MODES = ("analytic", "mc")


def elbo_analytic(log_px_z):
    """(mean_k log p(x|z_k), w = 1/K): the reconstruction term of the analytic-KL ELBO."""
    K = log_px_z.shape[0]
    return log_px_z.mean(axis=0), np.full(log_px_z.shape, log_px_z.dtype.type(1.0 / K), dtype=log_px_z.dtype)


def elbo_mc(a):
    """(mean_k a_k, w = 1/K): the ELBO with a Monte Carlo KL."""
    K = a.shape[0]
    return a.mean(axis=0), np.full(a.shape, a.dtype.type(1.0 / K), dtype=a.dtype)


def iwae(a):
    """(LME_k a_k, w = softmax_k a_k): the importance-weighted bound and its normalised importance weights."""
    return log_mean_exp_core(a, axis=0), softmax_core(a, axis=0)


BOUND = {("elbo", "analytic"): elbo_analytic, ("elbo", "mc"): elbo_mc, ("iwae", "mc"): iwae}


def reparam(dz, sample_cache, log_var, w, wn, beta):
    """The reparameterisation gradient: back through z = mu + sigma eps, plus -beta log q's total derivative (0, +beta/2N)."""
    t = dz.dtype.type
    dmu, dlog_var = sample_backward(dz, sample_cache)
    return dmu, dlog_var + beta * t(0.5) / t(wn.shape[1])  # sum_k w_k = 1, over the N points of the batch mean


def stl(dz, sample_cache, log_var, w, wn, beta):
    """Sticking the landing: only the path derivative of -beta log q(z_k|x), (mu, log_var) held fixed."""
    dmu, dlog_var = sample_backward(dz, sample_cache)
    pmu, plv = log_prob_path_backward(beta * wn, log_var, sample_cache[1])
    return dmu - pmu, dlog_var - plv


def dreg(dz, sample_cache, log_var, w, wn, beta):
    """DReG: the STL path terms, each sample's reweighted once more by w_k (squared normalised weights).

    The one-layer rule, on the dz of the decoder and prior. The ladder (npvae.vae.ladder_objective) reweights every
    layer's dz by w itself and then calls `stl` with e = wn w: calling this there would weight by w^3."""
    dmu, dlog_var = sample_backward(dz * w[..., None], sample_cache)
    pmu, plv = log_prob_path_backward(beta * wn * w, log_var, sample_cache[1])
    return dmu - pmu, dlog_var - plv


class Estimator(NamedTuple):
    """An encoder-gradient estimator: its latent backward, the (bound, kl) pairs it is defined for, and what its
    surrogate holds fixed ("stop-gradient") at the point of evaluation (npvae.checks.gradcheck.surrogate)."""

    latent_backward: Callable  # (dz, sample_cache, log_var, w, wn, beta) -> (dmu, dlog_var)
    pairs: tuple
    q_held: bool  # log q(z|x)'s parameters held fixed: its score term is dropped
    squared_weights: bool  # the path terms weighted by w_k^2 and the decoder's by LME (DReG)
    reference: str


ESTIMATORS = {
    "reparam": Estimator(reparam, (("elbo", "analytic"), ("elbo", "mc"), ("iwae", "mc")), False, False, "Kingma & Welling 2014"),
    "stl": Estimator(stl, (("elbo", "mc"),), True, False, "Roeder et al. 2017"),
    "dreg": Estimator(dreg, (("iwae", "mc"),), True, True, "Tucker et al. 2018"),
}
# Which estimators each (bound, kl) pair has; anything else is refused with this table in the message.
VALID = {pair: tuple(name for name, e in ESTIMATORS.items() if pair in e.pairs) for pair in BOUND}
