"""The CUDA backend for the L-stochastic-layer model: npvae.vae.ladder_objective's maths around cuda_gpu's device loops.

The four MLPs' forward and backward passes (cuda_gpu's products and bias+activation kernels) and the
likelihood and the bound (cuda_gpu's head kernels, the K N x D_out element-wise work) run on the device;
the parameters and x are copied there once per call. The latent layers, (K, N, Z)-wide, are the
specification's own NumPy code on the host (ladder_objective.Ops), so each op copies its input to the
device and its result back; an MLP's device cache stays there for its backward. Device-resident training
stays one-layer (cuda_backend.stepper refuses this model). Private cores: no checking.
"""

from __future__ import annotations

import numpy as np
from numba import cuda

from ..vae import ladder_objective as ladder
from ..nn.layers import Dense
from . import cuda_gpu as cg
from ..maths.codes import ACTIVATION, HEAD


def _host(grads):
    return tuple(Dense(g.W.copy_to_host(), g.b.copy_to_host()) for g in grads)


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

    return ladder.Ops(mlp, mlp_back, head)


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
