"""Two versions of npvae side by side in one run: bench_train.py's workloads and a CUDA-simulator step, rounds interleaved.

For "this change is no slower": check the old commit out beside the new one (git worktree add ../old REV), then

    python bench/ab_commits.py --old ../old --new . --data-dir DIR --rounds 5

Each round runs every version once, in alternating order (old first in odd rounds), each in its own
process with PYTHONPATH at its tree and its own numba cache (compiled before the clock by bench_train's
warm-up). Reported: per workload and backend, the median over rounds of each version's figure and the
ratio new/old of those medians, and the median (and range) of the ratios within each round, which cancel the
machine's slow drift (samples/s for training, higher is better; seconds for eval and the simulator step, lower is better). The simulator step is objective(..., backend="cuda") on a tiny problem
under NUMBA_ENABLE_CUDASIM=1 (its cost is the simulator's per-thread Python, i.e. the kernels' launch shapes).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

SIM_STEP = r"""
import time, numpy as np
from npvae import Arch, Likelihood, init_params, objective
rng = np.random.default_rng(0)
arch = Arch(6, (5,), 2, "tanh", Likelihood("gaussian-learned"))
params = init_params(arch, rng)
x, eps = rng.standard_normal((3, 6)), rng.standard_normal((2, 3, 2))
objective(params, arch, x, eps, bound="iwae", kl="mc", estimator="dreg", backend="cuda")
t = time.perf_counter()
for _ in range(3):
    objective(params, arch, x, eps, bound="iwae", kl="mc", estimator="dreg", backend="cuda")
print((time.perf_counter() - t) / 3)
"""


def run_version(tree: Path, args, tmp: Path, tag: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree), "NUMBA_CACHE_DIR": str(tmp / f"cache-{tag}")}
    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):  # benchmark with the library's own kernel choice (see RESULTS.md)
        env.pop(var, None)
    out = tmp / f"{tag}.json"
    cmd = [sys.executable, str(tree / "bench" / "bench_train.py"), *(["--data-dir", args.data_dir] if args.data_dir else []), "--workloads", args.workloads,
           "--backends", args.backends, "--steps", str(args.steps), "--repeats", "1", "--eval-n", str(args.eval_n),
           "--eval-k", str(args.eval_k), "--json", str(out)]
    subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    res = json.loads(out.read_text())["results"]
    fig = {}
    for w, per in res.items():
        for b, r in per.items():
            fig[f"{w} {b}"] = r["seconds"] if "seconds" in r else r["samples_per_s"]
    if args.sim:
        sim = subprocess.run([sys.executable, "-c", SIM_STEP], env={**env, "NUMBA_ENABLE_CUDASIM": "1"},
                             check=True, capture_output=True, text=True)
        fig["sim-step cuda"] = float(sim.stdout.split()[-1])
    return fig


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--old", required=True, type=Path)
    p.add_argument("--new", required=True, type=Path)
    p.add_argument("--data-dir", default=None, help="directory of binarized_mnist.npz (default: $NPVAE_DATA_DIR, then the user cache, as npvae looks)")
    p.add_argument("--workloads", default="A,B-k1,B-k5,eval")
    p.add_argument("--backends", default="numpy,numba")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--eval-n", type=int, default=100)
    p.add_argument("--eval-k", type=int, default=500)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--sim", action="store_true", help="also time a CUDA-simulator step")
    args = p.parse_args(argv)
    figs = {"old": [], "new": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for tag in (("old", "new") if r % 2 == 0 else ("new", "old")):
                figs[tag].append(run_version(getattr(args, tag).resolve(), args, Path(tmp), tag))
                print(f"round {r + 1} {tag}: {figs[tag][-1]}", flush=True)
    print(f"\n| figure | old (median of {args.rounds}) | new | new/old of the medians | new/old paired by round: median (range) |\n"
          "|---|---|---|---|---|")
    for key in figs["old"][0]:
        o = statistics.median(f[key] for f in figs["old"])
        n = statistics.median(f[key] for f in figs["new"])
        # Each round runs both versions back to back, so a ratio within a round cancels the machine's slow drift.
        paired = [fn[key] / fo[key] for fo, fn in zip(figs["old"], figs["new"])]
        unit = "s" if key.startswith(("eval", "sim")) else "samples/s"
        print(f"| {key} ({unit}) | {o:.4g} | {n:.4g} | {n / o:.3f} | {statistics.median(paired):.3f} "
              f"({min(paired):.2f}-{max(paired):.2f}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
