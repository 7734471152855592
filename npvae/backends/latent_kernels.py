"""The numba CPU kernels of the L-layer model's stochastic layers: one pass per layer where npvae.vae.ladder_objective has many.

Each kernel names the ladder_objective (NumPy) lines it replaces and keeps their order of operations within an element;
only the sums over j (and over k for z_1) may run in another order, so float64 agrees to ~1e-15 and float32 to a few
ulps times the condition of those sums. Private cores: no checking; every scalar argument arrives in the arrays' type.
No fastmath: a NaN or inf in comes out as a NaN or inf.
Layouts: row r = k N + n of the 2-D arrays z, eps, dz, r, sd (K N, Z); mu, lv, sd are (N, Z) for layer 1 (per point,
row n) and (K N, Z) above it (per sample); weights and log-densities (K, N); d buffers [dmean, dlog_var] (rows, 2 Z).
"""

from __future__ import annotations

import math

import numpy as np

from . import kernels as kern
from ._jit import jit, like

std = kern.std  # scalar.std, compiled inline: exp(log_var / 2) is written there only
kl_std_normal_dim = kern.S["kl_std_normal_dim"]
LOG_2PI = kern.scalar.LOG_2PI


@jit
def sample(mu, lv, eps, z, sd, lq, lpz):
    """z = mu + sd eps, sd = exp(lv / 2), lq = log q(z|.) in eps and lpz = log N(z; 0, I), per (k, n).

    gaussian.sample_forward, log_prob_eps and log_std_normal in one pass; mu, lv, sd have N rows (layer 1) or K N.
    """
    K, N = lq.shape
    per_point = mu.shape[0] == N and K > 1  # K = 1: both layouts are the same rows
    half, log2pi = like(lq[0, 0], 0.5), like(lq[0, 0], LOG_2PI)
    if per_point:
        for n in range(N):
            for j in range(mu.shape[1]):
                sd[n, j] = std(lv[n, j])
    for k in range(K):
        for n in range(N):
            r = k * N + n
            m = n if per_point else r
            if not per_point:
                for j in range(mu.shape[1]):
                    sd[m, j] = std(lv[m, j])
            sp = like(half, 0.0)
            sq = like(half, 0.0)
            for j in range(mu.shape[1]):
                zj = mu[m, j] + sd[m, j] * eps[r, j]
                z[r, j] = zj
                sp += log2pi + zj * zj
                sq += log2pi + lv[m, j] + eps[r, j] * eps[r, j]
            lpz[k, n] = -half * sp
            lq[k, n] = -half * sq


@jit
def kl_rows(mu, lv, kl):
    """kl[m] = KL(N(mu_m, diag(exp(lv_m))) || N(0, I)) per row (gaussian.kl_std_normal_forward)."""
    for m in range(mu.shape[0]):
        s = like(kl[0], 0.0)
        for j in range(mu.shape[1]):
            s += kl_std_normal_dim(mu[m, j], lv[m, j])
        kl[m] = s


