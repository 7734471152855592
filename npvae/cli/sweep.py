"""`npvae sweep`: run, check or report a grid of runs (npvae.sweeps.driver); the command line's part only."""

from __future__ import annotations

import argparse
import sys


def _data(args, spec) -> dict:
    """npvae.store.data.load's search arguments: --data-dir, then the SPEC's data_dir, then $NPVAE_DATA_DIR and the cache;
    absolute, for workers that run elsewhere."""
    from .data import search

    dirs = (args.data_dir or []) + [str(d) for d in spec.data_dirs]
    found = search(argparse.Namespace(**{**vars(args), "data_dir": dirs or None}))
    found["search_dirs"] = [p.resolve() for p in found["search_dirs"]]
    return found


def cmd_sweep(args) -> int:
    from ..sweeps.driver import plan, run_sweep
    from ..sweeps.spec import load_spec

    spec = load_spec(args.spec)
    if args.report:
        from ..sweeps.report import write_report

        table, paths, notes = write_report(spec, notes=True)
        print(table)
        for p in paths:
            print(f"  wrote {p}")
        for name, note in notes.items():  # a damaged file: that run is reported with what can be read
            print(f"npvae sweep: note: {name}: {note}", file=sys.stderr)
        return 0
    data = _data(args, spec)
    if args.check:
        runs = plan(spec, data)
        print(f"npvae sweep: {args.spec} is valid: {len(runs)} runs in {spec.out}")
        for r in runs:
            evals = f", {len(r.evals)} evaluation(s)" if spec.eval else ""
            state = f"cannot go on: {r.failed}" if r.failed else f"{r.done}/{r.target} epochs{evals}"
            print(f"  {r.point.name}: {state}")
        stuck = [r for r in runs if r.failed]
        if stuck:  # as the sweep would: it runs the others, and exits 3 naming these
            print(f"npvae sweep: {len(stuck)} of {len(runs)} runs cannot go on as they are (above): "
                  f"{', '.join(r.point.name for r in stuck)}", file=sys.stderr)
            return 3
        return 0
    log = (lambda *a, **k: None) if args.quiet else (lambda *a, **k: print(*a, **k, flush=True))
    try:
        result = run_sweep(spec, data, scheduler=args.scheduler, workers=args.workers, progress=not args.quiet, log=log)
    except KeyboardInterrupt as e:  # Ctrl-C, SIGTERM, SIGHUP (npvae.cli.stop_signals)
        from .signals import exit_code

        print(f"\nnpvae sweep: interrupted; every run keeps its last finished epoch; continue with the same command "
              f"(npvae sweep {args.spec})", file=sys.stderr)
        return exit_code(e)
    if result["failed"]:
        for name, why in result["failed"].items():
            print(f"npvae sweep: {name} failed: {why}", file=sys.stderr)
        print(f"npvae sweep: {len(result['failed'])} of {result['runs']} runs failed; the others are finished", file=sys.stderr)
        return 3
    if result["tasks"]:
        print(f"npvae sweep: done, {result['runs']} runs in {spec.out}; the table: npvae sweep {args.spec} --report")
    return 0
