"""Numerically stable elementwise primitives: softplus and the logistic sigmoid, exact at |l| = 800.

Written once here for arrays; likelihoods and layers use these, never `log(sigmoid(l))`. The compiled
kernels use the same formulas for one element (npvae.maths.scalar).
"""

from __future__ import annotations

import numpy as np


def softplus(l: np.ndarray) -> np.ndarray:
    """softplus(l) = log(1 + e^l) = max(l, 0) + log1p(exp(-|l|)): no overflow for large |l|."""
    return np.maximum(l, l.dtype.type(0)) + np.log1p(np.exp(-np.abs(l)))


def sigmoid(l: np.ndarray) -> np.ndarray:
    """Branch-stable 1 / (1 + e^-l): both branches evaluate exp of a non-positive number."""
    e = np.exp(-np.abs(l))
    one = l.dtype.type(1)
    return np.where(l >= 0, one / (one + e), e / (one + e))
