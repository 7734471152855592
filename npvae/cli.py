"""The `npvae` command line: the only place that reads argv and the environment (STYLE.md, habit 13)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path


def _table(rows, verbose: bool) -> str:
    """Group rows by check and case prefix; print every failure and, unless verbose, one line per group."""
    width = max([66] + [len(r["case"]) for r in rows if r["check"] != "gradient"])
    lines = [f"{'check':<9} {'case':<{width}} {'error':>10} {'tol':>9}  result"]
    groups: dict[tuple, list] = {}
    for r in rows:
        # Gradient rows are per parameter; the group is the objective/estimator, the worst parameter is shown.
        key = (r["check"], r["case"].rsplit(" ", 1)[0] if r["check"] == "gradient" else r["case"])
        groups.setdefault(key, []).append(r)
    for (check, case), rs in groups.items():
        decided = [r for r in rs if r["status"] != "inconclusive"] or rs
        shown = rs if verbose else [max(decided, key=lambda r: r["error"] / max(r["tol"], 1e-300))]
        shown += [r for r in rs if r["status"] != "ok" and r not in shown]
        for r in shown:
            label = r["case"] if (verbose or len(rs) == 1) else f"{case} (worst of {len(rs)}: {r['case'].rsplit(' ', 1)[1]})"
            lines.append(f"{check:<9} {label:<{width}} {r['error']:>10.2e} {r['tol']:>9.1e}  {r['status']}")
    n_fail = sum(r["status"] == "FAIL" for r in rows)
    n_open = sum(r["status"] == "inconclusive" for r in rows)
    lines.append(f"{len(rows) - n_fail - n_open} passed, {n_fail} failed" + (f", {n_open} inconclusive" if n_open else ""))
    return "\n".join(lines)


def cmd_check(args) -> int:
    from .check import run_all

    rows = run_all(seed=args.seed)
    if args.json:
        print(json.dumps({"passed": all(r["passed"] for r in rows), "rows": rows}, indent=1))
    else:
        print(_table(rows, args.verbose))
    return 0 if all(r["passed"] for r in rows) else 1


def cmd_verify(args) -> int:
    from . import verify

    if args.example:
        _write_example(args.file, verify)
        print(f"npvae verify: wrote {args.file}, npvae's own IWAE_4 with DReG on a 6-5-5-3 tanh Bernoulli VAE; check it with: npvae verify {args.file}")
        return 0
    case = verify.read(args.file)
    rows = verify.compare(case, args.rtol)
    ok = all(r["passed"] for r in rows)
    if args.json:
        print(json.dumps({"passed": ok, "arch": case.arch.spec, "options": case.options, "rows": rows}, indent=1))
        return 0 if ok else 1
    o = case.options
    print(f"npvae verify {args.file}: {case.arch.spec} {case.arch.activation} {o['likelihood']}, {o['bound']} kl={o['kl']} "
          f"{o['estimator']}, N={case.x.shape[0]}, K={case.eps.shape[0]}; relative error max|theirs - ours| / max|ours|")
    for r in rows:
        print(f"  {r['quantity']:<24} {r['rel_error']:>10.2e}  tol {r['tol']:.0e} ({r['dtype']})  {'ok' if r['passed'] else 'FAIL'}"
              + (f"  {r['hint']}" if r["hint"] else ""))
    n_fail = sum(not r["passed"] for r in rows)
    print(f"{len(rows) - n_fail} passed, {n_fail} failed")
    return 0 if ok else 1


def _write_example(path, verify) -> None:
    """A verify file written by npvae itself: a small VAE's IWAE_4 with the DReG estimator, in float64."""
    import numpy as np

    from .check import gradient_model
    from .objectives import objective

    rng = np.random.default_rng(0)
    arch, params, x, _ = gradient_model(rng, "bernoulli", "tanh")
    eps = rng.standard_normal((4, x.shape[0], arch.latent_dim))
    options = dict(bound="iwae", kl="mc", estimator="dreg", likelihood="bernoulli", activation="tanh")
    values, grads = objective(params, arch, x, eps, bound="iwae", kl="mc", estimator="dreg")
    verify.write(path, params, arch, x, eps, options, values, grads)


