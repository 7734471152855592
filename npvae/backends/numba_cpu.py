"""The numba CPU backend: the same forward and backward as npvae.objectives, with fused kernels between BLAS products.

Matrix products stay on BLAS (`np.matmul(..., out=buffer)`); everything element-wise between them is
one pass of a numba kernel (npvae.backends.kernels). Activations, decoder outputs and the latent
arrays live in a per-thread `Workspace` reused from step to step while shapes and dtype stay the
same; what is returned (values, gradients, log-weights) is always freshly allocated.
Private cores: no checking; `npvae.objectives` and `npvae.vae.importance` validate and then call these.
"""

from __future__ import annotations

import math
import threading

import numpy as np

from ..nn.layers import Dense
from ..vae.model import Arch, VAEParams
from . import binary_input
from . import kernels as kern
from ..maths.codes import ACTIVATION, ANALYTIC, ELBO_MC, ESTIMATOR, HEAD, IDENTITY, SOFTPLUS
from .workers import ordered_map


class Workspace:
    """Named buffers, reallocated only when a shape or dtype changes."""

    def __init__(self):
        self.buffers = {}

    def get(self, name, shape, dtype, fill=None):
        b = self.buffers.get(name)
        if b is None or b.shape != tuple(shape) or b.dtype != dtype:
            b = np.empty(shape, dtype=dtype)
            self.buffers[name] = b
        if fill is not None:
            b.fill(fill)
        return b


_local = threading.local()
CACHE_ELEMENTS = 1 << 19  # decoder outputs per chunk of log_px: 2 MiB in float32, within the L2/L3 of current CPUs


def workspace() -> Workspace:
    """This thread's workspace (two threads never share buffers)."""
    ws = getattr(_local, "ws", None)
    if ws is None:
        ws = _local.ws = Workspace()
    return ws


def mlp_forward(ws, tag, layers, x, code, ones=None):
    """(M, H_0) -> (M, H_L) through BLAS products and bias+activation kernels; returns (out, caches) for `mlp_backward`.

    ones: binary_input's (colptr, rows) of a binary x, or None; with it the first product is a sum of rows of W.
    """
    h = x
    caches = []
    for i, (W, b) in enumerate(layers):
        a = ws.get((tag, i, "a"), (h.shape[0], W.shape[1]), h.dtype)
        if i == 0 and ones is not None:
            binary_input.matmul(*ones, W, a)
        else:
            np.matmul(h, W, out=a)
        act = code if i < len(layers) - 1 else IDENTITY
        # softplus' derivative needs the pre-activation a; the others can overwrite it with y.
        y = ws.get((tag, i, "y"), a.shape, a.dtype) if act == SOFTPLUS else a
        kern.bias_activation(a, b, act, y)
        caches.append((h, a if act == SOFTPLUS else y))
        h = y
    return h, caches


def mlp_backward(ws, tag, layers, caches, dout, code, need_dx, ones=None):
    """Back through the layers from dout (M, H_L), which is overwritten; returns (grads tuple of Dense, dx or None).

    ones: as in `mlp_forward` (the first layer's dW is then a sum of rows of dout).
    """
    grads = [None] * len(layers)
    d = dout
    for i in reversed(range(len(layers))):
        h, cache = caches[i]
        W = layers[i].W
        db = np.empty(W.shape[1], dtype=d.dtype)
        kern.activation_backward(d, cache, code if i < len(layers) - 1 else IDENTITY, db)
        if i == 0 and ones is not None:
            dW = np.empty(W.shape, dtype=d.dtype)
            binary_input.matmul_t(*ones, d, dW)
        else:
            dW = np.matmul(h.T, d)
        grads[i] = Dense(dW, db)
        if i > 0 or need_dx:
            dx = ws.get((tag, i, "dx"), h.shape, d.dtype)
            np.matmul(d, W.T, out=dx)
            d = dx
    return tuple(grads), (d if need_dx else None)


def binary_ones(ws, x):
    """binary_input's (colptr, rows) of the ones of x (N, D) if it is binary and sparse enough, else None."""
    N, D = x.shape
    colptr = ws.get("colptr", (D + 1,), np.int64)
    rows = ws.get("rows", (N * D,), np.int32)
    nnz = binary_input.support(x, colptr, rows, x.dtype.type(binary_input.MAX_DENSITY))
    return (colptr, rows) if nnz >= 0 else None


def _encode(ws, params, arch, x):
    """mu, log_var (N, Z), the encoder's caches, and binary_input's grouping of x's ones (or None) for its backward."""
    code = ACTIVATION[arch.activation]
    ones = binary_ones(ws, x)
    h, caches = mlp_forward(ws, "enc", params.encoder, x, code, ones)
    Z = arch.latent_dim
    return h[:, :Z], h[:, Z:], (caches, ones)


