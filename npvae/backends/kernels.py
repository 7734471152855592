"""The numba CPU kernels: fused element-wise passes between the BLAS matrix products.

Private cores: no checking (npvae.backends.numba_cpu validates nothing either; the public entry
points in npvae.objectives and npvae.importance do). Every scalar argument arrives already in the
arrays' float type. Each kernel names the NumPy lines it replaces, and computes them in the same
order of operations, so that float64 agrees to ~1e-15 and float32 to a few ulps.
Shapes: out (K, N, D_out), x (N, D), mu/log_var/sd (N, Z), eps/z/dz (K, N, Z), weights (K, N).
"""

from __future__ import annotations

import math

import numpy as np

from . import cpu_math  # noqa: F401  (registers the CPU exp_neg, expm1_neg, log1p_unit that scalar.py calls)
from ._jit import jit, like
from .scalar import (
    BERNOULLI,
    GAUSSIAN,
    RELU,
    SOFTPLUS,
    TANH,
    bernoulli,
    gaussian,
    gaussian_learned,
    kl_std_normal_dim,
    nan_max,
    relu,
    relu_grad,
    softplus,
    softplus_grad,
    tanh,
    tanh_grad,
)

ANALYTIC, ELBO_MC, IWAE = 0, 1, 2  # head modes: ELBO with analytic KL, ELBO with MC KL, IWAE
REPARAM, STL, DREG = 0, 1, 2  # encoder gradient estimators


@jit
def bias_activation(a, b, code, y):
    """a <- f(a + b) in place, or for softplus (whose backward needs a + b) a <- a + b and y <- f(a): (M, H).

    One loop per activation, each branch-free, so that it vectorises; in place, so that LLVM sees
    each element read and written at the same address.
    """
    M, H = a.shape
    for m in range(M):
        if code == RELU:
            for j in range(H):
                a[m, j] = relu(a[m, j] + b[j])
        elif code == TANH:
            for j in range(H):
                a[m, j] = tanh(a[m, j] + b[j])
        elif code == SOFTPLUS:
            for j in range(H):
                a[m, j] = a[m, j] + b[j]
                y[m, j] = softplus(a[m, j])
        else:
            for j in range(H):
                a[m, j] = a[m, j] + b[j]


@jit
def activation_backward(d, cache, code, db):
    """d <- d f'(cache) in place, and db = sum over rows of the result (npvae.layers.activation_backward + dense_backward's db)."""
    M, H = d.shape
    for j in range(H):
        db[j] = like(db[0], 0.0)
    for m in range(M):
        if code == RELU:
            for j in range(H):
                d[m, j] = relu_grad(d[m, j], cache[m, j])
        elif code == TANH:
            for j in range(H):
                d[m, j] = tanh_grad(d[m, j], cache[m, j])
        elif code == SOFTPLUS:
            for j in range(H):
                d[m, j] = softplus_grad(d[m, j], cache[m, j])
        for j in range(H):
            db[j] += d[m, j]


@jit
def sample(mu, log_var, eps, z, sd, lp_lq, want_lp):
    """z = mu + exp(log_var/2) eps, and lp_lq = log N(z; 0, I) - log q(z|x) written in eps (npvae.gaussian), per (k, n)."""
    K, N, Z = eps.shape
    half, log2pi = like(mu[0, 0], 0.5), like(mu[0, 0], math.log(2.0 * math.pi))
    for n in range(N):
        for j in range(Z):
            sd[n, j] = math.exp(half * log_var[n, j])
    for k in range(K):
        for n in range(N):
            sp = like(half, 0.0)
            sq = like(half, 0.0)
            for j in range(Z):
                zj = mu[n, j] + sd[n, j] * eps[k, n, j]
                z[k, n, j] = zj
                if want_lp:
                    sp += log2pi + zj * zj
                    sq += log2pi + log_var[n, j] + eps[k, n, j] * eps[k, n, j]
            if want_lp:
                lp_lq[k, n] = -half * sp - -half * sq


