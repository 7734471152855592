"""Reproduce Burda et al. 2016 (Appendix D, static binarisation): 784-200-200-50 tanh on binarised MNIST, NLL with k = 5000.

Published test NLLs (one stochastic layer, static binarisation): k=1 (the VAE) 88.71, IWAE k=5 87.63, k=50 87.10.
Training follows the paper: Adam (beta1 0.9, beta2 0.999, eps 1e-4), batch 20, 3^i epochs at lr 1e-3 * 10^(-i/7)
for i = 0..7 (3280 epochs in all). The run is resumable: run the same command again and it continues from
the last finished epoch; evaluations already made are kept in RUN_DIR/reproduce.json.

    python bench/reproduce_iwae.py --k 1 --out runs/iwae-k1 --data-dir ../shared/data --hours 2

--backend (default auto: numba where it imports) changes where the kernels run, not the run.

At every stage boundary (epoch 1, 4, 13, 40, 121, ...) and at the end of the time budget, the test NLL is
estimated with k = 5000 on the first --eval-n test points (all 10000 at the final stage boundary).
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
from npvae.data import load
from npvae.evaluate import evaluate
from npvae.model import unflatten
from npvae.train import load_state, train

STAGE_ENDS = [sum(3**j for j in range(i + 1)) for i in range(8)]  # 1, 4, 13, 40, 121, 364, 1093, 3280
PUBLISHED = {1: 88.71, 5: 87.63, 50: 87.10}  # Burda et al. 2016, App. D (static binarisation), one stochastic layer


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--k", type=int, choices=(1, 5, 50), default=1)
    p.add_argument("--out", required=True)
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--hours", type=float, default=2.0, help="stop training after this much wall time (then evaluate)")
    p.add_argument("--eval-n", type=int, default=1000, help="test points for intermediate evaluations")
    p.add_argument("--eval-k", type=int, default=5000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--backend", default="auto", help="numpy, numba, cuda or auto (default: the fastest here); the run is the same")
    args = p.parse_args(argv)
    threadpool_limits(args.threads)

    run_dir = Path(args.out)
    run_dir.mkdir(parents=True, exist_ok=True)
    results_path = run_dir / "reproduce.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else []
    config = TrainConfig(
        dataset="binarized-mnist", arch="784-200-200-50", activation="tanh", likelihood="bernoulli",
        bound="iwae" if args.k > 1 else "elbo", k=args.k, kl="mc" if args.k > 1 else "analytic",
        batch_size=20, epochs=1, lr=1e-3, lr_schedule="burda", adam_eps=1e-4, dtype="float32", seed=0, backend=args.backend,
    )
    data = load("binarized-mnist", search_dirs=[args.data_dir], dtype=np.float32)
    deadline = time.time() + 3600 * args.hours
    done = load_state(run_dir / "last.npz")[2].epoch if (run_dir / "last.npz").exists() else 0
    print(f"reproduce_iwae: k={args.k}, run {run_dir}, {done} epochs done; published NLL {PUBLISHED[args.k]}", flush=True)

    for end in STAGE_ENDS:
        if done >= end:
            continue
        while done < end and time.time() < deadline:
            target = min(end, done + 1)
            train(TrainConfig(**{**config.to_dict(), "epochs": target}), data, run_dir, resume=done > 0, progress=False)
            done = target
        evaluated = {r["epoch"] for r in results}
        if done not in evaluated:
            n = data.test.shape[0] if done == STAGE_ENDS[-1] else args.eval_n
            _, arch, state = load_state(run_dir / "last.npz")
            t0 = time.time()
            m = evaluate(unflatten(arch, state.params), arch, data.test[:n], np.random.default_rng(0), k=args.eval_k,
                         backend=resolve(args.backend))
            row = {"epoch": done, "n_test": n, "eval_k": args.eval_k, "nll": m["nll"], "nll_se": m["nll_se"],
                   "elbo": m["elbo"], "kl": m["kl"], "active_units": m["active_units"], "eval_seconds": time.time() - t0,
                   "train_seconds": float(sum(state.history["seconds"])), "published_nll": PUBLISHED[args.k]}
            results.append(row)
            results_path.write_text(json.dumps(results, indent=1))
            print(f"reproduce_iwae: epoch {done}: test NLL {m['nll']:.2f} +- {m['nll_se']:.2f} (k={args.eval_k}, "
                  f"{n} points), -ELBO {-m['elbo']:.2f}, active units {m['active_units']}; published {PUBLISHED[args.k]}", flush=True)
        if time.time() >= deadline:
            print("reproduce_iwae: time budget spent; run the same command again to continue", flush=True)
            break
    return 0


if __name__ == "__main__":
    sys.exit(main())
