"""A sweep's progress: one line per run (epochs done / total, the latest validation bound, test NLL), refreshed in place.

On a terminal, one tqdm bar per run, moved on each second from the run's history.json (which the worker rewrites at
every epoch, on the shared storage); elsewhere (a log, CI), one printed line per finished task.
"""

from __future__ import annotations

import json
import sys


class Lines:
    def __init__(self, runs, enabled: bool, log):
        self.log = log
        self.tty = enabled and sys.stderr.isatty()
        self.bars = {}
        if self.tty:
            from tqdm.auto import tqdm

            width = max(len(r.point.name) for r in runs)
            for i, r in enumerate(runs):
                self.bars[r.point.name] = tqdm(total=r.target, initial=min(r.done, r.target), position=i, leave=True,
                                               desc=r.point.name.ljust(width), dynamic_ncols=True, unit="epoch",
                                               bar_format="{desc} {n_fmt}/{total_fmt} epochs |{bar:20}| {postfix}")
                self._show(r)

    def _show(self, run, state: str = "") -> None:
        bar = self.bars.get(run.point.name)
        if bar is None:
            return
        bits = [state] if state else []
        if run.valid is not None:
            bits.append(f"valid {run.valid:.3f}")
        if run.evals:
            e = run.evals[-1]
            bits.append(f"NLL {e['nll']:.2f} (epoch {e['epoch']})")
        bar.n = min(run.done, run.target)
        bar.set_postfix_str(", ".join(bits), refresh=True)

    def poll(self, running) -> None:
        """Move the lines of runs being trained to their latest finished epoch (read from history.json)."""
        if not self.tty:
            return
        for run in running:
            try:
                h = json.loads((run.dir / "history.json").read_text())
            except (OSError, ValueError):
                continue
            if h.get("epoch"):
                run.done, run.valid = max(run.done, h["epoch"][-1]), h["valid_bound"][-1]
                self._show(run, "training")

    def update(self, run, kind: str, result: dict) -> None:
        if self.tty:
            self._show(run, "evaluated" if kind == "eval" else "")
            return
        if kind == "train":
            self.log(f"npvae sweep: {run.point.name}: epoch {run.done}/{run.target}, valid bound {run.valid:.4f}")
        else:
            self.log(f"npvae sweep: {run.point.name}: epoch {result['epoch']}: {result['split']} NLL {result['nll']:.3f} "
                     f"+- {result['nll_se']:.3f} (k={result['k']}, {result['points']} points, {result['wall_seconds']:.0f} s from submission)")

    def finished(self, run) -> None:
        if self.tty:
            self._show(run, "done")

    def failed(self, run) -> None:
        if self.tty:
            self._show(run, "FAILED")

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
