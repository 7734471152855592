"""Optimisers as pure update functions on lists of arrays: state in, state out, nothing owned.

They DESCEND: pass the gradient of the loss, i.e. minus the gradient of the bound. Semantics follow
torch.optim.SGD (momentum, dampening 0, no Nesterov) and torch.optim.Adam (Kingma & Ba 2015,
bias-corrected; torch's formula `p -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps)`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class SGDState(NamedTuple):
    step: int
    momentum_buf: tuple  # one array per parameter (zeros before the first step)


class AdamState(NamedTuple):
    step: int
    m: tuple  # first-moment estimates
    v: tuple  # second-moment estimates


def _check(params, grads, *state) -> None:
    """Every gradient and state array matches its parameter in shape and dtype (no silent upcast)."""
    for what, arrays in (("grads", grads), *((f"state[{i}]", a) for i, a in enumerate(state))):
        if len(arrays) != len(params):
            raise ValueError(f"{what} has {len(arrays)} arrays for {len(params)} parameters")
        for i, (p, g) in enumerate(zip(params, arrays)):
            if not (isinstance(g, np.ndarray) and isinstance(p, np.ndarray)) or g.shape != p.shape or g.dtype != p.dtype:
                raise ValueError(f"{what}[{i}] must match parameter {i} ({getattr(p, 'shape', '?')}, {getattr(p, 'dtype', '?')}); "
                                 f"got {getattr(g, 'shape', type(g).__name__)}, {getattr(g, 'dtype', '')}")


def sgd_init(params) -> SGDState:
    return SGDState(0, tuple(np.zeros_like(p) for p in params))


def sgd_update(params, grads, state: SGDState, lr: float, momentum: float = 0.0):
    """buf = momentum buf + g (buf = g on the first step, as torch), p -= lr buf."""
    _check(params, grads, state.momentum_buf)
    new_p, new_buf = [], []
    for p, g, b in zip(params, grads, state.momentum_buf):
        t = p.dtype.type
        b = g.copy() if state.step == 0 or momentum == 0 else t(momentum) * b + g
        new_p.append(p - t(lr) * b)
        new_buf.append(b)
    return new_p, SGDState(state.step + 1, tuple(new_buf))


def adam_init(params) -> AdamState:
    return AdamState(0, tuple(np.zeros_like(p) for p in params), tuple(np.zeros_like(p) for p in params))


def adam_update(params, grads, state: AdamState, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8):
    """One Adam step: m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; p -= lr/bc1 m / (sqrt(v)/sqrt(bc2) + eps)."""
    _check(params, grads, state.m, state.v)
    b1, b2 = betas
    step = state.step + 1
    bc1, bc2 = 1.0 - b1**step, 1.0 - b2**step
    new_p, new_m, new_v = [], [], []
    for p, g, m, v in zip(params, grads, state.m, state.v):
        t = p.dtype.type
        m = t(b1) * m + t(1.0 - b1) * g
        v = t(b2) * v + t(1.0 - b2) * (g * g)
        denom = np.sqrt(v) / t(np.sqrt(bc2)) + t(eps)
        new_p.append(p - t(lr / bc1) * m / denom)
        new_m.append(m)
        new_v.append(v)
    return new_p, AdamState(step, tuple(new_m), tuple(new_v))
