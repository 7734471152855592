"""The CUDA backend for the L-stochastic-layer model: npvae.vae.ladder_objective's maths around cuda_gpu's device loops.

The four MLPs' forward and backward passes (cuda_gpu's products and bias+activation kernels) and the
likelihood and the bound (cuda_gpu's head kernels, the K N x D_out element-wise work) run on the device;
the parameters and x are copied there once per call. The latent layers, (K, N, Z)-wide, run through
ladder_objective's `Latent` seams as one device kernel per layer and pass (npvae.backends.cuda_latent_kernels:
numba_ladder's latent kernels, one thread per row). Between the ops the arrays are the specification's host arrays, so
each op copies its input to the device and its result back; an MLP's device cache, and a layer's sample and
conditional-prior caches, stay there for the backward. FUSE_LATENT = False runs the specification's NumPy
latent code instead. Device-resident training stays one-layer (cuda_backend.stepper refuses this model).
Private cores: no checking.
"""

from __future__ import annotations

import numpy as np
from numba import cuda

from ..vae import ladder_objective as ladder
from ..nn.layers import Dense
from . import cuda_gpu as cg
from . import cuda_latent_kernels as clk
from .cuda_kernels import launch
from ..maths.codes import ACTIVATION, HEAD

FUSE_LATENT = True


def _host(grads):
    return tuple(Dense(g.W.copy_to_host(), g.b.copy_to_host()) for g in grads)


def _dev(a):
    """A host array (..., Z) -> a device copy of its rows (rows, Z)."""
    return cuda.to_device(np.ascontiguousarray(a.reshape(-1, a.shape[-1])))


def latent() -> ladder.Latent:
    """ladder_objective.Latent through cuda_latent_kernels (as numba_ladder.latent), host arrays in and out.
    Caches: sample (lq, lpz on the host; mu, lv, eps, z, sd on the device), prior (r, sd on the device)."""

    def sample(l, mu, lv, eps):
        K, N, Z = eps.shape
        d = tuple(_dev(a) for a in (mu, lv, eps))
        z, sd, lq, lpz = (cuda.device_array(s, eps.dtype) for s in ((K * N, Z), d[0].shape, (K, N), (K, N)))
        launch(clk.sample, K * N, *d, z, sd, lq, lpz)
        return z.copy_to_host().reshape(K, N, Z), (lq.copy_to_host(), lpz.copy_to_host(), (*d, z, sd))

    def prior(l, z, mp, lvp):
        K, N, Z = z.shape
        res, sd, log_p = (cuda.device_array(s, z.dtype) for s in ((K * N, Z), (K * N, Z), (K, N)))
        launch(clk.prior, K * N, _dev(z), _dev(mp), _dev(lvp), res, sd, log_p)
        return log_p.copy_to_host(), (res, sd)

    def log_weights(f, analytic):
        top = f.layers[-1]
        if analytic:
            mu, lv = top.sample_cache[2][:2]
            kl = cuda.device_array((mu.shape[0],), mu.dtype)
            launch(clk.kl_rows, mu.shape[0], mu, lv, kl)
            lp_lq = -kl.copy_to_host().reshape(top.mu.shape[:-1])  # (N,) for L = 1, else (K, N)
        else:
            lp_lq = top.sample_cache[1] - top.sample_cache[0]
        return ladder.sum_latent_terms(f, lp_lq, lambda layer: layer.sample_cache[0])

    def prior_back(l, dz, c, layer):
        res, sd = layer.p_cache
        d, dp = _dev(dz), cuda.device_array((res.shape[0], 2 * res.shape[1]), res.dtype)
        launch(clk.prior_backward, res.shape[0], cuda.to_device(np.ascontiguousarray(c)), res, sd, d, dp)  # d/dz added in place
        return d.copy_to_host().reshape(dz.shape), dp.copy_to_host().reshape(*dz.shape[:-1], dp.shape[1])

    def layer_back(l, top, dz, up, layer, w, wn, beta, analytic, est):
        K, N, Z = layer.eps.shape
        mu, lv, eps, z, sd = layer.sample_cache[2]
        d = _dev(dz)
        ups = [_dev(u) for u in up] + [d] * (2 - len(up))  # d stands in for what is not there (n_up says how many are)
        args = (d, *ups, len(up), z, eps, sd, mu, lv, cuda.to_device(w), cuda.to_device(wn), beta, top and not analytic,
                analytic and top, est.squared_weights, est.q_held)
        if l == 1:
            dh = cuda.device_array((N, 2 * Z), dz.dtype)
            launch(clk.first_backward, N, *args, dh)
            return dh.copy_to_host(), None
        live = cuda.device_array((K * N, 2 * Z), dz.dtype)
        has_held = est.q_held and not (analytic and top)
        held = cuda.device_array((K * N, 2 * Z), dz.dtype) if has_held else live
        launch(clk.layer_backward, K * N, *args, live, held)
        return live.copy_to_host().reshape(K, N, 2 * Z), (held.copy_to_host().reshape(K, N, 2 * Z) if has_held else None)

    return ladder.Latent(sample, prior, log_weights, prior_back, layer_back)


