"""Which scaling of npvae's bound a user's loss is: the reductions people write, by name (or a declared number).

A loss L is compared with alpha * sum_n b_n (a scalar) or alpha * b_n (per point), b the bound per point (what is
maximised), for the alphas below, each with both signs; the first that agrees to the dtype's tolerance names the
reduction (and every other name with the same alpha, when N, D or K make them coincide). Gradients are then those
of alpha * (the bound's batch sum), so "the gradient of -mean" is checked as exactly that. A reduction no name
covers (Pyro's subsampled plate scales by dataset size / batch size) is declared as its number: reduction=-6.25.

The tolerance is relative to the size of the terms the loss is made of, alpha * sum_n (|reconstruction_n| +
beta |KL_n|), not to the loss itself: a bound near 0 made of two terms of 160 nats is computed to 160 eps, not 0 eps.
"""

from __future__ import annotations

import numpy as np

_BASE = {  # name -> (alpha as a function of N, D, K, whether the loss is per point, what it is in words)
    "mean": (lambda N, D, K: 1.0 / N, False, "the batch mean of the bound"),
    "sum": (lambda N, D, K: 1.0, False, "the batch sum of the bound"),
    "mean/D": (lambda N, D, K: 1.0 / (N * D), False, "the bound averaged over points and the D pixels"),
    "sum/D": (lambda N, D, K: 1.0 / D, False, "the batch sum of the bound over the D pixels"),
    "mean*K": (lambda N, D, K: float(K) / N, False, "the batch mean of K times the bound (summed over the K samples)"),
    "sum*K": (lambda N, D, K: float(K), False, "the batch sum of K times the bound (summed over the K samples)"),
    "none": (lambda N, D, K: 1.0, True, "the bound per point"),
    "none/D": (lambda N, D, K: 1.0 / D, True, "the bound per point over the D pixels"),
    "none*K": (lambda N, D, K: float(K), True, "K times the bound per point"),
}
LOSS_WORDS = {"-mean": " (a loss, torch's reduction='mean')", "-sum": " (a loss, torch's reduction='sum')", "-none": " (a loss per point)"}
REDUCTIONS = {}
for _n, (_f, _pp, _w) in _BASE.items():  # the loss first: users hand in losses more often than bounds
    REDUCTIONS["-" + _n] = ((lambda f: lambda N, D, K: -f(N, D, K))(_f), _pp, "minus " + _w + LOSS_WORDS.get("-" + _n, ""))
    REDUCTIONS[_n] = (_f, _pp, _w)
RTOL = {np.dtype(np.float64): 1e-9, np.dtype(np.float32): 1e-4}  # as npvae.verify: rounding, far below any factor


def is_declared_number(r) -> bool:
    """A reduction given as its alpha (a finite nonzero number), not a name."""
    return isinstance(r, (int, float, np.integer, np.floating)) and not isinstance(r, bool) and np.isfinite(r) and r != 0


def alpha(name, N: int, D: int, K: int) -> float:
    """The scale alpha of a named reduction, or a declared number itself."""
    return float(name) if is_declared_number(name) else REDUCTIONS[name][0](N, D, K)


def words(name) -> str:
    """What a reduction is, in words."""
    return f"{float(name):g} times the batch sum of the bound (declared)" if is_declared_number(name) else REDUCTIONS[name][2]


def value_error(loss: np.ndarray, b: np.ndarray, a: float, magnitude: np.ndarray | None = None) -> float:
    """Relative error of the loss against alpha times the bound (summed when the loss is a scalar), relative to the
    size of its terms (magnitude: (N,) |reconstruction| + beta |KL| per point) where given."""
    ref = a * (b.sum() if loss.ndim == 0 else b)
    terms = 0.0 if magnitude is None else abs(a) * float(magnitude.sum() if loss.ndim == 0 else np.max(magnitude))
    scale = max(float(np.max(np.abs(ref))), float(np.max(np.abs(loss))), terms, 1e-300)
    return float(np.max(np.abs(loss - ref))) / scale


def candidates(loss: np.ndarray, declared):
    """The reductions to try: the declared one, or every one of the loss's kind (scalar or per point)."""
    if declared is not None:
        return [declared]
    per_point = loss.ndim == 1
    return [n for n, (_, pp, _) in REDUCTIONS.items() if pp == per_point]


def ties(name, N: int, D: int, K: int, per_point: bool) -> list:
    """The other names whose alpha equals this one's at these N, D, K (N == D makes -sum/D and -mean one number)."""
    if is_declared_number(name):
        return []
    a = alpha(name, N, D, K)
    return [n for n, (f, pp, _) in REDUCTIONS.items() if n != name and pp == per_point and f(N, D, K) == a]


def find(loss: np.ndarray, b: np.ndarray, N: int, D: int, K: int, declared, tol: float, magnitude=None):
    """(name, alpha, relative error) of the first reduction the loss equals within tol, or None."""
    for name in candidates(loss, declared):
        if not is_declared_number(name) and REDUCTIONS[name][1] != (loss.ndim == 1):
            raise ValueError(f"reduction {name!r} is {'per point' if REDUCTIONS[name][1] else 'a scalar'}, "
                             f"but the loss has shape {loss.shape}")
        a = alpha(name, N, D, K)
        err = value_error(loss, b, a, magnitude)
        if err <= tol:
            return name, a, err
    return None


def nearest(loss: np.ndarray, b: np.ndarray, N: int, D: int, K: int, declared, magnitude=None):
    """(name, relative error) of the reduction the loss is closest to, for a failed value's report."""
    errs = [(value_error(loss, b, alpha(n, N, D, K), magnitude), n) for n in candidates(loss, declared)]
    err, name = min(errs, key=lambda e: e[0])
    return name, err
