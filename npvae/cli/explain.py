"""`npvae explain TOPIC`: one of npvae.explain's experiments, its finding printed and its files written."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .data import search as _search
from .runs import limit_threads

# The topics whose full runs train on binarised MNIST (they fall back to the embedded digits, with a note, without it).
MNIST_TOPICS = ("posterior", "gaps", "generation")


def cmd_explain(args) -> int:
    from ..explain import run

    found = _search(args)
    if args.download and args.topic in MNIST_TOPICS and not args.quick:
        from ..store.data import load

        load("binarized-mnist", search_dirs=found["search_dirs"], cache_dir=found["cache_dir"], download=True, compact=True)  # a no-op when found
    out = Path(args.out or Path("runs") / f"explain-{args.topic}")
    with limit_threads(args.threads):  # the probe is timed under the run's thread limit
        announce = None if args.quick else estimate_line(args.topic, found["search_dirs"], args.threads)
        if announce:
            print(announce, file=sys.stderr, flush=True)
        result = run(args.topic, out, quick=args.quick, seed=args.seed, data_dir=found["search_dirs"])
    for note in result["notes"]:
        print(f"  note: {note}")
    if args.json:
        print(json.dumps(result["numbers"], indent=1))
    else:
        print(f"npvae explain {args.topic}: {result['question']}")
        for line in result.get("finding", []):
            print(f"  {line}")
    for f in result["files"]:
        print(f"  wrote {out / f}")
    return 0


def estimate_line(topic: str, data_dir, threads: int = 1) -> str | None:
    """Before a full run: what it will take here and what --quick would; None when it is short (npvae.explain.cost)."""
    from ..evaluation.cost import ANNOUNCE_ABOVE, fmt_seconds
    from ..explain import cost

    found = cost.mnist_found(data_dir)
    probe = cost.probe_seconds()
    seconds = cost.estimate(topic, data_found=found, probe=probe)
    if seconds <= ANNOUNCE_ABOVE:
        return None
    where = "on one core" if threads == 1 else f"with {threads} threads"
    smaller = "the embedded digits, smaller sizes" if topic in MNIST_TOPICS and found else "smaller sizes"
    return (f"npvae explain {topic}: about {fmt_seconds(seconds)} {where} here (--quick: about "
            f"{fmt_seconds(cost.estimate(topic, quick=True, probe=probe))}, {smaller})")
