"""The kernels of the device-resident trainer (npvae.backends.cuda_train): the batch gather and the per-step summary.

Deterministic reductions without atomics, so the summary is the same on every run. Imported only when
backend="cuda" trains; runs under numba's simulator (NUMBA_ENABLE_CUDASIM=1) too.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda

from .cuda_kernels import TPB
from ..maths.scalar import like


@cuda.jit
def gather_rows(x, rows, lo, xb):
    """xb[r] = x[rows[lo + r]]: the batch (n, D) of the epoch's data x (N, D) in shuffle order rows (N,) int64; thread per element of xb."""
    i = cuda.grid(1)
    n, D = xb.shape
    if i >= n * D:
        return
    r, d = i // D, i % D
    xb[r, d] = x[rows[lo + r], d]


@cuda.jit
def total(a, out, slot):
    """out[slot] = a[0] + a[1] + ... in index order and a's precision: one thread (a is a batch's bound, (N,))."""
    if cuda.grid(1) != 0:
        return
    s = like(a[0], 0.0)
    for i in range(a.shape[0]):
        s += a[i]
    out[slot] = s


@cuda.jit
def count_nonfinite(a, partial):
    """partial[b] = the number of NaN and +-inf elements that block b's threads visit (grid-stride over the flat a).

    Each thread counts its elements, the block adds its threads' counts in shared memory, and thread 0
    writes the block's total: no atomics, so the count is the same on every run. `sum_counts` adds the blocks.
    """
    t, T, b = cuda.threadIdx.x, cuda.blockDim.x, cuda.blockIdx.x
    counts = cuda.shared.array(TPB, np.int64)
    c = 0
    for i in range(cuda.grid(1), a.shape[0], cuda.gridsize(1)):
        if not math.isfinite(a[i]):
            c += 1
    counts[t] = c
    cuda.syncthreads()
    if t == 0:
        for j in range(1, T):
            c += counts[j]
        partial[b] = c


@cuda.jit
def sum_counts(partial, n_blocks, out, slot):
    """out[slot] = partial[0] + ... + partial[n_blocks - 1]: one thread (written, not accumulated)."""
    if cuda.grid(1) != 0:
        return
    c = 0
    for j in range(n_blocks):
        c += partial[j]
    out[slot] = c


def launch_count_nonfinite(a, partial, out, slot):
    """out[slot] = the number of non-finite elements of the flat device array a, over up to len(partial) blocks."""
    tpb = max(1, min(TPB, a.size))
    n_blocks = max(1, min(partial.shape[0], (a.size + tpb - 1) // tpb))
    count_nonfinite[n_blocks, tpb](a, partial)
    sum_counts[1, 1](partial, n_blocks, out, slot)
