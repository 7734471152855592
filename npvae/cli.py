"""The `npvae` command line: the only place that reads argv and the environment (STYLE.md, habit 13)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from datetime import datetime
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


def _search(args) -> dict:
    """Search directories from the options and the environment: the CLI reads the environment, the library never does."""
    from .data import default_cache_dir, default_search_dirs

    cache = default_cache_dir(os.environ)
    return {"search_dirs": default_search_dirs(args.data_dir, os.environ.get("NPVAE_DATA_DIR"), cache),
            "cache_dir": cache, "download": getattr(args, "download", False)}


def _limit_threads(n: int):
    """Limit BLAS threads: on small shared machines one thread is fastest and timings are steady."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=n)


def _config_from_args(args):
    from .config import TrainConfig

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in vars(args).items() if k in fields and v is not None})


def cmd_train(args) -> int:
    from .data import load
    from .train import TrainingDiverged, load_state, train

    _limit_threads(args.threads)
    if args.resume:
        run_dir = Path(args.resume)
        config, _, _ = load_state(run_dir / "last.npz")
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
    else:
        config = _config_from_args(args)
        run_dir = Path(args.out or Path("runs") / f"{config.dataset}-{datetime.now():%Y%m%d-%H%M%S}")
        if (run_dir / "last.npz").exists():
            raise ValueError(f"{run_dir} already holds a run: use --resume {run_dir}, or another --out")
    dataset = load(config.dataset, dtype=config.dtype, seed=config.seed, binarize=config.binarize, **_search(args))
    print(f"npvae train: {config.dataset}, {config.bound} K={config.k}, run directory {run_dir}", flush=True)
    try:
        state = train(config, dataset, run_dir, resume=bool(args.resume), progress=not args.quiet)
    except TrainingDiverged as e:
        print(f"npvae train: {e}", file=sys.stderr)
        return 3
    if not args.no_pictures:
        _pictures(run_dir, config, dataset, state)
    print(f"npvae train: done, {state.epoch} epochs, best validation bound {state.best_valid:.4f}; run in {run_dir}")
    return 0


def _pictures(run_dir, config, dataset, state=None, checkpoint="best.npz", seed=0):
    import numpy as np

    from .model import unflatten
    from .plots import run_pictures, skipped_pictures
    from .train import load_state

    _, arch, saved = load_state(Path(run_dir) / checkpoint)
    if state is None:  # the curves show the whole run (last.npz), not the run up to the best epoch
        last = Path(run_dir) / "last.npz"
        state = load_state(last)[2] if last.exists() else saved
    history = state.history
    paths = run_pictures(unflatten(arch, saved.params), arch, dataset, Path(run_dir), np.random.default_rng(seed), history=history)
    for p in paths:
        print(f"  picture: {p}")
    for name, why in skipped_pictures(arch, dataset.image_shape, history).items():
        print(f"  not drawn: {name} ({why})")


def cmd_eval(args) -> int:
    import numpy as np


    from .backends import resolve
    from .data import binarize_dynamic, load, subset_indices
    from .evaluate import evaluate
    from .model import unflatten
    from .train import _progress, load_state

    _limit_threads(args.threads)
    backend = resolve(args.backend)
    run_dir = Path(args.run_dir)
    config, arch, state = load_state(run_dir / args.checkpoint)
    dataset = load(config.dataset, dtype=config.dtype, seed=config.seed, binarize=config.binarize, **_search(args))
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
    bar = _progress(x.shape[0], f"eval k={args.k}", not (args.quiet or args.json))
    metrics = evaluate(unflatten(arch, state.params), arch, x, rng, k=args.k, progress=bar.update, backend=backend, x_active=x_active)
    bar.close()
    metrics.update({"split": args.split, "points": points, "checkpoint": args.checkpoint, "epoch": state.epoch, "seed": args.seed})
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
    if args.json:
        print(json.dumps(metrics, indent=1))
    else:
        print(f"{config.dataset} {args.split} ({points} points), {args.checkpoint} at epoch {state.epoch}")
        print(f"  NLL (k={args.k})        {metrics['nll']:10.3f} +- {metrics['nll_se']:.3f} nats")
        print(f"  -ELBO                  {-metrics['elbo']:10.3f} +- {metrics['elbo_se']:.3f}")
        print(f"  reconstruction         {metrics['recon']:10.3f}")
        print(f"  KL(q(z|x) || p(z))     {metrics['kl']:10.3f}")
        print(f"  log p(x) - ELBO        {metrics['gap_log_px_minus_elbo']:10.3f}")
        print(f"  active units           {metrics['active_units']:>6d} / {metrics['latent_dim']}   (on the {metrics['active_units_points']} training points)")
        print(f"  I(x; z) (aggregate)    {metrics['mutual_information']:10.3f}")
        print(f"  written to {run_dir / 'metrics.json'}")
    return 0


def cmd_sample(args) -> int:
    from .data import load
    from .train import load_state

    run_dir = Path(args.run_dir)
    config, _, _ = load_state(run_dir / args.checkpoint)
    dataset = load(config.dataset, dtype=config.dtype, seed=config.seed, binarize=config.binarize, **_search(args))
    _pictures(run_dir, config, dataset, checkpoint=args.checkpoint, seed=args.seed)
    return 0


def cmd_explain(args) -> int:
    from .explain import run

    out = Path(args.out or Path("runs") / f"explain-{args.topic}")
    with _limit_threads(args.threads):
        result = run(args.topic, out, quick=args.quick, seed=args.seed, data_dir=_search(args)["search_dirs"])
    for note in result["notes"]:
        print(f"  note: {note}")
    print(json.dumps(result["numbers"], indent=1) if args.json else f"npvae explain {args.topic}: {result['question']}")
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
    sys.argv = [str(script), *rest]
    sys.path.insert(0, str(script.parent))  # as `python bench/bench_train.py` would: its sibling modules (jax_model) import
    runpy.run_path(str(script), run_name="__main__")
    return 0