@jit(fastmath={"reassoc"})  # reassociation only, so that LLVM may vectorise the sum; NaN and inf keep their meaning
def _sum(v):
    s = like(v[0], 0.0)
    for i in range(v.shape[0]):
        s += v[i]
    return s


@jit
def _row_log_lik(row, xn, lik, c1, c2, grad, lp):
    """sum_d log p(x_d | row) for one decoder output row; with `grad`, the row is overwritten by d log p / d row.

    Terms go to the scratch row lp and are summed after, so the element loops have no reduction and vectorise.
    """
    D = xn.shape[0]
    if lik == BERNOULLI:
        if grad:
            for d in range(D):
                lp[d], row[d] = bernoulli(xn[d], row[d])
        else:
            for d in range(D):
                lp[d] = bernoulli(xn[d], row[d])[0]
    elif lik == GAUSSIAN:
        if grad:
            for d in range(D):
                lp[d], row[d] = gaussian(xn[d], row[d], c1, c2)
        else:
            for d in range(D):
                lp[d] = gaussian(xn[d], row[d], c1, c2)[0]
    else:
        if grad:
            for d in range(D):
                lp[d], row[d], row[D + d] = gaussian_learned(xn[d], row[d], row[D + d], c1, c2)
        else:
            for d in range(D):
                lp[d] = gaussian_learned(xn[d], row[d], row[D + d], c1, c2)[0]
    return _sum(lp[:D])


@jit
def head(out, x, lp_lq, lik, c1, c2, mode, beta, wconst, n_t, grad, value, logw, w, wn):
    """The bound head, one data point at a time: log p(x|z_k) per row, log-weights, value (N,), weights, and (grad) dout.

    Replaces npvae.likelihoods.forward/backward and the value/weight lines of objectives._bound_and_grad:
    ANALYTIC: value = mean_k log p(x|z_k) (the caller subtracts the KL), wn = 1/(K N);
    ELBO_MC:  a_k = log p(x|z_k) + beta lp_lq_k, value = mean_k a_k, w = 1/K, wn = w / N;
    IWAE:     value = LME_k(a_k), w = softmax_k(a_k), wn = w / N.
    With `grad` the K rows of point n are overwritten by wn_k d log p / d out while still in cache.
    logw holds log p(x|z_k) (ANALYTIC) or a_k; c1, c2 are the likelihood's constants (see numba_cpu).
    """
    K, N, _ = out.shape
    log_k = like(beta, math.log(K))
    scratch = np.empty(x.shape[1], dtype=x.dtype)
    for n in range(N):
        for k in range(K):
            lp = _row_log_lik(out[k, n], x[n], lik, c1, c2, grad, scratch)
            logw[k, n] = lp if mode == ANALYTIC else lp + beta * lp_lq[k, n]
        if mode != IWAE:
            s = like(beta, 0.0)
            for k in range(K):
                s += logw[k, n]
                w[k, n] = wconst
                wn[k, n] = wconst if mode == ANALYTIC else wconst / n_t
            value[n] = s / like(beta, K)
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
            if m_safe != m:  # all -inf (or NaN): shift by 0 as NumPy's LME does, so -inf stays -inf
                s = like(beta, 0.0)
                for k in range(K):
                    s += math.exp(logw[k, n] - m_safe)
            value[n] = math.log(s) + m_safe - log_k
        if grad:
            for k in range(K):
                row = out[k, n]
                c = wn[k, n]
                for d in range(row.shape[0]):
                    row[d] = c * row[d]


@jit
def kl_free_bits(mu, log_var, free_bits, kl, above):
    """kl (N,) = sum_j max(lambda, KL_j), above = KL_j > lambda (objectives._free_bits_kl); lambda = -inf: the plain KL."""
    N, Z = mu.shape
    for n in range(N):
        s = like(free_bits, 0.0)
        for j in range(Z):
            kj = kl_std_normal_dim(mu[n, j], log_var[n, j])
            a = kj > free_bits
            above[n, j] = a
            s += kj if a else free_bits
        kl[n] = s


