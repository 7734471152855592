"""The CUDA kernels: the numba CPU kernels (npvae.backends.kernels) one thread per element, and a tiled GEMM.

Private cores: no checking. Every scalar argument arrives already in the arrays' float type, and
every constant is written `like(x, v)`, so float32 stays float32. The element formulas are
scalar.py's own functions compiled again as CUDA device functions (`_device_functions`), so the
maths exists once; only exp_neg, expm1_neg, log1p_unit (and `like`) get CUDA versions here, all
from `math.*` (numba lowers them to CUDA's own libm; no libdevice calls are written, no warp
shuffles are used). Each (k, n) pair is one row r = k N + n of the 2-D arrays out, z, eps, dz.
Shapes: out (K N, D_out), x (N, D), mu/log_var/sd (N, Z), eps/z/dz (K N, Z), weights (K, N).
The last kernels (gather_rows, total, count_nonfinite, sum_counts) serve the device-resident trainer,
npvae.backends.cuda_train. Imported only when backend="cuda" is used; runs under numba's simulator
(NUMBA_ENABLE_CUDASIM=1) too.
"""

from __future__ import annotations

import math
import types as pytypes

import numpy as np
from numba import config, cuda

from . import scalar
from ._jit import like
from .kernels import ANALYTIC, DREG, ELBO_MC, IWAE, REPARAM  # noqa: F401  (the CPU kernels' codes)

# GEMM tile edge: TILE x TILE threads per block, two TILE x TILE shared tiles. The simulator runs each
# thread of a block as a Python thread, so there the same kernel is built with 4 x 4 tiles.
TILE = 4 if config.ENABLE_CUDASIM else 16
TPB = 64  # threads per block of the element-wise kernels
# log(2 pi) as a global, so that like(x, LOG_2PI) is a constant in x's type: math.log written inside a kernel
# is computed there, in float64 (tests/test_cuda_ptx.py checks the float32 kernels for float64 instructions).
# For the same reason log K arrives from the host (log_k), already in the arrays' type.
LOG_2PI = math.log(2.0 * math.pi)


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


def _device_functions():
    """scalar.py's jitted functions as CUDA device functions: the same code objects, with globals that name the device versions."""
    g = dict(vars(scalar))
    for name, obj in vars(scalar).items():
        f = getattr(obj, "py_func", None)
        if f is not None and f.__module__ == scalar.__name__:
            g[name] = cuda.jit(device=True)(pytypes.FunctionType(f.__code__, g, name, f.__defaults__, f.__closure__))
    return pytypes.SimpleNamespace(**g)


_register_cuda_elementary()
S = _device_functions()
bernoulli, gaussian, gaussian_learned = S.bernoulli, S.gaussian, S.gaussian_learned
relu, relu_grad, tanh, tanh_grad, softplus, softplus_grad = S.relu, S.relu_grad, S.tanh, S.tanh_grad, S.softplus, S.softplus_grad
kl_std_normal_dim, nan_max = S.kl_std_normal_dim, S.nan_max
RELU, TANH, SOFTPLUS, BERNOULLI, GAUSSIAN = scalar.RELU, scalar.TANH, scalar.SOFTPLUS, scalar.BERNOULLI, scalar.GAUSSIAN


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
    """d <- d f'(cache) in place (npvae.layers.activation_backward): one thread per element."""
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
def sample(mu, log_var, eps, z, sd, lp_lq, want_lp):
    """z = mu + exp(log_var/2) eps and lp_lq = log N(z; 0, I) - log q(z|x) (kernels.sample): one thread per (k, n)."""
    r = cuda.grid(1)
    K, N = lp_lq.shape
    if r >= K * N:
        return
    k, n = r // N, r % N
    half, log2pi = like(mu[0, 0], 0.5), like(mu[0, 0], LOG_2PI)
    sp = like(half, 0.0)
    sq = like(half, 0.0)
    for j in range(mu.shape[1]):
        s = math.exp(half * log_var[n, j])
        if k == 0:
            sd[n, j] = s
        zj = mu[n, j] + s * eps[r, j]
        z[r, j] = zj
        sp += log2pi + zj * zj
        sq += log2pi + log_var[n, j] + eps[r, j] * eps[r, j]
    if want_lp:
        lp_lq[k, n] = -half * sp - -half * sq


@cuda.jit
def row_log_lik(out, x, lp_lq, lik, c1, c2, mode, beta, grad, logw):
    """logw[k, n] = sum_d log p(x_d | out row), + beta lp_lq unless ANALYTIC; with grad the row becomes d log p / d row. Thread per (k, n)."""
    r = cuda.grid(1)
    K, N = logw.shape
    if r >= K * N:
        return
    k, n = r // N, r % N
    D = x.shape[1]
    s = like(beta, 0.0)
    for d in range(D):
        if lik == BERNOULLI:
            lp, g = bernoulli(x[n, d], out[r, d])
        elif lik == GAUSSIAN:
            lp, g = gaussian(x[n, d], out[r, d], c1, c2)
        else:
            lp, g, graw = gaussian_learned(x[n, d], out[r, d], out[r, D + d], c1, c2)
            if grad:
                out[r, D + d] = graw
        if grad:
            out[r, d] = g
        s += lp
    logw[k, n] = s if mode == ANALYTIC else s + beta * lp_lq[k, n]


