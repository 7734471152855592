"""`npvae check`: npvae's own checks (npvae.checks.check), as a table or JSON; --break NAME runs them with one bug planted."""

from __future__ import annotations

import json
import math
import textwrap


def _group(r) -> tuple:
    """Gradient rows are per parameter: their group is the objective/estimator; every other row is its own group."""
    return (r["check"], r["case"].rsplit(" ", 1)[0] if r["check"] == "gradient" else r["case"])


def _table(rows, verbose: bool) -> str:
    """Group rows by check and case prefix; print every failure and, unless verbose, one line per group."""
    width = max([66] + [len(r["case"]) for r in rows if r["check"] != "gradient"])
    lines = [f"{'check':<9} {'case':<{width}} {'error':>10} {'tol':>9}  result"]
    groups: dict[tuple, list] = {}
    for r in rows:
        # Gradient rows are per parameter; the group is the objective/estimator, the worst parameter is shown.
        groups.setdefault(_group(r), []).append(r)
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
    if getattr(args, "break_name", None) is not None:
        return _cmd_break(args, args.break_name)
    from ..checks.check import run_all

    rows = run_all(seed=args.seed)
    if args.json:
        print(json.dumps({"passed": all(r["passed"] for r in rows), "rows": rows}, indent=1))
    else:
        print(_table(rows, args.verbose))
    return 0 if all(r["passed"] for r in rows) else 1


# ---- --break NAME: the checks against a copy of the maths with one classic bug (npvae.checks.breaks) ----

def _cmd_break(args, name: str) -> int:
    """`--break list`: the names (exit 0); `--break NAME`: the exercise, exit 0 if the checks catch the bug, 1 if not."""
    from ..checks import breaks

    if name == "list":
        if args.json:
            print(json.dumps([{"name": b.name, "summary": b.summary, "caught_by": list(b.caught_by)} for b in breaks.BUGS.values()], indent=1))
        else:
            width = max(len(n) for n in breaks.NAMES)
            print("\n".join(f"{b.name:<{width}}  {b.summary}" for b in breaks.BUGS.values()))
        return 0
    breaks.get(name)  # an unknown name: one line (npvae.cli.main), exit 2, before anything runs
    run = breaks.run(name, seed=args.seed)
    print(json.dumps(_break_json(run), indent=1) if args.json else _break_report(run, args.verbose, args.seed))
    return 0 if run.caught else 1


def _fill(text: str, first: str, rest: str) -> str:
    """A paragraph wrapped at 116 columns; URLs and names are never split."""
    return textwrap.fill(text, 116, initial_indent=first, subsequent_indent=rest, break_long_words=False, break_on_hyphens=False)


def _ratio(r) -> float:
    """error / tol of a decided row; a NaN error (a model the bug made overflow) counts as infinitely bad."""
    if math.isnan(r["error"]):
        return math.inf
    return r["error"] / r["tol"] if r["tol"] > 0 else (math.inf if r["error"] > 0 else 0.0)


def _verdict(run) -> str:
    bug, failing = run.bug, run.failing
    if not failing:
        return "NOT caught: no check fails with this bug (exit 1). That is the lesson: read 'What cannot see it' below."
    said = ", ".join(bug.caught_by) or "no check"
    if not run.caught:
        return f"NOT caught as described: FAIL rows in {', '.join(failing)}, but its description says {said} (exit 1)"
    extra = [c for c in failing if c not in bug.caught_by]
    return f"caught: by {', '.join(failing)}" + (f" (its description names {said})" if extra else ", as its description says") + " (exit 0)"


