"""How the numba backend compiles: one `jit` decorator, and `like(x, v)` for constants in x's float type.

Imported only when the numba backend is first used (importing npvae never imports numba).

- Caching: `cache=True` raises at decoration time when neither the package directory nor numba's
  user-wide cache directory is writable; then the function is compiled without a cache, never a crash.
  numba re-validates a cached function against its own file only, yet kernels inline functions from
  the other files of this package; so every cache entry is stamped with all of npvae/backends/*.py
  (an edit anywhere recompiles everything), and where that cannot be done there is no cache.
- fastmath is never switched on wholesale: that lets LLVM assume no NaN and no inf and delete the checks that make a NaN in
  the input come out as a NaN. Kernels are serial (no `parallel=True`): numba's thread pool and
  OpenBLAS's fight over the same two cores.
- Constants: a Python float literal is a float64 in numba, and float32 * float64 is float64, so every
  constant in a kernel is written `like(x, 0.5)` (a float32 constant for float32 x, folded by LLVM).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numba
from numba import types
from numba.extending import overload


def _package_stamp() -> bytes:
    """A hash of every source file of this package: what a cached kernel may depend on."""
    h = hashlib.sha256()
    for p in sorted(Path(__file__).parent.glob("*.py")):
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    return h.digest()


_STAMP = _package_stamp()


def jit(fn=None, **options):
    """numba.njit(cache=True, error_model="numpy", **options), without a cache where none can be written.

    error_model="numpy": x / 0 is inf or NaN as in NumPy, not a ZeroDivisionError, whose check on
    every division would also keep LLVM from vectorising the loop.
    """
    options = {"error_model": "numpy", **options}

    def wrap(f):
        try:
            d = numba.njit(cache=True, **options)(f)
            cache_file = d._cache._cache_file  # numba's private API: without it (AttributeError), no cache
            cache_file._source_stamp = (cache_file._source_stamp, _STAMP)
            return d
        except (RuntimeError, AttributeError):  # RuntimeError: "cannot cache function ...: no locator available"
            return numba.njit(cache=False, **options)(f)

    return wrap(fn) if fn is not None else wrap


def like(x, v):
    """The number v in x's float type (pure-Python version; the compiled one is below)."""
    return type(x)(v)


@overload(like, inline="always")
def _like(x, v):
    if isinstance(x, types.Float):
        ftype = x
        return lambda x, v: ftype(v)
    return None
