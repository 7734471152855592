"""Importance-sampled log p(x) for evaluation: log (1/k) sum_k p(x, z_k) / q(z_k|x), z_k ~ q(z|x); the NumPy specification.

Burda et al. 2016, section 5 (k = 5000): a stochastic lower bound that tightens to log p(x) as k grows.
The k samples are processed in chunks and combined by a running logsumexp, so memory is bounded by a chunk's
decoder output whatever k is. The public, checked entry point that runs any backend is npvae.objectives.log_px.
"""

from __future__ import annotations

import numpy as np

from .model import Arch, VAEParams
from .one_layer_objective import forward, log_weights_of


def _chunk_size(arch: Arch, n_points: int, max_elements: int) -> int:
    """Samples per chunk so that a chunk's decoder output, (k_chunk, N, D_out), holds at most max_elements floats."""
    per_sample = n_points * max(arch.widths()[1])  # the widest layer run once per sample (the decoder's output, mostly)
    return max(1, max_elements // per_sample)


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
