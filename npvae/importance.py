"""Importance-sampled log p(x) for evaluation: log (1/k) sum_k p(x, z_k) / q(z_k|x), z_k ~ q(z|x).

Burda et al. 2016, section 5 (k = 5000): a stochastic lower bound that tightens to log p(x) as k grows.
The k samples are processed in chunks and combined by a running logsumexp, so memory is bounded by
`max_elements` floats of decoder output whatever k is.
"""

from __future__ import annotations

import numpy as np

from . import _validate
from .backends import get as get_backend
from .inputs import check_batch
from .memory import check_fits, eval_chunk_bytes
from .model import Arch, VAEParams
from .objectives import forward, log_weights_of


def _chunk_size(arch: Arch, n_points: int, max_elements: int) -> int:
    """Samples per chunk so that a chunk's decoder output, (k_chunk, N, D_out), holds at most max_elements floats."""
    per_sample = n_points * max(arch.widths()[1])  # the widest layer run once per sample (the decoder's output, mostly)
    return max(1, max_elements // per_sample)


def log_px(params: VAEParams, arch: Arch, x, k: int, rng: np.random.Generator, *, max_elements: int = 1 << 22,
           backend="numpy", progress=None):
    """Estimate of log p(x) per point, (N,), from k importance samples drawn with `rng`; x: (N, D).

    Draws eps chunk by chunk in the model's dtype; the same Generator state gives the same estimate
    whatever `max_elements` is, because the draws are made in one (k, N, Z) order (Z: arch.noise_dim).
    backend: one of npvae.backends.BACKENDS; every backend draws the same noise in the same order.
    progress: called with the number of (sample, point) pairs done after each chunk, so k = 10^9 shows it is moving.
    A chunk's memory is estimated first (npvae.memory) and refused if above what the machine has available.
    """
    dtype = check_batch(params, arch, x)
    _validate.positive_int("k", k)
    _validate.generator("rng", rng)
    _validate.positive_int("max_elements", max_elements)
    N = x.shape[0]
    chunk = min(k, _chunk_size(arch, N, max_elements))
    check_fits(f"importance sampling ({arch.spec}, {N} points, {chunk} of the k={k} samples at a time)",
               eval_chunk_bytes(arch, N, chunk, dtype.itemsize), "lower the layer sizes of the model, or the points per batch")
    return get_backend(backend).log_px(params, arch, x, k, rng, chunk, progress)


def log_px_core(params: VAEParams, arch: Arch, x, k: int, rng, chunk: int, progress=None):
    """The estimate with k samples in chunks of `chunk`, combined by a running logsumexp; no checking (the NumPy backend's)."""
    return log_px_stream(lambda p, a, x_, eps: log_weights_of(forward(p, a, x_, eps)), params, arch, x, k, rng, chunk, progress)


def log_px_stream(log_weights, params, arch, x, k: int, rng, chunk: int, progress=None):
    """`log_px_core` for any model: log_weights(params, arch, x, eps) -> (kc, N) on each chunk's noise (kc, N, arch.noise_dim)."""
    dtype = x.dtype
    N, Z = x.shape[0], arch.noise_dim
    m = np.full(N, -np.inf, dtype=dtype)  # running max of the log-weights
    s = np.zeros(N, dtype=dtype)  # running sum of exp(a - m)
    done = 0
    while done < k:
        kc = min(chunk, k - done)
        eps = rng.standard_normal((kc, N, Z), dtype=dtype)
        a = log_weights(params, arch, x, eps)  # (kc, N)
        m_new = np.maximum(m, a.max(axis=0))
        # A point whose log-weights are all -inf so far keeps s = 0 (e^(-inf - -inf) would be NaN); NaN stays NaN.
        shift = np.where(m_new == -np.inf, dtype.type(0.0), m_new)
        s = s * np.exp(m - shift) + np.exp(a - shift[None]).sum(axis=0)
        m = m_new
        done += kc
        if progress is not None:
            progress(kc * N)
    return np.log(s) + m - dtype.type(np.log(k))
