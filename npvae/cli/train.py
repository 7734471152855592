"""`npvae train`: a new run, or --resume of one (npvae.training.loop); the command line's part only."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from .data import search as _search
from .runs import absent_run, limit_threads, pictures


def _config_from_args(args):
    from ..training.config import TrainConfig

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in vars(args).items() if k in fields and v is not None})


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def cmd_train(args) -> int:
    from ..store import run_dir as rd
    from ..store.data import load
    from ..training.loop import TrainingDiverged, TrainingInterrupted, load_state, preflight, train

    limit_threads(args.threads)
    if args.resume:
        run_dir = Path(args.resume)
        last = rd.checkpoint_path(run_dir, "last")
        if not run_dir.exists():  # what eval and sample say of it: the near run, or how to make one
            raise ValueError(absent_run(run_dir))
        if not last.exists():
            what = "is not a directory" if not run_dir.is_dir() else f"holds no checkpoint ({last.name})"
            raise ValueError(f"--resume {run_dir}: {what}, so there is no run to continue")
        config, _, _ = load_state(last)
        fields = {f.name for f in dataclasses.fields(config)}
        given = sorted(k for k, v in vars(args).items() if k in fields - {"epochs", "backend"} and v is not None)
        if given or args.out:
            names = ", ".join("--" + k.replace("_", "-") for k in given + (["out"] if args.out else []))
            raise ValueError(f"--resume continues the run as it was configured: {names} cannot change "
                             "(only --epochs and --backend may); start a new run with --out to change them")
        if args.epochs is not None:
            config = dataclasses.replace(config, epochs=args.epochs)
        if args.backend is not None:
            config = dataclasses.replace(config, backend=args.backend)
        dataset = load(config.dataset, dtype=config.dtype, seed=config.seed, binarize=config.binarize, compact=True,
                       **_search(args, run_dir))
    else:
        config = _config_from_args(args)
        dataset = load(config.dataset, dtype=config.dtype, seed=config.seed, binarize=config.binarize, compact=True, **_search(args))
        preflight(config, dataset)  # bad --arch, data or sizes: refused before any directory is made
        run_dir = Path(args.out) if args.out else rd.new_default("runs", config.dataset)
    log = (lambda *a, **k: None) if args.quiet else print

    def header():  # once the directory is claimed and locked: a refused --out (a finished run, the user's files) prints none
        print(f"npvae train: {config.dataset}, {config.bound} K={config.k}, run directory {run_dir}", flush=True)

    try:
        # A line per epoch under --verbose or into a log (not a terminal); on a terminal the bar and the summary below.
        state = train(config, dataset, run_dir, resume=bool(args.resume), progress=not args.quiet, log=log,
                      data_source={"dataset": config.dataset, "dir": dataset.source}, on_start=header,
                      epoch_lines=args.verbose or not sys.stdout.isatty(), on_epoch=None if args.quiet else announce(config))
    except TrainingDiverged as e:
        print(f"npvae train: {e}", file=sys.stderr)
        return 3
    except TrainingInterrupted as e:
        print(f"\nnpvae train: {e}", file=sys.stderr)
        return 128 + e.signum
    if not args.no_pictures:
        pictures(run_dir, config, dataset, state)
    print(f"npvae train: done, {_plural(state.epoch, 'epoch')}, best validation bound {state.best_valid:.4f} "
          f"(nats per point, higher is better); run in {run_dir}")
    if not args.quiet:
        for line in next_steps(run_dir, state.epoch, drawn_pictures(config, dataset)):
            print(line)
    return 0


def drawn_pictures(config, dataset) -> list[str]:
    """The pictures `npvae sample` draws for this run (npvae.pictures.plots.run_pictures, with the run's history)."""
    from ..pictures.plots import RUN_PICTURES, skipped_pictures

    skipped = skipped_pictures(config.make_arch(dataset.train.shape[1]), dataset.image_shape, history={})
    return [name for name in RUN_PICTURES if name not in skipped]


def next_steps(run_dir: Path, epochs: int, pictures: list[str]) -> list[str]:
    """The commands that go on from a finished run, with its real path; the comments aligned on the longest command."""
    shown = ", ".join(p.removesuffix(".png") for p in pictures)
    steps = [(f"npvae sample {run_dir}", f"its pictures again ({shown})"),
             (f"npvae eval {run_dir}", "test NLL by importance sampling, ELBO, KL, active units"),
             (f"npvae train --resume {run_dir} --epochs {2 * epochs}", "more epochs, bit for bit as one longer run")]
    width = max(len(command) for command, _ in steps)
    return ["next:"] + [f"  {command.ljust(width)}   # {comment}" for command, comment in steps]


ANNOUNCE_ABOVE = 60.0  # seconds left after the epoch timed (announce): above this, the estimate is printed
TIMED_EPOCH = 2  # of this process: its first compiles the kernels (numba, cuda), warms the caches, validates first


def estimate_line(config, epoch: int, seconds: float) -> str | None:
    """After the timed epoch of a process: what the rest will take, and what would shorten it; None when it is short."""
    from ..evaluation.cost import fmt_seconds

    left = (config.epochs - epoch) * seconds
    if left <= ANNOUNCE_ABOVE:
        return None
    faster = " (faster: --backend numba, the same computation in fused CPU kernels)" if config.backend in (None, "numpy") else ""
    return (f"npvae train: epoch {epoch} took {seconds:.3g} s; the {config.epochs - epoch} left will take about "
            f"{fmt_seconds(left)} here{faster}; Ctrl-C stops cleanly and --resume continues")


def announce(config):
    """on_epoch for train(): prints estimate_line once, after the second epoch of this process, from that epoch's time.

    Not the first: with a cold numba cache it is mostly compilation (6 to 7 s, against 0.06 s for the next ones on digits),
    so an estimate from it is off a hundredfold. A process that trains one epoch has nothing left to announce.
    """
    seen = []

    def on_epoch(state, seconds):
        seen.append(state.epoch)
        if len(seen) == TIMED_EPOCH:
            line = estimate_line(config, state.epoch, seconds)
            if line:
                print(line, file=sys.stderr, flush=True)
    return on_epoch
