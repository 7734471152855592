"""The NumPy backend: the specification itself (npvae.vae.one_layer_objective, npvae.vae.ladder_objective, npvae.vae.importance, npvae.maths.lme, npvae.nn.optim) as a Backend."""

from __future__ import annotations

from ..vae import ladder_objective as ladder
from ..vae.importance import log_px_core
from ..maths.lme import log_mean_exp_core
from ..vae.one_layer_objective import bound_and_grad, bound_value_core, forward, log_weights_of
from ..nn.optim import adam_update
from .protocol import Backend, per_family


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
    **per_family(dict(bound_and_grad=bound_and_grad, bound_value=bound_value_core, log_weights=log_weights, log_px=log_px_core),
                 dict(bound_and_grad=ladder.bound_and_grad_core, bound_value=ladder.bound_value_core,
                      log_weights=ladder.log_weights_core, log_px=ladder.log_px_core)),
    log_mean_exp=lambda a: log_mean_exp_core(a, axis=0), adam_step=adam_step, stepper=stepper)
