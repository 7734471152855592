"""The `npvae` command line: the only place that reads argv and the environment.

One module a group of commands: args (the options of every command), data (where data are looked for), check
(`check` and `verify`), sweep (`sweep`); this file dispatches, and runs train, eval, sample, explain and bench.
May import: everything.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from . import args as cli_args
from .check import cmd_check, cmd_verify
from .data import search as _search
from .sweep import cmd_sweep
from ..store.atomic import write_json


def _limit_threads(n: int):
    """--threads: n BLAS threads, and n workers for the numba backend's log p(x) (npvae.backends.workers); on small
    shared machines one thread is fastest and timings are steady."""
    from ..backends.workers import set_threads

    return set_threads(n)


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

    _limit_threads(args.threads)
    if args.resume:
        run_dir = Path(args.resume)
        last = rd.checkpoint_path(run_dir, "last")
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
    print(f"npvae train: {config.dataset}, {config.bound} K={config.k}, run directory {run_dir}", flush=True)
    try:
        state = train(config, dataset, run_dir, resume=bool(args.resume), progress=not args.quiet, log=log,
                      data_source={"dataset": config.dataset, "dir": dataset.source})
    except TrainingDiverged as e:
        print(f"npvae train: {e}", file=sys.stderr)
        return 3
    except TrainingInterrupted as e:
        print(f"\nnpvae train: {e}", file=sys.stderr)
        return 130
    if not args.no_pictures:
        _pictures(run_dir, config, dataset, state)
    print(f"npvae train: done, {_plural(state.epoch, 'epoch')}, best validation bound {state.best_valid:.4f} "
          f"(nats per point, higher is better); run in {run_dir}")
    return 0


def _pictures(run_dir, config, dataset, state=None, checkpoint="best", seed=0):
    import numpy as np

    from ..store import run_dir as rd
    from ..vae.models import unflatten
    from ..pictures.plots import run_pictures, skipped_pictures
    from ..training.loop import load_state

    _, arch, saved = load_state(rd.checkpoint_path(run_dir, checkpoint))
    if state is None:  # the curves show the whole run (last), not the run up to the best epoch
        last = rd.checkpoint_path(run_dir, "last")
        state = load_state(last)[2] if last.exists() else saved
    history = state.history
    paths = run_pictures(unflatten(arch, saved.params), arch, dataset, Path(run_dir), np.random.default_rng(seed), history=history)
    for p in paths:
        print(f"  picture: {p}")
    for name, why in skipped_pictures(arch, dataset.image_shape, history).items():
        print(f"  not drawn: {name} ({why})")


def _open_run(run_dir: Path, checkpoint: str):
    """(config, arch, state) of a run's checkpoint, after restoring best if an earlier process died between writes."""
    from ..store import run_dir as rd
    from ..training.loop import load_state, read_meta

    if not run_dir.is_dir():
        raise ValueError(f"{run_dir} is not a directory (give the run directory that npvae train printed)")
    note = rd.repair(run_dir, read_meta) if checkpoint == "best" else None
    if note:
        print(f"note: {note}", file=sys.stderr)
    path = rd.checkpoint_path(run_dir, checkpoint)
    if not path.exists():
        raise ValueError(f"{run_dir} holds no checkpoint {path.name}" + ("" if rd.is_run(run_dir) else " (is it a run directory?)"))
    return load_state(path)