def _data_options(p) -> None:
    p.add_argument("--data-dir", action="append", default=None, metavar="DIR",
                   help="where data files are looked for first (repeatable); then $NPVAE_DATA_DIR, then the user cache")
    p.add_argument("--download", action="store_true", help="fetch missing public files into the cache (sha256-verified)")


def _search(args, run_dir=None) -> dict:
    """Search directories from the options, the run's data.json and the environment: the CLI reads the environment, the library never does.

    A run remembers the directory its data came from; eval, sample and --resume look there first when
    no --data-dir is given, and say so when it is gone.
    """
    from .data import default_cache_dir, default_search_dirs
    from .run_dir import read_data_source

    cache = default_cache_dir(os.environ)
    dirs = args.data_dir
    if dirs is None and run_dir is not None:
        source = read_data_source(run_dir) or {}
        if source.get("dir"):
            if Path(source["dir"]).is_dir():
                dirs = [source["dir"]]
            else:
                print(f"npvae {args.command}: note: the run's data came from {source['dir']}, which is gone; "
                      "looking in the usual places (give --data-dir to say where they are now)", file=sys.stderr)
    return {"search_dirs": default_search_dirs(dirs, os.environ.get("NPVAE_DATA_DIR"), cache),
            "cache_dir": cache, "download": getattr(args, "download", False)}


