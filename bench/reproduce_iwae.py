"""Reproduce Burda et al. 2016 (Appendix D, static binarisation): 784-200-200-50 tanh on binarised MNIST, NLL with k = 5000.

Published test NLLs (one stochastic layer, static binarisation): k=1 (the VAE) 88.71, IWAE k=5 87.63, k=50 87.10.
Training follows the paper: Adam (beta1 0.9, beta2 0.999, eps 1e-4), batch 20, 3^i epochs at lr 1e-3 * 10^(-i/7)
for i = 0..7 (3280 epochs in all). The decoder's output bias starts at the logit of the mean training pixel
(clipped to [0.001, 0.999]), as in Burda et al.'s code. The run is resumable: run the same command again and it
continues from the last finished epoch; evaluations already made are kept in RUN_DIR/reproduce.json.

    python bench/reproduce_iwae.py --k 1 --data-dir ../shared/data            # run directory bench/runs/iwae-k1

--backend (default auto: numba where it imports) changes where the kernels run, not the run.

At every stage boundary (epoch 1, 4, 13, 40, 121, 364, 1093, 3280) the test NLL is estimated with k = 5000 on the
whole test split (Burda et al. score all 10,000 test points; the split is ordered by class, so no prefix of it is a
sample of it), with -ELBO, KL and the active units counted on the training points. --eval-n takes a seeded random
subset instead, and the results say so.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from npvae.backends import resolve
from npvae.config import TrainConfig
from npvae.data import load, subset_indices
from npvae.evaluate import evaluate
from npvae.model import unflatten
from npvae.run_dir import checkpoint_path
from npvae.train import load_state, train

STAGE_ENDS = [sum(3**j for j in range(i + 1)) for i in range(8)]  # 1, 4, 13, 40, 121, 364, 1093, 3280
PUBLISHED = {1: 88.71, 5: 87.63, 50: 87.10}  # Burda et al. 2016, App. D (static binarisation), one stochastic layer


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--k", type=int, choices=(1, 5, 50), default=1)
    p.add_argument("--out", default=None, help="run directory (default bench/runs/iwae-k<K>)")
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--hours", type=float, default=None, help="stop after this much wall time (default: at the end of the schedule)")
    p.add_argument("--eval-n", type=int, default=None, help="evaluate a seeded random subset of this many test points (default: all)")
    p.add_argument("--eval-k", type=int, default=5000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--backend", default="auto", help="numpy, numba, cuda or auto (default: the fastest here); the run is the same")
    args = p.parse_args(argv)
    threadpool_limits(args.threads)

    run_dir = Path(args.out or Path(__file__).resolve().parent / "runs" / f"iwae-k{args.k}")
    run_dir.mkdir(parents=True, exist_ok=True)
    results_path = run_dir / "reproduce.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else []
    config = TrainConfig(
        dataset="binarized-mnist", arch="784-200-200-50", activation="tanh", likelihood="bernoulli",
        bound="iwae" if args.k > 1 else "elbo", k=args.k, kl="mc" if args.k > 1 else "analytic",
        batch_size=20, epochs=1, lr=1e-3, lr_schedule="burda", adam_eps=1e-4, dtype="float32", seed=0,
        output_bias="data", backend=args.backend,
    )
    data = load("binarized-mnist", search_dirs=[args.data_dir], dtype=np.float32)
    x_test, points = data.test, f"all {data.test.shape[0]}"
    if args.eval_n is not None:  # the test split has no labels in this file: a plain seeded subset
        x_test = data.test[subset_indices(args.eval_n, data.test.shape[0], np.random.default_rng(1))]
        points = f"{args.eval_n} of {data.test.shape[0]}, a seeded random subset"
    deadline = time.time() + 3600 * args.hours if args.hours is not None else float("inf")
    last = checkpoint_path(run_dir, "last")  # last.safetensors (or npvae 0.1's last.npz, converted on resuming)
    done = load_state(last)[2].epoch if last.exists() else 0
    print(f"reproduce_iwae: k={args.k}, run {run_dir}, {done} epochs done; published NLL {PUBLISHED[args.k]}", flush=True)

    for end in STAGE_ENDS:
        while done < end and time.time() < deadline:
            target = done + 1
            train(TrainConfig(**{**config.to_dict(), "epochs": target}), data, run_dir, resume=done > 0, progress=False)
            done = target
        if done == end and done not in {r["epoch"] for r in results}:
            _, arch, state = load_state(checkpoint_path(run_dir, "last"))
            t0 = time.time()
            m = evaluate(unflatten(arch, state.params), arch, x_test, np.random.default_rng(0), k=args.eval_k,
                         backend=resolve(args.backend), x_active=data.train)
            row = {"epoch": done, "test_points": points, "n_test": int(x_test.shape[0]), "eval_k": args.eval_k,
                   "nll": m["nll"], "nll_se": m["nll_se"], "elbo": m["elbo"], "elbo_se": m["elbo_se"], "kl": m["kl"],
                   "active_units": m["active_units"], "active_units_points": f"all {data.train.shape[0]} training points",
                   "eval_seconds": time.time() - t0, "train_seconds": float(sum(state.history["seconds"])),
                   "published_nll": PUBLISHED[args.k]}
            results.append(row)
            results_path.write_text(json.dumps(results, indent=1))
            print(f"reproduce_iwae: epoch {done}: test NLL {m['nll']:.2f} +- {m['nll_se']:.2f} (k={args.eval_k}, {points} "
                  f"points), -ELBO {-m['elbo']:.2f}, active units {m['active_units']}; published {PUBLISHED[args.k]}", flush=True)
        if time.time() >= deadline:
            print("reproduce_iwae: time budget spent; run the same command again to continue", flush=True)
            return 0
    print(f"reproduce_iwae: the schedule is finished ({done} epochs)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
