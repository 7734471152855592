"""The numba CPU Backend object: the one-layer kernels (numba_cpu) and the L-layer model around them (numba_ladder).

Assembled here, above both, so that neither imports the other back.
"""

from __future__ import annotations

from . import numba_cpu as cpu
from . import numba_ladder as ladder
from .protocol import Backend, per_family

BACKEND = Backend("numba", **per_family(vars(cpu), ladder), log_mean_exp=cpu.log_mean_exp, adam_step=cpu.adam_step,
                  stepper=cpu.stepper, adam_step_checked=cpu.adam_step_checked, gather=cpu.gather)