def ops(params, x) -> ladder.Ops:
    """The loops for one call on the batch x (N, D): params (LadderParams) and x copied to the device once."""
    dev = cg.to_device_params(params)
    xd = cuda.to_device(x)

    # `layers` (host) is ignored for its device copy getattr(dev, tag); enc1's input h is x, already there.
    def mlp(tag, layers, h, activation):
        hd = xd if tag == "enc1" else cuda.to_device(np.ascontiguousarray(h))
        out, caches = cg.mlp_forward(getattr(dev, tag), hd, ACTIVATION[activation])
        return out.copy_to_host(), caches

    def mlp_back(tag, layers, cache, d, activation, need_dx):
        grads, dx = cg.mlp_backward(getattr(dev, tag), cache, cuda.to_device(d), ACTIVATION[activation], need_dx)
        return _host(grads), (None if dx is None else dx.copy_to_host())

    def head(arch, out, x_, lp_lq, bound, kl, beta, grad):
        # HEAD[(bound, "mc")]: the analytic top KL is already inside lp_lq, so the head adds beta lp_lq to log p(x|z1)
        # in both cases and never reads its kl argument (lp_lq[0] stands in, as in cuda_gpu.log_weights).
        od, lp = cuda.to_device(np.ascontiguousarray(out)), cuda.to_device(np.ascontiguousarray(lp_lq))
        value, a, w, wn = cg.head(arch, xd, od, lp, lp[0], HEAD[(bound, "mc")], beta, grad)
        # dout comes back to the host: ladder_objective._mlp_back makes its d a NumPy array anyway.
        return (*(v.copy_to_host() for v in (value, a, w, wn)), (od.copy_to_host() if grad else None))

    return ladder.Ops(mlp, mlp_back, head, latent() if FUSE_LATENT else ladder.NUMPY_LATENT)


def bound_and_grad(params, arch, x, eps, bound, kl, estimator, kl_weight, free_bits=0.0):
    x = np.ascontiguousarray(x)  # row access in the kernels (data sets may be Fortran-ordered)
    return ladder.bound_and_grad_core(params, arch, x, eps, bound, kl, estimator, kl_weight, free_bits, ops(params, x))


def bound_value(params, arch, x, eps, bound, kl):
    x = np.ascontiguousarray(x)
    return ladder.bound_value_core(params, arch, x, eps, bound, kl, ops(params, x))


def log_weights(params, arch, x, eps):
    x = np.ascontiguousarray(x)
    return ladder.log_weights_core(params, arch, x, eps, ops(params, x))


def log_px(params, arch, x, k: int, rng, chunk: int, progress=None):
    x = np.ascontiguousarray(x)
    return ladder.log_px_core(params, arch, x, k, rng, chunk, progress, ops(params, x))
