"""`npvae bench`: bench/bench_train.py from a source checkout (the benchmark is a program, not part of the package)."""

from __future__ import annotations

import sys
from pathlib import Path


def cmd_bench(args) -> int:
    """bench_train.main on the rest of the command line."""
    import runpy

    script = Path(__file__).resolve().parents[2] / "bench" / "bench_train.py"
    if not script.exists():
        raise FileNotFoundError(f"the benchmark lives in the source checkout ({script} not found)")
    rest = args.bench_args[1:] if args.bench_args[:1] == ["--"] else args.bench_args
    sys.path.insert(0, str(script.parent))  # as `python bench/bench_train.py` would: its sibling modules (jax_model) import
    bench = runpy.run_path(str(script), run_name="npvae_bench")
    return bench["main"](rest, prog="npvae bench")
