"""The encoder's first product when the data are binary: x @ W and x.T @ d as sums of rows, not a dense GEMM.

Binarised MNIST is ~13% ones, so x @ W for x in {0, 1}^(N, D) is, per data point, the sum of the
~100 rows of W (D, H) where x is 1, instead of 784 multiply-adds per output; its gradient x.T @ d
is, per input pixel d, the sum of the rows of d for the points where x is 1. Both are exact
rearrangements of the dense products (only the order of the float additions differs), used by
npvae.backends.numba_cpu for the encoder's first layer when `support` finds the batch binary and
sparse enough; every other product stays on BLAS.

The ones are grouped by pixel (column), so both products stream through W or dW one row at a time
while the (N, H) side stays in cache. Private cores: no checking.
"""

from __future__ import annotations

from ._jit import jit, like

# Densest batch (fraction of ones) for which the row sums beat BLAS: measured on one core for
# arch A's shapes (N 128, D 784, H 400), the sums take ~1/4 of the GEMM's time at MNIST's 13%.
MAX_DENSITY = 0.3


@jit
def support(x, colptr, rows, max_density):
    """The ones of x (N, D) grouped by column: rows[colptr[d]:colptr[d+1]] are the n with x[n, d] = 1 (colptr (D+1,), rows (N*D,)).

    Returns the number of ones, or -1 (and nothing usable in colptr/rows) if some entry is not 0 or 1
    (NaN included) or more than max_density of the entries are ones.
    """
    N, D = x.shape
    one = like(x[0, 0], 1.0)
    zero = like(x[0, 0], 0.0)
    for d in range(D + 1):
        colptr[d] = 0
    for n in range(N):  # count the ones of each column (branch-free within a row, so that it vectorises)
        bad = False
        for d in range(D):
            v = x[n, d]
            colptr[d + 1] += v == one
            bad |= (v != one) & (v != zero)
        if bad:  # grey-level or Gaussian data: found in the first row, as a rule
            return -1
    for d in range(D):
        colptr[d + 1] += colptr[d]
    nnz = colptr[D]
    if nnz > max_density * N * D:
        return -1
    for n in range(N):  # fill in increasing n within each column, using colptr[d] as the cursor...
        for d in range(D):
            if x[n, d] == one:
                rows[colptr[d]] = n
                colptr[d] += 1
    for d in range(D, 0, -1):  # ...which leaves colptr shifted by one column: shift it back
        colptr[d] = colptr[d - 1]
    colptr[0] = 0
    return nnz


@jit
def matmul(colptr, rows, W, out):
    """out (N, H) = x @ W for binary x given by `support`: W[d] is added to out[n] wherever x[n, d] = 1."""
    N, H = out.shape
    for n in range(N):
        for j in range(H):
            out[n, j] = like(out[0, 0], 0.0)
    for d in range(W.shape[0]):
        w = W[d]
        for p in range(colptr[d], colptr[d + 1]):
            o = out[rows[p]]
            for j in range(H):
                o[j] += w[j]


@jit
def matmul_t(colptr, rows, dy, out):
    """out (D, H) = x.T @ dy for binary x given by `support`: out[d] is the sum of dy[n] over the n where x[n, d] = 1."""
    D, H = out.shape
    for d in range(D):
        o = out[d]
        for j in range(H):
            o[j] = like(out[0, 0], 0.0)
        for p in range(colptr[d], colptr[d + 1]):
            r = dy[rows[p]]
            for j in range(H):
                o[j] += r[j]
