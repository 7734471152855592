"""npvae.head.dirgrad.check_flat_gradient on correct VAE gradients over many seeds: how close it comes to FAILing.

    python bench/dirgrad_seeds.py --seeds 300          # one line; exits 1 if any block FAILed

Each seed builds a small Bernoulli VAE (6-5-5-3, N = 4, K = 2, nonzero biases) with tanh and with ReLU, flattens
it to theta (P,), and checks npvae.objective's hand-written gradient of loss = -mean(elbo) per parameter block
plus all of theta, 4 directions each. It prints the worst err/tol over every direction (below 1 passes; the error
model's safety factor of 100 puts correct code near 0.01), the FAIL count (must be 0) and the inconclusive count.
"""

from __future__ import annotations

import argparse
import collections
import platform
import sys
import time

import numpy as np

import npvae
from npvae import Arch, Likelihood
from npvae.head.dirgrad import check_flat_gradient


def problem(seed: int, activation: str):
    """(loss, grad, theta (P,), blocks) for one seed's VAE, its noise eps fixed."""
    rng = np.random.default_rng(seed)
    arch = Arch(6, (5, 5), 3, activation, Likelihood("bernoulli"))
    arrays = [a + 0.1 * rng.standard_normal(a.shape) if a.ndim == 1 else a for a in npvae.flatten(npvae.init_params(arch, rng))]
    x = (rng.random((4, 6)) < 0.5).astype(np.float64)  # (N, D)
    eps = rng.standard_normal((2, 4, 3))  # (K, N, Z)
    ends = np.cumsum([a.size for a in arrays])
    blocks = {n: slice(e - a.size, e) for n, a, e in zip(npvae.param_names(arch), arrays, ends)}

    def params(theta):
        return npvae.unflatten(arch, [theta[blocks[n]].reshape(a.shape) for n, a in zip(blocks, arrays)])

    def loss(theta):
        return -float(np.mean(npvae.bound_value(params(theta), arch, x, eps)))

    def grad(theta):
        return -np.concatenate([a.ravel() for a in npvae.flatten(npvae.objective(params(theta), arch, x, eps)[1])])

    return loss, grad, np.concatenate([a.ravel() for a in arrays]), blocks


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=300)
    p.add_argument("--start", type=int, default=0)
    args = p.parse_args(argv)
    counts, worst, at = collections.Counter(), 0.0, None
    t0 = time.perf_counter()
    for seed in range(args.start, args.start + args.seeds):
        for activation in ("tanh", "relu"):
            loss, grad, theta, blocks = problem(seed, activation)
            report = check_flat_gradient(loss, grad, theta, blocks=blocks, rng=np.random.default_rng(seed))
            for r in report.rows:
                counts[r.status] += 1
                if r.status != "inconclusive" and r.worst > worst:
                    worst, at = r.worst, f"seed {seed} {activation} {r.name}"
    print(f"seeds {args.start}..{args.start + args.seeds - 1} x (tanh, relu): {sum(counts.values())} blocks, "
          f"worst err/tol {worst:.3g} ({at}), {counts['FAIL']} FAIL, {counts['inconclusive']} inconclusive, "
          f"{time.perf_counter() - t0:.0f} s (Python {platform.python_version()}, NumPy {np.__version__})")
    return 1 if counts["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
