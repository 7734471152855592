"""What a Burda et al. reproduction run costs on this machine: training steps of k = 1, 5, 50 timed side by side.

    python bench/cost_iwae.py --data-dir DIR            # prints ms a step per k and the projected hours

The trainer's own stepper (the backend's `stepper`, as npvae.training.loop builds it: the objective and Adam, batch 20,
float32, one BLAS thread) runs `--steps` steps for each k in turn, `--repeats` times, interleaved so that a shared machine's
load falls on every k alike; the median is projected to 3280 epochs of 2500 steps. Evaluation (k = 5000 on the
10,000 test points, eight times in a run) is timed once on `--eval-n` points of a seeded subset and scaled.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np
from threadpoolctl import threadpool_limits

from npvae.backends import get as get_backend
from npvae.backends import resolve
from npvae.training.config import TrainConfig
from npvae.store.data import load, subset_indices, user_search_dirs
from npvae.evaluation.evaluate import evaluate
from npvae.vae.models import unflatten
from npvae.training.loop import new_state

EPOCHS, STEPS_PER_EPOCH, EVALUATIONS = 3280, 2500, 8


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None, help="directory of binarized_mnist.npz (default: $NPVAE_DATA_DIR, then the user cache, as npvae looks)")
    p.add_argument("--ks", default="1,5,50")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--eval-n", type=int, default=200)
    p.add_argument("--backend", default="auto")
    args = p.parse_args(argv)
    threadpool_limits(1)
    backend = resolve(args.backend)
    data = load("binarized-mnist", search_dirs=user_search_dirs(args.data_dir, os.environ), dtype=np.float32)
    steppers = {}
    for k in (int(s) for s in args.ks.split(",")):
        cfg = TrainConfig(dataset="binarized-mnist", arch="784-200-200-50", bound="iwae" if k > 1 else "elbo", k=k,
                          kl="mc" if k > 1 else "analytic", batch_size=20, dtype="float32", adam_eps=1e-4, backend=backend)
        arch = cfg.make_arch(784)
        state = new_state(cfg, arch, data.train)
        b = get_backend(backend)
        s = b.stepper(b, arch, state.params, state.adam, batch_size=cfg.batch_size, bound=cfg.bound, kl=cfg.kl,
                      estimator=cfg.estimator, free_bits=cfg.free_bits, betas=(cfg.beta1, cfg.beta2), adam_eps=cfg.adam_eps)
        s.start_epoch(data.train, np.random.default_rng(0).permutation(data.train.shape[0]))
        steppers[k] = (s, arch, state.rngs["eps"])
    times = {k: [] for k in steppers}

    def steps(k, i0, n):
        s, arch, rng = steppers[k]
        for i in range(i0, i0 + n):
            s.step(20 * i, 20 * (i + 1), rng.standard_normal((k, 20, arch.noise_dim), dtype=np.float32), 1.0, 1e-3)

    for k in steppers:  # warm-up: compilation
        steps(k, 0, 3)
    for r in range(args.repeats):
        for k in steppers:
            t = time.perf_counter()
            steps(k, 3 + r * args.steps, args.steps)
            times[k].append((time.perf_counter() - t) / args.steps)
    s, arch, _ = steppers[min(steppers)]
    params = unflatten(arch, s.state()[0])
    x = data.test[subset_indices(args.eval_n, data.test.shape[0], np.random.default_rng(0))]
    evaluate(params, arch, x[:2], np.random.default_rng(0), k=10, backend=backend)  # warm-up
    t = time.perf_counter()
    evaluate(params, arch, x, np.random.default_rng(0), k=5000, backend=backend, x_active=data.train)
    eval_h = (time.perf_counter() - t) * data.test.shape[0] / args.eval_n * EVALUATIONS / 3600
    print(f"backend {backend}; {args.repeats} x {args.steps} steps per k, median; evaluations: {EVALUATIONS} x {eval_h / EVALUATIONS * 60:.1f} min")
    print("| k | ms a step | s an epoch | training h (3280 epochs) | with evaluations, h |")
    print("|---:|---:|---:|---:|---:|")
    for k, ts in times.items():
        ms = 1e3 * statistics.median(ts)
        h = ms * STEPS_PER_EPOCH * EPOCHS / 3.6e6
        print(f"| {k} | {ms:.2f} | {ms * STEPS_PER_EPOCH / 1e3:.1f} | {h:.1f} | {h + eval_h:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
