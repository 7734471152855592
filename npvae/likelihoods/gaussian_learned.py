"""The Gaussian likelihood with a learned per-pixel variance and a soft floor (docs/maths.md, "Gaussian with a learned variance and a soft floor").

log N(x; m, diag(e^s)) with s = s_min + softplus(raw - s_min); the decoder outputs [m, raw] (2 D).
The floor keeps the likelihood bounded: it is unbounded as a variance goes to 0.
Shapes: out (K, N, 2D), x (N, D).
"""

from __future__ import annotations

import math

import numpy as np

from ..maths.scalar import like, softplus_sigmoid
from ..maths.stable import sigmoid, softplus

NAME = "gaussian-learned"


def check_constants(lik) -> None:
    """min_log_var, the soft floor of the log-variance, must be finite."""
    if not np.isfinite(lik.min_log_var):
        raise ValueError(f"min_log_var must be finite, got {lik.min_log_var}")


def out_dim(D: int) -> int:
    """D means, then D raw log-variances."""
    return 2 * D


def forward(lik, out, x):
    """log N(x; m, diag(exp(s))), out = [m, raw]: (K, N, 2D) -> (K, N)."""
    t = x.dtype.type
    D = x.shape[-1]
    mean, raw = out[..., :D], out[..., D:]
    smin = t(lik.min_log_var)
    s = smin + softplus(raw - smin)
    r = x - mean
    q = r * r * np.exp(-s)  # (x - m)^2 / variance
    logp = t(-0.5) * (t(np.log(2.0 * np.pi)) + s + q).sum(axis=-1)
    return logp, (r, s, q, raw, smin)


def backward(dlogp, cache):
    """d/dm = (x - m) exp(-s); d/ds = -1/2 [1 - (x - m)^2 exp(-s)]; ds/draw = sigmoid(raw - s_min)."""
    r, s, q, raw, smin = cache
    d = dlogp[..., None]
    dmean = d * r * np.exp(-s)
    draw = d * raw.dtype.type(-0.5) * (raw.dtype.type(1) - q) * sigmoid(raw - smin)
    return np.concatenate([dmean, draw], axis=-1)


def mean(out):
    """E[x | z] = m, the first half of the output."""
    return out[..., : out.shape[-1] // 2]


def output_bias(lik, m):
    """The data mean, and raw log-variances 0 (as without this initialisation)."""
    return np.concatenate([m, np.zeros_like(m)])


def check_data(lik, x):
    """Any finite x."""


def constants(lik, t):
    """(s_min, log 2 pi) in float type t."""
    return t(lik.min_log_var), t(math.log(2.0 * math.pi))


def elem(x, row, d, D, c1, c2, grad):
    """One element: log N(x; m, e^s), m = row[d], raw = row[D + d], c1 = s_min, c2 = log 2 pi; with grad, row[d] and
    row[D + d] <- d/dm and d/draw."""
    sp, sg = softplus_sigmoid(row[D + d] - c1)
    s = c1 + sp
    es = math.exp(-s)  # s >= s_min may be negative: not exp_neg's range
    r = x - row[d]
    q = r * r * es  # (x - m)^2 / variance
    lp = like(x, -0.5) * (c2 + s + q)
    if grad:
        row[d] = r * es
        row[D + d] = like(x, -0.5) * (like(x, 1.0) - q) * sg
    return lp
