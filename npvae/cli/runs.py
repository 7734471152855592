"""What train, eval and sample share: a run directory opened, its pictures drawn, the threads limited."""

from __future__ import annotations

import difflib
import shlex
import sys
from pathlib import Path


def limit_threads(n: int):
    """--threads: n BLAS threads, and n workers for the numba backend's log p(x) (npvae.backends.workers); on small
    shared machines one thread is fastest and timings are steady."""
    from ..backends.workers import set_threads

    return set_threads(n)


def pictures(run_dir, config, dataset, state=None, checkpoint="best", seed=0):
    import numpy as np

    from ..store import run_dir as rd
    from ..vae.models import unflatten
    from ..pictures.plots import run_pictures, skipped_pictures
    from ..training.loop import load_state

    path = rd.checkpoint_path(run_dir, checkpoint)
    if checkpoint == "best" and not path.exists():  # a run without validation has last only
        path = rd.checkpoint_path(run_dir, "last")
    _, arch, saved = load_state(path)
    if state is None:  # the curves show the whole run (last), not the run up to the best epoch
        last = rd.checkpoint_path(run_dir, "last")
        state = load_state(last)[2] if last.exists() else saved
    history = state.history
    paths = run_pictures(unflatten(arch, saved.params), arch, dataset, Path(run_dir), np.random.default_rng(seed), history=history)
    for p in paths:
        print(f"  picture: {p}")
    for name, why in skipped_pictures(arch, dataset.image_shape, history).items():
        print(f"  not drawn: {name} ({why})")


def open_run(run_dir: Path, checkpoint: str | None):
    """(config, arch, state, the checkpoint's name) of a run, after restoring best if an earlier process died between
    writes; checkpoint None: best, or last (with a note) in a run that kept only last (the shipped reference runs)."""
    from ..store import run_dir as rd
    from ..training.loop import load_state, read_meta

    if not run_dir.exists():
        raise ValueError(absent_run(run_dir))
    if not run_dir.is_dir():
        raise ValueError(f"{run_dir} is not a directory (give the run directory that npvae train printed)")
    which = checkpoint or "best"
    note = rd.repair(run_dir, read_meta) if which == "best" else None
    if note:
        print(f"note: {note}", file=sys.stderr)
    path = rd.checkpoint_path(run_dir, which)
    if not path.exists() and checkpoint is None and rd.checkpoint_path(run_dir, "last").exists():
        which, path = "last", rd.checkpoint_path(run_dir, "last")
        print(f"note: {run_dir} has no best checkpoint (only last was kept); using {path.name}",
              file=sys.stderr)
    if not path.exists():
        raise ValueError(f"{run_dir} holds no checkpoint {path.name}" + ("" if rd.is_run(run_dir) else " (is it a run directory?)"))
    return (*load_state(path), which)


def absent_run(run_dir: Path) -> str:
    """What to say of a run directory that does not exist: the run it was probably meant to be, if its parent holds one by a
    near name (`runs/digit` for runs/digits; `runs/digits` for the newest runs/digits-<date>-<time>), else how to make one."""
    from ..store import run_dir as rd

    near = None
    parent = run_dir.parent
    if run_dir.name and parent.is_dir():
        try:
            runs = sorted(p.name for p in parent.iterdir() if p.is_dir() and rd.is_run(p))
        except OSError:  # a parent that cannot be listed: nothing to suggest
            runs = []
        close = difflib.get_close_matches(run_dir.name, runs, n=1)
        longer = [name for name in runs if name.startswith(run_dir.name)]  # default names end in -<date>-<time>: newest last
        near = close[0] if close else (longer[-1] if longer else None)
    if near is not None:
        return (f"{run_dir} does not exist: did you mean {parent / near}? (else give the run directory that npvae train "
                "printed)")
    return (f"{run_dir} does not exist: train a run first (npvae train --out {shlex.quote(str(run_dir))}), or give the run "
            "directory that npvae train printed")
