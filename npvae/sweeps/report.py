"""`npvae sweep SPEC --report`: one row per run (the grid values that vary, epochs, best validation bound, the latest
evaluation, seconds, the published value) as Markdown and CSV, and one picture of every run's curve.

A published NLL is called reproduced when the run's is within 2 standard errors of it plus the published rounding
(0.005 nats: two decimals), and only at the end of the run's schedule; the standard error is over test points only,
not over runs. Written to the sweep's out directory: report.md, report.csv, report.png.

A run whose files cannot be read (a damaged evals.json or last checkpoint) is reported with what can be read, and a
note naming the damage (the `note` column); the other runs are reported as usual. Rows a sweep kept for a locked or
damaged evals.json (out/.pending, npvae.sweeps.driver) are shown with the run's others.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from ..store import run_dir as rd
from ..store.atomic import write_figure, write_text
from .driver import EVALS, EvalsDamaged, _merged, read_evals, read_pending
from .spec import Spec, claim_out, references_for

ROUNDING = 0.005


def _history(run_dir: Path) -> tuple[int, dict]:
    """(epochs in the last checkpoint, the history up to it); (0, empty) for a run not started."""
    from ..training.loop import read_meta

    last = rd.checkpoint_path(run_dir, "last")
    if not last.exists():
        return 0, {"epoch": [], "valid_bound": [], "seconds": []}
    meta = read_meta(last)
    return meta["epoch"], meta["history"]


def rows(spec: Spec) -> list[dict]:
    out = []
    for p in spec.points:
        d = spec.out / p.name
        notes = []
        try:
            done, h = _history(d)
        except (ValueError, OSError) as e:  # a damaged checkpoint: its message names the file
            done, h = 0, {"epoch": [], "valid_bound": [], "seconds": []}
            notes.append(f"last checkpoint damaged: {e}")
        try:
            evals = read_evals(d)
        except EvalsDamaged as e:
            evals = []
            notes.append(f"{EVALS} damaged: {e.reason}")
        try:
            evals = _merged(evals, read_pending(spec.out, p.name, d))
        except EvalsDamaged as e:
            notes.append(f"{e.path.name} in {e.path.parent} damaged: {e.reason}")
        if spec.eval is not None:  # the evaluations the SPEC asks for now (an edited [eval] may have left others)
            want = {k: v for k, v in spec.eval.key(0).items() if k != "epoch"}
            evals = [e for e in evals if all(e.get(k) == v for k, v in want.items())]
        last = max(reversed(evals), key=lambda e: e["epoch"]) if evals else None  # the latest row of the latest epoch
        refs = references_for(spec, p)
        row = {"run": p.name, **{k: p.values[k] for k in spec.varying()}, "epochs_done": done, "epochs": p.config.epochs,
               "best_valid_bound": max(h["valid_bound"]) if h["valid_bound"] else None,
               "train_seconds": float(sum(h["seconds"])), "eval_epoch": None, "nll": None, "nll_se": None, "elbo": None,
               "kl": None, "active_units": None, "published_nll": refs[0]["nll"] if refs else None, "verdict": "",
               "note": "; ".join(notes)}
        if last is not None:
            row.update({k: last[k] for k in ("nll", "nll_se", "elbo", "kl", "active_units")}, eval_epoch=last["epoch"])
            if refs:
                row["verdict"] = verdict(row)
        row["_history"], row["_evals"] = h, evals
        out.append(row)
    return out


def verdict(row: dict) -> str:
    gap = row["nll"] - row["published_nll"]
    if row["eval_epoch"] < row["epochs"]:
        return f"not yet (epoch {row['eval_epoch']} of {row['epochs']}; {gap:+.2f} nats)"
    if abs(gap) <= 2 * row["nll_se"] + ROUNDING:
        return f"reproduced ({gap:+.2f} nats, within 2 s.e. + rounding)"
    return f"not reproduced ({gap:+.2f} nats = {gap / row['nll_se']:+.1f} s.e.)"


def _fmt(v, digits=2) -> str:
    if v is None:
        return ""
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def markdown(spec: Spec, table: list[dict]) -> str:
    ev = spec.eval
    nll = f"{ev.split} NLL (k = {ev.k})" if ev else "NLL"
    head = ["run", *spec.varying(), "epochs", "best valid bound", "eval epoch", nll, "-ELBO", "KL", "active units", "train h"]
    if spec.references:
        head += ["published", "verdict"]
    notes = any(r["note"] for r in table)
    if notes:
        head.append("note")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table:
        cells = [r["run"], *(_fmt(r[k]) for k in spec.varying()), f"{r['epochs_done']}/{r['epochs']}",
                 _fmt(r["best_valid_bound"]), _fmt(r["eval_epoch"]),
                 f"{r['nll']:.2f} +- {r['nll_se']:.2f}" if r["nll"] is not None else "",
                 _fmt(-r["elbo"] if r["elbo"] is not None else None), _fmt(r["kl"]), _fmt(r["active_units"]),
                 f"{r['train_seconds'] / 3600:.2f}"]
        if spec.references:
            cells += [_fmt(r["published_nll"]), r["verdict"]]
        if notes:
            cells.append(r["note"].replace("|", "\\|"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def to_csv(spec: Spec, table: list[dict]) -> str:
    cols = [k for k in table[0] if not k.startswith("_")] if table else []
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in table:
        w.writerow({k: ("" if r[k] is None else r[k]) for k in cols})
    return buf.getvalue()


def picture(spec: Spec, table: list[dict], path: Path) -> Path:
    """Minus the validation bound against epochs (lines), the evaluated NLLs (dots), the published NLLs (dashed)."""
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 5.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for i, r in enumerate(table):
        color = colormaps["tab20" if len(table) > 10 else "tab10"](i % 20)
        h, evals = r["_history"], r["_evals"]
        ax.plot(h["epoch"], [-v for v in h["valid_bound"]], color=color, lw=1, label=r["run"])
        if evals:
            ax.plot([e["epoch"] for e in evals], [e["nll"] for e in evals], "o", color=color, ms=4)
        if r["published_nll"] is not None:
            ax.axhline(r["published_nll"], color=color, ls="--", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("nats per point (lower is better)")
    what = f"{spec.eval.split} NLL (k = {spec.eval.k})" if spec.eval else "NLL"
    ax.set_title(f"{spec.path.name}: lines, minus the validation bound; dots, {what}; dashed, published NLL", fontsize=9)
    if table:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    write_figure(path, fig, dpi=120)
    return path


def write_report(spec: Spec, notes: bool = False) -> tuple:
    """(the Markdown table, the files written: report.md, report.csv, report.png in spec.out), and with notes, the runs'
    notes ({run: note} for the runs with a damaged file)."""
    table = rows(spec)
    claim_out(spec)
    md = markdown(spec, table)
    refs = "".join(f"\n- published {r['nll']:.2f} for {json.dumps(r['where'])}: {r['source']}" for r in spec.references)
    paths = [spec.out / "report.md", spec.out / "report.csv", spec.out / "report.png"]
    write_text(paths[0], f"# {spec.path.name}\n\n{md}\n{refs}\n")
    write_text(paths[1], to_csv(spec, table))
    picture(spec, table, paths[2])
    if notes:
        return md, paths, {r["run"]: r["note"] for r in table if r["note"]}
    return md, paths