def _limit_threads(n: int):
    """Limit BLAS threads: on small shared machines one thread is fastest and timings are steady."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=n)


def _positive_int(text: str) -> int:
    """argparse type: an integer >= 1, also written as 1e9."""
    try:
        v = int(text)
    except ValueError:
        try:
            f = float(text)
        except ValueError:
            f = float("nan")
        if not (f.is_integer() and abs(f) < 2**63):
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        v = int(f)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def _config_from_args(args):
    from .config import TrainConfig

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in vars(args).items() if k in fields and v is not None})


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def cmd_train(args) -> int:
    from . import run_dir as rd
    from .data import load
    from .train import TrainingDiverged, TrainingInterrupted, load_state, preflight, train

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
        dataset = load(config.dataset, dtype=config.dtype, seed=config.seed, binarize=config.binarize, **_search(args, run_dir))
    else:
        config = _config_from_args(args)
        dataset = load(config.dataset, dtype=config.dtype, seed=config.seed, binarize=config.binarize, **_search(args))
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

    from . import run_dir as rd
    from .models import unflatten
    from .plots import run_pictures, skipped_pictures
    from .train import load_state

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
    from . import run_dir as rd
    from .train import load_state, read_meta

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
    import numpy as np

    from .backends import resolve
    from .data import binarize_dynamic, load, subset_indices
    from .evaluate import evaluate
    from .models import unflatten
    from .train import progress_bar

    _limit_threads(args.threads)
    backend = resolve(args.backend)
    run_dir = Path(args.run_dir)
    config, arch, state = _open_run(run_dir, args.checkpoint)
    dataset = load(config.dataset, dtype=config.dtype, seed=config.seed, binarize=config.binarize, **_search(args, run_dir))
    x = dataset.split(args.split)
    N = x.shape[0]
    # Separate streams: the subset, the binarisation and the importance samples do not depend on one another.
    subset_rng, binarize_rng, rng = (np.random.default_rng(c) for c in np.random.SeedSequence(args.seed).spawn(3))
    points = f"all {N}"
    if args.n is not None:
        labels = getattr(dataset, f"{args.split}_labels")
        idx = subset_indices(args.n, N, subset_rng, labels)
        x = x[idx]
        points = f"{args.n} of {N}, a seeded random subset{' stratified by class' if labels is not None else ''} (--seed {args.seed})"
    x_active = dataset.train
    if dataset.dynamic_binarize:  # one stochastic binarisation of the evaluation data, from the seed
        x, x_active = binarize_dynamic(x, binarize_rng), binarize_dynamic(x_active, binarize_rng)
    bar = progress_bar(x.shape[0] * args.k, f"eval k={args.k}", not (args.quiet or args.json), unit="sample", unit_scale=True)
    metrics = evaluate(unflatten(arch, state.params), arch, x, rng, k=args.k, progress=bar.update, backend=backend, x_active=x_active)
    bar.close()
    metrics.update({"split": args.split, "points": points, "checkpoint": args.checkpoint, "epoch": state.epoch, "seed": args.seed})
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
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
            (a1, a2), (z1, z2) = metrics["active_units_per_layer"], metrics["latent_dims"]
            print(f"    per stochastic layer   {a1:>6d} / {z1}, {a2} / {z2}")
        if "mutual_information" in metrics:
            print(f"  I(x; z) (aggregate)      {metrics['mutual_information']:10.3f}   (more is better)")
        print(f"  written to {run_dir / 'metrics.json'}")
    return 0


def cmd_sample(args) -> int:
    from .data import load

    run_dir = Path(args.run_dir)
    config, _, _ = _open_run(run_dir, args.checkpoint)
    dataset = load(config.dataset, dtype=config.dtype, seed=config.seed, binarize=config.binarize, **_search(args, run_dir))
    _pictures(run_dir, config, dataset, checkpoint=args.checkpoint, seed=args.seed)
    return 0


def cmd_explain(args) -> int:
    from .explain import run

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

    script = Path(__file__).resolve().parents[1] / "bench" / "bench_train.py"
    if not script.exists():
        raise FileNotFoundError(f"the benchmark lives in the source checkout ({script} not found)")
    rest = args.bench_args[1:] if args.bench_args[:1] == ["--"] else args.bench_args
    sys.path.insert(0, str(script.parent))  # as `python bench/bench_train.py` would: its sibling modules (jax_model) import
    bench = runpy.run_path(str(script), run_name="npvae_bench")
    return bench["main"](rest, prog="npvae bench")


def _train_options(t) -> None:
    from .config import OUTPUT_BIASES, TrainConfig
    from .data import DATASETS
    from .layers import ACTIVATIONS
    from .likelihoods import LIKELIHOODS
    from .backends import BACKENDS
    from .objectives import BOUNDS, ESTIMATORS, KL_MODES

    d = TrainConfig()
    t.add_argument("--dataset", choices=DATASETS, default=None,
                   help="digits (embedded, the default), binarized-mnist, mnist, fashion-mnist (need files: --data-dir) or synthetic")
    t.add_argument("--binarize", action="store_true", default=None, help="dynamic binarisation of grey-level data (a fresh draw per epoch)")
    t.add_argument("--arch", default=None, help="D-hidden...-Z, e.g. 784-200-200-50 (default: <D>-128-2); two stochastic layers "
                   "with a ':', D-hidden1...-Z1:hidden2...-Z2, e.g. 784-200-200-100:100-100-50 (Burda et al. 2016)")
    t.add_argument("--activation", choices=ACTIVATIONS, default=None, help=f"default {d.activation}")
    t.add_argument("--likelihood", choices=LIKELIHOODS, default=None, help=f"default {d.likelihood}")
    t.add_argument("--sigma2", type=float, default=None, help=f"variance of the fixed Gaussian likelihood (default {d.sigma2})")
    t.add_argument("--min-log-var", dest="min_log_var", type=float, default=None, help=f"soft floor of a learned log-variance (default {d.min_log_var})")
    t.add_argument("--bound", choices=BOUNDS, default=None, help="elbo (default) or iwae")
    t.add_argument("-k", "--k", type=int, default=None, help="importance samples per point, K (default 1)")
    t.add_argument("--kl", choices=KL_MODES, default=None, help="analytic (default) or mc; iwae needs mc")
    t.add_argument("--estimator", choices=ESTIMATORS, default=None, help="reparam (default), stl (ELBO, MC KL), dreg (IWAE)")
    t.add_argument("--kl-weight", dest="kl_weight", type=float, default=None, help="final KL weight beta (default 1)")
    t.add_argument("--warmup-epochs", dest="warmup_epochs", type=int, default=None, help="linear KL warm-up from 0 (default 0)")
    t.add_argument("--free-bits", dest="free_bits", type=float, default=None, help="nats per latent dimension (default 0)")
    t.add_argument("--batch-size", dest="batch_size", type=int, default=None, help=f"default {d.batch_size}")
    t.add_argument("--epochs", type=int, default=None, help=f"default {d.epochs}")
    t.add_argument("--lr", type=float, default=None, help=f"Adam learning rate (default {d.lr})")
    t.add_argument("--lr-schedule", dest="lr_schedule", choices=("constant", "burda"), default=None,
                   help="constant (default), or burda: 10^(-i/7) in stage i of 3^i epochs (Burda et al. 2016)")
    t.add_argument("--beta1", type=float, default=None, help=f"Adam's first-moment decay (default {d.beta1})")
    t.add_argument("--beta2", type=float, default=None, help=f"Adam's second-moment decay (default {d.beta2})")
    t.add_argument("--adam-eps", dest="adam_eps", type=float, default=None, help=f"default {d.adam_eps}")
    t.add_argument("--dtype", choices=("float32", "float64"), default=None, help=f"default {d.dtype}")
    t.add_argument("--seed", type=int, default=None, help="seed of every random stream of the run (default 0)")
    t.add_argument("--valid-k", dest="valid_k", type=int, default=None, help="K of the per-epoch validation bound (default: training K)")
    t.add_argument("--output-bias", dest="output_bias", choices=OUTPUT_BIASES, default=None,
                   help="the decoder's output bias at the start: data (default: the logit of the mean training pixel, clipped "
                        "to [1e-3, 1 - 1e-3], or the data mean for a Gaussian; Burda et al. 2016) or zero")
    t.add_argument("--backend", choices=BACKENDS, default=None,
                   help="where the kernels run: numpy (default, the reference), numba (CPU kernels), cuda, auto (fastest available)")


def _sub(sub, name: str, help: str, description: str | None = None, **kw):
    """A subcommand whose --help opens with a description (its one-line help, unless a longer one is given)."""
    return sub.add_parser(name, help=help, description=description or help[0].upper() + help[1:] + ".", **kw)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .backends import BACKENDS

    p = argparse.ArgumentParser(prog="npvae", description="A NumPy reference VAE: train, evaluate, sample, check, verify, explain, bench.")
    p.add_argument("--version", action="version", version=f"npvae {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    threads = dict(type=_positive_int, default=1, help="BLAS threads, >= 1 (default 1: on small shared machines the fastest and steadiest)")

    c = _sub(sub, "check", "finite-difference gradient checks and exact bound checks (float64)",
             "Check npvae's own gradients against central differences (error-model tolerances, away from ReLU kinks) and its "
             "bounds against closed forms and scipy. Exit 0 if every check passes, 1 if one fails.")
    c.add_argument("--json", action="store_true", help="print the results as JSON")
    c.add_argument("--verbose", action="store_true", help="one row per parameter instead of the worst per objective")
    c.add_argument("--seed", type=int, default=0, help="seed of the random models and noise")
    c.set_defaults(func=cmd_check)

    v = _sub(sub, "verify", "check someone else's VAE (weights, data, noise, values, gradients in FILE) against npvae",
             "Recompute the bound and its gradients from FILE's weights, x and eps with npvae's NumPy "
             "specification and compare each quantity (docs/verify.md). Exit 0 if all agree, 1 if not, 2 if FILE is malformed.")
    v.add_argument("file", help="an .npz written as docs/verify.md describes (bench/examples/export_torch_vae.py writes one from PyTorch)")
    v.add_argument("--json", action="store_true", help="print the results as JSON")
    v.add_argument("--rtol", type=float, default=None, help="one relative tolerance for every quantity (default: 1e-9 for float64, 1e-4 for float32)")
    v.add_argument("--example", action="store_true", help="write an example FILE from npvae's own objective instead of checking one")
    v.set_defaults(func=cmd_verify)

    t = _sub(sub, "train", "train a VAE (no arguments: the embedded digits, in seconds)",
             "Train a VAE with Adam, a validation bound every epoch, checkpoints (last.safetensors, best.safetensors) and "
             "pictures in a run directory. Ctrl-C stops cleanly (exit 130); --resume continues bit for bit.")
    _train_options(t)
    _data_options(t)
    t.add_argument("--out", default=None, help="run directory: new, empty, or a run that never finished an epoch "
                   "(default runs/<dataset>-<date>-<time>, made unique)")
    t.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue the run in RUN_DIR (only --epochs and --backend may change)")
    t.add_argument("--threads", **threads)
    t.add_argument("--quiet", action="store_true", help="no progress bar and no line per epoch")
    t.add_argument("--no-pictures", action="store_true", help="do not draw pictures at the end")
    t.set_defaults(func=cmd_train)

    checkpoint = dict(default="best", help="best (default: the epoch with the best validation bound), last, or a checkpoint file")
    e = _sub(sub, "eval", "test log-likelihood (importance sampling) and latent diagnostics of a run",
             "Estimate -log p(x) with k importance samples per point (Burda et al. 2016) on a whole split, with the ELBO's "
             "terms, active units and I(x; z); written to RUN_DIR/metrics.json.")
    e.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by npvae train")
    e.add_argument("--k", type=_positive_int, default=5000, help="importance samples per point (default 5000, Burda et al.)")
    e.add_argument("--split", choices=("train", "valid", "test"), default="test", help="which split to evaluate (default test)")
    e.add_argument("--n", type=_positive_int, default=None, help="evaluate a seeded random subset of N points, stratified by class where "
                   "the data have labels (default: the whole split; a prefix of a split is not a sample of it)")
    e.add_argument("--checkpoint", **checkpoint)
    e.add_argument("--seed", type=int, default=0, help="seed of the subset, the importance samples and any binarisation (default 0)")
    e.add_argument("--json", action="store_true", help="print the metrics as JSON instead of a table")
    e.add_argument("--threads", **threads)
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    e.add_argument("--backend", choices=BACKENDS, default="numpy", help="where log p(x)'s kernels run: numpy (default), numba, cuda, auto")
    _data_options(e)
    e.set_defaults(func=cmd_eval)

    s = _sub(sub, "sample", "pictures of a run: prior samples, reconstructions, curves, the latent space",
             "Draw a run's pictures again (samples.png, reconstructions.png, curves.png and, for Z = 2, manifold.png and latent.png).")
    s.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by npvae train")
    s.add_argument("--checkpoint", **checkpoint)
    s.add_argument("--seed", type=int, default=0, help="seed of the prior samples (default 0)")
    _data_options(s)
    s.set_defaults(func=cmd_sample)

    from .explain import QUESTIONS, TOPICS

    x = _sub(sub, "explain", "experiments that answer the classic VAE questions with numbers and pictures",
             "\n".join(f"{t}: {q}" for t, q in QUESTIONS.items()), formatter_class=argparse.RawDescriptionHelpFormatter)
    x.add_argument("topic", choices=TOPICS, help="which question")
    x.add_argument("--out", default=None, help="output directory (default runs/explain-TOPIC)")
    x.add_argument("--quick", action="store_true", help="a few seconds, smaller experiment")
    x.add_argument("--seed", type=int, default=0, help="seed of the experiment (default 0)")
    x.add_argument("--data-dir", action="append", default=None, help="where binarized_mnist.npz is (posterior topic)")
    x.add_argument("--json", action="store_true", help="print the numbers as JSON")
    x.add_argument("--threads", **threads)
    x.set_defaults(func=cmd_explain)

    b = _sub(sub, "bench", "training and evaluation throughput, numpy vs numba (vs torch and JAX if importable)",
             "Run bench/bench_train.py (source checkout only); `npvae bench --help` shows its options.",
             add_help=False)  # every option, --help included, goes to bench/bench_train.py
    b.add_argument("bench_args", nargs=argparse.REMAINDER, help="options of bench/bench_train.py, e.g. --quick")
    b.set_defaults(func=cmd_bench)
    return p


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


if __name__ == "__main__":
    sys.exit(main())
