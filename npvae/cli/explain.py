"""`npvae explain TOPIC`: one of npvae.explain's experiments, its finding printed and its files written."""

from __future__ import annotations

import json
from pathlib import Path

from .data import search as _search
from .runs import limit_threads


def cmd_explain(args) -> int:
    from ..explain import run

    out = Path(args.out or Path("runs") / f"explain-{args.topic}")
    with limit_threads(args.threads):
        result = run(args.topic, out, quick=args.quick, seed=args.seed, data_dir=_search(args)["search_dirs"])
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
