"""Decoder likelihoods log p(x|z), each taking the decoder's raw output and returning (K, N) log-probs.

Shapes: out (K, N, D_out), x (N, D). Each forward returns (log_p, cache); each backward maps
dlog_p: (K, N) to dout: (K, N, D_out). The decoder never outputs probabilities, only logits or
Gaussian parameters, so nothing is clipped. Formulas: MATHS.md, "Decoder likelihoods".
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .stable import sigmoid, softplus

LIKELIHOODS = ("bernoulli", "gaussian", "gaussian-learned")


class Likelihood(NamedTuple):
    """Which likelihood, and its constant: `sigma2` for "gaussian", the soft floor `min_log_var` for "gaussian-learned"."""

    name: str = "bernoulli"
    sigma2: float = 1.0
    min_log_var: float = -6.0

    def out_dim(self, D: int) -> int:
        """Width of the decoder's output: D logits or means, or 2 D (means then raw log-variances)."""
        return 2 * D if self.name == "gaussian-learned" else D


def bernoulli_forward(logits, x):
    """log Bern(x | sigmoid(l)) = sum_d [x l - softplus(l)]: (K, N, D), (N, D) -> (K, N)."""
    return (x * logits - softplus(logits)).sum(axis=-1), (logits, x)


def bernoulli_backward(dlogp, cache):
    """d/dl = x - sigmoid(l), exactly; dlogp: (K, N) -> (K, N, D)."""
    logits, x = cache
    return dlogp[..., None] * (x - sigmoid(logits))


def gaussian_forward(mean, x, sigma2: float):
    """log N(x; m, sigma2 I) = -1/2 sum_d [log 2pi + log sigma2 + (x - m)^2 / sigma2]: -> (K, N)."""
    t = x.dtype.type
    r = x - mean
    D = x.shape[-1]
    logp = t(-0.5) * (r * r).sum(axis=-1) / t(sigma2) - t(0.5 * D * np.log(2.0 * np.pi * sigma2))
    return logp, (r, t(sigma2))


def gaussian_backward(dlogp, cache):
    """d/dm = (x - m) / sigma2."""
    r, sigma2 = cache
    return dlogp[..., None] * r / sigma2


def gaussian_learned_forward(out, x, min_log_var: float):
    """log N(x; m, diag(exp(s))) with s = s_min + softplus(raw - s_min), out = [m, raw]: (K, N, 2D) -> (K, N).

    The soft floor keeps the likelihood bounded: it is unbounded as a variance goes to 0 (MATHS.md).
    """
    t = x.dtype.type
    D = x.shape[-1]
    mean, raw = out[..., :D], out[..., D:]
    s = t(min_log_var) + softplus(raw - t(min_log_var))
    r = x - mean
    q = r * r * np.exp(-s)  # (x - m)^2 / variance
    logp = t(-0.5) * (t(np.log(2.0 * np.pi)) + s + q).sum(axis=-1)
    return logp, (r, s, q, raw, t(min_log_var))


def gaussian_learned_backward(dlogp, cache):
    """d/dm = (x - m) exp(-s); d/ds = -1/2 [1 - (x - m)^2 exp(-s)]; ds/draw = sigmoid(raw - s_min)."""
    r, s, q, raw, smin = cache
    d = dlogp[..., None]
    dmean = d * r * np.exp(-s)
    draw = d * raw.dtype.type(-0.5) * (raw.dtype.type(1) - q) * sigmoid(raw - smin)
    return np.concatenate([dmean, draw], axis=-1)


def forward(lik: Likelihood, out, x):
    """Dispatch to the likelihood's forward: (K, N, D_out), (N, D) -> ((K, N), cache)."""
    if lik.name == "bernoulli":
        return bernoulli_forward(out, x)
    if lik.name == "gaussian":
        return gaussian_forward(out, x, lik.sigma2)
    return gaussian_learned_forward(out, x, lik.min_log_var)


def backward(lik: Likelihood, dlogp, cache):
    """Dispatch to the likelihood's backward: (K, N) -> (K, N, D_out)."""
    if lik.name == "bernoulli":
        return bernoulli_backward(dlogp, cache)
    if lik.name == "gaussian":
        return gaussian_backward(dlogp, cache)
    return gaussian_learned_backward(dlogp, cache)


# Burda et al. 2016 (yburda/iwae) start the Bernoulli output bias at the logit of the mean training pixel, clipped
# to [0.001, 0.999] so that a pixel that is never on does not start at logit -inf.
MARGINAL_CLIP = 1e-3


def output_bias_from_data(lik: Likelihood, x_mean) -> np.ndarray:
    """The decoder output bias that makes p(x | z) match the data's per-pixel marginals before training: (D,) -> (D_out,).

    Bernoulli: logit(clip(mean, 1e-3, 1 - 1e-3)) (Burda et al. 2016, their code); Gaussian: the data mean;
    learned Gaussian: the data mean, and raw log-variances 0 (as without this initialisation). float64.
    """
    m = np.asarray(x_mean, dtype=np.float64)
    if lik.name == "bernoulli":
        if np.any((m < 0) | (m > 1)):
            raise ValueError("a Bernoulli decoder's output bias needs mean pixels in [0, 1]")
        p = np.clip(m, MARGINAL_CLIP, 1.0 - MARGINAL_CLIP)  # the clip is Burda et al.'s rule, not a guard on log(0)
        return np.log(p) - np.log1p(-p)
    if lik.name == "gaussian":
        return m.copy()
    return np.concatenate([m, np.zeros_like(m)])


def mean(lik: Likelihood, out):
    """The decoder's mean of x: sigmoid(logits) for Bernoulli, m for the Gaussians (for pictures and samples)."""
    if lik.name == "bernoulli":
        return sigmoid(out)
    D = out.shape[-1] // 2 if lik.name == "gaussian-learned" else out.shape[-1]
    return out[..., :D]
