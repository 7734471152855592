"""How the numba backend compiles: one `jit` decorator, `like(x, v)` for constants, and `rebuild` for code compiled twice.

Imported only when the numba backend is first used (importing npvae never imports numba).

- Caching: `cache=True` raises at decoration time when neither the package directory nor numba's
  user-wide cache directory is writable; then the function is compiled without a cache, never a crash.
  numba re-validates a cached function against its own file only, yet kernels inline functions from
  other files of this package; so every cache entry is stamped with all of npvae/backends/*.py and
  npvae/likelihoods/*.py (an edit anywhere recompiles everything), and where that cannot be done there is no cache.
- fastmath is never switched on wholesale: that lets LLVM assume no NaN and no inf and delete the checks that make a NaN in
  the input come out as a NaN. Kernels are serial (no `parallel=True`): numba's thread pool and
  OpenBLAS's fight over the same two cores.
- Constants: a Python float literal is a float64 in numba, and float32 * float64 is float64, so every
  constant in a kernel is written `like(x, 0.5)` (a float32 constant for float32 x, folded by LLVM).
- `rebuild`: scalar.py's functions, the likelihoods' element kernels and the kernels specialised per
  likelihood are the same code objects compiled with other globals (numba's disk cache does not key on
  closures or on functions passed as arguments, so a code object with its own globals and name it is).
"""

from __future__ import annotations

import hashlib
import types as pytypes
from pathlib import Path

import numba
from numba import types
from numba.extending import overload

from ..maths.scalar import like

_PACKAGE = Path(__file__).parent.parent


def _package_stamp() -> bytes:
    """A hash of every source file a cached kernel may depend on: npvae/backends/*.py, npvae/likelihoods/*.py and
    npvae/maths/*.py (scalar.py's formulas and codes.py's codes are compiled into the kernels)."""
    h = hashlib.sha256()
    for p in sorted(p for d in ("backends", "likelihoods", "maths") for p in (_PACKAGE / d).glob("*.py")):
        h.update(p.parent.name.encode() + b"/" + p.name.encode() + b"\0" + p.read_bytes())
    return h.digest()


_STAMP = _package_stamp()


def jit(fn=None, **options):
    """numba.njit(cache=True, error_model="numpy", nogil=True, **options), without a cache where none can be written.

    error_model="numpy": x / 0 is inf or NaN as in NumPy, not a ZeroDivisionError, whose check on
    every division would also keep LLVM from vectorising the loop.
    """
    options = {"error_model": "numpy", "nogil": True, **options}  # nogil: the evaluation workers run kernels at once

    def wrap(f):
        try:
            d = numba.njit(cache=True, **options)(f)
            cache_file = d._cache._cache_file  # numba's private API: without it (AttributeError), no cache
            cache_file._source_stamp = (cache_file._source_stamp, _STAMP)
            return d
        except (RuntimeError, AttributeError):  # RuntimeError: "cannot cache function ...: no locator available"
            return numba.njit(cache=False, **options)(f)

    return wrap(fn) if fn is not None else wrap


def rebuild(f, g: dict, name: str | None = None):
    """The plain function f's code with globals g (not a copy: later entries of g are seen), under a new name (unique per file)."""
    fn = pytypes.FunctionType(f.__code__, g, name or f.__name__, f.__defaults__, f.__closure__)
    fn.__qualname__ = name or f.__qualname__
    fn.__doc__ = f.__doc__
    return fn


def compile_module(module, decorate, overrides=None) -> dict:
    """{name: decorate(function)} for the plain functions defined in `module`, but scalar.ELEMENTARY, all compiled with one
    globals dict (the module's, `overrides`, and the compiled functions themselves): calls between them stay compiled."""
    from ..maths.scalar import ELEMENTARY

    g = {**vars(module), **(overrides or {})}
    names = [n for n, f in vars(module).items()
             if isinstance(f, pytypes.FunctionType) and f.__module__ == module.__name__ and n not in ELEMENTARY]
    for n in names:
        g[n] = decorate(rebuild(vars(module)[n], g))
    return {n: g[n] for n in names}


@overload(like, inline="always")
def _like(x, v):
    if isinstance(x, types.Float):
        ftype = x
        return lambda x, v: ftype(v)
    return None
