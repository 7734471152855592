"""Choosing where the kernels run: "numpy" (the specification), "numba" (CPU kernels), "cuda" (not yet), "auto".

The model, the objectives and the trainer are the same for every backend; only the kernels differ.
Importing this package imports no numba, compiles nothing and probes no GPU: `resolve` does the
probing, and only when it is called.
"""

from __future__ import annotations

import functools

BACKENDS = ("numpy", "numba", "cuda", "auto")


@functools.lru_cache(maxsize=None)
def numba_available() -> bool:
    """Whether numba imports here (tried once, on first use; a broken install counts as absent)."""
    try:
        import numba  # noqa: F401
    except Exception:  # ImportError, or e.g. a numba built for another NumPy
        return False
    return True


def cuda_available() -> bool:
    """Whether the CUDA backend can run here. It is not written yet, so never; a GPU probe goes here when it is."""
    return False


def resolve(backend: str) -> str:
    """The concrete backend for a name in BACKENDS: "auto" -> "cuda" if usable, else "numba" if importable, else "numpy".

    "numba" and "cuda" never fall back silently: if they cannot run here, this raises ValueError.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}; got {backend!r}")
    if backend == "auto":
        if cuda_available():
            return "cuda"
        return "numba" if numba_available() else "numpy"
    if backend == "cuda" and not cuda_available():
        raise ValueError(
            "the CUDA backend is not available yet (it is not implemented, and no usable GPU was looked for): "
            "use backend='numba' or 'numpy', or 'auto' to take the fastest available"
        )
    if backend == "numba" and not numba_available():
        raise ValueError("backend='numba' needs the numba package (pip install numba); or use backend='numpy'")
    return backend
