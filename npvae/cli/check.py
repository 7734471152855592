"""`npvae check`: npvae's own checks (npvae.checks.check), as a table or JSON."""

from __future__ import annotations

import json


def _table(rows, verbose: bool) -> str:
    """Group rows by check and case prefix; print every failure and, unless verbose, one line per group."""
    width = max([66] + [len(r["case"]) for r in rows if r["check"] != "gradient"])
    lines = [f"{'check':<9} {'case':<{width}} {'error':>10} {'tol':>9}  result"]
    groups: dict[tuple, list] = {}
    for r in rows:
        # Gradient rows are per parameter; the group is the objective/estimator, the worst parameter is shown.
        key = (r["check"], r["case"].rsplit(" ", 1)[0] if r["check"] == "gradient" else r["case"])
        groups.setdefault(key, []).append(r)
    for (check, case), rs in groups.items():
        decided = [r for r in rs if r["status"] != "inconclusive"] or rs
        shown = rs if verbose else [max(decided, key=lambda r: r["error"] / max(r["tol"], 1e-300))]
        shown += [r for r in rs if r["status"] != "ok" and r not in shown]
        for r in shown:
            label = r["case"] if (verbose or len(rs) == 1) else f"{case} (worst of {len(rs)}: {r['case'].rsplit(' ', 1)[1]})"
            lines.append(f"{check:<9} {label:<{width}} {r['error']:>10.2e} {r['tol']:>9.1e}  {r['status']}")
    n_fail = sum(r["status"] == "FAIL" for r in rows)
    n_open = sum(r["status"] == "inconclusive" for r in rows)
    lines.append(f"{len(rows) - n_fail - n_open} passed, {n_fail} failed" + (f", {n_open} inconclusive" if n_open else ""))
    return "\n".join(lines)


def cmd_check(args) -> int:
    from ..checks.check import run_all

    rows = run_all(seed=args.seed)
    if args.json:
        print(json.dumps({"passed": all(r["passed"] for r in rows), "rows": rows}, indent=1))
    else:
        print(_table(rows, args.verbose))
    return 0 if all(r["passed"] for r in rows) else 1
