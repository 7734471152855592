"""The NumPy backend: the specification itself (npvae.objectives, npvae.importance, npvae.lme, npvae.optim) as a Backend."""

from __future__ import annotations

from .. import two_layer_objective as two
from ..importance import log_px_core
from ..lme import log_mean_exp_core
from ..objectives import bound_and_grad, bound_value_core, forward, log_weights_of
from ..optim import adam_update
from .protocol import Backend, by_family


def log_weights(params, arch, x, eps):
    return log_weights_of(forward(params, arch, x, eps))


def adam_step(params, grads, state, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, sign=1.0):
    """optim.adam_update on sign * grads (a new list: nothing is updated in place)."""
    return adam_update(params, [g.dtype.type(sign) * g for g in grads], state, lr, betas, eps)


def stepper(backend, arch, params, adam, **options):
    from .host_stepper import HostStepper

    return HostStepper(backend, arch, params, adam, **options)


BACKEND = Backend(
    "numpy",
    by_family("bound_and_grad", one_layer=bound_and_grad, two_layer=two.bound_and_grad_core),
    by_family("bound_value", one_layer=bound_value_core, two_layer=two.bound_value_core),
    by_family("log_weights", one_layer=log_weights, two_layer=two.log_weights_core),
    by_family("log_px", one_layer=log_px_core, two_layer=two.log_px_core),
    lambda a: log_mean_exp_core(a, axis=0), adam_step, stepper)
