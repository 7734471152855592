"""The CUDA kernels of the L-layer model's stochastic layers: npvae.backends.latent_kernels one thread per row.

Each kernel mirrors the latent_kernels function its docstring names (see there for the ladder_objective lines it replaces)
and keeps its order of operations within an element and within every sum; one thread per row r = k N + n, but
first_backward, one thread per point n with its sums over k inside (per j, so it needs no scratch). Layouts as
latent_kernels': z, eps, dz, r, sd (K N, Z); mu, lv, sd (N, Z) for layer 1 and (K N, Z) above it; weights and
log-densities (K, N); d buffers [dmean, dlog_var] (rows, 2 Z). The formulas are scalar.py's device functions (cuda_kernels.S)
and constants are `like(x, v)`, so float32 stays float32. No fastmath: a NaN or inf in comes out as a NaN or inf.
Private cores: no checking. Imported only when backend="cuda" is used; runs under numba's simulator
(NUMBA_ENABLE_CUDASIM=1) too.
"""

from __future__ import annotations

import math

from numba import cuda

from ..maths.scalar import LOG_2PI
from .cuda_kernels import S, like, std

kl_std_normal_dim = S["kl_std_normal_dim"]


@cuda.jit
def sample(mu, lv, eps, z, sd, lq, lpz):
    """latent_kernels.sample for row r: z, lq, lpz; sd once per row of mu (by the thread whose r is that row)."""
    r = cuda.grid(1)
    K, N = lq.shape
    if r >= K * N:
        return
    m = r % N if mu.shape[0] == N else r  # layer 1: per point
    half, log2pi = like(lq[0, 0], 0.5), like(lq[0, 0], LOG_2PI)
    sp = like(half, 0.0)
    sq = like(half, 0.0)
    for j in range(mu.shape[1]):
        sj = std(lv[m, j])
        if m == r:
            sd[m, j] = sj
        zj = mu[m, j] + sj * eps[r, j]
        z[r, j] = zj
        sp += log2pi + zj * zj
        sq += log2pi + lv[m, j] + eps[r, j] * eps[r, j]
    lpz[r // N, r % N] = -half * sp
    lq[r // N, r % N] = -half * sq


@cuda.jit
def kl_rows(mu, lv, kl):
    """latent_kernels.kl_rows for row m."""
    m = cuda.grid(1)
    if m >= mu.shape[0]:
        return
    s = like(kl[0], 0.0)
    for j in range(mu.shape[1]):
        s += kl_std_normal_dim(mu[m, j], lv[m, j])
    kl[m] = s


@cuda.jit
def prior(z, mp, lvp, res, sd, log_p):
    """latent_kernels.prior for row r."""
    r = cuda.grid(1)
    K, N = log_p.shape
    if r >= K * N:
        return
    half, log2pi = like(log_p[0, 0], 0.5), like(log_p[0, 0], LOG_2PI)
    s = like(half, 0.0)
    for j in range(z.shape[1]):
        sj = std(lvp[r, j])
        rj = (z[r, j] - mp[r, j]) / sj
        sd[r, j] = sj
        res[r, j] = rj
        s += log2pi + lvp[r, j] + rj * rj
    log_p[r // N, r % N] = -half * s


@cuda.jit
def prior_backward(c, res, sd, dz, dp):
    """latent_kernels.prior_backward for row r: dz += -c r / sd in place, dp = [c r / sd, -c (1 - r^2) / 2]."""
    r = cuda.grid(1)
    K, N = c.shape
    if r >= K * N:
        return
    Z = res.shape[1]
    neg_half, one = like(c[0, 0], -0.5), like(c[0, 0], 1.0)
    ck = c[r // N, r % N]
    for j in range(Z):
        g = ck * res[r, j] / sd[r, j]
        dz[r, j] = dz[r, j] - g
        dp[r, j] = g
        dp[r, Z + j] = ck * neg_half * (one - res[r, j] * res[r, j])


@cuda.jit(device=True)
def _dz(dz, up0, up1, n_up, z, r, j, bw, wk, top_mc, squared):
    """latent_kernels._dz_row for one element (r, j)."""
    g = dz[r, j]
    if top_mc:
        g = g - bw * z[r, j]
    if squared:
        g = g * wk
    if n_up > 0:
        g = g + up0[r, j]
    if n_up > 1:
        g = g + up1[r, j]
    return g


@cuda.jit
def layer_backward(dz, up0, up1, n_up, z, eps, sd, mu, lv, w, wn, beta, top_mc, analytic, squared, q_held, live, held):
    """latent_kernels.layer_backward for row r (layer l >= 2)."""
    r = cuda.grid(1)
    K, N = w.shape
    if r >= K * N:
        return
    Z = z.shape[1]
    half = like(beta, 0.5)
    k, n = r // N, r % N
    bw, wk = beta * wn[k, n], w[k, n]
    ce = beta * (wn[k, n] * wk if squared else wn[k, n])
    for j in range(Z):
        g = _dz(dz, up0, up1, n_up, z, r, j, bw, wk, top_mc, squared)
        s, ej = sd[r, j], eps[r, j]
        if analytic:
            live[r, j] = g + -ce * mu[r, j]
            live[r, Z + j] = half * (g * s * ej) + -ce * half * math.expm1(lv[r, j])
        elif not q_held:
            live[r, j] = g
            live[r, Z + j] = half * (g * s * ej) + ce * half
        else:
            pmu = -(ce * ej) / s
            plv = -half * (ce * ej * ej)
            live[r, j] = g - pmu
            live[r, Z + j] = half * (g * s * ej) - plv
            held[r, j] = pmu
            held[r, Z + j] = ce * half + plv


@cuda.jit
def first_backward(dz, up0, up1, n_up, z, eps, sd, mu, lv, w, wn, beta, top_mc, analytic, squared, q_held, dh):
    """latent_kernels.first_backward for point n: per j, its sums over k (dh's and STL's acc) in registers."""
    n = cuda.grid(1)
    K, N = w.shape
    if n >= N:
        return
    Z = z.shape[1]
    half, zero = like(beta, 0.5), like(beta, 0.0)
    esum = zero
    for k in range(K):
        esum += wn[k, n] * w[k, n] if squared else wn[k, n]
    for j in range(Z):
        gmu, glv, acc0, acc1 = zero, zero, zero, zero
        for k in range(K):
            r = k * N + n
            wk = w[k, n]
            ce = beta * (wn[k, n] * wk if squared else wn[k, n])
            g = _dz(dz, up0, up1, n_up, z, r, j, beta * wn[k, n], wk, top_mc, squared)
            gmu += g
            glv += g * sd[n, j] * eps[r, j]
            if q_held:
                acc0 += ce * eps[r, j]
                acc1 += ce * eps[r, j] * eps[r, j]
        dmu = gmu
        dlv = half * glv
        if analytic:
            c = -beta * esum
            dmu = dmu + c * mu[n, j]
            dlv = dlv + c * half * math.expm1(lv[n, j])
        elif not q_held:
            dlv = dlv + beta * half / like(beta, N)
        else:
            dmu = dmu - -acc0 / sd[n, j]
            dlv = dlv - -half * acc1
        dh[n, j] = dmu
        dh[n, Z + j] = dlv
