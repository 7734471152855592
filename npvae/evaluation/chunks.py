"""Evaluation in chunks of points, each with its own Generator: the same numbers on one process or any number of workers.

The points are cut into chunks of CHUNK_POINTS, in order. Chunk c draws its importance samples and its reconstruction
samples (npvae.evaluation.evaluate.point_terms_core) from

    np.random.default_rng(np.random.SeedSequence((run_seed, eval_seed), spawn_key=(0, c)))

so what a chunk computes does not depend on which worker computes it, or when. The per-point terms are put back in
point order and summarised once (npvae.evaluation.evaluate.summarise_core: the means and standard errors, the analytic KL and
the active units, which are deterministic, and the mutual information, whose samples come from spawn_key (1,)).
`npvae eval` uses this scheme with or without a cluster (npvae.evaluation.cluster runs the chunks on Dask workers).
Identical means bit for bit on machines that run the same kernels; BLAS on other CPU types may round differently.
"""

from __future__ import annotations

import numpy as np

from ..store.data import Dataset, binarize_dynamic, subset_indices
from .evaluate import ELBO_K, point_terms_core, summarise_core
from ..vae.inputs import check_x_storage
from ..vae.models import check_params

CHUNK_POINTS = 500  # part of the definition of the numbers: another size draws other noise
SCHEME = f"chunks of {CHUNK_POINTS} points, chunk c from SeedSequence((run seed, eval seed), spawn_key=(0, c))"


def chunk_slices(n: int, size: int = CHUNK_POINTS) -> list[slice]:
    """The chunks of n points, in order."""
    return [slice(i, min(n, i + size)) for i in range(0, n, size)]


def chunk_rng(run_seed: int, eval_seed: int, index: int) -> np.random.Generator:
    """Chunk index's Generator (module docstring)."""
    return np.random.default_rng(np.random.SeedSequence((run_seed, eval_seed), spawn_key=(0, index)))


def summary_rng(run_seed: int, eval_seed: int) -> np.random.Generator:
    """The mutual information's Generator, independent of every chunk's."""
    return np.random.default_rng(np.random.SeedSequence((run_seed, eval_seed), spawn_key=(1,)))


def chunk_terms(params, arch, x, lo: int, hi: int, k: int, seeds: tuple[int, int], index: int, backend: str = "numpy",
                progress=None) -> dict:
    """Per-point terms of x[lo:hi], chunk `index` (a task a worker runs: arguments checked by evaluate_chunked)."""
    return point_terms_core(params, arch, x[lo:hi], chunk_rng(*seeds, index), k, ELBO_K, progress=progress, backend=backend)


def local_runner(progress=None):
    """Run the chunks one after another in this process (progress: called with (sample, point) pairs done)."""

    def run(params, arch, x, jobs: list[dict]) -> list[dict]:
        return [chunk_terms(params, arch, x, progress=progress, **job) for job in jobs]

    return run


def evaluate_chunked(params, arch, x, *, k: int, run_seed: int, eval_seed: int = 0, x_active=None, backend: str = "numpy",
                     runner=None) -> dict:
    """npvae.evaluation.evaluate.evaluate's metrics on x: (N, D), with the chunked noise of the module docstring.

    runner(params, arch, x, jobs) -> the chunk_terms of each job, in order (default: local_runner(); npvae.evaluation.cluster's
    runs them on a Dask cluster). x, x_active: float of the parameters' dtype, or compact binary splits (uint8).
    """
    dtype = check_params(arch, params)
    check_x_storage(arch, x, dtype)
    if x_active is not None:
        check_x_storage(arch, x_active, dtype)
    for name, v, lo in (("k", k, 1), ("run_seed", run_seed, 0), ("eval_seed", eval_seed, 0)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
    seeds = (int(run_seed), int(eval_seed))
    jobs = chunk_jobs(x.shape[0], k, seeds, backend)
    return finish(params, arch, x, (runner or local_runner())(params, arch, x, jobs), k, seeds, x_active)


def chunk_jobs(n: int, k: int, seeds: tuple[int, int], backend: str) -> list[dict]:
    """chunk_terms's keyword arguments for each chunk of n points, in order."""
    return [{"lo": s.start, "hi": s.stop, "k": k, "seeds": seeds, "index": i, "backend": backend}
            for i, s in enumerate(chunk_slices(n))]


def finish(params, arch, x, parts: list[dict], k: int, seeds: tuple[int, int], x_active=None) -> dict:
    """The metrics from every chunk's terms, in chunk order (npvae.evaluation.evaluate.summarise_core), and how they were drawn."""
    terms = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
    metrics = summarise_core(params, arch, x, terms, summary_rng(*seeds), k, x_active)
    return {**metrics, "noise": SCHEME, "run_seed": seeds[0], "eval_seed": seeds[1]}


def eval_inputs(dataset: Dataset, split: str, seed: int, n: int | None = None):
    """(x, x_active, points): the evaluated points (all of the split, or a seeded random subset of n, stratified by
    class where the split has labels), the active-unit points (the training split), and words that say which.

    Separate streams from `seed`: the subset and the binarisation (of grey-level data binarised dynamically) do not
    depend on each other; the importance samples come from chunk_rng.
    """
    x = dataset.split(split)
    N = x.shape[0]
    subset_rng, binarize_rng, _ = (np.random.default_rng(c) for c in np.random.SeedSequence(seed).spawn(3))
    points = f"all {N}"
    if n is not None:
        labels = getattr(dataset, f"{split}_labels")
        x = x[subset_indices(n, N, subset_rng, labels)]
        points = f"{n} of {N}, a seeded random subset{' stratified by class' if labels is not None else ''} (--seed {seed})"
    x_active = dataset.train
    if dataset.dynamic_binarize:  # one stochastic binarisation of the evaluated points, from the seed
        x, x_active = binarize_dynamic(x, binarize_rng), binarize_dynamic(x_active, binarize_rng)
    return x, x_active, points