def _sample_decode(ws, params, arch, eps, mu, log_var, want_lp):
    """z (K N, Z), sd (N, Z), lp_lq (K, N) and the decoder output (K N, D_out) for noise eps (K, N, Z)."""
    K, N, Z = eps.shape
    dt = eps.dtype
    z = ws.get("z", (K * N, Z), dt)
    sd = ws.get("sd", (N, Z), dt)
    lp_lq = ws.get("lp_lq", (K, N), dt)
    kern.sample(mu, log_var, eps.reshape(K * N, Z), z, sd, lp_lq, want_lp)
    out, caches = mlp_forward(ws, "dec", params.decoder, z, ACTIVATION[arch.activation])
    return z, sd, lp_lq, out, caches


def head(ws, arch, x, out, lp_lq, mode, beta, grad):
    """value (N,), logw, w, wn (K, N) from the decoder output (K N, D_out); with grad, out becomes d(batch mean)/d out."""
    K, N = lp_lq.shape
    t = x.dtype.type
    lik = arch.likelihood
    c1, c2 = lik.kind.constants(lik, t)
    value = np.empty(N, dtype=x.dtype)
    logw, w, wn = (ws.get(name, (K, N), x.dtype) for name in ("logw", "w", "wn"))
    kern.head_kernels(lik.kind).head(out, x, lp_lq, c1, c2, mode, t(beta), t(1.0 / K), t(N), t(math.log(K)), grad,
                                     value, logw, w, wn)
    return value, logw, w, wn


def bound_and_grad(params: VAEParams, arch: Arch, x, eps, bound, kl, estimator, kl_weight, free_bits=0.0):
    """The value (N,) and the gradient of its batch mean, as objectives.bound_and_grad; no checking."""
    x, eps = np.ascontiguousarray(x), np.ascontiguousarray(eps)  # row access in the kernels (data sets may be Fortran-ordered)
    ws = workspace()
    K, N, Z = eps.shape
    t = x.dtype.type
    beta = t(kl_weight)
    mode = HEAD[(bound, kl)]
    mu, log_var, (enc_caches, ones) = _encode(ws, params, arch, x)
    z, sd, lp_lq, out, dec_caches = _sample_decode(ws, params, arch, eps, mu, log_var, mode != ANALYTIC)
    value, _, w, wn = head(ws, arch, x, out, lp_lq, mode, beta, True)  # out now holds dout
    code = ACTIVATION[arch.activation]
    dec_grads, dz = mlp_backward(ws, "dec", params.decoder, dec_caches, out, code, True)
    above = ws.get("above", (N, Z), np.bool_)
    if mode == ANALYTIC:
        kl_value = ws.get("kl", (N,), x.dtype)
        kern.kl_free_bits(mu, log_var, t(free_bits), kl_value, above)
        value -= beta * kl_value
    dh = ws.get("dh", (N, 2 * Z), x.dtype)
    kern.latent_backward(dz, z, eps.reshape(K * N, Z), sd, mu, log_var, w, wn, above, beta, t(N), mode, ESTIMATOR[estimator], dh)
    enc_grads, _ = mlp_backward(ws, "enc", params.encoder, enc_caches, dh, code, False, ones)
    return value, VAEParams(enc_grads, dec_grads)


def log_weights(params: VAEParams, arch: Arch, x, eps):
    """a_k = log p(x|z_k) + log p(z_k) - log q(z_k|x): (K, N), fresh; no checking."""
    x, eps = np.ascontiguousarray(x), np.ascontiguousarray(eps)  # row access in the kernels (data sets may be Fortran-ordered)
    ws = workspace()
    mu, log_var, _ = _encode(ws, params, arch, x)
    _, _, lp_lq, out, _ = _sample_decode(ws, params, arch, eps, mu, log_var, True)
    _, logw, _, _ = head(ws, arch, x, out, lp_lq, ELBO_MC, 1.0, False)
    return logw.copy()


def bound_value(params: VAEParams, arch: Arch, x, eps, bound, kl):
    """The bound per point (N,) without gradients, as objectives.bound_value; no checking."""
    x, eps = np.ascontiguousarray(x), np.ascontiguousarray(eps)  # row access in the kernels (data sets may be Fortran-ordered)
    ws = workspace()
    K, N, Z = eps.shape
    mode = HEAD[(bound, kl)]
    mu, log_var, _ = _encode(ws, params, arch, x)
    _, _, lp_lq, out, _ = _sample_decode(ws, params, arch, eps, mu, log_var, mode != ANALYTIC)
    value, _, _, _ = head(ws, arch, x, out, lp_lq, mode, 1.0, False)
    if mode == ANALYTIC:
        kl_value = ws.get("kl", (N,), x.dtype)
        kern.kl_free_bits(mu, log_var, x.dtype.type(-np.inf), kl_value, ws.get("above", (N, Z), np.bool_))
        value -= kl_value
    return value