def _break_report(run, verbose: bool, seed: int) -> str:
    """The exercise as text: failing rows beside the unbroken run, every check's summary, a few numbers, the lesson."""
    bug = run.bug
    clean = {(r["check"], r["case"]): r for r in run.clean}
    out = [f"npvae check --break {bug.name}: {bug.summary}",
           _fill(f"planted for this run only (the originals are back afterwards), in {len(run.bindings)} places: "
                 + ", ".join(run.bindings), "", "  "), ""]

    groups: dict[tuple, list] = {}
    for r in run.broken:
        groups.setdefault(_group(r), []).append(r)
    shown = []  # (check, label, unbroken error, broken row)
    for (check, case), rs in groups.items():
        bad = [r for r in rs if r["status"] == "FAIL"]
        if not bad:
            continue
        for r in (bad if verbose or len(rs) == 1 else [max(bad, key=_ratio)]):
            label = r["case"] if verbose or len(rs) == 1 else f"{case} ({len(bad)} of {len(rs)} FAIL, worst: {r['case'].rsplit(' ', 1)[1]})"
            before = clean.get((r["check"], r["case"]))
            shown.append((check, label, before["error"] if before else math.nan, r))
    if shown:
        width = min(100, max(len(s[1]) for s in shown))
        out.append("rows that FAIL with the bug, beside the same row's error without it:")
        out.append(f"{'check':<9} {'case':<{width}} {'unbroken':>10} {'broken':>10} {'tol':>9}  result")
        out += [f"{c:<9} {label[:width]:<{width}} {e0:>10.2e} {r['error']:>10.2e} {r['tol']:>9.1e}  {r['status']}" for c, label, e0, r in shown]
    else:
        out.append("no row fails with the bug.")

    out += ["", "every check, without -> with the bug: rows, FAIL rows, the worst error / tol",
            f"{'check':<9} {'rows':>5} {'FAIL':>10}   {'worst error / tol':>22}"]
    for check in ("layer", "gradient", "bound", "value"):
        before = [r for r in run.clean if r["check"] == check and r["status"] != "inconclusive"]
        after = [r for r in run.broken if r["check"] == check and r["status"] != "inconclusive"]
        nb, na = (sum(r["status"] == "FAIL" for r in rs) for rs in (before, after))
        wb, wa = (max(map(_ratio, rs), default=0.0) for rs in (before, after))
        out.append(f"{check:<9} {len(after):>5} {f'{nb} -> {na}':>10}   {f'{wb:.2g} -> {wa:.2g}':>22}")

    out += ["", f"what the bug does to a few numbers (batch means, seed {seed}):",
            f"{'':<54} {'exact':>11} {'unbroken':>11} {'broken':>11}"]
    for (label, exact, v0), (_, _, v1) in zip(run.probe_clean, run.probe_broken):
        out.append(f"{label:<54} {'' if exact is None else f'{exact:.5g}':>11} {v0:>11.5g} {v1:>11.5g}")

    out += ["", _verdict(run), ""]
    for head, text in (("What people write", bug.wrote), ("Why it is wrong", bug.wrong), ("What catches it", bug.seen),
                       ("What cannot see it", bug.unseen)):
        out.append(_fill(text, f"{head}: ", "  "))
    out.append("Reports:")
    out += [_fill(r, "  - ", "    ") for r in bug.reports]
    return "\n".join(out)


def _break_json(run) -> dict:
    """The exercise as JSON: the broken run's rows, each with its unbroken error, and the verdict and lesson."""
    bug = run.bug
    clean = {(r["check"], r["case"]): r["error"] for r in run.clean}
    return {"break": bug.name, "summary": bug.summary, "caught": run.caught, "caught_by": list(bug.caught_by),
            "failing_checks": list(run.failing), "planted": run.bindings,
            "lesson": {"wrote": bug.wrote, "wrong": bug.wrong, "seen": bug.seen, "unseen": bug.unseen, "reports": list(bug.reports)},
            "probe": [{"quantity": l.strip(), "exact": e, "unbroken": v0, "broken": v1}
                      for (l, e, v0), (_, _, v1) in zip(run.probe_clean, run.probe_broken)],
            "rows": [{**r, "unbroken_error": clean.get((r["check"], r["case"]))} for r in run.broken]}
