"""Memory a training step or an evaluation chunk will need, estimated before anything is allocated.

The estimates count the arrays the NumPy path holds at once (the specification; the numba kernels hold
fewer): for one step on a batch of N points with K samples, each encoder layer of width H keeps its
pre-activation, activation, gradient and one temporary, (N, H) x 4 (the input counts as a layer);
each decoder layer (the output head included) works on K*N rows, (K*N, H) x 4; the latent sample
keeps eps, z and their gradients, (K, N, Z) x 6; the parameters live with their gradient, Adam's two
moments, and the new copies an update makes, 9 x P. tests/test_inputs.py measures a step's peak with
tracemalloc: the estimate is above it, by 1.2-1.3x for Burda et al.'s model. That is what a refusal
needs: a request 100x over the machine fails here in a millisecond with a message, instead of in a
MemoryError traceback (or the OOM killer) minutes later.
"""

from __future__ import annotations

import math
import os

from .model import Arch
from .models import param_shapes

__all__ = ["MemoryRequestError", "step_bytes", "eval_chunk_bytes", "available_bytes", "check_fits", "fmt_bytes"]


class MemoryRequestError(ValueError):
    """A request whose estimated memory is above what the machine has available."""


def param_count(arch: Arch) -> int:
    """P: weights and biases of every network."""
    return sum(math.prod(s) for s in param_shapes(arch))


def step_bytes(arch: Arch, n: int, k: int, itemsize: int) -> int:
    """Bytes one objective-and-gradient step plus Adam holds at once, for a batch of n points and k samples."""
    enc, dec = arch.widths()  # layers run per point, and per sample (arch.widths)
    elements = (4 * n * (sum(enc) + arch.data_dim) + 4 * k * n * sum(dec) + 6 * k * n * arch.noise_dim
                + 9 * param_count(arch))
    return elements * itemsize


def eval_chunk_bytes(arch: Arch, n: int, k_chunk: int, itemsize: int) -> int:
    """Bytes an importance-sampling chunk of k_chunk samples for n points holds (forward only), parameters included."""
    enc, dec = arch.widths()
    elements = 2 * n * sum(enc) + 3 * k_chunk * n * (sum(dec) + 2 * arch.noise_dim) + param_count(arch)
    return elements * itemsize


def available_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (Linux), else physical memory from sysconf, else None (unknown: no check)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def fmt_bytes(b: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if b < 1024 or unit == "PiB":
            return f"{b:.0f} {unit}" if unit == "B" else f"{b:.1f} {unit}"
        b /= 1024
    raise AssertionError


def check_fits(what: str, need: int, advice: str, available: int | None = None) -> None:
    """Refuse (MemoryRequestError) when `need` bytes exceed `available` (default: available_bytes()); say what to change."""
    available = available_bytes() if available is None else available
    if available is not None and need > available:
        raise MemoryRequestError(f"{what} would need about {fmt_bytes(need)} of memory, but {fmt_bytes(available)} "
                                 f"is available: {advice}")
