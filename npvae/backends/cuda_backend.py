"""The CUDA Backend object: cuda_gpu's one-layer loops, the L-layer model around them (cuda_ladder) and the
device-resident trainer (cuda_train, one stochastic layer only). Assembled here, above all three, so that none imports
another back.
"""

from __future__ import annotations

from . import cuda_gpu as gpu
from . import cuda_ladder as ladder
from .protocol import Backend, per_family


def stepper(backend, arch, params, adam, **options):
    """The trainer's stepper: everything device-resident (npvae.backends.cuda_train); one-layer models only."""
    from . import resolve_training
    from .cuda_train import DeviceTrainer

    resolve_training("cuda", arch)
    return DeviceTrainer(arch, params, adam, **options)


BACKEND = Backend("cuda", **per_family(vars(gpu), ladder), log_mean_exp=gpu.log_mean_exp, adam_step=gpu.adam_step, stepper=stepper)
