"""The `npvae` command line's arguments: every subcommand's options, their defaults and help (npvae.cli runs them)."""

from __future__ import annotations

import argparse


def _data_options(p) -> None:
    p.add_argument("--data-dir", action="append", default=None, metavar="DIR",
                   help="where data files are looked for first (repeatable); then $NPVAE_DATA_DIR, then the user cache")
    p.add_argument("--download", action="store_true", help="fetch missing public files into the cache (sha256-verified)")


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


def _seed(text: str) -> int:
    """argparse type: a seed, an integer >= 0 (what np.random.SeedSequence takes)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {v}")
    return v


def _train_options(t) -> None:
    from ..training.config import OUTPUT_BIASES, TrainConfig
    from ..store.data import DATASETS
    from ..nn.layers import ACTIVATIONS
    from ..likelihoods import LIKELIHOODS
    from ..backends import BACKENDS
    from ..objectives import BOUNDS, ESTIMATORS, KL_MODES

    d = TrainConfig()
    t.add_argument("--dataset", choices=DATASETS, default=None,
                   help="digits (embedded, the default), binarized-mnist, mnist, fashion-mnist (need files: --data-dir) or synthetic")
    t.add_argument("--binarize", action="store_true", default=None, help="dynamic binarisation of grey-level data (a fresh draw per epoch)")
    t.add_argument("--arch", default=None, help="D-hidden...-Z, e.g. 784-200-200-50 (default: <D>-128-2); L stochastic layers "
                   "with a ':' before each layer above the first, D-hidden1...-Z1:hidden2...-Z2:..., e.g. 784-200-200-100:100-100-50 "
                   "(Burda et al. 2016)")
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
    t.add_argument("--seed", type=_seed, default=None, help="seed of every random stream of the run (default 0)")
    t.add_argument("--valid-k", dest="valid_k", type=int, default=None, help="K of the per-epoch validation bound (default: training K)")
    t.add_argument("--output-bias", dest="output_bias", choices=OUTPUT_BIASES, default=None,
                   help="the decoder's output bias at the start: data (default: the logit of the mean training pixel, clipped "
                        "to [1e-3, 1 - 1e-3], or the data mean for a Gaussian; Burda et al. 2016) or zero")
    t.add_argument("--backend", choices=BACKENDS, default=None,
                   help="where the kernels run: numpy (default, the reference), numba (CPU kernels), cuda, auto (fastest available)")


def _cluster_options(p, what: str) -> None:
    p.add_argument("--scheduler", default=None, metavar="ADDRESS", help=f"{what} an existing Dask cluster, e.g. tcp://host:8786 "
                   "(docs/sweep.md: starting one on several hosts)")
    p.add_argument("--workers", type=_positive_int, default=None, help=f"{what} an embedded Dask LocalCluster of N single-threaded "
                   "worker processes" + (" (default: one per core)" if what.startswith("run") else ""))


def _sub(sub, name: str, help: str, description: str | None = None, **kw):
    """A subcommand whose --help opens with a description (its one-line help, unless a longer one is given)."""
    return sub.add_parser(name, help=help, description=description or help[0].upper() + help[1:] + ".", **kw)


def subcommands(parser: argparse.ArgumentParser) -> dict:
    """{command: its parser} of a parser build_parser made, in the order the commands were added."""
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def build_parser(commands: dict) -> argparse.ArgumentParser:
    """The parser; commands maps each subcommand's name to its handler (npvae.cli's cmd_* functions)."""
    from .._version import __version__
    from ..backends import BACKENDS

    p = argparse.ArgumentParser(prog="npvae", description="A NumPy reference VAE: train, evaluate, sample, check, verify, explain, bench.")
    p.add_argument("--version", action="version", version=f"npvae {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    threads = dict(type=_positive_int, default=1, help="cores to use, >= 1: N BLAS threads, and N workers for the numba backend's log p(x), same results for every N "
                        "(default 1: on small shared machines the fastest and steadiest)")

    c = _sub(sub, "check", "finite-difference gradient checks and exact bound checks (float64)",
             "Check npvae's own gradients against central differences (error-model tolerances, away from ReLU kinks) and its "
             "bounds against closed forms and scipy. Exit 0 if every check passes, 1 if one fails. With --break NAME, an "
             "exercise: the same checks with one classic VAE bug planted for the run, which rows catch it and why; exit 0 "
             "if they catch it, 1 if not (--break list: the bugs).")
    c.add_argument("--json", action="store_true", help="print the results as JSON")
    c.add_argument("--verbose", action="store_true", help="one row per parameter instead of the worst per objective")
    c.add_argument("--seed", type=_seed, default=0, help="seed of the random models and noise")
    # --break stays text here: cmd_check refuses an unknown name in one line, exit 2, before anything runs
    c.add_argument("--break", dest="break_name", default=None, metavar="NAME",
                   help="plant the classic bug NAME in npvae's maths for this run only (kl-no-half, logvar-as-logstd, ...; "
                        "'list' names them all) and show which checks catch it")
    c.set_defaults(func=commands["check"])

    v = _sub(sub, "verify", "check someone else's VAE (weights, data, noise, values, gradients in FILE) against npvae",
             "Recompute the bound and its gradients from FILE's weights, x and eps with npvae's NumPy "
             "specification and compare each quantity (docs/verify.md). Exit 0 if all agree, 1 if not, 2 if FILE is malformed.")
    v.add_argument("file", help="an .npz written as docs/verify.md describes: a VAE's head (any framework, any network) or an MLP VAE's "
                                "weights (bench/examples/export_torch_vae.py writes one from PyTorch)")
    v.add_argument("--json", action="store_true", help="print the results as JSON")
    # --rtol stays text here: cmd_verify parses and checks it, so that a bad one is one line like a bad FILE entry
    v.add_argument("--rtol", default=None, metavar="RTOL", help="one relative tolerance for every quantity, a finite number with "
                   "2.2e-16 <= RTOL < 1 (anything else is refused, exit 2; default: 1e-9 for float64, 1e-4 for float32)")
    v.add_argument("--example", action="store_true", help="write an example FILE from npvae's own objective instead of checking one")
    v.add_argument("--example-head", action="store_true", help="write an example head FILE (pytorch/examples' VAE at its head) instead of checking one")
    v.set_defaults(func=commands["verify"])

    t = _sub(sub, "train", "train a VAE (no arguments: the embedded digits, in seconds)",
             "Train a VAE with Adam, a validation bound every epoch, checkpoints (last.safetensors, best.safetensors) and "
             "pictures in a run directory. Ctrl-C stops cleanly (exit 130); --resume continues bit for bit.")
    _train_options(t)
    _data_options(t)
    t.add_argument("--out", default=None, help="run directory: new, empty, or a run that never finished an epoch; a directory "
                   "of your own files is refused untouched (default runs/<dataset>-<date>-<time>, made unique)")
    t.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue the run in RUN_DIR (only --epochs and --backend may change)")
    t.add_argument("--threads", **threads)
    t.add_argument("--quiet", action="store_true", help="no progress bar and no line per epoch")
    t.add_argument("--verbose", action="store_true", help="a line per epoch on a terminal too (always when the output is not a terminal)")
    t.add_argument("--no-pictures", action="store_true", help="do not draw pictures at the end")
    t.set_defaults(func=commands["train"])

    checkpoint = dict(default=None, help="best (default: the epoch with the best validation bound; last in a run that kept only "
                      "last), last, or a checkpoint file")
    e = _sub(sub, "eval", "test log-likelihood (importance sampling) and latent diagnostics of a run",
             "Estimate -log p(x) with k importance samples per point (Burda et al. 2016) on a whole split, with the ELBO's "
             "terms, active units and I(x; z); written to RUN_DIR/metrics.json.")
    e.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by npvae train")
    e.add_argument("--k", type=_positive_int, default=5000, help="importance samples per point (default 5000, Burda et al.)")
    e.add_argument("--split", choices=("train", "valid", "test"), default="test", help="which split to evaluate (default test)")
    e.add_argument("--n", type=_positive_int, default=None, help="evaluate a seeded random subset of N points, stratified by class where "
                   "the data have labels (default: the whole split; a prefix of a split is not a sample of it)")
    e.add_argument("--checkpoint", **checkpoint)
    e.add_argument("--seed", type=_seed, default=0, help="seed of the subset, the importance samples (with the run's seed: "
                   "npvae.evaluation.chunks) and any binarisation (default 0)")
    e.add_argument("--json", action="store_true", help="print the metrics as JSON instead of a table")
    e.add_argument("--threads", **threads)
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    e.add_argument("--backend", choices=BACKENDS, default="numpy", help="where log p(x)'s kernels run: numpy (default), numba, cuda, auto")
    _cluster_options(e, "compute the chunks of points on")
    _data_options(e)
    e.set_defaults(func=commands["eval"])

    s = _sub(sub, "sample", "pictures of a run: prior samples, reconstructions, curves, the latent space",
             "Draw a run's pictures again (samples.png, reconstructions.png, curves.png and, for Z = 2, manifold.png and latent.png).")
    s.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by npvae train")
    s.add_argument("--checkpoint", **checkpoint)
    s.add_argument("--seed", type=_seed, default=0, help="seed of the prior samples (default 0)")
    _data_options(s)
    s.set_defaults(func=commands["sample"])

    from ..explain import QUESTIONS, TOPICS

    x = _sub(sub, "explain", "experiments that answer the classic VAE questions with numbers and pictures",
             "\n".join(f"{t}: {q}" for t, q in QUESTIONS.items()), formatter_class=argparse.RawDescriptionHelpFormatter)
    x.add_argument("topic", choices=TOPICS, help="which question")
    x.add_argument("--out", default=None, help="output directory (default runs/explain-TOPIC)")
    x.add_argument("--quick", action="store_true", help="a few seconds, smaller experiment")
    x.add_argument("--seed", type=_seed, default=0, help="seed of the experiment (default 0)")
    _data_options(x)  # binarized_mnist.npz for posterior, gaps and generation (else the embedded digits, with a note)
    x.add_argument("--json", action="store_true", help="print the numbers as JSON")
    x.add_argument("--threads", **threads)
    x.set_defaults(func=commands["explain"])

    w = _sub(sub, "sweep", "train and evaluate a grid of runs (a TOML SPEC) on a Dask cluster; --report: table and picture",
             "Train every run of SPEC's grid in chunks of epochs on a Dask cluster (embedded by default), evaluate them, and "
             "survive lost workers; the same command continues an interrupted sweep. SPEC's format: docs/sweep.md. "
             "Needs pip install -e '.[sweep]'.")
    w.add_argument("spec", metavar="SPEC", help="a sweep SPEC (TOML), e.g. bench/burda.toml")
    w.add_argument("--report", action="store_true", help="write the table (Markdown, CSV) and picture of the runs so far, and train nothing")
    w.add_argument("--check", action="store_true", help="check SPEC, its data and its run directories, list the runs and what is left, and stop")
    _cluster_options(w, "run the tasks on")
    w.add_argument("--quiet", action="store_true", help="no progress lines")
    _data_options(w)
    w.set_defaults(func=commands["sweep"])

    b = _sub(sub, "bench", "training and evaluation throughput, numpy vs numba (vs torch and JAX if importable)",
             "Run bench/bench_train.py (source checkout only); `npvae bench --help` shows its options.",
             add_help=False)  # every option, --help included, goes to bench/bench_train.py
    b.add_argument("bench_args", nargs=argparse.REMAINDER, help="options of bench/bench_train.py, e.g. --quick")
    b.set_defaults(func=commands["bench"])
    return p
