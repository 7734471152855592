"""Reproduce Burda et al. 2016 (Appendix D, static binarisation): now the sweep bench/burda.toml.

    python bench/reproduce_iwae.py            # = npvae sweep bench/burda.toml (one worker per core; resumable)
    python bench/reproduce_iwae.py --report   # = npvae sweep bench/burda.toml --report

Any other option goes to `npvae sweep` (--workers N, --scheduler ADDRESS, --data-dir DIR). The runs this script made
before the sweep existed (bench/runs/iwae-k1, iwae-k5) are bench/runs/burda/layers-one_objective-vae_k-1 and
layers-one_objective-iwae_k-5; their evaluations (reproduce.json) are in each run's evals.json.
"""

from __future__ import annotations

import sys
from pathlib import Path

from npvae.cli import main

if __name__ == "__main__":
    sys.exit(main(["sweep", str(Path(__file__).resolve().parent / "burda.toml"), *sys.argv[1:]]))
