"""Input checks for the public boundary: one clear ValueError instead of a traceback from deep inside.

Public functions call these once on their arguments; private cores and kernels trust their inputs
Nothing here reshapes or changes dtype: a wrong input is an error, not a fix.
"""

from __future__ import annotations

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def float_array(name: str, a, ndim: int | None = None, *, finite: bool = True) -> np.ndarray:
    """Check that `a` is a float32/float64 ndarray of rank `ndim` (finite unless told); return it unchanged."""
    if not isinstance(a, np.ndarray):
        raise ValueError(f"{name} must be a numpy.ndarray, got {type(a).__name__}")
    if a.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{name} must have dtype float32 or float64, got {a.dtype}")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {a.shape}")
    if finite and not np.all(np.isfinite(a)):
        bad = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
        raise ValueError(f"{name} contains {bad} non-finite value(s) (NaN or inf)")
    return a


def shape(name: str, a: np.ndarray, expected: tuple) -> None:
    """Check `a.shape == expected`, where `None` in `expected` matches any size."""
    ok = a.ndim == len(expected) and all(e is None or e == s for e, s in zip(expected, a.shape))
    if not ok:
        want = "(" + ", ".join("?" if e is None else str(e) for e in expected) + ")"
        raise ValueError(f"{name} must have shape {want}, got {a.shape}")


def same_dtype(dtype: np.dtype, **arrays: np.ndarray) -> None:
    """Check that every named array has `dtype`; float32 and float64 are never mixed silently."""
    for name, a in arrays.items():
        if a.dtype != dtype:
            raise ValueError(f"{name} has dtype {a.dtype} but the model is {np.dtype(dtype)}: convert explicitly")


def positive_scalar(name: str, v) -> float:
    """Check that `v` is a finite real number > 0 and return it as a Python float."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {v!r}") from None
    if not np.isfinite(f) or f <= 0.0:
        raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
    return f


def positive_int(name: str, v) -> int:
    """Check that `v` is an int >= 1 (bools refused) and return it."""
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    return int(v)


def choice(name: str, v, options) -> str:
    """Check that `v` is one of `options`."""
    if v not in options:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, options))}; got {v!r}")
    return v


def generator(name: str, rng) -> np.random.Generator:
    """Check that `rng` is a numpy Generator: randomness is always passed in, never global."""
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"{name} must be a numpy.random.Generator (e.g. np.random.default_rng(seed)), got {type(rng).__name__}")
    return rng
