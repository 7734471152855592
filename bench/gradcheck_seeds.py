"""`npvae check` over many seeds: how close each row comes to its tolerance on correct code.

    python bench/gradcheck_seeds.py --seeds 500            # a Markdown table; exits 1 if any row failed

For every row group (gradient rows by likelihood/activation, bound rows by what they check) it reports the
worst error / tolerance ratio over all seeds (below 1 passes; for the Monte Carlo order rows the ratio is
(5 s.e.) / gap), and the counts of ok, FAIL and inconclusive rows.
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
import time

from npvae.checks.check import run_all


def group(row: dict) -> str:
    if row["check"] == "gradient":
        return "gradient " + row["case"].split(" ")[0]
    return f"{row['check']} " + re.sub(r"^model \d+: ", "", row["case"])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=500)
    p.add_argument("--start", type=int, default=0)
    args = p.parse_args(argv)
    worst = collections.defaultdict(lambda: (0.0, None))
    counts = collections.defaultdict(collections.Counter)
    t0 = time.perf_counter()
    for seed in range(args.start, args.start + args.seeds):
        for r in run_all(seed=seed):
            g = group(r)
            counts[g][r["status"]] += 1
            if r["status"] == "inconclusive":
                continue
            ratio = r["error"] / r["tol"] if r["tol"] > 0 else (0.0 if r["error"] == 0 else float("inf"))
            if ratio >= worst[g][0]:
                worst[g] = (ratio, seed)
    total = collections.Counter()
    print(f"seeds {args.start}..{args.start + args.seeds - 1}, {time.perf_counter() - t0:.0f} s\n")
    print("| row group | rows | worst error / tol | at seed | FAIL | inconclusive |")
    print("|---|---:|---:|---:|---:|---:|")
    for g in sorted(counts):
        c = counts[g]
        total += c
        print(f"| {g} | {sum(c.values())} | {worst[g][0]:.3g} | {worst[g][1]} | {c['FAIL']} | {c['inconclusive']} |")
    print(f"\n{total['ok']} ok, {total['FAIL']} failed, {total['inconclusive']} inconclusive")
    return 1 if total["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
