"""Training on backend="cuda", device-resident: parameters, Adam's state and the epoch's data stay on the device.

`DeviceTrainer` keeps the parameters, Adam's m and v, and the gradient as four flat device arrays
of P elements (every parameter, in npvae.vae.model.flatten order), with per-layer views into them: the
backward writes the gradient into place and one launch of the Adam kernel updates every parameter.
Per epoch the (already binarised) training data and the shuffle order are uploaded once. Per step
the batch rows are gathered on the device and eps, drawn on the host from the run's Generator so
that every backend sees the same noise, is the one array uploaded; what comes back is a few
scalars: the batch's sum of the bound and the non-finite counts of the bound, the gradient and the
updated parameters. The host gets the parameters and Adam's state at the end of an epoch (`state`),
and the failing step's arrays only when something went non-finite (`failed_step`).

The arithmetic is npvae.backends.cuda_gpu's own (`bound_and_grad_device`, `adam_device`, the kernels its public
functions run), so a step equals objective(..., backend="cuda") followed by optim.adam_update.
npvae.training.loop drives this with the same four calls as its host stepper: start_epoch, step, state, failed_step.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda

from .. import _validate
from ..vae.model import Arch, check_params, unflatten
from ..store.data import as_float
from ..vae.inputs import check_options, check_x_storage
from ..nn.optim import AdamState
from . import cuda_kernels as ck
from . import cuda_train_kernels as tk
from .cuda_gpu import adam_device, bound_and_grad_device

SUM, BAD_VALUE, BAD_GRAD, BAD_PARAM = range(4)  # slots of the per-step summary the host reads back
N_BLOCKS = 256  # most blocks a non-finite count uses: enough to fill a GPU for the P of the models here


def _pack(arrays) -> np.ndarray:
    """Parameter-shaped host arrays -> one flat (P,) host array, in order."""
    return np.concatenate([np.asarray(a).reshape(-1) for a in arrays])


def _split(flat, shapes) -> list:
    """One flat (P,) array (host or device) -> views of the given shapes, in order."""
    views, start = [], 0
    for s in shapes:
        size = math.prod(s)
        views.append(flat[start : start + size].reshape(s))
        start += size
    return views


class DeviceTrainer:
    """Adam on minus the bound with every array on the device; see the module docstring for what crosses."""

    def __init__(self, arch: Arch, params, adam: AdamState, *, batch_size: int, bound: str, kl: str, estimator: str,
                 free_bits: float, betas, adam_eps: float):
        """params: flat list in npvae.vae.model.flatten order, adam: its AdamState (host arrays, copied to the device here)."""
        check_params(arch, unflatten(arch, params))
        check_options(bound, kl, estimator, 1.0, free_bits)
        self.arch, self.dtype = arch, params[0].dtype
        self.options = dict(bound=bound, kl=kl, estimator=estimator, free_bits=free_bits)
        self.betas, self.adam_eps = betas, adam_eps
        self.shapes = [a.shape for a in params]
        self.p, self.m, self.v = (cuda.to_device(_pack(a)) for a in (params, adam.m, adam.v))  # (P,) each
        self.g = cuda.device_array(self.p.shape, self.dtype)
        self.adam_step = adam.step
        self.params, self.grads = (unflatten(arch, _split(a, self.shapes)) for a in (self.p, self.g))
        self.xb = cuda.device_array((_validate.positive_int("batch_size", batch_size), arch.data_dim), self.dtype)
        self.summary = cuda.device_array(4, np.float64)  # [SUM, BAD_VALUE, BAD_GRAD, BAD_PARAM]
        self.partial = cuda.device_array(N_BLOCKS, np.int64)  # per-block counts of the non-finite reductions
        self.x = self.order = self.value = None

    def start_epoch(self, x, order) -> None:
        """Upload the epoch's training data x (N, D), binarised if it is to be, and its shuffle order (a permutation of range(N))."""
        check_x_storage(self.arch, x, self.dtype)  # float, or a compact binary split (uint8), cast here
        order = np.asarray(order)
        if order.shape != (x.shape[0],) or not np.array_equal(np.sort(order), np.arange(x.shape[0])):
            raise ValueError(f"order must be a permutation of range({x.shape[0]})")
        self.x = cuda.to_device(as_float(x, self.dtype))
        self.order = cuda.to_device(order.astype(np.int64))

    def step(self, lo: int, hi: int, eps, kl_weight: float, lr: float):
        """One Adam step on the batch x[order[lo:hi]] with noise eps (K, hi - lo, Z).

        Returns (the batch's mean bound, None), or (nan, what) when the bound or the gradient (the step
        is then not taken) or an updated parameter is non-finite.
        """
        n = hi - lo
        if self.x is None or not 0 <= lo < hi <= self.x.shape[0] or n > self.xb.shape[0]:
            raise ValueError(f"batch [{lo}, {hi}) is not a batch of at most {self.xb.shape[0]} rows of the epoch's data")
        _validate.shape("eps", eps, (None, n, self.arch.latent_dim))
        _validate.same_dtype(self.dtype, eps=eps)
        xb = self.xb[:n]
        ck.launch(tk.gather_rows, xb.size, self.x, self.order, lo, xb)
        e = cuda.to_device(np.ascontiguousarray(eps).reshape(-1, eps.shape[2]))  # (K n, Z): the one array a step uploads
        self.value, _ = bound_and_grad_device(self.params, self.arch, xb, e, kl_weight=kl_weight, out=self.grads, **self.options)
        ck.launch(tk.total, 1, self.value, self.summary, SUM)
        tk.launch_count_nonfinite(self.value, self.partial, self.summary, BAD_VALUE)
        tk.launch_count_nonfinite(self.g, self.partial, self.summary, BAD_GRAD)
        summary = self.summary.copy_to_host()
        if summary[BAD_VALUE] or summary[BAD_GRAD]:
            return math.nan, "bound or gradient"
        self.adam_step += 1
        adam_device(self.p, self.g, self.m, self.v, self.adam_step, lr, self.betas, self.adam_eps, sign=-1.0)  # descends on minus the bound
        tk.launch_count_nonfinite(self.p, self.partial, self.summary, BAD_PARAM)
        if self.summary.copy_to_host()[BAD_PARAM]:
            return math.nan, "parameter after the update"
        return float(summary[SUM]) / n, None

    def state(self):
        """(params, AdamState): fresh host copies, params a flat list in npvae.vae.model.flatten order."""
        p, m, v = (_split(a.copy_to_host(), self.shapes) for a in (self.p, self.m, self.v))
        return p, AdamState(self.adam_step, tuple(m), tuple(v))

    def failed_step(self):
        """Host copies of the last step's bound (N,), gradient and parameters (flat lists), for the divergence report."""
        return self.value.copy_to_host(), _split(self.g.copy_to_host(), self.shapes), _split(self.p.copy_to_host(), self.shapes)