def log_px(params: VAEParams, arch: Arch, x, k: int, rng, chunk: int, progress=None):
    """Importance-sampled log p(x) (N,) as npvae.objectives.log_px, k samples in chunks of `chunk`; no checking.

    The encoder runs once (its output does not depend on the noise); the noise is drawn chunk by chunk
    in the same (k, N, Z) order as the NumPy path, so both see the same draws. Chunks are cut further
    to about CACHE_ELEMENTS decoder outputs, so that the head reads what the last product has just
    written while it is still in cache (~10% faster for Burda et al.'s model than 4M-element chunks).
    With --threads N the chunks' log-weights are computed by N workers and folded in order (npvae.backends.workers):
    the same result for every N.
    """
    ws = workspace()
    x = np.ascontiguousarray(x)
    N, Z = x.shape[0], arch.latent_dim
    chunk = max(1, min(chunk, CACHE_ELEMENTS // (N * arch.likelihood.out_dim(arch.data_dim))))
    dtype = x.dtype
    mu, log_var, _ = _encode(ws, params, arch, x)  # views of this thread's encoder buffer, which the chunks leave alone

    def chunk_log_weights(eps):  # in the calling thread's own workspace; a copy, as the next chunk reuses the buffers
        w = workspace()
        _, _, lp_lq, out, _ = _sample_decode(w, params, arch, eps, mu, log_var, True)
        return head(w, arch, x, out, lp_lq, ELBO_MC, 1.0, False)[1].copy()

    sizes = [min(chunk, k - done) for done in range(0, k, chunk)]
    m = np.full(N, -np.inf, dtype=dtype)
    s = np.zeros(N, dtype=dtype)
    draws = (rng.standard_normal((kc, N, Z), dtype=dtype) for kc in sizes)
    for logw in ordered_map(chunk_log_weights, draws):
        kern.lme_update(logw, m, s)
        if progress is not None:
            progress(logw.shape[0] * N)
    out = np.empty(N, dtype=dtype)
    kern.lme_finish(m, s, dtype.type(np.log(k)), out)
    return out


def log_mean_exp(a):
    """LME over axis 0 of a (K, N) -> (N,), fresh; no checking."""
    out = np.empty(a.shape[1:], dtype=a.dtype)
    kern.log_mean_exp(a.reshape(a.shape[0], -1), a.dtype.type(math.log(a.shape[0])), out.reshape(-1))
    return out


def adam_step(params, grads, state, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, sign=1.0):
    """npvae.nn.optim.adam_update IN PLACE on params and state's m, v (with gradient sign * grads); returns (params, new state).

    The trainer passes the bound's gradient with sign = -1 (Adam descends on the loss) and so never
    builds the negated copies. Results equal adam_update's bit for bit.
    """
    params, state, _ = adam_step_checked(params, grads, state, lr, betas, eps, sign)
    return params, state


def adam_step_checked(params, grads, state, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, sign=1.0):
    """adam_step, and what went non-finite in the same pass (None, "bound or gradient" or "parameter after the update"):
    the trainer's divergence check without scanning every gradient and parameter on every step (kernels.adam says
    why its one test sees both; only when it fires are the gradients scanned, to say which)."""
    from ..nn.optim import AdamState

    b1, b2 = betas
    step = state.step + 1
    bc1, bc2 = 1.0 - b1**step, 1.0 - b2**step
    bad = False
    for p, g, m, v in zip(params, grads, state.m, state.v):
        t = p.dtype.type
        flat = [np.ascontiguousarray(a).reshape(-1) for a in (p, g, m, v)]  # views, unless an array is not C-ordered
        bad |= kern.adam(*flat, t(sign), t(b1), t(1.0 - b1), t(b2), t(1.0 - b2), t(lr / bc1), t(np.sqrt(bc2)), t(eps))
        for a, f in ((p, flat[0]), (m, flat[2]), (v, flat[3])):
            if not np.shares_memory(a, f):
                a[...] = f.reshape(a.shape)
    what = None
    if bad:
        what = "bound or gradient" if not all(np.all(np.isfinite(g)) for g in grads) else "parameter after the update"
    return params, AdamState(step, state.m, state.v), what


def gather(x, idx, out):
    """out[:] = x[idx] in out's dtype, one pass (x may be a compact uint8 split); returns out."""
    kern.gather_rows(x, idx, out)
    return out


def stepper(backend, arch: Arch, params, adam, **options):
    """The trainer's stepper: Adam on host arrays, updated in place (npvae.backends.host_stepper)."""
    from .host_stepper import HostStepper

    return HostStepper(backend, arch, params, adam, **options)


adam_update_ = adam_step  # the name it had, for callers of the module
