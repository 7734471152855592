"""`npvae sample`: a run's pictures (samples, reconstructions, the latent plane) drawn again from a checkpoint."""

from __future__ import annotations

from pathlib import Path

from .data import search as _search
from .runs import open_run, pictures


def cmd_sample(args) -> int:
    from ..store.data import load

    run_dir = Path(args.run_dir)
    config, _, _, checkpoint = open_run(run_dir, args.checkpoint)
    dataset = load(config.dataset, dtype=config.dtype, seed=config.seed, binarize=config.binarize, compact=True,
                   **_search(args, run_dir))
    pictures(run_dir, config, dataset, checkpoint=checkpoint, seed=args.seed)
    return 0
