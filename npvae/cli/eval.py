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
    from ..evaluation.cost import check_eval_cost, fmt_seconds, seconds_per_pair
    from ..vae.models import unflatten
    from ..training.loop import progress_bar

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
    if seconds > 10 and not (args.quiet or args.json):
        print(f"npvae eval: about {fmt_seconds(seconds)} on one process (k={args.k} x {x.shape[0]} points, the {backend} "
              "backend, timed on a probe)", file=sys.stderr)
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
        print(f"{config.dataset} {args.split} ({points} points), checkpoint {checkpoint} at epoch {state.epoch}")
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
    try:  # after the numbers are shown: a run directory that cannot be written (read-only) loses nothing computed
        write_json(run_dir / "metrics.json", metrics)
    except OSError as e:
        print(f"npvae eval: error: the numbers above are not saved: could not write {run_dir / 'metrics.json'} ({e})",
              file=sys.stderr)
        return 2
    if not args.json:
        print(f"  written to {run_dir / 'metrics.json'}")
    return 0
