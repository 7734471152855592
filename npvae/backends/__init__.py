"""Choosing where the kernels run: "numpy" (the specification), "numba" (CPU kernels), "cuda" (GPU kernels), "auto".

The model, the objectives and the trainer are the same for every backend; only the kernels differ.
`get(name)` returns the backend's object (npvae.backends.protocol.Backend); nothing outside this
package compares backend names. Importing this package imports no numba, compiles nothing and probes
no GPU: `resolve` does the probing, and `get` the importing, only when called.
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


def _cuda_state() -> tuple[bool, bool]:
    """(numba-cuda imports with its simulator on, numba-cuda imports and a real GPU is present): probed when called, never at import."""
    try:
        import numba
        from numba import cuda
    except Exception:  # no numba-cuda, or a broken install
        return False, False
    if numba.config.ENABLE_CUDASIM:
        return True, False
    try:
        return False, bool(cuda.is_available())
    except Exception:  # a driver that fails to initialise counts as no GPU
        return False, False


def cuda_available() -> bool:
    """Whether backend="cuda" can run here: numba-cuda imports and there is a real GPU or the simulator (NUMBA_ENABLE_CUDASIM=1) is on."""
    sim, gpu = _cuda_state()
    return sim or gpu


def resolve(backend: str) -> str:
    """The concrete backend for a name in BACKENDS: "auto" -> "cuda" if a real GPU is usable, else "numba" if importable, else "numpy".

    "numba" and "cuda" never fall back silently: if they cannot run here, this raises ValueError.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}; got {backend!r}")
    if backend == "auto":
        if _cuda_state()[1]:  # a real GPU only: the simulator is for tests, never chosen by "auto"
            return "cuda"
        return "numba" if numba_available() else "numpy"
    if backend == "cuda" and not cuda_available():
        raise ValueError(
            "the CUDA backend is not available here: it needs numba-cuda (pip install numba-cuda) and an NVIDIA GPU "
            "with a working driver (or numba's simulator, NUMBA_ENABLE_CUDASIM=1, for tests); "
            "use backend='numba' or 'numpy', or 'auto' to take the fastest available"
        )
    if backend == "numba" and not numba_available():
        raise ValueError("backend='numba' needs the numba package (pip install numba); or use backend='numpy'")
    return backend


_MODULES = {"numpy": "numpy_ref", "numba": "numba_backend", "cuda": "cuda_backend"}
# The model families (npvae.vae.models) each backend's trainer (Backend.stepper) runs: cuda trains on the device, one layer only.
TRAINS = {"numpy": ("one-layer", "ladder"), "numba": ("one-layer", "ladder"), "cuda": ("one-layer",)}


def resolve_training(backend: str, arch) -> str:
    """The concrete backend that trains `arch`: as `resolve`, except that "auto" passes over a backend whose trainer does
    not run arch's model family; a named backend that cannot train it is refused (ValueError). Evaluation runs everywhere."""
    if backend == "auto" and resolve("auto") == "cuda" and arch.FAMILY not in TRAINS["cuda"]:
        return "numba" if numba_available() else "numpy"
    name = resolve(backend)
    if arch.FAMILY not in TRAINS[name]:
        can = ", ".join(repr(b) for b, fams in TRAINS.items() if arch.FAMILY in fams)
        raise ValueError(f"the {name} backend trains {' and '.join(TRAINS[name])} models on the device; to train the "
                         f"{arch.FAMILY} architecture {arch.spec} use backend {can}")
    return name


def get(backend: str):
    """The Backend object for a name in BACKENDS ("auto" resolved as in `resolve`); imports its kernels on first use."""
    import importlib

    return importlib.import_module(f"{__name__}.{_MODULES[resolve(backend)]}").BACKEND
