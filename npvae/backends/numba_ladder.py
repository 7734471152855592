"""The numba CPU backend for the L-stochastic-layer model: npvae.vae.ladder_objective's maths around numba_cpu's loops.

The four MLPs run through numba_cpu's BLAS products and fused bias+activation kernels (enc1's first
product as a sum of rows of W when x is binary and sparse), and the likelihood and the bound through its
fused head kernel (npvae.backends.kernels), which is where a step spends most of its element-wise time
(K N x D_out). The latent layers, (K, N, Z)-wide, run through ladder_objective's `Latent` seams as one
kernel per layer and pass (npvae.backends.latent_kernels): the sample with log q and log N(z; 0, I), the
conditional prior with its cache, its backward, and each layer's estimator rule written straight into the
[dmean, dlog_var] buffer that enc_l's backward reads. Buffers live in numba_cpu's per-thread workspace.
FUSE_LATENT = False runs the specification's NumPy latent code instead (a benchmark's baseline; tests use the default).
Private cores: no checking.
"""

from __future__ import annotations

import numpy as np

from ..vae import ladder_objective as ladder
from . import latent_kernels as lk
from . import numba_cpu as nb
from ..maths.codes import ACTIVATION, HEAD

FUSE_LATENT = True


def _rows(a):
    """(..., Z) -> (rows, Z), a view wherever numpy can make one (the slices of an MLP's output and of eps can)."""
    return a.reshape(-1, a.shape[-1])


def latent(ws) -> ladder.Latent:
    """ladder_objective.Latent through latent_kernels, in the workspace ws. Caches: sample (sd, lq, lpz), prior (r, sd)."""

    def buf(l, name, shape, dtype):
        return ws.get(("latent", l, name), shape, dtype)

    def sample(l, mu, lv, eps):
        K, N, Z = eps.shape
        mu2 = _rows(mu)
        z, sd = buf(l, "z", (K * N, Z), eps.dtype), buf(l, "sd", mu2.shape, eps.dtype)
        lq, lpz = buf(l, "lq", (K, N), eps.dtype), buf(l, "lpz", (K, N), eps.dtype)
        lk.sample(mu2, _rows(lv), _rows(eps), z, sd, lq, lpz)
        return z.reshape(K, N, Z), (sd, lq, lpz)

    def prior(l, z, mp, lvp):
        K, N, Z = z.shape
        res, sd = buf(l, "r", (K * N, Z), z.dtype), buf(l, "psd", (K * N, Z), z.dtype)
        log_p = buf(l, "log_p", (K, N), z.dtype)
        lk.prior(_rows(z), _rows(mp), _rows(lvp), res, sd, log_p)
        return log_p, (res, sd)

    def log_weights(f, analytic):
        top = f.layers[-1]
        if analytic:
            mu = _rows(top.mu)
            kl = buf(0, "kl", (mu.shape[0],), mu.dtype)
            lk.kl_rows(mu, _rows(top.lv), kl)
            lp_lq = -kl.reshape(top.mu.shape[:-1])  # (N,) for L = 1, else (K, N)
        else:
            lp_lq = top.sample_cache[2] - top.sample_cache[1]
        return ladder.sum_latent_terms(f, lp_lq, lambda layer: layer.sample_cache[1])

    def prior_back(l, dz, c, layer):
        res, sd = layer.p_cache
        d = _rows(dz)
        dp = buf(l, "dp", (res.shape[0], 2 * res.shape[1]), res.dtype)
        lk.prior_backward(np.ascontiguousarray(c), res, sd, d, dp)  # d/dz added in place
        return d.reshape(dz.shape), dp.reshape(*dz.shape[:-1], dp.shape[1])

    def layer_back(l, top, dz, up, layer, w, wn, beta, analytic, est):
        K, N, Z = layer.eps.shape
        d = _rows(dz)
        ups = [_rows(u) for u in up] + [d] * (2 - len(up))  # d stands in for what is not there (n_up says how many are)
        args = (d, *ups, len(up), _rows(layer.z), _rows(layer.eps), layer.sample_cache[0], _rows(layer.mu), _rows(layer.lv),
                w, wn, beta, top and not analytic, analytic and top, est.squared_weights, est.q_held)
        if l == 1:
            dh = buf(l, "dlive", (N, 2 * Z), dz.dtype)
            lk.first_backward(*args, buf(l, "acc", (2, Z), dz.dtype), dh)
            return dh, None
        live = buf(l, "dlive", (K * N, 2 * Z), dz.dtype)
        has_held = est.q_held and not (analytic and top)
        held = buf(l, "dheld", (K * N, 2 * Z), dz.dtype) if has_held else live
        lk.layer_backward(*args, live, held)
        return live.reshape(K, N, 2 * Z), (held.reshape(K, N, 2 * Z) if has_held else None)

    return ladder.Latent(sample, prior, log_weights, prior_back, layer_back)


def ops(x) -> ladder.Ops:
    """The loops for one call on the batch x (N, D): this thread's workspace, x's binary grouping for enc1."""
    ws = nb.workspace()
    ones = nb.binary_ones(ws, x)
    calls = {}

    def mlp(tag, layers, h, activation):
        return nb.mlp_forward(ws, tag, layers, np.ascontiguousarray(h), ACTIVATION[activation], ones if tag == "enc1" else None)

    def mlp_back(tag, layers, cache, d, activation, need_dx):
        # Each backward of a call gets its own d input buffer: STL's second pass through enc_l (the held part) must not
        # overwrite the first's, which ladder_objective keeps until the layer below reads both.
        n = calls[tag] = calls.get(tag, -1) + 1
        return nb.mlp_backward(ws, (tag, n), layers, cache, d, ACTIVATION[activation], need_dx, ones if tag == "enc1" else None)

    def head(arch, out, x_, lp_lq, bound, kl, beta, grad):
        # HEAD[(bound, "mc")]: the analytic top KL is already inside lp_lq, so the head adds beta lp_lq to log p(x|z1) in both cases.
        value, a, w, wn = nb.head(ws, arch, x_, out, np.ascontiguousarray(lp_lq), HEAD[(bound, "mc")], beta, grad)
        return value, a, w, wn, (out if grad else None)

    return ladder.Ops(mlp, mlp_back, head, latent(ws) if FUSE_LATENT else ladder.NUMPY_LATENT)


def bound_and_grad(params, arch, x, eps, bound, kl, estimator, kl_weight, free_bits=0.0):
    x = np.ascontiguousarray(x)  # row access in the kernels (data sets may be Fortran-ordered)
    return ladder.bound_and_grad_core(params, arch, x, eps, bound, kl, estimator, kl_weight, free_bits, ops(x))


def bound_value(params, arch, x, eps, bound, kl):
    x = np.ascontiguousarray(x)
    return ladder.bound_value_core(params, arch, x, eps, bound, kl, ops(x))


def log_weights(params, arch, x, eps):
    x = np.ascontiguousarray(x)
    return ladder.log_weights_core(params, arch, x, eps, ops(x))


def log_px(params, arch, x, k: int, rng, chunk: int, progress=None):
    x = np.ascontiguousarray(x)
    return ladder.log_px_core(params, arch, x, k, rng, chunk, progress, ops(x))
