"""Memory a training step or an evaluation chunk will need, estimated before anything is allocated.

The estimates count the arrays the NumPy path holds at once (the specification; the numba kernels hold
fewer): for one step on a batch of N points with K samples, each encoder layer of width H keeps its
pre-activation, activation, gradient and one temporary, (N, H) x 4 (the input counts as a layer);
each decoder layer (the output head included) works on K*N rows, (K*N, H) x 4; the latent sample
keeps eps, z and their gradients, (K, N, Z) x 6; the parameters live with their gradient, Adam's two
moments, and the new copies an update makes, 9 x P. tests/test_inputs.py measures a step's peak with
tracemalloc: the estimate is above it, by 1.2-1.3x for Burda et al.'s model. That is what a refusal
needs: a request 100x over the machine fails here in a millisecond with a message, instead of in a
MemoryError traceback (or the OOM killer) minutes later. What is available is the smallest of the machine's available
memory, the process's address-space limit (RLIMIT_AS, `ulimit -v`) and the container's cgroup limit.
"""

from __future__ import annotations

import math
import os

from .model import Arch
from .models import param_shapes

__all__ = ["MemoryRequestError", "step_bytes", "eval_chunk_bytes", "available_bytes", "memory_limits", "check_fits", "fmt_bytes"]


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


def read_text(path: str) -> str | None:
    """A small system file's text, or None where it cannot be read (the one reader of /proc and /sys: tests fake it)."""
    try:
        with open(path) as f:
            return f.read()
    except (OSError, UnicodeDecodeError):
        return None


def _number(text: str | None) -> int | None:
    try:
        return int(text.split()[0])
    except (AttributeError, ValueError, IndexError):  # None, "max" (no limit), or an empty file
        return None


def _status_kib(text: str | None, key: str) -> int | None:
    """A 'Key:   123 kB' line of /proc/meminfo or /proc/self/status, in bytes."""
    for line in (text or "").splitlines():
        if line.startswith(key + ":"):
            n = _number(line[len(key) + 1:])
            return None if n is None else n * 1024
    return None


def _cgroup_headroom() -> int | None:
    """The container's memory limit minus what its cgroup uses: cgroup v2 (memory.max, memory.current) or v1
    (memory.limit_in_bytes, memory.usage_in_bytes), in the process's own cgroup or, inside a container's cgroup
    namespace, at the mount's root."""
    for line in (read_text("/proc/self/cgroup") or "").splitlines():
        parts = line.strip().split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            root, files = "/sys/fs/cgroup", ("memory.max", "memory.current")
        elif "memory" in parts[1].split(","):
            root, files = "/sys/fs/cgroup/memory", ("memory.limit_in_bytes", "memory.usage_in_bytes")
        else:
            continue
        for base in (root + parts[2].rstrip("/"), root):
            limit = _number(read_text(f"{base}/{files[0]}"))
            if limit is not None and limit < 1 << 60:  # v1 writes "no limit" as ~2^63, v2 as "max"
                return max(0, limit - (_number(read_text(f"{base}/{files[1]}")) or 0))
    return None


def _rlimit_headroom() -> int | None:
    """RLIMIT_AS (ulimit -v) minus this process's address space now."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    soft = resource.getrlimit(resource.RLIMIT_AS)[0]
    if soft == resource.RLIM_INFINITY:
        return None
    return max(0, soft - (_status_kib(read_text("/proc/self/status"), "VmSize") or 0))


def memory_limits() -> dict[str, int]:
    """What bounds the memory a request may take, by source: "the machine" (MemAvailable, else free physical memory),
    "the process limit (ulimit -v)" (RLIMIT_AS headroom), "the container's limit (cgroup)"; the unknown ones left out."""
    found = {"the machine": _status_kib(read_text("/proc/meminfo"), "MemAvailable")}
    if found["the machine"] is None:
        try:
            found["the machine"] = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
        except (AttributeError, ValueError, OSError):
            pass
    found["the process limit (ulimit -v)"] = _rlimit_headroom()
    found["the container's limit (cgroup)"] = _cgroup_headroom()
    return {k: v for k, v in found.items() if v is not None}


def available_bytes() -> int | None:
    """The smallest of `memory_limits()`, or None (nothing known: no check)."""
    limits = memory_limits()
    return min(limits.values()) if limits else None


def fmt_bytes(b: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if b < 1024 or unit == "PiB":
            return f"{b:.0f} {unit}" if unit == "B" else f"{b:.1f} {unit}"
        b /= 1024
    raise AssertionError


def check_fits(what: str, need: int, advice: str, available: int | None = None) -> None:
    """Refuse (MemoryRequestError) when `need` bytes exceed `available` (default: the smallest of `memory_limits()`, which
    the message names); say what to change."""
    source = ""
    if available is None:
        limits = memory_limits()
        if limits:
            source, available = min(limits.items(), key=lambda kv: kv[1])
            source = f" ({source})" if len(limits) > 1 or source != "the machine" else ""
    if available is not None and need > available:
        raise MemoryRequestError(f"{what} would need about {fmt_bytes(need)} of memory, but {fmt_bytes(available)} "
                                 f"is available{source}: {advice}")