@jit
def latent_backward(dz, z, eps, sd, mu, log_var, w, wn, above, beta, n_t, mode, estimator, dh):
    """Pull dz (K, N, Z) back to dh = [dmu, dlog_var] (N, 2Z), adding the prior/q terms of each estimator.

    Replaces, in objectives._bound_and_grad: dz -= beta wn z (MC), dz -= beta wn (-eps/sd) (STL, DReG),
    dz *= w (DReG), gaussian.sample_backward, the reparameterised +beta/(2N) on dlog_var, and for the
    analytic KL the free-bits-masked kl_std_normal_backward.
    """
    K, N, Z = dz.shape
    half = like(beta, 0.5)
    for n in range(N):
        for j in range(Z):
            s = sd[n, j]
            acc_mu = like(beta, 0.0)
            acc_lv = like(beta, 0.0)
            for k in range(K):
                g = dz[k, n, j]
                if mode != ANALYTIC:
                    bw = beta * wn[k, n]
                    g = g - bw * z[k, n, j]
                    if estimator != REPARAM:
                        g = g - bw * (-eps[k, n, j] / s)
                        if estimator == DREG:
                            g = g * w[k, n]
                acc_mu += g
                acc_lv += g * s * eps[k, n, j]
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


@jit
def lme_update(a, m, s):
    """Streaming logsumexp over axis 0 of a (k, N): m <- max(m, max_k a), s <- s e^(m_old - m) + sum_k e^(a - m).

    As npvae.importance.log_px, except that a point whose log-weights are all -inf so far keeps s = 0
    (NumPy's e^(-inf - -inf) would make it NaN); NaN in a gives NaN.
    """
    K, N = a.shape
    for n in range(N):
        mx = a[0, n]
        for k in range(1, K):
            mx = nan_max(a[k, n], mx)
        m_new = nan_max(m[n], mx)
        if m_new == -math.inf:
            continue
        t = like(m_new, 0.0)
        for k in range(K):
            t += math.exp(a[k, n] - m_new)
        s[n] = s[n] * math.exp(m[n] - m_new) + t
        m[n] = m_new


@jit
def lme_finish(m, s, log_k, out):
    """out = log(s) + m - log k: the log-mean-exp from a streaming (m, s); -inf where every a was -inf."""
    for n in range(m.shape[0]):
        out[n] = math.log(s[n]) + m[n] - log_k if s[n] > like(log_k, 0.0) or s[n] != s[n] else -math.inf


@jit
def log_mean_exp(a, out):
    """out (N,) = log (1/K) sum_k exp(a_k) over axis 0 of a (K, N), as npvae.lme._log_mean_exp (all -inf -> -inf)."""
    K, N = a.shape
    log_k = like(out[0], math.log(K))
    for n in range(N):
        m = a[0, n]
        for k in range(1, K):
            m = nan_max(a[k, n], m)
        m_safe = m if (m > -math.inf and m < math.inf) else like(m, 0.0)
        s = like(m, 0.0)
        for k in range(K):
            s += math.exp(a[k, n] - m_safe)
        out[n] = math.log(s) + m_safe - log_k if s > like(m, 0.0) or s != s else -math.inf


@jit
def adam(p, g, m, v, sign, b1, c1, b2, c2, step_size, sqrt_bc2, eps):
    """In place, element by element: g' = sign g; m = b1 m + (1-b1) g'; v = b2 v + (1-b2) g'^2; p -= lr/bc1 m / (sqrt(v)/sqrt(bc2) + eps).

    Same operations in the same order as npvae.optim.adam_update (c1 = 1 - b1, c2 = 1 - b2), so the
    result is the same to the last bit; p, g, m, v are flat views of one parameter.
    """
    for i in range(p.shape[0]):
        gi = sign * g[i]
        mi = b1 * m[i] + c1 * gi
        vi = b2 * v[i] + c2 * (gi * gi)
        m[i] = mi
        v[i] = vi
        p[i] = p[i] - step_size * mi / (math.sqrt(vi) / sqrt_bc2 + eps)
