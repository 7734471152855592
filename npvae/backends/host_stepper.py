"""Training steps on host arrays (backends numpy and numba): the backend's bound_and_grad, then its Adam step.

The trainer's interface to a backend, shared with npvae.backends.cuda_train.DeviceTrainer:
start_epoch(x, order); step(lo, hi, eps, kl_weight, lr) -> (the mean bound of the batch
x[order[lo:hi]], None) or (nan, what went non-finite); state() -> (params, AdamState) at the end
of an epoch; failed_step() -> (value, grads, params) of the step that went non-finite, params
as they were before it, or after it where the update works in place (numba, cuda).
The epoch's data is validated once, in start_epoch; each step calls the backend's private core, and detects a
non-finite bound from its values (N,) and a non-finite gradient or parameter in the update's own pass where the
backend fuses the check (Backend.adam_step_checked), by scanning them otherwise.
"""

from __future__ import annotations

import numpy as np

from ..store.data import as_float
from ..vae.inputs import check_free_bits, check_options, check_x_storage
from ..vae.model import Arch
from ..vae.models import check_params, flatten, unflatten
from ..nn.optim import AdamState


class HostStepper:
    """Adam on minus the bound, parameters as a flat list of host arrays (npvae.vae.models.flatten order)."""

    def __init__(self, backend, arch: Arch, params, adam: AdamState, *, batch_size: int, bound: str, kl: str, estimator: str,
                 free_bits: float, betas, adam_eps: float):
        self.dtype = check_params(arch, unflatten(arch, params))
        check_options(bound, kl, estimator, 1.0, free_bits)
        check_free_bits(arch, free_bits)
        self.backend, self.arch, self.params, self.adam = backend, arch, params, adam
        self.options = (bound, kl, estimator)
        self.free_bits, self.betas, self.adam_eps = free_bits, betas, adam_eps
        self.failed = None
        self.buffers = {}  # batch size -> the float batch _batch gathers into

    def start_epoch(self, x, order) -> None:
        """The epoch's training data x (N, D), checked here once, and its shuffle order.

        x is float of the parameters' dtype, or a compact binary split (uint8 0/1, npvae.store.data), cast batch by batch.
        """
        check_x_storage(self.arch, x, self.dtype)
        self.x, self.order = x, order

    def _batch(self, lo: int, hi: int):
        """x[order[lo:hi]] as float of the model's dtype: one pass into a reused buffer where the backend gathers."""
        idx = self.order[lo:hi]
        if self.backend.gather is None:
            return as_float(self.x[idx], self.dtype)
        out = self.buffers.get(idx.shape[0])
        if out is None:
            out = self.buffers[idx.shape[0]] = np.empty((idx.shape[0], self.x.shape[1]), dtype=self.dtype)
        return self.backend.gather(self.x, idx, out)

    def step(self, lo: int, hi: int, eps, kl_weight: float, lr: float):
        xb = self._batch(lo, hi)
        value, grads = self.backend.bound_and_grad(unflatten(self.arch, self.params), self.arch, xb, eps, *self.options,
                                                   kl_weight, self.free_bits)
        g = flatten(grads)
        self.failed = (value, g, self.params)
        if not np.all(np.isfinite(value)):
            return float("nan"), "bound or gradient"
        # On minus the gradient (Adam descends on the loss), without building it where the backend works in place.
        update = (self.params, g, self.adam, lr, self.betas, self.adam_eps, -1.0)
        if self.backend.adam_step_checked is not None:  # the finiteness of g and of the new parameters, seen by the update
            params, adam, nonfinite = self.backend.adam_step_checked(*update)
            if nonfinite:
                return float("nan"), nonfinite
        else:
            if not all(np.all(np.isfinite(a)) for a in g):
                return float("nan"), "bound or gradient"
            params, adam = self.backend.adam_step(*update)
            if not all(np.all(np.isfinite(a)) for a in params):
                return float("nan"), "parameter after the update"
        self.params, self.adam = params, adam
        return float(value.mean()), None

    def state(self):
        return self.params, self.adam

    def failed_step(self):
        return self.failed
