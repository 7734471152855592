"""The head check on the public VAEs of tests/head_models, as their authors wrote them, over many seeds: false alarms.

    python bench/head_seeds.py --seeds 200          # a Markdown table; exits 1 on any false alarm
    python bench/head_seeds.py --edges              # also saturated outputs, where frameworks clip (npvae bugs show here)

Each correct model (and dtype) is checked at `--seeds` heads, with new weights, data and noise each. A row of the
table is one model: the worst relative error / tolerance over every compared quantity and seed (below 1 passes),
the quantity where it was worst, and FAIL, the number of seeds whose check failed, which must be 0. The noise row has
no error ratio; it counts in FAIL only.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from head_models import antixk_vanilla, hips_autograd, keras_vae, pyro_vae, pytorch_examples, tucker_dreg  # noqa: E402
from npvae.head import check_head  # noqa: E402


def _antixk(phase):
    def run(seed, dtype):
        h = antixk_vanilla.head(seed, phase, dtype=dtype)
        opts = antixk_vanilla.options(antixk_vanilla.KLD_WEIGHT[phase], h.x.shape[1])
        return h._replace(loss=h.loss + dtype(antixk_vanilla.CONSTANT)), opts
    return run


def _tucker(estimator, grads_of="inference"):
    def run(seed, dtype):
        h = tucker_dreg.head(seed, estimator, dtype=dtype, K=1 if estimator == "stl" else 5, grads_of=grads_of)
        return h, tucker_dreg.options("iwae" if grads_of == "model" else estimator)
    return run


# name -> run(seed, dtype) -> (head, options of assert_head_matches)
MODELS = {
    "pytorch/examples vae": lambda s, d: (pytorch_examples.head(s, dtype=d), pytorch_examples.OPTIONS),
    "HIPS autograd vae": lambda s, d: (hips_autograd.head(s, dtype=d), hips_autograd.OPTIONS),
    "Pyro vae (log_std head)": lambda s, d: (pyro_vae.head(s, dtype=d), pyro_vae.OPTIONS),
    "Pyro vae (std head)": lambda s, d: (pyro_vae.head(s, dtype=d, std_head=True), {**pyro_vae.OPTIONS, "scale_kind": "std"}),
    "Keras vae": lambda s, d: (keras_vae.head(s, dtype=d)._replace(eps=None), keras_vae.OPTIONS),  # Sampling keeps its eps
    "AntixK VanillaVAE (train)": _antixk("train"),
    "AntixK VanillaVAE (val)": _antixk("val"),
    "Tucker IWAE": _tucker("iwae"),
    "Tucker DReG (inference)": _tucker("dreg"),
    "Tucker DReG (model)": _tucker("dreg", "model"),
    "Tucker STL (K = 1)": _tucker("stl"),
}


# Saturated decoders, as correct as the above: where the frameworks' clipping conventions are what the loss holds.
EDGES = {
    "pytorch/examples saturated, clip='torch'": lambda s, d: (pytorch_examples.head(s, dtype=d, saturate=True),
                                                             {**pytorch_examples.OPTIONS, "clip": "torch"}),
    "pytorch/examples saturated, clip undeclared": lambda s, d: (pytorch_examples.head(s, dtype=d, saturate=True),
                                                                pytorch_examples.OPTIONS),
    "Keras saturated, clip=1e-7": lambda s, d: (keras_vae.head(s, dtype=d, saturate=17.0)._replace(eps=None), keras_vae.OPTIONS),
    "Keras saturated, clip undeclared": lambda s, d: (keras_vae.head(s, dtype=d, saturate=17.0)._replace(eps=None),
                                                      {"out_kind": "probs"}),
}


def run_model(run, seeds, dtype):
    """(worst error / tol, where, failed checks, first failing seed or None) over the seeds."""
    worst, where, fails, first = 0.0, "", 0, None
    for seed in seeds:
        h, opts = run(seed, dtype)
        r = check_head(h.x, h.mu, h.scale, h.out, h.loss, eps=h.eps, z=h.z, grads=h.grads, **opts)
        if not r.passed:
            fails += 1
            first = seed if first is None else first
        for row in r.rows:
            if row["passed"] and not np.isnan(row["rel_error"]) and row["rel_error"] / row["tol"] > worst:
                worst, where = row["rel_error"] / row["tol"], row["quantity"]
    return worst, where, fails, first


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=200)
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--edges", action="store_true", help="add the saturated models of EDGES")
    args = p.parse_args(argv)
    seeds = range(args.start, args.start + args.seeds)
    print(f"head check over seeds {seeds.start}..{seeds.stop - 1}: Python {platform.python_version()}, NumPy {np.__version__}, "
          f"{platform.machine()} {platform.system()}\n")
    print("| model | dtype | worst error / tol | at | FAIL | first failing seed | s |")
    print("|---|---|---|---|---|---|---|")
    total = 0
    for name, run in {**MODELS, **(EDGES if args.edges else {})}.items():
        for dtype in (np.float64, np.float32):
            t0 = time.perf_counter()
            with np.errstate(all="ignore"):  # log(0) of an unclipped saturated output is npvae's to handle
                worst, where, fails, first = run_model(run, seeds, dtype)
            total += fails
            print(f"| {name} | {np.dtype(dtype).name} | {worst:.2e} | {where} | {fails} | {'' if first is None else first} | "
                  f"{time.perf_counter() - t0:.1f} |")
    print(f"\n{total} false alarm(s)")
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
