"""The CUDA kernels: the numba CPU kernels (npvae.backends.kernels) one thread per element, and a tiled GEMM.

Private cores: no checking. Every scalar argument arrives already in the arrays' float type, and
every constant is written `like(x, v)`, so float32 stays float32. The formulas are
scalar.py's own functions compiled as CUDA device functions (`S`) and the likelihoods' element
kernels, so the maths exists once and these kernels are grids around it; only exp_neg, expm1_neg,
log1p_unit (and `like`) get CUDA versions here, all from `math.*` (numba lowers them to CUDA's own
libm; no libdevice calls are written, no warp shuffles are used). Each (k, n) pair is one row r = k N + n of the 2-D arrays out, z, eps, dz.
Shapes: out (K N, D_out), x (N, D), mu/log_var/sd (N, Z), eps/z/dz (K N, Z), weights (K, N).
Imported only when backend="cuda" is used; runs under numba's simulator
(NUMBA_ENABLE_CUDASIM=1) too.
"""

from __future__ import annotations

import math

import numpy as np
from numba import config, cuda

from ..maths import scalar
from ._jit import compile_module, rebuild
from ..maths.codes import ANALYTIC, RELU, SOFTPLUS, TANH
from ..maths.scalar import like

# GEMM tile edge: TILE x TILE threads per block, two TILE x TILE shared tiles. The simulator runs each
# thread of a block as a Python thread, so there the same kernel is built with 4 x 4 tiles.
TILE = 4 if config.ENABLE_CUDASIM else 16
TPB = 64  # threads per block of the element-wise kernels


def _register_cuda_elementary():
    """The CUDA implementations of scalar.py's per-target stubs, and of `like`; the simulator runs the Python ones."""
    if config.ENABLE_CUDASIM:
        return
    from numba.cuda import types as nbtypes
    from numba.cuda.extending import overload

    overload(scalar.exp_neg, inline="always")(lambda u: lambda u: math.exp(u))
    overload(scalar.expm1_neg, inline="always")(lambda u: lambda u: math.expm1(u))
    overload(scalar.log1p_unit, inline="always")(lambda e: lambda e: math.log1p(e))

    def _like(x, v):
        if isinstance(x, nbtypes.Float):
            ftype = x
            return lambda x, v: ftype(v)
        return None

    overload(like, inline="always")(_like)


def _device(f):
    return cuda.jit(device=True)(f)


_register_cuda_elementary()
S = compile_module(scalar, _device)
relu, relu_grad, tanh, tanh_grad, softplus, softplus_grad = (S[n] for n in ("relu", "relu_grad", "tanh", "tanh_grad", "softplus", "softplus_grad"))
std, sample_row, kl_free_bits_point, latent_point, adam_elem = (S[n] for n in ("std", "sample_row", "kl_free_bits_point", "latent_point", "adam_elem"))
bound_point, scale_rows, log_mean_exp_point, lme_update_point, lme_finish_elem = (
    S[n] for n in ("bound_point", "scale_rows", "log_mean_exp_point", "lme_update_point", "lme_finish"))


