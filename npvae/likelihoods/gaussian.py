"""The Gaussian likelihood with a fixed variance: log N(x; m, sigma2 I) (docs/maths.md, "Gaussian with a fixed variance").

Shapes: out (K, N, D) means, x (N, D).
"""

from __future__ import annotations

import math

import numpy as np

from .. import _validate
from ..maths.scalar import like

NAME = "gaussian"


def check_constants(lik) -> None:
    """sigma2, the fixed variance, must be a positive finite number."""
    _validate.positive_scalar("sigma2", lik.sigma2)


def out_dim(D: int) -> int:
    """D means."""
    return D


def forward(lik, mean, x):
    """log N(x; m, sigma2 I) = -1/2 sum_d [log 2pi + log sigma2 + (x - m)^2 / sigma2]: -> (K, N)."""
    t = x.dtype.type
    r = x - mean
    D = x.shape[-1]
    logp = t(-0.5) * (r * r).sum(axis=-1) / t(lik.sigma2) - t(0.5 * D * np.log(2.0 * np.pi * lik.sigma2))
    return logp, (r, t(lik.sigma2))


def backward(dlogp, cache):
    """d/dm = (x - m) / sigma2."""
    r, sigma2 = cache
    return dlogp[..., None] * r / sigma2


def mean(out):
    """E[x | z] = m."""
    return out


def output_bias(lik, m):
    """The data mean."""
    return m.copy()


def check_data(lik, x):
    """Any finite x; sigma2 must be a positive number in x's float type."""
    if not 0 < x.dtype.type(lik.sigma2) < np.inf:
        raise ValueError(f"sigma2 = {lik.sigma2} is not a positive finite {x.dtype} number")


def constants(lik, t):
    """(sigma2, log 2 pi sigma2) in float type t."""
    return t(lik.sigma2), t(math.log(2.0 * math.pi * lik.sigma2))


def elem(x, row, d, D, c1, c2, grad):
    """One element: log N(x; m, sigma2) = -1/2 [log 2 pi sigma2 + (x - m)^2 / sigma2], m = row[d], c1 = sigma2, c2 = log 2 pi sigma2;
    with grad, row[d] <- (x - m) / sigma2."""
    r = x - row[d]
    lp = like(x, -0.5) * (c2 + r * r / c1)
    if grad:
        row[d] = r / c1
    return lp
