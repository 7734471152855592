"""The CUDA backend: npvae.backends.numba_cpu's forward and backward with every step on the device.

Matrix products are CuPy's cuBLAS where `cupy` imports, else the shared-memory tiled kernel
(npvae.backends.cuda_kernels.gemm); everything between them is one of cuda_kernels' element-wise
kernels. The device cores (`bound_and_grad_device`, `adam_device`) take and return device arrays; the public
functions, with the same signatures as numba_cpu's, copy parameters, x and eps to the device per call
and copy the value, gradients and log-weights back as fresh NumPy arrays. Training keeps everything
on the device across steps instead (npvae.backends.cuda_train, reached through cuda_backend.stepper), for one-stochastic-layer models only.
The L-layer model (npvae.backends.cuda_ladder) runs this module's MLP and head loops on the device, and its
latent maths as one kernel per layer and pass (npvae.backends.cuda_latent_kernels). No checking here: npvae.objectives and npvae.vae.importance
validate and then call these.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda

from ..nn.layers import Dense
from ..vae.model import Arch, VAEParams
from . import cuda_kernels as ck
from ..maths.codes import ACTIVATION, ANALYTIC, ELBO_MC, ESTIMATOR, HEAD, IDENTITY, SOFTPLUS

try:  # cuBLAS through CuPy where it is installed; the tiled kernel otherwise
    import cupy as _cp
except Exception:  # ImportError, or a CuPy without a usable CUDA
    _cp = None


def _empty(shape, dtype):
    return cuda.device_array(shape, dtype=dtype)


def _matmul(A, B, ta=False, tb=False, out=None):
    """op(A) @ op(B) -> out, or a fresh device array."""
    M = A.shape[1] if ta else A.shape[0]
    P = B.shape[0] if tb else B.shape[1]
    C = _empty((M, P), A.dtype) if out is None else out
    if _cp is not None:
        a, b = _cp.asarray(A), _cp.asarray(B)
        _cp.matmul(a.T if ta else a, b.T if tb else b, out=_cp.asarray(C))
    else:
        ck.gemm(A, B, C, ta, tb)
    return C


def mlp_forward(layers, x, code):
    """(M, H_0) -> (M, H_L): product, then bias+activation; returns (out, caches) for `mlp_backward`."""
    h = x
    caches = []
    for i, (W, b) in enumerate(layers):
        a = _matmul(h, W)
        act = code if i < len(layers) - 1 else IDENTITY
        y = _empty(a.shape, a.dtype) if act == SOFTPLUS else a  # softplus' backward needs a
        ck.launch(ck.bias_activation, a.size, a, b, act, y)
        caches.append((h, a if act == SOFTPLUS else y))
        h = y
    return h, caches


def mlp_backward(layers, caches, dout, code, need_dx, out=None):
    """Back through the layers from dout (M, H_L), overwritten; returns (device grads tuple of Dense, written into out if given, dx or None)."""
    grads = [None] * len(layers)
    d = dout
    for i in reversed(range(len(layers))):
        h, cache = caches[i]
        W = layers[i].W
        ck.launch(ck.activation_backward, d.size, d, cache, code if i < len(layers) - 1 else IDENTITY)
        dW, db = (None, _empty(W.shape[1], d.dtype)) if out is None else out[i]
        ck.launch(ck.column_sum, W.shape[1], d, db)
        grads[i] = Dense(_matmul(h, d, ta=True, out=dW), db)
        if i > 0 or need_dx:
            d = _matmul(d, W, tb=True)
    return tuple(grads), (d if need_dx else None)


def to_device_params(params):
    """VAEParams or LadderParams -> the same container of C-ordered device arrays."""
    return type(params)(*(tuple(Dense(*(cuda.to_device(np.ascontiguousarray(a)) for a in layer)) for layer in part) for part in params))


def _to_host(params: VAEParams) -> VAEParams:
    return VAEParams(*(tuple(Dense(*(a.copy_to_host() for a in layer)) for layer in part) for part in params))


def _encode(dev, arch, x):
    h, caches = mlp_forward(dev.encoder, x, ACTIVATION[arch.activation])
    Z = arch.latent_dim
    return h[:, :Z], h[:, Z:], caches


def _sample_decode(dev, arch, eps, mu, log_var, want_lp):
    """z, sd, lp_lq and decoder output (K N, D_out) for device noise eps (K N, Z) with K samples."""
    KN, Z = eps.shape
    N = mu.shape[0]
    K = KN // N
    z, sd, lp_lq = _empty((KN, Z), eps.dtype), _empty((N, Z), eps.dtype), _empty((K, N), eps.dtype)
    ck.launch(ck.std_kernel, N * Z, log_var, sd)
    ck.launch(ck.sample, KN, mu, log_var, sd, eps, z, lp_lq, want_lp)
    out, caches = mlp_forward(dev.decoder, z, ACTIVATION[arch.activation])
    return z, sd, lp_lq, out, caches


def head(arch, x, out, lp_lq, kl, mode, beta, grad):
    """value (N,), logw, w, wn (K, N) on the device; with grad, out becomes dout (kernels.head)."""
    K, N = lp_lq.shape
    t = np.dtype(x.dtype).type
    lik = arch.likelihood
    c1, c2 = lik.kind.constants(lik, t)
    value, logw, w, wn = _empty(N, x.dtype), _empty((K, N), x.dtype), _empty((K, N), x.dtype), _empty((K, N), x.dtype)
    ck.launch(ck.row_log_lik(lik.kind), K * N, out, x, lp_lq, c1, c2, mode, t(beta), grad, logw)
    ck.launch(ck.weights, N, logw, kl, mode, t(beta), t(1.0 / K), t(N), t(math.log(K)), grad, out, value, w, wn)
    return value, logw, w, wn


def _kl(mu, log_var, free_bits):
    N, Z = mu.shape
    kl, above = _empty(N, mu.dtype), _empty((N, Z), np.bool_)
    ck.launch(ck.kl_free_bits, N, mu, log_var, free_bits, kl, above)
    return kl, above


def _inputs(x, eps):
    """x (N, D) and eps (K, N, Z) -> device arrays x and eps (K N, Z)."""
    return cuda.to_device(np.ascontiguousarray(x)), cuda.to_device(np.ascontiguousarray(eps).reshape(-1, eps.shape[2]))


def bound_and_grad_device(dev: VAEParams, arch: Arch, x, eps, bound, kl, estimator, kl_weight, free_bits=0.0, out=None):
    """Device value (N,) and device gradient of its batch mean (written into `out`'s arrays if given) for device params, x (N, D), eps (K N, Z)."""
    N, Z = x.shape[0], arch.latent_dim
    K = eps.shape[0] // N
    t = np.dtype(x.dtype).type
    beta = t(kl_weight)
    mode = HEAD[(bound, kl)]
    mu, log_var, enc_caches = _encode(dev, arch, x)
    kl_value, above = _kl(mu, log_var, t(free_bits))  # used (and `above` read) only for the analytic KL
    z, sd, lp_lq, d, dec_caches = _sample_decode(dev, arch, eps, mu, log_var, mode != ANALYTIC)
    value, _, w, wn = head(arch, x, d, lp_lq, kl_value, mode, beta, True)  # d: decoder output, now its gradient
    code = ACTIVATION[arch.activation]
    dec_grads, dz = mlp_backward(dev.decoder, dec_caches, d, code, True, None if out is None else out.decoder)
    dh = _empty((N, 2 * Z), x.dtype)
    ck.launch(ck.latent_backward, N * Z, dz, z, eps, sd, mu, log_var, w, wn, above, beta, t(N), mode,
              ESTIMATOR[estimator], dh)
    enc_grads, _ = mlp_backward(dev.encoder, enc_caches, dh, code, False, None if out is None else out.encoder)
    return value, VAEParams(enc_grads, dec_grads)


def bound_and_grad(params: VAEParams, arch: Arch, x, eps, bound, kl, estimator, kl_weight, free_bits=0.0):
    """The value (N,) and the gradient of its batch mean, as objectives.bound_and_grad; no checking."""
    value, grads = bound_and_grad_device(to_device_params(params), arch, *_inputs(x, eps), bound, kl, estimator, kl_weight, free_bits)
    return value.copy_to_host(), _to_host(grads)


def log_weights(params: VAEParams, arch: Arch, x, eps):
    """a_k = log p(x|z_k) + log p(z_k) - log q(z_k|x): (K, N), fresh; no checking."""
    dev = to_device_params(params)
    xd, ed = _inputs(x, eps)
    mu, log_var, _ = _encode(dev, arch, xd)
    _, _, lp_lq, out, _ = _sample_decode(dev, arch, ed, mu, log_var, True)
    _, logw, _, _ = head(arch, xd, out, lp_lq, lp_lq[0], ELBO_MC, 1.0, False)
    return logw.copy_to_host()


def bound_value(params: VAEParams, arch: Arch, x, eps, bound, kl):
    """The bound per point (N,) without gradients, as objectives.bound_value; no checking."""
    mode = HEAD[(bound, kl)]
    dev = to_device_params(params)
    xd, ed = _inputs(x, eps)
    mu, log_var, _ = _encode(dev, arch, xd)
    kl_value, _ = _kl(mu, log_var, x.dtype.type(-np.inf))  # lambda = -inf: the plain KL
    _, _, lp_lq, out, _ = _sample_decode(dev, arch, ed, mu, log_var, mode != ANALYTIC)
    value, _, _, _ = head(arch, xd, out, lp_lq, kl_value, mode, 1.0, False)
    return value.copy_to_host()


def log_px(params: VAEParams, arch: Arch, x, k: int, rng, chunk: int, progress=None):
    """Importance-sampled log p(x) (N,) as npvae.objectives.log_px: k samples in chunks, the noise drawn on the host in the same order."""
    dtype = x.dtype
    N, Z = x.shape[0], arch.latent_dim
    dev = to_device_params(params)
    xd = cuda.to_device(np.ascontiguousarray(x))
    mu, log_var, _ = _encode(dev, arch, xd)
    m = cuda.to_device(np.full(N, -np.inf, dtype=dtype))
    s = cuda.to_device(np.zeros(N, dtype=dtype))
    done = 0
    while done < k:
        kc = min(chunk, k - done)
        eps = cuda.to_device(rng.standard_normal((kc, N, Z), dtype=dtype).reshape(kc * N, Z))
        _, _, lp_lq, out, _ = _sample_decode(dev, arch, eps, mu, log_var, True)
        _, logw, _, _ = head(arch, xd, out, lp_lq, lp_lq[0], ELBO_MC, 1.0, False)
        ck.launch(ck.lme_update, N, logw, m, s)
        done += kc
        if progress is not None:
            progress(kc * N)
    out = _empty(N, dtype)
    ck.launch(ck.lme_finish, N, m, s, dtype.type(math.log(k)), out)
    return out.copy_to_host()


def log_mean_exp(a):
    """LME over axis 0 of a (K, N) -> (N,), fresh; no checking."""
    out = _empty(a.shape[1], a.dtype)
    ck.launch(ck.log_mean_exp, a.shape[1], cuda.to_device(np.ascontiguousarray(a)), a.dtype.type(math.log(a.shape[0])), out)
    return out.copy_to_host()


def adam_device(p, g, m, v, step, lr, betas, eps, sign):
    """Adam's step number `step` in place on device arrays p, m, v (flat, any length) with gradient sign * g (kernels.adam)."""
    b1, b2 = betas
    bc1, bc2 = 1.0 - b1**step, 1.0 - b2**step
    t = np.dtype(p.dtype).type
    ck.launch(ck.adam, p.size, p, g, m, v, t(sign), t(b1), t(1.0 - b1), t(b2), t(1.0 - b2), t(lr / bc1), t(np.sqrt(bc2)), t(eps))


def adam_step(params, grads, state, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, sign=1.0):
    """npvae.nn.optim.adam_update IN PLACE on params and state's m, v (host arrays, each step through the device); returns (params, new state)."""
    from ..nn.optim import AdamState

    step = state.step + 1
    for p, g, m, v in zip(params, grads, state.m, state.v):
        dp, dg, dm, dv = (cuda.to_device(np.ascontiguousarray(a).reshape(-1)) for a in (p, g, m, v))
        adam_device(dp, dg, dm, dv, step, lr, betas, eps, sign)
        for a, d in ((p, dp), (m, dm), (v, dv)):
            a[...] = d.copy_to_host().reshape(a.shape)
    return params, AdamState(step, state.m, state.v)


adam_update_ = adam_step  # the name it had, for callers of the module
