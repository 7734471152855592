"""What a full `npvae explain` run will take here, estimated before it starts: a reference time scaled by a timed probe.

Each topic's full run is a fixed workload, so its time here is about its time on the reference machine (REFERENCE)
times how much slower this machine does the same kind of work: `probe_seconds()` / PROBE_REFERENCE, a fraction of a
second of Adam steps on the ELBO of two tanh VAEs with npvae's own numpy code, one with MNIST's 784-200-20 matrices
(what posterior, gaps and generation spend their time on) and one with the digits' 64-64-4 (small arrays, where numpy's
per-call cost counts, as in iwae, reparam and joint). The probe draws from its own Generator: a run's numbers do not
depend on whether it was estimated. Nothing is printed here (the CLI prints the estimate).
"""

from __future__ import annotations

import time

import numpy as np


# Seconds of each topic's run ("seconds" of TOPIC.json), each measured once on the reference machine: a 2-core AMD EPYC
# VM (Zen 3, family 25 model 1), Python 3.11, numpy 2.4 with OpenBLAS 0.3.31 (Haswell kernel): under `taskset -c 0`,
# run(TOPIC, DIR, data_dir=[D]) with one BLAS thread, as `npvae explain TOPIC --data-dir D` calls it, while the other core
# trained and nothing else ran on core 0 (its busy time during the run was the run's own), D holding binarized_mnist.npz (with MNIST) or not (without: gaps and generation train on the embedded digits, posterior
# skips its nonlinear part), and with --quick (the digits). topic -> (full with MNIST found, full without, quick).
REFERENCE = {
    "posterior": (51.9, 5.2, 5.4),
    "iwae": (32.1, 32.1, 3.9),
    "reparam": (26.5, 26.5, 4.0),
    "joint": (1.35, 1.35, 1.04),
    "gaps": (66.1, 17.4, 4.3),
    "generation": (54.8, 7.6, 4.1),
}
# probe_seconds() on the same machine the same way (taskset -c 0, one BLAS thread): the median of 15 fresh processes.
PROBE_REFERENCE = 0.045

PROBE = (("784-200-20", 2), ("64-64-4", 16))  # (arch, Adam steps on a batch of 100) of each part of the probe
PROBE_REPEATS = 5
MNIST = "binarized-mnist"


def estimate(topic: str, *, quick: bool = False, data_found: bool = True, probe: float | None = None) -> float:
    """Seconds `npvae.explain.run(topic, quick=quick)` will take here: REFERENCE scaled by probe / PROBE_REFERENCE.

    data_found: whether binarised MNIST will be found (`mnist_found`); it matters to posterior, gaps and generation.
    probe: probe_seconds() measured here (timed now when None), under the thread limit the run will have.
    """
    if topic not in REFERENCE:
        raise ValueError(f"unknown topic {topic!r}; choose one of {', '.join(REFERENCE)}")
    with_mnist, without, short = REFERENCE[topic]
    seconds = short if quick else with_mnist if data_found else without
    return seconds * (probe_seconds() if probe is None else probe) / PROBE_REFERENCE


def mnist_found(data_dir) -> bool:
    """Whether the full runs will find binarised MNIST in data_dir (None, a path or a list), looking as they do, reading nothing.

    The experiments call store.data.load(MNIST, search_dirs=data_dir); store.data.find is its search without the
    loading, so the run loads the data once.
    """
    from ..store.data import find

    return find(MNIST, search_dirs=data_dir) is not None


def probe_seconds() -> float:
    """The median over PROBE_REPEATS of the time of PROBE's Adam steps (tanh VAEs, analytic-KL ELBO, fixed random binary x)."""
    from ..nn.optim import adam_init, adam_update
    from ..objectives import objective
    from ..vae.model import Arch, flatten, init_params, unflatten

    rng = np.random.default_rng(0)  # the probe's own draws, never a run's
    parts = []
    for spec, steps in PROBE:
        arch = Arch.parse(spec, activation="tanh")
        x = (rng.random((100, arch.data_dim)) < 0.3).astype(np.float64)  # (N, D)
        eps = rng.standard_normal((1, 100, arch.latent_dim))  # (K, N, Z)
        flat = flatten(init_params(arch, rng))
        parts.append([arch, x, eps, steps, flat, adam_init(flat)])
    times = []
    for _ in range(PROBE_REPEATS):
        t0 = time.perf_counter()
        for part in parts:
            arch, x, eps, steps, flat, state = part
            for _ in range(steps):
                _, grads = objective(unflatten(arch, flat), arch, x, eps)
                flat, state = adam_update(flat, [-g for g in flatten(grads)], state)
            part[4:] = flat, state
        times.append(time.perf_counter() - t0)
    return float(np.median(times))

