"""The table and picture of the Burda et al. (2016) reproduction, from the runs' reproduce.json files.

    python bench/burda_report.py                  # prints the Markdown table, writes bench/burda_static.png
    python bench/burda_report.py --write-results  # also puts the table into bench/RESULTS.md, between its markers

Reads bench/runs/iwae-k<K>/reproduce.json (written by bench/reproduce_iwae.py at each stage end). A number is
called reproduced when it lies within 2 standard errors of the published one, plus the published rounding
(0.005 nats: the paper gives two decimals), and only at the end of the schedule (epoch 3280).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
FINAL_EPOCH = 3280
ROUNDING = 0.005  # the published NLLs have two decimals
BEGIN, END = "<!-- burda-table", "<!-- /burda-table -->"


def load_runs(runs_dir: Path) -> dict[int, list[dict]]:
    """K -> that run's evaluation rows, by epoch."""
    runs = {}
    for f in sorted(runs_dir.glob("iwae-k*/reproduce.json")):
        k = int(f.parent.name.removeprefix("iwae-k"))
        runs[k] = sorted(json.loads(f.read_text()), key=lambda r: r["epoch"])
    return dict(sorted(runs.items()))


def verdict(row: dict) -> str:
    """Reproduced, not reproduced (with the gap in standard errors), or not yet (the schedule is not finished)."""
    gap = row["nll"] - row["published_nll"]
    if row["epoch"] < FINAL_EPOCH:
        return f"not yet (epoch {row['epoch']} of {FINAL_EPOCH}; {gap:+.2f} nats)"
    if abs(gap) <= 2 * row["nll_se"] + ROUNDING:
        return f"**reproduced** ({gap:+.2f} nats, within 2 s.e. + rounding)"
    return f"**not reproduced** ({gap:+.2f} nats = {gap / row['nll_se']:+.1f} s.e.)"


def table(runs: dict[int, list[dict]]) -> str:
    lines = ["| run | epoch | test points | test NLL (k = 5000) | -ELBO | KL | active units (train) | training h | published | verdict |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---|"]
    for k, rows in runs.items():
        name = "VAE (k = 1)" if k == 1 else f"IWAE k = {k}"
        for r in rows:
            lines.append(f"| {name} | {r['epoch']} | {r['test_points']} | {r['nll']:.2f} +- {r['nll_se']:.2f} | {-r['elbo']:.2f} | "
                         f"{r['kl']:.2f} | {r['active_units']} | {r['train_seconds'] / 3600:.2f} | {r['published_nll']:.2f} | "
                         f"{verdict(r) if r is rows[-1] else ''} |")
    return "\n".join(lines)


def picture(runs: dict[int, list[dict]], path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for i, (k, rows) in enumerate(runs.items()):
        colour = f"C{i}"
        label = "VAE (k = 1)" if k == 1 else f"IWAE (k = {k})"
        ax.errorbar([r["epoch"] for r in rows], [r["nll"] for r in rows], yerr=[2 * r["nll_se"] for r in rows],
                    marker="o", color=colour, capsize=2, label=f"{label}, npvae")
        ax.axhline(rows[0]["published_nll"], color=colour, linestyle="--", linewidth=1,
                   label=f"{label}, Burda et al. 2016: {rows[0]['published_nll']:.2f}")
    ax.set_xscale("log")
    ax.set_xlim(0.8, FINAL_EPOCH * 1.3)
    ax.set_xlabel("epoch (log scale; points at the ends of the learning-rate stages)")
    ax.set_ylabel("test NLL, nats (whole test split, k = 5000; bars: 2 s.e.)")
    ax.set_title("784-200-200-50 tanh on statically binarised MNIST")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default=str(HERE / "runs"), help="directory of the iwae-k<K> run directories")
    p.add_argument("--png", default=str(HERE / "burda_static.png"))
    p.add_argument("--write-results", action="store_true", help="replace the table between the markers in bench/RESULTS.md")
    args = p.parse_args(argv)
    runs = load_runs(Path(args.runs))
    if not runs:
        print(f"no runs with a reproduce.json under {args.runs}", file=sys.stderr)
        return 1
    text = table(runs)
    print(text)
    print(f"\npicture: {picture(runs, Path(args.png))}")
    if args.write_results:
        results = HERE / "RESULTS.md"
        s = results.read_text()
        i, j = s.index(BEGIN), s.index(END)
        i = s.index("\n", i) + 1  # keep the opening marker's line
        results.write_text(s[:i] + text + "\n" + s[j:])
        print(f"table written to {results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
