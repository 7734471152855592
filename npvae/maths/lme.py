"""log-mean-exp, the heart of the importance-weighted bound: LME(a) = logsumexp(a) - log K.

Burda et al. 2016: IWAE_K = E[LME(a_1..a_K)] with log-weights a_k = log p(x, z_k) - log q(z_k|x).
Its gradient is softmax(a), which sums to one. All -inf in a slice gives -inf, never NaN.
"""

from __future__ import annotations

import numpy as np

from .. import _validate


def log_mean_exp_core(a: np.ndarray, axis: int = 0) -> np.ndarray:
    """Core: logsumexp over `axis` minus log K, shifted by the max; no checking."""
    m = np.max(a, axis=axis, keepdims=True)
    # A slice that is all -inf has m = -inf; shifting by 0 there keeps exp(-inf - 0) = 0 and the result -inf.
    m_safe = np.where(np.isfinite(m), m, a.dtype.type(0))
    s = np.sum(np.exp(a - m_safe), axis=axis, keepdims=True)
    with np.errstate(divide="ignore"):
        out = np.log(s) + m_safe - a.dtype.type(np.log(a.shape[axis]))
    return np.squeeze(out, axis=axis)


def softmax_core(a: np.ndarray, axis: int = 0) -> np.ndarray:
    """Core: softmax over `axis` = gradient of LME; no checking (a slice of all -inf gives NaN, by design)."""
    m = np.max(a, axis=axis, keepdims=True)
    e = np.exp(a - m)
    return e / np.sum(e, axis=axis, keepdims=True)


def log_mean_exp(a: np.ndarray, axis: int = 0) -> np.ndarray:
    """log (1/K) sum_k exp(a_k) over `axis` (K = a.shape[axis]); a may hold -inf, not NaN or +inf."""
    _validate.float_array("a", a, finite=False)
    if a.ndim == 0 or a.shape[axis] == 0:
        raise ValueError(f"log_mean_exp needs at least one log-weight along axis {axis}, got shape {a.shape}")
    if np.any(np.isnan(a)) or np.any(a == np.inf):
        raise ValueError("log-weights must not contain NaN or +inf")
    return log_mean_exp_core(a, axis)


def softmax(a: np.ndarray, axis: int = 0) -> np.ndarray:
    """Normalised importance weights softmax(a) over `axis`; refuses a slice whose log-weights are all -inf."""
    log_mean_exp(a, axis)  # same checks
    if np.any(np.all(a == -np.inf, axis=axis)):
        raise ValueError("every log-weight is -inf for some data point: the weights are undefined (0/0)")
    return softmax_core(a, axis)
