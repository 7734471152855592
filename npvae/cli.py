"""The `npvae` command line: the only place that reads argv and the environment (STYLE.md, habit 13)."""

from __future__ import annotations

import argparse
import json
import sys


def _table(rows, verbose: bool) -> str:
    """Group rows by check and case prefix; print every failure and, unless verbose, one line per group."""
    lines = [f"{'check':<9} {'case':<66} {'error':>10} {'tol':>9}  result"]
    groups: dict[tuple, list] = {}
    for r in rows:
        # Gradient rows are per parameter; the group is the objective/estimator, the worst parameter is shown.
        key = (r["check"], r["case"].rsplit(" ", 1)[0] if r["check"] == "gradient" else r["case"])
        groups.setdefault(key, []).append(r)
    for (check, case), rs in groups.items():
        shown = rs if verbose else [max(rs, key=lambda r: r["error"] / max(r["tol"], 1e-300))]
        shown += [r for r in rs if not r["passed"] and r not in shown]
        for r in shown:
            label = r["case"] if (verbose or len(rs) == 1) else f"{case} (worst of {len(rs)}: {r['case'].rsplit(' ', 1)[1]})"
            lines.append(f"{check:<9} {label:<66} {r['error']:>10.2e} {r['tol']:>9.1e}  {'ok' if r['passed'] else 'FAIL'}")
    n_fail = sum(not r["passed"] for r in rows)
    lines.append(f"{len(rows) - n_fail} passed, {n_fail} failed")
    return "\n".join(lines)


def cmd_check(args) -> int:
    from .check import run_all

    rows = run_all(seed=args.seed)
    if args.json:
        print(json.dumps({"passed": all(r["passed"] for r in rows), "rows": rows}, indent=1))
    else:
        print(_table(rows, args.verbose))
    return 0 if all(r["passed"] for r in rows) else 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="npvae", description="A NumPy reference VAE: train, evaluate, sample, check, explain.")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("check", help="finite-difference gradient checks and exact bound checks (float64)")
    c.add_argument("--json", action="store_true", help="print the results as JSON")
    c.add_argument("--verbose", action="store_true", help="one row per parameter instead of the worst per objective")
    c.add_argument("--seed", type=int, default=0, help="seed of the random models and noise")
    c.set_defaults(func=cmd_check)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"npvae {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
