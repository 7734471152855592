"""A fix, for the test suite, of a race in numba-cuda's CUDA simulator: two threads of a block can each create their own "shared" array.

The simulator runs every GPU thread as a Python thread. `FakeCUDAShared.array` (numba/cuda/simulator/kernelapi.py)
looks the array up by the calling line and creates it when it is missing:

    res = self._allocations.get(caller)
    if res is None:                       # <- a thread switch here lets a second thread miss too
        res = np.empty(shape, dtype)
        self._allocations[caller] = res

so under load (or with a short sys.setswitchinterval, as tests/conftest.py sets) two threads can get two
different arrays, and a tiled GEMM then multiplies tiles that other threads never wrote. `install()` replaces
the method by the same lookup under a lock. `reproduce(locked)` shows the race deterministically: it makes
np.empty yield the GIL inside that window, then counts how many distinct arrays the threads of one block got.
"""

from __future__ import annotations

import sys
import threading
import time

_LOCK = threading.Lock()
_ORIGINAL = {}  # the simulator's own method, kept by install() for reproduce(locked=False)


def _locked_array(self, shape, dtype, alignment=None):
    """FakeCUDAShared.array with the get-or-create of a static allocation done atomically."""
    import numpy as np
    from numba.cuda.simulator import kernelapi

    types, numpy_support = kernelapi.types, kernelapi.numpy_support  # whatever this numba-cuda version uses
    if alignment is not None:
        raise RuntimeError("Array alignment is not supported in cudasim")
    if isinstance(dtype, types.Type):
        dtype = numpy_support.as_dtype(dtype)
    if shape == 0:  # dynamic shared memory: one buffer for all, as in the original
        count = self._dynshared_size // dtype.itemsize
        return np.frombuffer(self._dynshared.data, dtype=dtype, count=count)
    frame = sys._getframe(1)  # the kernel line that asked, as the original's traceback.extract_stack()[-2]
    caller = (frame.f_code.co_filename, frame.f_lineno)
    with _LOCK:
        res = self._allocations.get(caller)
        if res is None:
            res = np.empty(shape, dtype)
            self._allocations[caller] = res
    return res


def install() -> None:
    """Patch the simulator (only meaningful with NUMBA_ENABLE_CUDASIM=1)."""
    from numba.cuda.simulator import kernelapi

    _ORIGINAL.setdefault("array", kernelapi.FakeCUDAShared.__dict__["array"])
    kernelapi.FakeCUDAShared.array = _locked_array


def reproduce(locked: bool, threads: int = 16) -> int:
    """Distinct arrays that `threads` threads got from one `cuda.shared.array` line: 1 is right, more is the race."""
    import numpy as np
    from numba.cuda.simulator import kernelapi

    method = _locked_array if locked else _ORIGINAL.get("array", kernelapi.FakeCUDAShared.__dict__["array"])
    shared = kernelapi.FakeCUDAShared(0)
    got, start = [], threading.Barrier(threads)
    real_empty = np.empty

    def slow_empty(*a, **kw):  # yield the GIL between the lookup and the store, as a thread switch would
        time.sleep(0.01)
        return real_empty(*a, **kw)

    def thread():
        start.wait()
        got.append(method(shared, (4, 4), np.float64))  # one source line, as in a kernel

    kernelapi.np.empty = slow_empty  # the simulator's module sees numpy as `np`
    try:
        ts = [threading.Thread(target=thread) for _ in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    finally:
        kernelapi.np.empty = real_empty
    return len({id(a) for a in got})