def launch(kernel, n, *args):
    """kernel over n threads, 1-D, at most TPB per block (fewer for a tiny n: the simulator pays per thread)."""
    tpb = max(1, min(TPB, n))
    kernel[(n + tpb - 1) // tpb, tpb](*args)


def _make_gemm(dt, TILE):
    @cuda.jit
    def gemm(A, B, C, ta, tb):
        """C (M, P) = op(A) op(B), op = transpose where ta/tb: shared-memory tiles, one output element per thread."""
        sa = cuda.shared.array((TILE, TILE), dt)
        sb = cuda.shared.array((TILE, TILE), dt)
        tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
        i = cuda.blockIdx.y * TILE + ty  # row of C
        j = cuda.blockIdx.x * TILE + tx  # column of C
        M, P = C.shape
        Kd = A.shape[0] if ta else A.shape[1]
        acc = dt(0.0)
        for t0 in range(0, Kd, TILE):
            ka, kb = t0 + tx, t0 + ty
            if i < M and ka < Kd:
                sa[ty, tx] = A[ka, i] if ta else A[i, ka]
            else:
                sa[ty, tx] = dt(0.0)
            if j < P and kb < Kd:
                sb[ty, tx] = B[j, kb] if tb else B[kb, j]
            else:
                sb[ty, tx] = dt(0.0)
            cuda.syncthreads()
            for q in range(TILE):
                acc += sa[ty, q] * sb[q, tx]
            cuda.syncthreads()
        if i < M and j < P:
            C[i, j] = acc

    return gemm


_GEMM = {}  # (dtype, tile) -> kernel, built on first use


def gemm(A, B, C, ta=False, tb=False, tile=TILE):
    """C = op(A) @ op(B) on the device with the tiled kernel."""
    key = (np.dtype(C.dtype), tile)
    if key not in _GEMM:
        _GEMM[key] = _make_gemm(key[0].type, tile)
    M, P = C.shape
    _GEMM[key][((P + tile - 1) // tile, (M + tile - 1) // tile), (tile, tile)](A, B, C, ta, tb)


@cuda.jit
def bias_activation(a, b, code, y):
    """a <- f(a + b), or for softplus a <- a + b and y <- f(a) (kernels.bias_activation): one thread per element of (M, H)."""
    i = cuda.grid(1)
    M, H = a.shape
    if i >= M * H:
        return
    m, j = i // H, i % H
    if code == RELU:
        a[m, j] = relu(a[m, j] + b[j])
    elif code == TANH:
        a[m, j] = tanh(a[m, j] + b[j])
    elif code == SOFTPLUS:
        a[m, j] = a[m, j] + b[j]
        y[m, j] = softplus(a[m, j])
    else:
        a[m, j] = a[m, j] + b[j]


@cuda.jit
def activation_backward(d, cache, code):
    """d <- d f'(cache) in place (npvae.nn.layers.activation_backward): one thread per element."""
    i = cuda.grid(1)
    M, H = d.shape
    if i >= M * H:
        return
    m, j = i // H, i % H
    if code == RELU:
        d[m, j] = relu_grad(d[m, j], cache[m, j])
    elif code == TANH:
        d[m, j] = tanh_grad(d[m, j], cache[m, j])
    elif code == SOFTPLUS:
        d[m, j] = softplus_grad(d[m, j], cache[m, j])


@cuda.jit
def column_sum(d, db):
    """db (H,) = sum over rows of d (M, H): one thread per column (dense_backward's db)."""
    j = cuda.grid(1)
    if j >= d.shape[1]:
        return
    s = like(d[0, 0], 0.0)
    for m in range(d.shape[0]):
        s += d[m, j]
    db[j] = s


@cuda.jit
def std_kernel(log_var, sd):
    """sd = exp(log_var / 2) (scalar.std): one thread per element of (N, Z)."""
    i = cuda.grid(1)
    N, Z = sd.shape
    if i >= N * Z:
        return
    sd[i // Z, i % Z] = std(log_var[i // Z, i % Z])


@cuda.jit
def sample(mu, log_var, sd, eps, z, lp_lq, want_lp):
    """z = mu + sd eps and lp_lq = log N(z; 0, I) - log q(z|x) (scalar.sample_row): one thread per (k, n)."""
    r = cuda.grid(1)
    K, N = lp_lq.shape
    if r >= K * N:
        return
    lp_lq[r // N, r % N] = sample_row(mu, log_var, sd, eps, z, r, r % N, want_lp)


def _row_log_lik(out, x, lp_lq, c1, c2, mode, beta, grad, logw):
    """logw[k, n] = sum_d log p(x_d | out row r), + beta lp_lq unless ANALYTIC; with grad the row becomes d log p / d row.

    Thread per (k, n); compiled per likelihood (`row_log_lik`), `lik_elem` being its element kernel.
    """
    r = cuda.grid(1)
    K, N = logw.shape
    if r >= K * N:
        return
    k, n = r // N, r % N
    D = x.shape[1]
    row = out[r]
    s = like(beta, 0.0)
    for d in range(D):
        s += lik_elem(x[n, d], row, d, D, c1, c2, grad)  # noqa: F821  (bound per likelihood)
    logw[k, n] = s if mode == ANALYTIC else s + beta * lp_lq[k, n]


_ROW_LOG_LIK = {}


def row_log_lik(kind):
    """The row log-likelihood kernel for one likelihood module (npvae.likelihoods.REGISTRY's entries), built on first use."""
    if kind.NAME not in _ROW_LOG_LIK:
        g = {**globals(), "lik_elem": _device(rebuild(kind.elem, {**vars(kind), **S}))}
        _ROW_LOG_LIK[kind.NAME] = cuda.jit(rebuild(_row_log_lik, g, f"row_log_lik_{kind.NAME.replace('-', '_')}"))
    return _ROW_LOG_LIK[kind.NAME]


@cuda.jit
def weights(logw, kl, mode, beta, inv_k, n_t, log_k, grad, out, value, w, wn):
    """value (N,), weights w, wn (K, N) per point (scalar.bound_point), minus beta kl for the analytic KL, and (grad)
    rows of out scaled by wn: thread per n."""
    n = cuda.grid(1)
    if n >= logw.shape[1]:
        return
    value[n] = bound_point(logw, n, mode, inv_k, n_t, log_k, w, wn)
    if mode == ANALYTIC:
        value[n] = value[n] - beta * kl[n]
    if grad:
        scale_rows(out, wn, n)


@cuda.jit
def kl_free_bits(mu, log_var, free_bits, kl, above):
    """kl (N,) = sum_j max(lambda, KL_j), above = KL_j > lambda (scalar.kl_free_bits_point): thread per n."""
    n = cuda.grid(1)
    if n >= mu.shape[0]:
        return
    kl[n] = kl_free_bits_point(mu, log_var, n, free_bits, above)


@cuda.jit
def latent_backward(dz, z, eps, sd, mu, log_var, w, wn, above, beta, n_t, mode, estimator, dh):
    """dz (K N, Z) back to dh = [dmu, dlog_var] (N, 2Z) with each estimator's prior/q terms (scalar.latent_point): thread per (n, j)."""
    i = cuda.grid(1)
    N, Z = mu.shape
    if i >= N * Z:
        return
    n, j = i // Z, i % Z
    dh[n, j], dh[n, Z + j] = latent_point(dz, z, eps, sd, mu, log_var, w, wn, above, beta, n_t, mode, estimator, n, j)


@cuda.jit
def lme_update(a, m, s):
    """Streaming logsumexp over axis 0 of a (k, N) into (m, s) (scalar.lme_update_point): thread per n."""
    n = cuda.grid(1)
    if n < a.shape[1]:
        lme_update_point(a, n, m, s)


@cuda.jit
def lme_finish(m, s, log_k, out):
    """out = log(s) + m - log k; -inf where every a was -inf (scalar.lme_finish): thread per n."""
    n = cuda.grid(1)
    if n < m.shape[0]:
        out[n] = lme_finish_elem(m[n], s[n], log_k)


@cuda.jit
def log_mean_exp(a, log_k, out):
    """out (N,) = log (1/K) sum_k exp(a_k) over axis 0 of a (K, N) (scalar.log_mean_exp_point): thread per n."""
    n = cuda.grid(1)
    if n < a.shape[1]:
        out[n] = log_mean_exp_point(a, n, log_k)


@cuda.jit
def adam(p, g, m, v, sign, b1, c1, b2, c2, step_size, sqrt_bc2, eps):
    """One Adam step in place, element i per thread (scalar.adam_elem)."""
    i = cuda.grid(1)
    if i < p.shape[0]:
        p[i], m[i], v[i] = adam_elem(p[i], g[i], m[i], v[i], sign, b1, c1, b2, c2, step_size, sqrt_bc2, eps)
