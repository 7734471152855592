"""A multilayer perceptron: dense layers with an activation between them and none after the last.

Parameters are a tuple of `Dense`; the cache of a forward pass lives only until its backward.
"""

from __future__ import annotations

import numpy as np

from .layers import Dense, activation_backward, activation_forward, dense_backward, dense_forward, dense_init


def mlp_init(rng: np.random.Generator, sizes, activation: str, dtype) -> tuple[Dense, ...]:
    """Layers sizes[0] -> sizes[1] -> ... -> sizes[-1]; the output layer gets Glorot (it has no activation)."""
    n = len(sizes) - 1
    return tuple(
        dense_init(rng, sizes[i], sizes[i + 1], activation if i < n - 1 else "identity", dtype) for i in range(n)
    )


def mlp_forward(layers: tuple[Dense, ...], x, activation: str):
    """(M, H_0) -> (M, H_L), activation after every layer but the last."""
    caches = []
    h = x
    for i, p in enumerate(layers):
        a, dcache = dense_forward(p, h)
        if i < len(layers) - 1:
            h, acache = activation_forward(activation, a)
        else:
            h, acache = a, None
        caches.append((dcache, acache))
    return h, (tuple(layers), activation, caches)


def mlp_backward(dout, cache, need_dx: bool = True):
    """Back through the layers: dout (M, H_L) -> (grads as a tuple of Dense, dx (M, H_0) or None)."""
    layers, activation, caches = cache
    grads = [None] * len(layers)
    d = dout
    for i in reversed(range(len(layers))):
        dcache, acache = caches[i]
        if i < len(layers) - 1:
            d = activation_backward(activation, d, acache)
        grads[i], d = dense_backward(d, dcache, layers[i], need_dx or i > 0)
    return tuple(grads), d


def mlp_forward_rows(layers, h, activation: str):
    """`mlp_forward` over leading axes: h (..., H_0) -> ((..., H_L), the cache of its rows as (M, H) arrays)."""
    lead = h.shape[:-1]
    out, cache = mlp_forward(layers, h.reshape(-1, h.shape[-1]), activation)
    return out.reshape(*lead, out.shape[-1]), cache
