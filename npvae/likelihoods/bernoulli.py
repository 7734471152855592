"""The Bernoulli likelihood on logits: log Bern(x | sigmoid(l)) = sum_d [x_d l_d - softplus(l_d)] (docs/maths.md, "Bernoulli on logits").

The decoder outputs logits, never probabilities, so nothing is clipped and |l| = 800 is exact.
Shapes: out (K, N, D), x (N, D) binary.
"""

from __future__ import annotations

import numpy as np

from ..maths.scalar import softplus_sigmoid
from ..maths.stable import sigmoid, softplus

NAME = "bernoulli"


def check_constants(lik) -> None:
    """Nothing to check: the Bernoulli on logits has no constant."""
# Burda et al. 2016 (yburda/iwae) start the output bias at the logit of the mean training pixel, clipped
# to [0.001, 0.999] so that a pixel that is never on does not start at logit -inf.
MARGINAL_CLIP = 1e-3


def out_dim(D: int) -> int:
    """D logits."""
    return D


def forward(lik, logits, x):
    """log Bern(x | sigmoid(l)) = sum_d [x l - softplus(l)]: (K, N, D), (N, D) -> (K, N)."""
    return (x * logits - softplus(logits)).sum(axis=-1), (logits, x)


def backward(dlogp, cache):
    """d/dl = x - sigmoid(l), exactly; dlogp: (K, N) -> (K, N, D)."""
    logits, x = cache
    return dlogp[..., None] * (x - sigmoid(logits))


def mean(out):
    """E[x | z] = sigmoid(l)."""
    return sigmoid(out)


def output_bias(lik, m):
    """logit(clip(mean pixel, 1e-3, 1 - 1e-3)) (Burda et al. 2016, their code): the clip is their rule, not a guard on log(0)."""
    if np.any((m < 0) | (m > 1)):
        raise ValueError("a Bernoulli decoder's output bias needs mean pixels in [0, 1]")
    p = np.clip(m, MARGINAL_CLIP, 1.0 - MARGINAL_CLIP)
    return np.log(p) - np.log1p(-p)


def check_data(lik, x):
    """Binary x only: the likelihood of a grey level is not a probability."""
    if not np.all((x == 0) | (x == 1)):
        raise ValueError(
            "the Bernoulli likelihood needs binary x (every value 0 or 1); binarise grey-level data first "
            "(e.g. --binarize) or choose a Gaussian likelihood"
        )


def constants(lik, t):
    """The kernel's two constants (none used), in float type t."""
    return t(0.0), t(0.0)


def elem(x, row, d, D, c1, c2, grad):
    """One element for the compiled kernels: log Bern(x | sigmoid(row[d])); with grad, row[d] <- x - sigmoid(row[d])."""
    sp, sg = softplus_sigmoid(row[d])
    lp = x * row[d] - sp
    if grad:
        row[d] = x - sg
    return lp
