"""Where a numba training step's time goes: every kernel and every BLAS product timed inside real steps.

Wraps each numba kernel (npvae.backends.kernels, binary_input) and np.matmul as numba_cpu calls them,
runs bench_train.py's steps for one workload, and prints milliseconds per step for each; "Python" is
what is left (validation, unflatten, allocation). The wrappers add ~1 us per call, inside "Python".

    python bench/profile_step.py A          # or B-k1, B-k5, B-k50
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import WORKLOADS, npvae_steps, problem  # noqa: E402

import npvae.backends.binary_input as binary_input  # noqa: E402
import npvae.backends.kernels as kern  # noqa: E402
import npvae.backends.numba_cpu as numba_cpu  # noqa: E402
from npvae.store.data import load, user_search_dirs  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("workload", choices=list(WORKLOADS), nargs="?", default="A")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--data-dir", default=None, help="directory of binarized_mnist.npz (default: $NPVAE_DATA_DIR, then the user cache, as npvae looks)")
    args = p.parse_args(argv)
    threadpool_limits(1)
    d = load("binarized-mnist", search_dirs=user_search_dirs(args.data_dir, os.environ), dtype=np.float32)
    arch, params, batches, eps, options = problem(args.workload, d.train, args.steps + 5)
    run = npvae_steps("numba", arch, params, batches, eps, options)
    run(0, 5)  # compile and warm up, untimed

    spent: dict[str, float] = {}

    def timed(name, f):
        def wrapper(*a, **k):
            t = time.perf_counter()
            r = f(*a, **k)
            spent[name] = spent.get(name, 0.0) + time.perf_counter() - t
            return r
        return wrapper

    for mod, names in ((kern, ("bias_activation", "activation_backward", "sample", "latent_backward", "kl_free_bits", "adam", "gather_rows")),
                       (numba_cpu, ("head",)),  # the likelihood's compiled head (kernels.head_kernels), through its caller
                       (binary_input, ("support", "matmul", "matmul_t"))):
        for name in names:
            setattr(mod, name, timed(f"{mod.__name__.rsplit('.', 1)[1]}.{name}", getattr(mod, name)))
    numba_cpu.np = type(sys)("np_with_timed_matmul")  # numba_cpu's `np`, with only matmul timed
    numba_cpu.np.__dict__.update(np.__dict__)
    numba_cpu.np.matmul = timed("BLAS np.matmul", np.matmul)

    t = time.perf_counter()
    run(5, 5 + args.steps)
    total = time.perf_counter() - t
    n = args.steps
    print(f"{args.workload}: {1e3 * total / n:.3f} ms per step ({128 * n / total:,.0f} samples/s), one thread")
    for name, s in sorted(spent.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<32} {1e3 * s / n:7.3f} ms")
    print(f"  {'Python (the rest)':<32} {1e3 * (total - sum(spent.values())) / n:7.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