@cuda.jit
def weights(logw, kl, mode, beta, wconst, n_t, log_k, grad, out, value, w, wn):
    """value (N,), weights w, wn (K, N) per point, and (grad) rows of out scaled by wn (kernels.head): thread per n.

    ANALYTIC: value = mean_k log p(x|z_k) - beta kl; ELBO_MC: mean_k a_k; IWAE: LME_k(a_k), w = softmax_k(a_k).
    """
    n = cuda.grid(1)
    K, N = logw.shape
    if n >= N:
        return
    if mode != IWAE:
        s = like(beta, 0.0)
        for k in range(K):
            s += logw[k, n]
            w[k, n] = wconst
            wn[k, n] = wconst if mode == ANALYTIC else wconst / n_t
        value[n] = s / like(beta, K)
        if mode == ANALYTIC:
            value[n] = value[n] - beta * kl[n]
    else:
        m = logw[0, n]
        for k in range(1, K):
            m = nan_max(logw[k, n], m)
        m_safe = m if (m > -math.inf and m < math.inf) else like(m, 0.0)  # an all -inf point gives -inf, not NaN
        s = like(beta, 0.0)
        for k in range(K):
            e = math.exp(logw[k, n] - m)
            w[k, n] = e
            s += e
        for k in range(K):
            w[k, n] = w[k, n] / s
            wn[k, n] = w[k, n] / n_t
        if m_safe != m:
            s = like(beta, 0.0)
            for k in range(K):
                s += math.exp(logw[k, n] - m_safe)
        value[n] = math.log(s) + m_safe - log_k
    if grad:
        for k in range(K):
            c = wn[k, n]
            for d in range(out.shape[1]):
                out[k * N + n, d] = c * out[k * N + n, d]


@cuda.jit
def kl_free_bits(mu, log_var, free_bits, kl, above):
    """kl (N,) = sum_j max(lambda, KL_j), above = KL_j > lambda (kernels.kl_free_bits): thread per n."""
    n = cuda.grid(1)
    if n >= mu.shape[0]:
        return
    s = like(free_bits, 0.0)
    for j in range(mu.shape[1]):
        kj = kl_std_normal_dim(mu[n, j], log_var[n, j])
        a = kj > free_bits
        above[n, j] = a
        s += kj if a else free_bits
    kl[n] = s


@cuda.jit
def latent_backward(dz, z, eps, sd, mu, log_var, w, wn, above, beta, n_t, mode, estimator, dh):
    """dz (K N, Z) back to dh = [dmu, dlog_var] (N, 2Z) with each estimator's prior/q terms (kernels.latent_backward): thread per (n, j)."""
    i = cuda.grid(1)
    N, Z = mu.shape
    if i >= N * Z:
        return
    n, j = i // Z, i % Z
    K = w.shape[0]
    half = like(beta, 0.5)
    s = sd[n, j]
    acc_mu = like(beta, 0.0)
    acc_lv = like(beta, 0.0)
    for k in range(K):
        r = k * N + n
        g = dz[r, j]
        if mode != ANALYTIC:
            bw = beta * wn[k, n]
            g = g - bw * z[r, j]
            if estimator != REPARAM:
                g = g - bw * (-eps[r, j] / s)
                if estimator == DREG:
                    g = g * w[k, n]
        acc_mu += g
        acc_lv += g * s * eps[r, j]
    dmu = acc_mu
    dlv = half * acc_lv
    if mode == ANALYTIC:
        c = -beta / n_t if above[n, j] else like(beta, 0.0)
        dmu = dmu + c * mu[n, j]
        dlv = dlv + c * half * math.expm1(log_var[n, j])
    elif estimator == REPARAM:
        dlv = dlv + beta * half / n_t
    dh[n, j] = dmu
    dh[n, Z + j] = dlv


@cuda.jit
def lme_update(a, m, s):
    """Streaming logsumexp over axis 0 of a (k, N) into (m, s) (kernels.lme_update): thread per n."""
    n = cuda.grid(1)
    K, N = a.shape
    if n >= N:
        return
    mx = a[0, n]
    for k in range(1, K):
        mx = nan_max(a[k, n], mx)
    m_new = nan_max(m[n], mx)
    if m_new == -math.inf:
        return
    t = like(m_new, 0.0)
    for k in range(K):
        t += math.exp(a[k, n] - m_new)
    s[n] = s[n] * math.exp(m[n] - m_new) + t
    m[n] = m_new


@cuda.jit
def lme_finish(m, s, log_k, out):
    """out = log(s) + m - log k; -inf where every a was -inf (kernels.lme_finish): thread per n."""
    n = cuda.grid(1)
    if n >= m.shape[0]:
        return
    out[n] = math.log(s[n]) + m[n] - log_k if s[n] > like(log_k, 0.0) or s[n] != s[n] else -math.inf


@cuda.jit
def log_mean_exp(a, log_k, out):
    """out (N,) = log (1/K) sum_k exp(a_k) over axis 0 of a (K, N) (kernels.log_mean_exp): thread per n."""
    n = cuda.grid(1)
    K, N = a.shape
    if n >= N:
        return
    m = a[0, n]
    for k in range(1, K):
        m = nan_max(a[k, n], m)
    m_safe = m if (m > -math.inf and m < math.inf) else like(m, 0.0)
    s = like(m, 0.0)
    for k in range(K):
        s += math.exp(a[k, n] - m_safe)
    out[n] = math.log(s) + m_safe - log_k if s > like(m, 0.0) or s != s else -math.inf


@cuda.jit
def adam(p, g, m, v, sign, b1, c1, b2, c2, step_size, sqrt_bc2, eps):
    """One Adam step in place, element i per thread, in npvae.optim.adam_update's order of operations (kernels.adam)."""
    i = cuda.grid(1)
    if i >= p.shape[0]:
        return
    gi = sign * g[i]
    mi = b1 * m[i] + c1 * gi
    vi = b2 * v[i] + c2 * (gi * gi)
    m[i] = mi
    v[i] = vi
    p[i] = p[i] - step_size * mi / (math.sqrt(vi) / sqrt_bc2 + eps)


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
