"""MLP building blocks as forward/backward pairs: a dense layer and the activations.

Each `*_forward` returns (out, cache); each `*_backward(dout, cache)` returns the input gradient
(and parameter gradients for dense). Shapes: x (M, H_in), W (H_in, H_out), b (H_out,).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..maths.stable import sigmoid, softplus

ACTIVATIONS = ("identity", "relu", "tanh", "softplus")


class Dense(NamedTuple):
    """A dense layer's parameters: y = x @ W + b."""

    W: np.ndarray  # (H_in, H_out)
    b: np.ndarray  # (H_out,)


def dense_init(rng: np.random.Generator, n_in: int, n_out: int, activation: str, dtype) -> Dense:
    """He-normal for ReLU (He et al. 2015), Glorot-uniform otherwise (Glorot & Bengio 2010); zero bias."""
    if activation == "relu":
        W = rng.standard_normal((n_in, n_out)) * np.sqrt(2.0 / n_in)
    else:
        limit = np.sqrt(6.0 / (n_in + n_out))
        W = rng.uniform(-limit, limit, size=(n_in, n_out))
    return Dense(W.astype(dtype), np.zeros(n_out, dtype=dtype))


def dense_forward(p: Dense, x):
    """y = x W + b: (M, H_in) -> (M, H_out)."""
    return x @ p.W + p.b, x


def dense_backward(dy, x, p: Dense, need_dx: bool = True):
    """dW = x^T dy, db = sum_m dy, dx = dy W^T (None when the input is data and needs no gradient)."""
    return Dense(x.T @ dy, dy.sum(axis=0)), (dy @ p.W.T if need_dx else None)


def activation_forward(name: str, a):
    """y = f(a) for f in ACTIVATIONS; the cache is whatever the backward needs (input or output)."""
    if name == "identity":
        return a, None
    if name == "relu":
        return np.maximum(a, a.dtype.type(0)), a > 0
    if name == "tanh":
        y = np.tanh(a)
        return y, y
    return softplus(a), a


def activation_backward(name: str, dy, cache):
    """da = dy * f'(a): relu' = [a > 0], tanh' = 1 - y^2, softplus' = sigmoid(a)."""
    if name == "identity":
        return dy
    if name == "relu":
        return dy * cache
    if name == "tanh":
        return dy * (dy.dtype.type(1) - cache * cache)
    return dy * sigmoid(cache)
