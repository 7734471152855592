"""The numba CPU kernels: loops around scalar.py's maths, fused element-wise passes between the BLAS matrix products.

Private cores: no checking (npvae.backends.numba_cpu validates nothing either; the public entry
points in npvae.objectives and npvae.vae.importance do). Every scalar argument arrives already in the
arrays' float type. The formulas are scalar.py's (compiled here, `S`) and the likelihoods' element
kernels; each loop names the NumPy lines it replaces and keeps their order of operations, so float64
agrees to ~1e-15 and float32 to a few ulps. The likelihood's head is compiled once per likelihood
(`head_kernels`), with that likelihood's `elem` inlined.
Shapes: out (K N, D_out), x (N, D), mu/log_var/sd (N, Z), eps/z/dz (K N, Z) with row r = k N + n, weights (K, N).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from . import cpu_math  # noqa: F401  (registers the CPU exp_neg, expm1_neg, log1p_unit that scalar.py calls)
from ..maths import scalar
from ._jit import compile_module, jit, like, rebuild
from ..maths.codes import ANALYTIC, RELU, SOFTPLUS, TANH

# scalar.py's functions are inlined in numba's IR where they are called (not left to LLVM): a call that passes
# arrays otherwise costs a reference-count increment and decrement per array, per element of the loops (3x on
# latent_backward), and float64 softplus/sigmoid stay scalar calls (the float64 head 6x slower). The likelihoods'
# `elem` is NOT inlined that way: in float32 that made the head 9x slower (bench/RESULTS.md, issue 13).
S = compile_module(scalar, lambda f: jit(f, inline="always"))
relu, relu_grad, tanh, tanh_grad, softplus, softplus_grad = (S[n] for n in ("relu", "relu_grad", "tanh", "tanh_grad", "softplus", "softplus_grad"))
std, sample_row, kl_free_bits_point, latent_point, adam_elem = (S[n] for n in ("std", "sample_row", "kl_free_bits_point", "latent_point", "adam_elem"))
bound_point, scale_rows, log_mean_exp_point, lme_update_point, lme_finish_elem = (
    S[n] for n in ("bound_point", "scale_rows", "log_mean_exp_point", "lme_update_point", "lme_finish"))


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
    """d <- d f'(cache) in place, and db = sum over rows of the result (npvae.nn.layers.activation_backward + dense_backward's db)."""
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
    """z = mu + exp(log_var/2) eps, and lp_lq = log N(z; 0, I) - log q(z|x) written in eps (npvae.maths.gaussian), per (k, n)."""
    K, N = lp_lq.shape
    for n in range(N):
        for j in range(mu.shape[1]):
            sd[n, j] = std(log_var[n, j])
    for k in range(K):
        for n in range(N):
            lp_lq[k, n] = sample_row(mu, log_var, sd, eps, z, k * N + n, n, want_lp)


@jit(fastmath={"reassoc"})  # reassociation only, so that LLVM may vectorise the sum; NaN and inf keep their meaning
def _sum(v):
    s = like(v[0], 0.0)
    for i in range(v.shape[0]):
        s += v[i]
    return s


def _row_log_lik(row, xn, c1, c2, grad, lp):
    """sum_d log p(x_d | row) for one decoder output row; with `grad`, the row is overwritten by d log p / d row.

    Terms go to the scratch row lp and are summed after, so the element loop has no reduction and vectorises.
    Compiled per likelihood (`head_kernels`), `lik_elem` being its element kernel.
    """
    D = xn.shape[0]
    if grad:
        for d in range(D):
            lp[d] = lik_elem(xn[d], row, d, D, c1, c2, True)  # noqa: F821  (bound per likelihood)
    else:
        for d in range(D):
            lp[d] = lik_elem(xn[d], row, d, D, c1, c2, False)  # noqa: F821
    return _sum(lp[:D])


def _head(out, x, lp_lq, c1, c2, mode, beta, inv_k, n_t, log_k, grad, value, logw, w, wn):
    """The bound head, one data point at a time: log p(x|z_k) per row, log-weights, value (N,), weights, and (grad) dout.

    Replaces likelihoods.forward/backward and the bound's value and weights in objectives.bound_and_grad:
    logw holds log p(x|z_k) (ANALYTIC; the caller subtracts the KL) or a_k = log p(x|z_k) + beta lp_lq_k;
    value, w, wn from scalar.bound_point. With `grad` the K rows of point n are overwritten by wn_k d log p / d out
    while still in cache. c1, c2 are the likelihood's constants (its `constants`).
    """
    K, N = logw.shape
    scratch = np.empty(x.shape[1], dtype=x.dtype)
    for n in range(N):
        for k in range(K):
            lp = row_log_lik(out[k * N + n], x[n], c1, c2, grad, scratch)  # noqa: F821  (bound per likelihood)
            logw[k, n] = lp if mode == ANALYTIC else lp + beta * lp_lq[k, n]
        value[n] = bound_point(logw, n, mode, inv_k, n_t, log_k, w, wn)
        if grad:
            scale_rows(out, wn, n)


_HEADS = {}


def head_kernels(kind) -> SimpleNamespace:
    """The head compiled for one likelihood module (npvae.likelihoods.REGISTRY's entries): .head, .row_log_lik, .elem."""
    if kind.NAME not in _HEADS:
        tag = kind.NAME.replace("-", "_")
        g = {**globals(), "lik_elem": jit(rebuild(kind.elem, {**vars(kind), **S}))}
        g["row_log_lik"] = jit(rebuild(_row_log_lik, g, f"row_log_lik_{tag}"))
        g["head"] = jit(rebuild(_head, g, f"head_{tag}"))
        _HEADS[kind.NAME] = SimpleNamespace(head=g["head"], row_log_lik=g["row_log_lik"], elem=g["lik_elem"])
    return _HEADS[kind.NAME]


@jit
def kl_free_bits(mu, log_var, free_bits, kl, above):
    """kl (N,) = sum_j max(lambda, KL_j), above = KL_j > lambda (estimators.free_bits_kl); lambda = -inf: the plain KL."""
    for n in range(mu.shape[0]):
        kl[n] = kl_free_bits_point(mu, log_var, n, free_bits, above)


@jit
def latent_backward(dz, z, eps, sd, mu, log_var, w, wn, above, beta, n_t, mode, estimator, dh):
    """Pull dz (K N, Z) back to dh = [dmu, dlog_var] (N, 2Z), adding the prior/q terms of each estimator (scalar.latent_point)."""
    N, Z = mu.shape
    for n in range(N):
        for j in range(Z):
            dh[n, j], dh[n, Z + j] = latent_point(dz, z, eps, sd, mu, log_var, w, wn, above, beta, n_t, mode, estimator, n, j)


@jit
def lme_update(a, m, s):
    """Streaming logsumexp over axis 0 of a (k, N) into (m, s) (scalar.lme_update_point)."""
    for n in range(a.shape[1]):
        lme_update_point(a, n, m, s)


@jit
def lme_finish(m, s, log_k, out):
    """out = log(s) + m - log k: the log-mean-exp from a streaming (m, s); -inf where every a was -inf."""
    for n in range(m.shape[0]):
        out[n] = lme_finish_elem(m[n], s[n], log_k)


@jit
def log_mean_exp(a, log_k, out):
    """out (N,) = log (1/K) sum_k exp(a_k) over axis 0 of a (K, N), as npvae.maths.lme.log_mean_exp_core (all -inf -> -inf)."""
    for n in range(a.shape[1]):
        out[n] = log_mean_exp_point(a, n, log_k)


@jit
def adam(p, g, m, v, sign, b1, c1, b2, c2, step_size, sqrt_bc2, eps):
    """One Adam step in place, element by element (scalar.adam_elem); p, g, m, v are flat views of one parameter.

    Returns True if some new p is non-finite, for the trainer's divergence check without another pass: a non-finite g
    always makes its p non-finite (m and v take it, and p moves by m / sqrt(v), NaN or inf / inf), so this one test
    sees both. Testing p alone keeps the loop as fast as without a test; testing g too made it 1.4-1.8x slower."""
    bad = False
    for i in range(p.shape[0]):
        p[i], m[i], v[i] = adam_elem(p[i], g[i], m[i], v[i], sign, b1, c1, b2, c2, step_size, sqrt_bc2, eps)
        bad |= not np.isfinite(p[i])
    return bad


@jit
def gather_rows(x, idx, out):
    """out[i] = x[idx[i]] cast to out's dtype (x (N, D) any numeric dtype, e.g. a compact uint8 split; out (len(idx), D))."""
    for i in range(idx.shape[0]):
        r = idx[i]
        for d in range(x.shape[1]):
            out[i, d] = x[r, d]
