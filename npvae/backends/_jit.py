"""How the numba backend compiles: one `jit` decorator, and `like(x, v)` for constants in x's float type.

Imported only when the numba backend is first used (importing npvae never imports numba).

- Caching: `cache=True` raises at decoration time when neither the package directory nor numba's
  user-wide cache directory is writable; then the function is compiled without a cache, never a crash.
- No `fastmath=True`: it lets LLVM assume no NaN and no inf and delete the checks that make a NaN in
  the input come out as a NaN. Kernels are serial (no `parallel=True`): numba's thread pool and
  OpenBLAS's fight over the same two cores.
- Constants: a Python float literal is a float64 in numba, and float32 * float64 is float64, so every
  constant in a kernel is written `like(x, 0.5)` (a float32 constant for float32 x, folded by LLVM).
"""

from __future__ import annotations

import numba
from numba import types
from numba.extending import overload


def jit(fn=None, **options):
    """numba.njit(cache=True, **options), falling back to no cache where no cache directory is writable."""

    def wrap(f):
        try:
            return numba.njit(cache=True, **options)(f)
        except RuntimeError:  # "cannot cache function ...: no locator available for file ..."
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
