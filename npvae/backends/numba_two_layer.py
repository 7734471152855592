"""The numba CPU backend for the two-stochastic-layer model: npvae.two_layer_objective's maths around numba_cpu's loops.

The four MLPs run through numba_cpu's BLAS products and fused bias+activation kernels (enc1's first
product as a sum of rows of W when x is binary and sparse), and the likelihood and the bound through its
fused head kernel (npvae.backends.kernels), which is where a step spends most of its element-wise time
(K N x D_out). The latent layers, (K, N, Z)-wide, are the specification's own NumPy code
(two_layer_objective.Ops): written once, so the backends cannot drift apart there.
Private cores: no checking.
"""

from __future__ import annotations

import numpy as np

from .. import two_layer_objective as two
from . import numba_cpu as nb
from .codes import ACTIVATION, HEAD


def ops(x) -> two.Ops:
    """The loops for one call on the batch x (N, D): this thread's workspace, x's binary grouping for enc1."""
    ws = nb.workspace()
    ones = nb.binary_ones(ws, x)

    def mlp(tag, layers, h, activation):
        return nb.mlp_forward(ws, tag, layers, np.ascontiguousarray(h), ACTIVATION[activation], ones if tag == "enc1" else None)

    def mlp_back(tag, layers, cache, d, activation, need_dx):
        return nb.mlp_backward(ws, tag, layers, cache, d, ACTIVATION[activation], need_dx, ones if tag == "enc1" else None)

    def head(arch, out, x_, lp_lq, bound, kl, beta, grad):
        # HEAD[(bound, "mc")]: the analytic top KL is already inside lp_lq, so the head adds beta lp_lq to log p(x|z1) in both cases.
        value, a, w, wn = nb.head(ws, arch, x_, out, np.ascontiguousarray(lp_lq), HEAD[(bound, "mc")], beta, grad)
        return value, a, w, wn, (out if grad else None)

    return two.Ops(mlp, mlp_back, head)


def bound_and_grad(params, arch, x, eps, bound, kl, estimator, kl_weight, free_bits=0.0):
    x = np.ascontiguousarray(x)  # row access in the kernels (data sets may be Fortran-ordered)
    return two.bound_and_grad_core(params, arch, x, eps, bound, kl, estimator, kl_weight, free_bits, ops(x))


def bound_value(params, arch, x, eps, bound, kl):
    x = np.ascontiguousarray(x)
    return two.bound_value_core(params, arch, x, eps, bound, kl, ops(x))


def log_weights(params, arch, x, eps):
    x = np.ascontiguousarray(x)
    return two.log_weights_core(params, arch, x, eps, ops(x))


def log_px(params, arch, x, k: int, rng, chunk: int, progress=None):
    x = np.ascontiguousarray(x)
    return two.log_px_core(params, arch, x, k, rng, chunk, progress, ops(x))
