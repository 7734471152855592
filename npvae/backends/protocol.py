"""The one interface every backend implements; `npvae.backends.get(name)` returns its object.

All functions are private cores: inputs are already validated by the public entry points
(npvae.objectives, npvae.vae.importance, npvae.training.loop), and results are fresh NumPy arrays.
Shapes: x (N, D), eps (K, N, Z); options as in npvae.objectives.objective.
"""

from __future__ import annotations

from typing import Callable, NamedTuple


class Backend(NamedTuple):
    """A backend: where the kernels run. The NumPy one (npvae.backends.numpy_ref) is the specification."""

    name: str
    # (params, arch, x, eps, bound, kl, estimator, kl_weight, free_bits) -> (value (N,), VAEParams gradient of the batch mean)
    bound_and_grad: Callable
    bound_value: Callable  # (params, arch, x, eps, bound, kl) -> value (N,)
    log_weights: Callable  # (params, arch, x, eps) -> a (K, N)
    log_px: Callable  # (params, arch, x, k, rng, chunk, progress) -> importance-sampled log p(x) (N,)
    log_mean_exp: Callable  # (a (K, N)) -> (N,)
    # (params list, gradient list, AdamState, lr, betas, eps, sign) -> (params, AdamState) for gradient sign * grads;
    # may update params and the state's arrays in place.
    adam_step: Callable
    # (this Backend, arch, params list, AdamState, *, batch_size, bound, kl, estimator, free_bits, betas, adam_eps) -> the
    # trainer's stepper, whose steps call the Backend passed (so a wrapped Backend is the one used): start_epoch(x, order),
    # step(lo, hi, eps, kl_weight, lr), state(), failed_step() (npvae.backends.host_stepper).
    stepper: Callable
    # Optional, for HostStepper. adam_step_checked: adam_step's arguments -> (params, AdamState, None or what went non-finite:
    # "bound or gradient" or "parameter after the update"), the trainer's divergence check fused into the update; without
    # it the stepper scans every gradient and parameter. gather: (x (N, D) float or compact uint8, idx (B,), out (B, D)
    # float) -> out with out[:] = x[idx]; without it, numpy's x[idx].astype(out.dtype).
    adam_step_checked: Callable | None = None
    gather: Callable | None = None


def by_family(name: str, **cores) -> Callable:
    """One Backend function from a core per model family (npvae.vae.models): cores["one_layer"] for an Arch,
    cores["ladder"] for a LadderArch; every such function takes (params, arch, ...)."""
    table = {family.replace("_", "-"): core for family, core in cores.items()}

    def call(params, arch, *args):
        return table[arch.FAMILY](params, arch, *args)

    call.__name__ = call.__qualname__ = name
    call.__doc__ = f"{name} for either model family: " + ", ".join(f"{k} -> {v.__module__}.{getattr(v, '__name__', v)}"
                                                                    for k, v in table.items())
    return call


MODEL_FUNCTIONS = ("bound_and_grad", "bound_value", "log_weights", "log_px")  # the Backend fields that depend on the model


def per_family(one_layer, ladder) -> dict:
    """MODEL_FUNCTIONS as `by_family` functions; one_layer and ladder map those names to each family's cores (a dict,
    or a module)."""
    def core(cores, name):
        return cores[name] if isinstance(cores, dict) else getattr(cores, name)

    return {n: by_family(n, one_layer=core(one_layer, n), ladder=core(ladder, n)) for n in MODEL_FUNCTIONS}
