"""`--threads N`: 1 against N threads for training steps (arch A, arch B k = 50) and evaluation, side by side in one run.

What `--threads N` sets (npvae.backends.workers.set_threads): N BLAS threads for the products, which is what training
uses; and N workers for the numba backend's log p(x), each with one BLAS thread, computing chunks of importance
samples at once. numba's fused kernels in a training step stay on one thread. Each figure is the median of --repeats timings, the thread counts taken in turns (so that a change in the
machine's load falls on both); the same batches, noise and parameters at every thread count, and the results are
compared: a different number of BLAS threads may only change the rounding of the products' sums.

    python bench/threads.py --data-dir DIR            # 1 vs 2 threads, ~3 minutes
    python bench/threads.py --threads 1,2 --eval-n 200 --eval-k 5000
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import BATCH, machine, npvae_steps, problem  # noqa: E402

from npvae import log_px  # noqa: E402
from npvae.backends.workers import set_threads  # noqa: E402
from npvae.store.data import load, subset_indices, user_search_dirs  # noqa: E402


def train_runner(name, x_train, steps):
    """For each thread count, a fresh stepper from the same start; run(t) times `steps` steps with t BLAS threads and
    returns (seconds, final flat parameters)."""
    arch, params, batches, eps, options = problem(name, x_train, steps + 2)

    def run(t):
        go = npvae_steps("numba", arch, params, batches, eps, options)
        set_threads(t)
        go(0, 2)  # warm-up: compilation, the workspace, BLAS's buffers
        s = time.perf_counter()
        go(2, steps + 2)
        return time.perf_counter() - s, None

    return run


def eval_runner(x_test, n, k):
    """run(t): seconds of log p(x) of n seeded test points (model B, k samples, batches of 100) on t BLAS threads, and the values."""
    arch, params, _, _, _ = problem("B-k1", x_test, 0)
    x = np.ascontiguousarray(x_test[subset_indices(n, x_test.shape[0], np.random.default_rng(0))], dtype=np.float32)
    log_px(params, arch, x[:2], 2, np.random.default_rng(0), backend="numba")  # compile outside the clock

    def run(t):
        set_threads(t)
        log_px(params, arch, x[:2], 2 * k // 100 + 2, np.random.default_rng(0), backend="numba")  # start the workers
        s = time.perf_counter()
        lp = np.concatenate([log_px(params, arch, x[i:i + 100], k, np.random.default_rng((0, i)), backend="numba")
                             for i in range(0, n, 100)])
        return time.perf_counter() - s, lp

    return run


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None, help="directory of binarized_mnist.npz (default: $NPVAE_DATA_DIR, then the user cache, as npvae looks)")
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts; the first is the reference")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", type=int, default=100, help="timed steps of arch A (B k = 50: a fifth of it)")
    p.add_argument("--eval-n", type=int, default=200)
    p.add_argument("--eval-k", type=int, default=5000)
    p.add_argument("--json", default="runs/threads.json")
    args = p.parse_args(argv)
    counts = [int(t) for t in args.threads.split(",")]
    d = load("binarized-mnist", search_dirs=user_search_dirs(args.data_dir, os.environ), dtype=np.float32)
    jobs = {"A": train_runner("A", d.train, args.steps), "B-k50": train_runner("B-k50", d.train, max(2, args.steps // 5)),
            "eval": eval_runner(d.test, args.eval_n, args.eval_k)}
    results = {}
    for name, run in jobs.items():
        times = {t: [] for t in counts}
        values = {}
        for _ in range(args.repeats):
            for t in counts:
                s, v = run(t)
                times[t].append(s)
                values[t] = v
        ref = counts[0]
        r = {"seconds": {t: statistics.median(ts) for t, ts in times.items()}, "runs_s": times}
        if values[ref] is not None:  # the largest difference from the reference thread count, relative to |log p(x)|
            r["max_rel_diff"] = {t: float(np.max(np.abs(values[t] - values[ref]) / np.abs(values[ref]))) for t in counts}
        results[name] = r
        print(f"timed {name}", flush=True)
    steps = {"A": args.steps, "B-k50": max(2, args.steps // 5)}
    print(f"\nnumba backend, float32, batch {BATCH}; training: samples/s over {args.steps} (B-k50: {steps['B-k50']}) steps; "
          f"eval: log p(x) of {args.eval_n} test points, k = {args.eval_k}, model B; median of {args.repeats}, thread counts in turns")
    print("| workload | " + " | ".join(f"{t} thread(s)" for t in counts) + " | " + " | ".join(f"{t} / {counts[0]}" for t in counts[1:]) + " |")
    print("|---|" + "---|" * (2 * len(counts) - 1))
    for name, r in results.items():
        sec = r["seconds"]
        cells = ([f"{sec[t]:.1f} s" for t in counts] if name == "eval"
                 else [f"{BATCH * steps[name] / sec[t]:,.0f}/s" for t in counts])
        print(f"| {name} | " + " | ".join(cells) + " | " + " | ".join(f"{sec[counts[0]] / sec[t]:.2f}x" for t in counts[1:]) + " |")
    if "max_rel_diff" in results["eval"]:
        print(f"eval: largest relative difference of log p(x) from {counts[0]} thread(s): {results['eval']['max_rel_diff']}")
    print(f"load average at the end: {os.getloadavg()}")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine(), "args": vars(args), "results": results}, indent=1, default=str))
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