def cmd_eval(args) -> int:
    from ..backends import resolve
    from ..store.data import load
    from ..evaluation.chunks import eval_inputs, evaluate_chunked, local_runner
    from ..vae.models import unflatten
    from ..training.loop import progress_bar

    _limit_threads(args.threads)
    backend = resolve(args.backend)
    run_dir = Path(args.run_dir)
    config, arch, state = _open_run(run_dir, args.checkpoint)
    dataset = load(config.dataset, dtype=config.dtype, seed=config.seed, binarize=config.binarize, compact=True,
                   **_search(args, run_dir))
    x, x_active, points = eval_inputs(dataset, args.split, args.seed, args.n)
    bar = progress_bar(x.shape[0] * args.k, f"eval k={args.k}", not (args.quiet or args.json), unit="sample", unit_scale=True)
    kw = dict(k=args.k, run_seed=config.seed, eval_seed=args.seed, x_active=x_active, backend=backend)
    params = unflatten(arch, state.params)
    if args.scheduler is None and args.workers is None:
        metrics = evaluate_chunked(params, arch, x, runner=local_runner(bar.update), **kw)
    else:  # the same chunks, the same numbers, computed on a Dask cluster
        from ..evaluation.cluster import connect, dashboard, dask_runner

        with connect(args.scheduler, args.workers) as client:
            if not (args.quiet or args.json):
                print(f"npvae eval: Dask dashboard: {dashboard(client)}", file=sys.stderr)
            metrics = evaluate_chunked(params, arch, x, runner=dask_runner(client, bar.update), **kw)
    bar.close()
    metrics.update({"split": args.split, "points": points, "checkpoint": args.checkpoint, "epoch": state.epoch, "seed": args.seed})
    write_json(run_dir / "metrics.json", metrics)
    if args.json:
        print(json.dumps(metrics, indent=1))
    else:
        print(f"{config.dataset} {args.split} ({points} points), checkpoint {args.checkpoint} at epoch {state.epoch}")
        print("  nats per point; NLL, -ELBO and the reconstruction cost -E_q[log p(x|z)]: lower is better")
        print(f"  NLL = -log p(x) (k={args.k})   {metrics['nll']:10.3f} +- {metrics['nll_se']:.3f}")
        print(f"  -ELBO                    {-metrics['elbo']:10.3f} +- {metrics['elbo_se']:.3f}")
        print(f"  -E_q[log p(x|z)]         {-metrics['recon']:10.3f}   (reconstruction)")
        print(f"  KL(q(z|x) || p(z))       {metrics['kl']:10.3f}")
        print(f"  log p(x) - ELBO          {metrics['gap_log_px_minus_elbo']:10.3f}   (the gap, >= 0)")
        print(f"  active units             {metrics['active_units']:>6d} / {metrics['latent_dim']}   (on the {metrics['active_units_points']} training points; more is better)")
        if "active_units_per_layer" in metrics:
            layers = zip(metrics["active_units_per_layer"], metrics["latent_dims"])
            print("    per stochastic layer   " + ", ".join(f"{a:>6d} / {z}" if l == 0 else f"{a} / {z}" for l, (a, z) in enumerate(layers)))
        if "mutual_information" in metrics:
            print(f"  I(x; z) (aggregate)      {metrics['mutual_information']:10.3f}   (more is better)")
        print(f"  written to {run_dir / 'metrics.json'}")
    return 0


def cmd_sample(args) -> int:
    from ..store.data import load

    run_dir = Path(args.run_dir)
    config, _, _ = _open_run(run_dir, args.checkpoint)
    dataset = load(config.dataset, dtype=config.dtype, seed=config.seed, binarize=config.binarize, compact=True,
                   **_search(args, run_dir))
    _pictures(run_dir, config, dataset, checkpoint=args.checkpoint, seed=args.seed)
    return 0


def cmd_explain(args) -> int:
    from ..explain import run

    out = Path(args.out or Path("runs") / f"explain-{args.topic}")
    with _limit_threads(args.threads):
        result = run(args.topic, out, quick=args.quick, seed=args.seed, data_dir=_search(args)["search_dirs"])
    for note in result["notes"]:
        print(f"  note: {note}")
    if args.json:
        print(json.dumps(result["numbers"], indent=1))
    else:
        print(f"npvae explain {args.topic}: {result['question']}")
        for line in result.get("finding", []):
            print(f"  {line}")
    for f in result["files"]:
        print(f"  wrote {out / f}")
    return 0


def cmd_bench(args) -> int:
    """Run bench/bench_train.py from a source checkout (the benchmark is a program, not part of the package)."""
    import runpy

    script = Path(__file__).resolve().parents[2] / "bench" / "bench_train.py"
    if not script.exists():
        raise FileNotFoundError(f"the benchmark lives in the source checkout ({script} not found)")
    rest = args.bench_args[1:] if args.bench_args[:1] == ["--"] else args.bench_args
    sys.path.insert(0, str(script.parent))  # as `python bench/bench_train.py` would: its sibling modules (jax_model) import
    bench = runpy.run_path(str(script), run_name="npvae_bench")
    return bench["main"](rest, prog="npvae bench")


COMMANDS = {"check": cmd_check, "verify": cmd_verify, "train": cmd_train, "eval": cmd_eval, "sample": cmd_sample,
            "explain": cmd_explain, "bench": cmd_bench, "sweep": cmd_sweep}


def build_parser() -> argparse.ArgumentParser:
    return cli_args.build_parser(COMMANDS)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one line on stderr, without the source line Python would print."""
    print(f"npvae: warning: {message}", file=sys.stderr if file is None else file)


def main(argv=None) -> int:
    import warnings

    argv = sys.argv[1:] if argv is None else list(argv)
    warnings.showwarning = _show_warning
    parser = build_parser()
    try:
        if argv[:1] == ["bench"]:  # argparse's REMAINDER drops a leading option (`npvae bench --quick`): pass it all on
            args = parser.parse_args(["bench"])
            args.bench_args = argv[1:]
        else:
            args = parser.parse_args(argv)
    except SystemExit as e:  # a usage error (2, message printed) or --help/--version (0): a return code, as for the rest
        return e.code if isinstance(e.code, int) else 2
    try:
        return args.func(args)
    except (ValueError, OSError) as e:  # bad input, missing files, a failed download: a clear message, no traceback
        print(f"npvae {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # outside training (which says how to resume): nothing half-written to report
        print(f"\nnpvae {args.command}: interrupted", file=sys.stderr)
        return 130
