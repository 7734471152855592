"""A Dask cluster for npvae: an embedded LocalCluster, or an existing scheduler; the only module that imports Dask.

The embedded cluster has one single-threaded worker process per core, and Dask's nanny starts each with
OMP/MKL/OpenBLAS at one thread; every npvae task also sets one BLAS thread (npvae.backends.workers.set_threads),
so a task computes what the same work computes in a one-thread `npvae train` or `npvae eval`, bit for bit.
An existing cluster (`--scheduler tcp://host:8786`) must run the same npvae and see the same run directories
(a shared file system) for `npvae sweep`; distributed evaluation ships the parameters and the points to the workers.
"""

from __future__ import annotations

import contextlib
import os

INSTALL = "pip install -e '.[sweep]' (Dask's distributed scheduler)"


def _distributed():
    try:
        import distributed
    except ImportError:
        raise ImportError(f"this needs Dask: {INSTALL}") from None
    return distributed


@contextlib.contextmanager
def connect(scheduler: str | None = None, workers: int | None = None, dashboard: bool = True):
    """A dask.distributed Client: to `scheduler` (an address), or to a new LocalCluster of `workers` single-threaded
    processes (default: one per core); the cluster is closed on exit. Ctrl-C while the cluster starts is held until
    it has started (Dask's start-up, interrupted half-way, leaves processes and tracebacks), then raised."""
    import logging

    if scheduler is not None and workers is not None:
        raise ValueError("give --scheduler (an existing cluster) or --workers (a local one), not both")
    n = cores() if workers is None else workers
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"workers must be an integer >= 1, got {n!r}")
    with contextlib.ExitStack() as stack:
        with _sigint_held():
            distributed = _distributed()
            if scheduler is not None:
                client = stack.enter_context(distributed.Client(scheduler))
            else:
                address = ":8787" if dashboard and _has_bokeh() else ":0"  # ":0": a free port for its HTTP endpoints
                cluster = stack.enter_context(distributed.LocalCluster(
                    n_workers=n, threads_per_worker=1, processes=True, dashboard_address=address, silence_logs=logging.ERROR))
                client = stack.enter_context(distributed.Client(cluster))
        yield client


@contextlib.contextmanager
def _sigint_held():
    """Hold SIGINT for the duration (main thread only), then raise KeyboardInterrupt if one came."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    came = []
    old = signal.signal(signal.SIGINT, lambda signum, frame: came.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
    if came:
        raise KeyboardInterrupt


def cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _has_bokeh() -> bool:
    import importlib.util

    return importlib.util.find_spec("bokeh") is not None


def dashboard(client) -> str:
    """Where the Dask dashboard is, or why there is none."""
    link = getattr(client, "dashboard_link", None)
    if link and _has_bokeh():
        return link
    return "none (install bokeh for Dask's dashboard)" if not _has_bokeh() else "none (disabled)"


def eval_chunk(params, arch, x, lo, hi, k, seeds, index, backend):
    """npvae.evaluation.chunks.chunk_terms on a worker, with one BLAS thread."""
    from ..backends.workers import set_threads
    from .chunks import chunk_terms

    set_threads(1)
    return chunk_terms(params, arch, x, lo, hi, k, seeds, index, backend)


def _value(v):
    return v


def submit_eval(client, params, arch, x, jobs: list[dict]) -> tuple[list, list]:
    """(one future per chunk job (npvae.evaluation.chunks), the futures of the parameters and the points): hold the second
    until the first are done. The parameters and points enter the cluster once, as the results of tasks that hold them
    (not scattered): if the worker holding them dies, Dask recomputes them from the task, and nothing is lost."""
    tag = os.urandom(4).hex()
    data = [client.submit(_value, v, pure=False, key=f"eval-{name}-{tag}") for name, v in (("params", params), ("points", x))]
    futures = [client.submit(eval_chunk, data[0], arch, data[1], pure=False, key=f"eval-chunk-{j['index']}-{tag}", **j)
               for j in jobs]
    return futures, data


def dask_runner(client, progress=None):
    """An npvae.evaluation.chunks runner that computes the chunks on the cluster (progress: called with points done)."""

    def run(params, arch, x, jobs: list[dict]) -> list[dict]:
        distributed = _distributed()
        futures, data = submit_eval(client, params, arch, x, jobs)
        if progress is not None:
            job_of = dict(zip(futures, jobs))
            for f in distributed.as_completed(futures):
                progress((job_of[f]["hi"] - job_of[f]["lo"]) * job_of[f]["k"])
        parts = client.gather(futures)
        del data  # the cluster may forget the parameters and points now
        return parts

    return run
