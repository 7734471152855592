"""`npvae eval`: a run's test NLL, ELBO and active units (npvae.evaluation), printed and written to metrics.json."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .data import search as _search
from .runs import limit_threads, open_run
from ..store.atomic import write_json


def cmd_eval(args) -> int:
    from ..backends import resolve
    from ..store.data import load
    from ..evaluation.chunks import eval_inputs, evaluate_chunked, local_runner
    from ..evaluation.cost import ANNOUNCE_ABOVE, check_eval_cost, fmt_seconds, seconds_per_pair
    from ..vae.models import unflatten
    from ..training.progress import progress_bar

    limit_threads(args.threads)
    backend = resolve(args.backend)
    run_dir = Path(args.run_dir)
    config, arch, state, checkpoint = open_run(run_dir, args.checkpoint)
    dataset = load(config.dataset, dtype=config.dtype, seed=config.seed, binarize=config.binarize, compact=True,
                   **_search(args, run_dir))
    x, x_active, points = eval_inputs(dataset, args.split, args.seed, args.n)
    kw = dict(k=args.k, run_seed=config.seed, eval_seed=args.seed, x_active=x_active, backend=backend)
    params = unflatten(arch, state.params)
    seconds = seconds_per_pair(params, arch, x, backend) * x.shape[0] * args.k
    check_eval_cost(f"evaluating k={args.k} importance samples on {x.shape[0]} points", seconds,
                    "lower --k, or evaluate a subset with --n")
    if seconds > ANNOUNCE_ABOVE and not (args.quiet or args.json):
        print(f"npvae eval: about {fmt_seconds(seconds)} on one process (k={args.k} x {x.shape[0]} points, the {backend} "
              f"backend, timed on a probe); faster: {faster(args, backend, dataset.split(args.split).shape[0])}",
              file=sys.stderr)
    bar = progress_bar(x.shape[0] * args.k, f"eval k={args.k}", not (args.quiet or args.json), unit="sample", unit_scale=True)
    if args.scheduler is None and args.workers is None:
        metrics = evaluate_chunked(params, arch, x, runner=local_runner(bar.update), **kw)
    else:  # the same chunks, the same numbers, computed on a Dask cluster
        from ..evaluation.cluster import connect, dashboard, dask_runner

        with connect(args.scheduler, args.workers) as client:
            if not (args.quiet or args.json):
                print(f"npvae eval: Dask dashboard: {dashboard(client)}", file=sys.stderr)
            metrics = evaluate_chunked(params, arch, x, runner=dask_runner(client, bar.update), **kw)
    bar.close()
    metrics.update({"split": args.split, "points": points, "checkpoint": checkpoint, "epoch": state.epoch, "seed": args.seed})
    if args.json:
        print(json.dumps(metrics, indent=1))
    else:
        count, comma, how = points.partition(",")  # "all 250", or "40 of 250, a seeded random subset ... (--seed 0)"
        print(f"{config.dataset} {args.split} ({count} points{comma}{how}), checkpoint {checkpoint} at epoch {state.epoch}")
        print("  nats per point; NLL, -ELBO and the reconstruction cost -E_q[log p(x|z)]: lower is better")
        for line in table_lines(metrics, args.k):
            print(line)
    try:  # after the numbers are shown: a run directory that cannot be written (read-only) loses nothing computed
        write_json(run_dir / "metrics.json", metrics)
    except OSError as e:
        print(f"npvae eval: error: the numbers above are not saved: could not write {run_dir / 'metrics.json'} ({e})",
              file=sys.stderr)
        return 2
    if not args.json:
        print(f"  written to {run_dir / 'metrics.json'}")
    return 0


def table_lines(metrics: dict, k: int) -> list[str]:
    """The eval table: one label column wide enough for every label, the numbers right-aligned in one column after it."""
    number = lambda v: f"{v:10.3f}"  # noqa: E731
    rows = [(f"NLL = -log p(x) (k={k})", number(metrics["nll"]), f"+- {metrics['nll_se']:.3f}"),
            ("-ELBO", number(-metrics["elbo"]), f"+- {metrics['elbo_se']:.3f}"),
            ("-E_q[log p(x|z)]", number(-metrics["recon"]), "(reconstruction)"),
            ("KL(q(z|x) || p(z))", number(metrics["kl"]), ""),
            ("log p(x) - ELBO", number(metrics["gap_log_px_minus_elbo"]), "(the gap, >= 0)"),
            ("active units", f"{metrics['active_units']:>10d}",
             f"/ {metrics['latent_dim']} (on the {metrics['active_units_points']} training points; more is better)")]
    if "active_units_per_layer" in metrics:
        per = ", ".join(f"{a} / {z}" for a, z in zip(metrics["active_units_per_layer"], metrics["latent_dims"]))
        rows.append(("  per stochastic layer", per, ""))
    if "mutual_information" in metrics:
        rows.append(("I(x; z) (aggregate)", number(metrics["mutual_information"]), "(more is better)"))
    width = max(len(label) for label, _, _ in rows) + 2
    return [f"  {label:<{width}}{value:>10}  {note}".rstrip() for label, value, note in rows]


SUBSET = 1000  # the subset faster() suggests, for a split larger than it


def faster(args, backend: str, split_points: int) -> str:
    """What would shorten an evaluation of a split of `split_points` points, as options of this command."""
    ways = [] if backend != "numpy" else ["--backend numba (the same numbers to 1e-12)"]
    if args.threads == 1 and args.workers is None and args.scheduler is None:
        ways.append("--threads N or --workers N (N cores, the same numbers)")
    if args.n is None and split_points > SUBSET:
        ways.append(f"--n {SUBSET} (a stratified subset: a quick look, not a paper's protocol)")
    ways.append("a smaller --k (a looser bound on log p(x))")
    return "; ".join(ways)
