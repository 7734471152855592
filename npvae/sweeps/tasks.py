"""What a sweep's workers run: one chunk of a run's training (and its data, loaded once per worker process).

A chunk is `npvae train` continued up to an epoch: a new run, or a resumed one (npvae.training.loop), with the run's own lock,
checkpoints and bit-exact resume. A worker killed mid-chunk leaves the run directory as after a kill -9 of
`npvae train` (npvae.store.run_dir); Dask gives the task to another worker, which resumes from the last checkpoint.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

_datasets: dict = {}
LOCK_WAIT_S = 300  # how long a write of the sweep into a run directory (a chunk, an evaluation's row) waits for the
# run's lock while another process holds it (npvae.sweeps.driver's docstring)
LOCK_POLL_S = 2.0  # how often it tries again meanwhile


def until_unlocked(step):
    """step()'s value, step tried again every LOCK_POLL_S while it raises RunLocked, for up to LOCK_WAIT_S (then the
    RunLocked). The driver's own writes into run directories wait the same way without blocking the driver
    (npvae.sweeps.driver)."""
    from ..store.run_dir import RunLocked

    deadline = time.time() + LOCK_WAIT_S
    while True:
        try:
            return step()
        except RunLocked:
            if time.time() > deadline:
                raise
            time.sleep(LOCK_POLL_S)  # an earlier attempt still writes the run: on a worker the scheduler gave up on, a
            # chunk an earlier sweep left running on an external cluster (Dask does not stop a running task), or a
            # user's own npvae train --resume


def dataset_for(config, data: dict):
    """The config's data set, loaded once per process (compact, as npvae train loads it); data: npvae.store.data.load's
    search_dirs, cache_dir and download."""
    from ..store.data import load

    key = (config.dataset, config.dtype, config.seed, config.binarize, tuple(map(str, data["search_dirs"])))
    if key not in _datasets:
        _datasets[key] = load(config.dataset, dtype=config.dtype, seed=config.seed, binarize=config.binarize,
                              compact=True, **data)
    return _datasets[key]


def train_chunk(run_dir: str, config: dict, data: dict) -> dict:
    """Train run_dir up to config["epochs"] epochs (new or resumed) with one BLAS thread; returns where it got to."""
    from ..store import run_dir as rd
    from ..backends.workers import set_threads
    from ..training.config import TrainConfig
    from ..training.loop import read_meta, train

    set_threads(1)
    config = TrainConfig.from_dict(config)
    dataset = dataset_for(config, data)
    run_dir = Path(run_dir)
    t0, started = time.time(), []

    def step():
        last = rd.checkpoint_path(run_dir, "last")
        meta = read_meta(last) if last.exists() else None
        started.append(meta["epoch"] if meta else 0)
        if meta is not None and meta["epoch"] >= config.epochs:
            # Trained already: this chunk was computed again after the run went on (Dask recomputes a finished task
            # whose result was lost with a worker it gave up on, while the sweep's next chunk ran). Nothing to do.
            return meta["epoch"], meta["history"], meta["best_valid"]
        state = train(config, dataset, run_dir, resume=last.exists(), progress=False, log=lambda *a, **k: None,
                      data_source={"dataset": config.dataset, "dir": dataset.source})
        return state.epoch, state.history, state.best_valid

    epoch, h, best_valid = until_unlocked(step)
    return {"epoch": epoch, "started_at": started[-1], "valid_bound": h["valid_bound"][-1] if h["valid_bound"] else None,
            "best_valid": best_valid, "seconds": time.time() - t0, "pid": os.getpid(), "host": socket.gethostname()}
