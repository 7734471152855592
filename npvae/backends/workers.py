"""Evaluation on N cores: chunks of importance samples computed by N worker threads and used in their order.

`set_threads(n)` is what `--threads N` sets: n BLAS threads for the products (training's large products split well
across them), and n workers for the numba backend's log p(x), whose products are too small to split well (a chunk of
~600 decoder rows, cut to stay in cache). There the main thread draws each chunk's noise from the one Generator, in
the serial order; a worker computes the chunk's log-weights with one BLAS thread and its own workspace (numba's
kernels release the GIL, as do NumPy's draws and products); the main thread folds the log-weights into the running
logsumexp in chunk order. So every thread count gives the serial result bit for bit.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor

_state = {"workers": 1, "pool": None}


def set_threads(n: int):
    """n BLAS threads (threadpoolctl, process-wide) and n evaluation workers; returns threadpoolctl's limiter (its
    `restore_original_limits()` undoes the BLAS part)."""
    from threadpoolctl import threadpool_limits

    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"threads must be an integer >= 1, got {n!r}")
    if n != _state["workers"] and _state["pool"] is not None:
        _state["pool"].shutdown()
        _state["pool"] = None
    _state["workers"] = n
    return threadpool_limits(limits=n)


def workers() -> int:
    """The number of evaluation workers set_threads gave (1 unless set)."""
    return _state["workers"]


def ordered_map(fn, items):
    """fn(item) for each item, yielded in order; with workers() > 1, up to that many computed at once in worker
    threads, each with one BLAS thread, while `items` (a lazy iterable: the noise draws) is consumed in this thread."""
    n = _state["workers"]
    if n == 1:
        for item in items:
            yield fn(item)
        return
    from threadpoolctl import threadpool_limits

    if _state["pool"] is None:
        _state["pool"] = ThreadPoolExecutor(n, thread_name_prefix="npvae-eval")
    pool = _state["pool"]
    pending = deque()
    with threadpool_limits(limits=1):
        try:
            for item in items:
                pending.append(pool.submit(fn, item))
                if len(pending) > n:  # one chunk drawn ahead for each worker, at most
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:  # an error, or the consumer stopped: let the chunks in flight finish before BLAS's threads come back
            for f in pending:
                f.cancel()
            for f in pending:
                if not f.cancelled():
                    f.exception()