def _train_options(t) -> None:
    from .config import OUTPUT_BIASES, TrainConfig
    from .layers import ACTIVATIONS
    from .likelihoods import LIKELIHOODS
    from .backends import BACKENDS
    from .objectives import BOUNDS, ESTIMATORS, KL_MODES

    d = TrainConfig()
    t.add_argument("--dataset", default=None, help="digits (embedded, default), binarized-mnist, mnist, fashion-mnist, synthetic")
    t.add_argument("--binarize", action="store_true", default=None, help="dynamic binarisation of grey-level data (a fresh draw per epoch)")
    t.add_argument("--arch", default=None, help="D-hidden...-Z, e.g. 784-200-200-50 (default: <D>-128-2)")
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


def build_parser() -> argparse.ArgumentParser:
    from .backends import BACKENDS

    p = argparse.ArgumentParser(prog="npvae", description="A NumPy reference VAE: train, evaluate, sample, check, explain.")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("check", help="finite-difference gradient checks and exact bound checks (float64)")
    c.add_argument("--json", action="store_true", help="print the results as JSON")
    c.add_argument("--verbose", action="store_true", help="one row per parameter instead of the worst per objective")
    c.add_argument("--seed", type=int, default=0, help="seed of the random models and noise")
    c.set_defaults(func=cmd_check)

    v = sub.add_parser("verify", help="check someone else's VAE (weights, data, noise, values, gradients in FILE) against npvae",
                       description="Recompute the bound and its gradients from FILE's weights, x and eps with npvae's NumPy "
                                   "specification and compare each quantity (docs/verify.md). Exit 0 if all agree, 1 if not, 2 if FILE is malformed.")
    v.add_argument("file", help="an .npz written as docs/verify.md describes (bench/examples/export_torch_vae.py writes one from PyTorch)")
    v.add_argument("--json", action="store_true", help="print the results as JSON")
    v.add_argument("--rtol", type=float, default=None, help="one relative tolerance for every quantity (default: 1e-9 for float64, 1e-4 for float32)")
    v.add_argument("--example", action="store_true", help="write an example FILE from npvae's own objective instead of checking one")
    v.set_defaults(func=cmd_verify)

    t = sub.add_parser("train", help="train a VAE (no arguments: the embedded digits, in seconds)")
    _train_options(t)
    _data_options(t)
    t.add_argument("--out", default=None, help="run directory (default runs/<dataset>-<time>)")
    t.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue the run in RUN_DIR (only --epochs and --backend may change)")
    t.add_argument("--threads", type=int, default=1, help="BLAS threads (default 1)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument("--no-pictures", action="store_true", help="do not draw pictures at the end")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="test log-likelihood (importance sampling) and latent diagnostics of a run")
    e.add_argument("run_dir")
    e.add_argument("--k", type=int, default=5000, help="importance samples per point (default 5000, Burda et al.)")
    e.add_argument("--split", choices=("train", "valid", "test"), default="test")
    e.add_argument("--n", type=int, default=None, help="evaluate a seeded random subset of N points, stratified by class where "
                   "the data have labels (default: the whole split; a prefix of a split is not a sample of it)")
    e.add_argument("--checkpoint", default="best.npz", help="best.npz (default) or last.npz")
    e.add_argument("--seed", type=int, default=0, help="seed of the importance samples")
    e.add_argument("--json", action="store_true")
    e.add_argument("--threads", type=int, default=1)
    e.add_argument("--quiet", action="store_true")
    e.add_argument("--backend", choices=BACKENDS, default="numpy", help="where log p(x)'s kernels run: numpy (default), numba, cuda, auto")
    _data_options(e)
    e.set_defaults(func=cmd_eval)

    s = sub.add_parser("sample", help="pictures of a run: prior samples, reconstructions, curves, the latent space")
    s.add_argument("run_dir")
    s.add_argument("--checkpoint", default="best.npz")
    s.add_argument("--seed", type=int, default=0)
    _data_options(s)
    s.set_defaults(func=cmd_sample)

    from .explain import QUESTIONS, TOPICS

    x = sub.add_parser("explain", help="experiments that answer the classic VAE questions with numbers and pictures",
                       description="\n".join(f"{t}: {q}" for t, q in QUESTIONS.items()),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    x.add_argument("topic", choices=TOPICS)
    x.add_argument("--out", default=None, help="output directory (default runs/explain-TOPIC)")
    x.add_argument("--quick", action="store_true", help="a few seconds, smaller experiment")
    x.add_argument("--seed", type=int, default=0)
    x.add_argument("--data-dir", action="append", default=None, help="where binarized_mnist.npz is (posterior topic)")
    x.add_argument("--json", action="store_true", help="print the numbers as JSON")
    x.add_argument("--threads", type=int, default=1)
    x.set_defaults(func=cmd_explain)

    b = sub.add_parser("bench", help="training and evaluation throughput, numpy vs numba (vs torch if importable)",
                       add_help=False)  # every option, --help included, goes to bench/bench_train.py
    b.add_argument("bench_args", nargs=argparse.REMAINDER, help="options of bench/bench_train.py, e.g. --quick")
    b.set_defaults(func=cmd_bench)
    return p


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    if argv[:1] == ["bench"]:  # argparse's REMAINDER drops a leading option (`npvae bench --quick`): pass it all on
        args = parser.parse_args(["bench"])
        args.bench_args = argv[1:]
    else:
        args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError) as e:  # bad input, missing files, a failed download: a clear message, no traceback
        print(f"npvae {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
