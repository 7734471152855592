"""Which scaling of npvae's bound a user's loss is: the reductions people write, by name.

A loss L is compared with alpha * sum_n b_n (a scalar) or alpha * b_n (per point), b the bound per point (what is
maximised), for the alphas below; the first that agrees to the dtype's tolerance names the reduction. Gradients
are then those of alpha * (the bound's batch sum), so "the gradient of -mean" is checked as exactly that.
"""

from __future__ import annotations

import numpy as np

# name -> (alpha as a function of N, D, K, whether the loss is per point, what it is in words)
REDUCTIONS = {
    "mean": (lambda N, D, K: 1.0 / N, False, "the batch mean of the bound"),
    "-mean": (lambda N, D, K: -1.0 / N, False, "minus the batch mean of the bound (a loss, torch's reduction='mean')"),
    "sum": (lambda N, D, K: 1.0, False, "the batch sum of the bound"),
    "-sum": (lambda N, D, K: -1.0, False, "minus the batch sum of the bound (a loss, torch's reduction='sum')"),
    "-mean/D": (lambda N, D, K: -1.0 / (N * D), False, "minus the bound averaged over points and the D pixels"),
    "mean/D": (lambda N, D, K: 1.0 / (N * D), False, "the bound averaged over points and the D pixels"),
    "-sum/D": (lambda N, D, K: -1.0 / D, False, "minus the batch sum of the bound over the D pixels"),
    "-mean*K": (lambda N, D, K: -float(K) / N, False, "minus the batch mean of K times the bound (summed over the K samples)"),
    "-sum*K": (lambda N, D, K: -float(K), False, "minus the batch sum of K times the bound (summed over the K samples)"),
    "none": (lambda N, D, K: 1.0, True, "the bound per point"),
    "-none": (lambda N, D, K: -1.0, True, "minus the bound per point (a loss per point)"),
    "-none/D": (lambda N, D, K: -1.0 / D, True, "minus the bound per point over the D pixels"),
    "-none*K": (lambda N, D, K: -float(K), True, "minus K times the bound per point"),
}
RTOL = {np.dtype(np.float64): 1e-9, np.dtype(np.float32): 1e-4}  # as npvae.verify: rounding, far below any factor


def alpha(name: str, N: int, D: int, K: int) -> float:
    """The scale alpha of a named reduction."""
    return REDUCTIONS[name][0](N, D, K)


def value_error(loss: np.ndarray, b: np.ndarray, a: float) -> float:
    """Relative error of the loss against alpha times the bound (summed when the loss is a scalar)."""
    ref = a * (b.sum() if loss.ndim == 0 else b)
    scale = max(float(np.max(np.abs(ref))), float(np.max(np.abs(loss))), 1e-300)
    return float(np.max(np.abs(loss - ref))) / scale


def candidates(loss: np.ndarray, declared: str | None):
    """The reductions to try: the declared one, or every one of the loss's kind (scalar or per point)."""
    if declared is not None:
        return [declared]
    per_point = loss.ndim == 1
    return [n for n, (_, pp, _) in REDUCTIONS.items() if pp == per_point]


def find(loss: np.ndarray, b: np.ndarray, N: int, D: int, K: int, declared: str | None, tol: float):
    """(name, alpha, relative error) of the first reduction the loss equals within tol, or None."""
    for name in candidates(loss, declared):
        if REDUCTIONS[name][1] != (loss.ndim == 1):
            raise ValueError(f"reduction {name!r} is {'per point' if REDUCTIONS[name][1] else 'a scalar'}, "
                             f"but the loss has shape {loss.shape}")
        a = alpha(name, N, D, K)
        err = value_error(loss, b, a)
        if err <= tol:
            return name, a, err
    return None