@jit
def prior(z, mp, lvp, res, sd, log_p):
    """log p(z_l|z_{l+1}) = log N(z; mp, diag(exp(lvp))) per (k, n), and its cache res = (z - mp) / sd, sd
    (ladder_objective.conditional_prior_forward, gaussian.log_prob)."""
    K, N = log_p.shape
    half, log2pi = like(log_p[0, 0], 0.5), like(log_p[0, 0], LOG_2PI)
    for r in range(K * N):
        s = like(half, 0.0)
        for j in range(z.shape[1]):
            sj = std(lvp[r, j])
            rj = (z[r, j] - mp[r, j]) / sj
            sd[r, j] = sj
            res[r, j] = rj
            s += log2pi + lvp[r, j] + rj * rj
        log_p[r // N, r % N] = -half * s


@jit
def prior_backward(c, res, sd, dz, dp):
    """dz += c d log p / dz = -c r / sd in place, and dp = [c r / sd, -c (1 - r^2) / 2] (K N, 2 Z), the d of dec_{l+1}
    (ladder_objective.prior_backward, conditional_prior_backward)."""
    K, N = c.shape
    Z = res.shape[1]
    neg_half, one = like(c[0, 0], -0.5), like(c[0, 0], 1.0)
    for r in range(K * N):
        ck = c[r // N, r % N]
        for j in range(Z):
            g = ck * res[r, j] / sd[r, j]
            dz[r, j] = dz[r, j] - g
            dp[r, j] = g
            dp[r, Z + j] = ck * neg_half * (one - res[r, j] * res[r, j])


@jit
def _dz_row(dz, up0, up1, n_up, z, r, bw, wk, top_mc, squared, g):
    """g = the d/dz_l of row r that a layer's rule reads (ladder_objective.layer_backward's first lines): the generative
    side's dz, at the top (MC) + beta wn d log N(z; 0, I) / dz = -bw z, reweighted by w_k (DReG), plus up0 and up1, what
    enc_{l+1} passed down (n_up of them). A call per row, not per element: inlined per element it does not vectorise."""
    for j in range(g.shape[0]):
        gj = dz[r, j]
        if top_mc:
            gj = gj - bw * z[r, j]
        if squared:
            gj = gj * wk
        if n_up > 0:
            gj = gj + up0[r, j]
        if n_up > 1:
            gj = gj + up1[r, j]
        g[j] = gj


@jit
def layer_backward(dz, up0, up1, n_up, z, eps, sd, mu, lv, w, wn, beta, top_mc, analytic, squared, q_held, live, held):
    """Layer l >= 2's live (and for STL/DReG held) [dmu, dlv] (K N, 2 Z) for enc_l's backward (ladder_objective.layer_backward,
    latent_backward): the path through z = mu + sd eps, and -beta e log q's derivatives, or the analytic top KL's."""
    K, N = w.shape
    Z = z.shape[1]
    half = like(beta, 0.5)
    gr = np.empty(Z, dtype=z.dtype)
    for r in range(K * N):
        k, n = r // N, r % N
        bw, wk = beta * wn[k, n], w[k, n]
        ce = beta * (wn[k, n] * wk if squared else wn[k, n])
        _dz_row(dz, up0, up1, n_up, z, r, bw, wk, top_mc, squared, gr)
        # One loop per rule, each branch-free inside, so that it vectorises. dmu = g, dlv = (g s eps) / 2: sample_backward.
        if analytic:  # + kl_std_normal_backward(-ce, mu, lv)
            for j in range(Z):
                g = gr[j]
                live[r, j] = g + -ce * mu[r, j]
                live[r, Z + j] = half * (g * sd[r, j] * eps[r, j]) + -ce * half * math.expm1(lv[r, j])
        elif not q_held:  # -log q in eps: total derivative +1/2 per lv_j
            for j in range(Z):
                g = gr[j]
                live[r, j] = g
                live[r, Z + j] = half * (g * sd[r, j] * eps[r, j]) + ce * half
        else:  # log_prob_path_backward: pmu = -ce eps / s, plv = -ce eps^2 / 2; live - (pmu, plv), held (pmu, ce / 2 + plv)
            for j in range(Z):
                g = gr[j]
                s, ej = sd[r, j], eps[r, j]
                pmu = -(ce * ej) / s
                plv = -half * (ce * ej * ej)
                live[r, j] = g - pmu
                live[r, Z + j] = half * (g * s * ej) - plv
                held[r, j] = pmu
                held[r, Z + j] = ce * half + plv


@jit
def first_backward(dz, up0, up1, n_up, z, eps, sd, mu, lv, w, wn, beta, top_mc, analytic, squared, q_held, acc, dh):
    """Layer 1's [dmu_1, dlv_1] (N, 2 Z), summed over the K samples of each point (ladder_objective.layer_backward,
    first_latent_backward; estimators.reparam and stl, sample_backward, log_prob_path_backward, the analytic KL's backward).
    acc: (2, Z) scratch for STL's sums over k of ce eps and ce eps^2."""
    K, N = w.shape
    Z = z.shape[1]
    half, zero = like(beta, 0.5), like(beta, 0.0)
    gr = np.empty(Z, dtype=z.dtype)
    for n in range(N):
        for j in range(Z):
            dh[n, j] = zero
            dh[n, Z + j] = zero
            acc[0, j] = zero
            acc[1, j] = zero
        esum = zero
        for k in range(K):
            r = k * N + n
            bw, wk = beta * wn[k, n], w[k, n]
            e = wn[k, n] * wk if squared else wn[k, n]
            ce = beta * e
            esum += e
            _dz_row(dz, up0, up1, n_up, z, r, bw, wk, top_mc, squared, gr)
            for j in range(Z):
                g = gr[j]
                dh[n, j] += g
                dh[n, Z + j] += g * sd[n, j] * eps[r, j]
            if q_held:
                for j in range(Z):
                    acc[0, j] += ce * eps[r, j]
                    acc[1, j] += ce * eps[r, j] * eps[r, j]
        for j in range(Z):
            dmu = dh[n, j]
            dlv = half * dh[n, Z + j]
            if analytic:  # kl_std_normal_backward(-beta sum_k e_k, mu, lv)
                c = -beta * esum
                dmu = dmu + c * mu[n, j]
                dlv = dlv + c * half * math.expm1(lv[n, j])
            elif not q_held:  # estimators.reparam: + beta / (2 N)
                dlv = dlv + beta * half / like(beta, N)
            else:  # estimators.stl: - (-sum_k ce eps / s, -sum_k ce eps^2 / 2)
                dmu = dmu - -acc[0, j] / sd[n, j]
                dlv = dlv - -half * acc[1, j]
            dh[n, j] = dmu
            dh[n, Z + j] = dlv
