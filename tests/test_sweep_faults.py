"""npvae sweep against an operator's faults (issue 27): a run locked by another process while the sweep writes into it,
and a damaged evals.json. Nothing computed is lost, and every failure names its file in one line."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("distributed")

from npvae.cli import main  # noqa: E402
from npvae.store import run_dir as rd  # noqa: E402
from npvae.sweeps import driver, tasks  # noqa: E402
from npvae.training.loop import read_meta  # noqa: E402

pytestmark = pytest.mark.slow  # Dask clusters under planted faults: the full suite only, with the sweep extra

# One tiny run; its grid key has an underscore, so its directory is batch.size-50 (docs/sweep.md)
ONE = """
[sweep]
out = "runs"
[base]
dataset = "digits"
epochs = 1
arch = "64-8-2"
[grid]
batch_size = [50]
[eval]
k = 5
checkpoint = "{checkpoint}"
"""
HOLD = ("import sys\nfrom npvae.store.run_dir import RunLock\nlock = RunLock(sys.argv[1]).__enter__()\n"
        "print('held', flush=True)\nsys.stdin.readline()\n")


class Holder:
    """Another process holding a run's lock (as a user's `npvae train --resume` would) until released."""

    def __init__(self, run_dir: Path):
        self.proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "held"
        self.pid = self.proc.pid

    def release(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write("\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=30)


def _hook(monkeypatch, on_event=None, on_log=None) -> list:
    """The CLI's run_sweep with on_event, and its log lines also passed to on_log; returns the lines logged."""
    real, lines = driver.run_sweep, []

    def hooked(spec, data, **kw):
        inner = kw.pop("log")

        def log(*a, **k):
            inner(*a, **k)
            lines.append(" ".join(map(str, a)))
            if on_log is not None:
                on_log(lines[-1])

        return real(spec, data, log=log, on_event=on_event, **kw)

    monkeypatch.setattr(driver, "run_sweep", hooked)
    return lines


def _ours(text: str) -> str:
    """npvae sweep's own lines of text (not Dask's, such as a warning that its dashboard's port is taken)."""
    return "".join(line + "\n" for line in text.splitlines() if line.startswith("npvae sweep"))


def _rows(run_dir: Path) -> list:
    return json.loads((run_dir / "evals.json").read_text())


@pytest.mark.parametrize("checkpoint, what", [("last", "its evaluation row (epoch 1)"), ("best", "its next task")])
def test_a_write_into_a_locked_run_waits_for_the_lock(tmp_path, monkeypatch, capsys, checkpoint, what):
    """Held from the end of training to the evaluation's write (last) or its best-checkpoint repair (best)."""
    spec = tmp_path / "one.toml"
    spec.write_text(ONE.format(checkpoint=checkpoint))
    run = tmp_path / "runs" / "batch.size-50"
    monkeypatch.setattr(tasks, "LOCK_POLL_S", 0.2)
    holder = []

    def on_event(kind, r, result, client):
        if kind == "train":  # before the evaluation is submitted: the run is the user's now
            holder.append(Holder(run))

    def on_log(line):
        if "waits for it" in line:  # the sweep found the lock held: let it go
            holder[0].release()

    lines = _hook(monkeypatch, on_event, on_log)
    try:
        assert main(["sweep", str(spec), "--workers", "1"]) == 0
    finally:
        for h in holder:
            h.release()
    waited = [x for x in lines if "waits for it" in x]
    assert waited == [f"npvae sweep: batch.size-50: {run} is locked by another process (pid {holder[0].pid}); "
                      f"{what} waits for it, up to 300 s"]
    rows = _rows(run)
    assert [(r["epoch"], r["checkpoint"], r["k"]) for r in rows] == [(1, checkpoint, 5)]
    assert not (tmp_path / "runs" / driver.PENDING).exists()
    assert "failed" not in capsys.readouterr().err


def _interrupt(line):
    if "waits for it" in line:
        raise KeyboardInterrupt  # Ctrl-C while the row waits


@pytest.mark.parametrize("how", ["the wait runs out", "Ctrl-C"])
def test_a_row_whose_run_stays_locked_is_kept_and_written_by_the_next_sweep(tmp_path, monkeypatch, capsys, how):
    spec = tmp_path / "one.toml"
    spec.write_text(ONE.format(checkpoint="last"))
    out = tmp_path / "runs"
    run = out / "batch.size-50"
    kept = out / driver.PENDING / "batch.size-50.json"
    monkeypatch.setattr(tasks, "LOCK_POLL_S", 0.2)
    monkeypatch.setattr(tasks, "LOCK_WAIT_S", 1)
    holder = []
    _hook(monkeypatch, lambda kind, r, result, client: holder.append(Holder(run)) if kind == "train" else None,
          _interrupt if how == "Ctrl-C" else None)
    try:
        if how == "Ctrl-C":
            assert main(["sweep", str(spec), "--workers", "1"]) == 130
            assert "npvae sweep: interrupted" in capsys.readouterr().err
        else:
            assert main(["sweep", str(spec), "--workers", "1"]) == 3
            err = _ours(capsys.readouterr().err)
            assert (f"npvae sweep: batch.size-50 failed: {run} stayed locked by another process (pid {holder[0].pid}) "
                    f"for 1 s; the next sweep continues the run; its evaluation row (epoch 1) is kept in {kept}, and the "
                    "next sweep writes it into evals.json\n") in err
        row = json.loads(kept.read_text())
        assert [(r["epoch"], r["k"]) for r in row] == [(1, 5)] and not (run / "evals.json").exists()
        assert main(["sweep", str(spec), "--report"]) == 0  # the kept row is reported already
        report = list(csv.DictReader((out / "report.csv").read_text().splitlines()))
        assert float(report[0]["nll"]) == row[0]["nll"]
    finally:
        for h in holder:
            h.release()
    capsys.readouterr()
    monkeypatch.undo()
    assert main(["sweep", str(spec), "--workers", "1"]) == 0
    out_text = capsys.readouterr().out
    assert "batch.size-50: wrote 1 kept evaluation row(s) into its evals.json" in out_text
    assert "nothing to do" in out_text  # not evaluated again: the kept row is the evaluation
    assert _rows(run) == row and not kept.exists()


TWO = """
[sweep]
out = "runs"
[base]
dataset = "digits"
epochs = {epochs}
arch = "64-8-2"
[grid]
seed = [0, 1]
[eval]
k = 5
epochs = [1]
"""


def _truncate(path: Path) -> bytes:
    """Cut the file mid-JSON; returns what it held."""
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    return whole


def test_a_damaged_evals_json_is_named_and_blocks_only_its_run(tmp_path, capsys):
    spec = tmp_path / "two.toml"
    spec.write_text(TWO.format(epochs=1))
    out = tmp_path / "runs"
    assert main(["sweep", str(spec), "--workers", "2", "--quiet"]) == 0
    damaged = out / "seed-1" / "evals.json"
    whole = _truncate(damaged)
    try:
        json.loads(damaged.read_text())
    except ValueError as e:
        reason = f"not JSON: {e}"
    capsys.readouterr()

    assert main(["sweep", str(spec), "--report"]) == 0  # the others reported, the damaged one marked
    cap = capsys.readouterr()
    assert cap.err == f"npvae sweep: note: seed-1: evals.json damaged: {reason}\n"
    report = {r["run"]: r for r in csv.DictReader((out / "report.csv").read_text().splitlines())}
    assert float(report["seed-0"]["nll"]) == _rows(out / "seed-0")[-1]["nll"] and report["seed-0"]["note"] == ""
    assert report["seed-1"]["nll"] == "" and report["seed-1"]["note"] == f"evals.json damaged: {reason}"
    assert report["seed-1"]["epochs_done"] == "1"  # what can be read is reported
    assert "| note |" in cap.out and f"| evals.json damaged: {reason} |" in cap.out

    message = (f"{damaged} is damaged ({reason}): the run is left as it is; repair or restore that file, or move it away "
               "(the next sweep then makes the evaluations it still can)")
    assert main(["sweep", str(spec), "--check"]) == 3
    cap = capsys.readouterr()
    assert f"  seed-1: cannot go on: {message}\n" in cap.out and "  seed-0: 1/1 epochs, 1 evaluation(s)\n" in cap.out
    assert cap.err == "npvae sweep: 1 of 2 runs cannot go on as they are (above): seed-1\n"

    spec.write_text(TWO.format(epochs=2))  # work for both runs: the other one goes on
    assert main(["sweep", str(spec), "--workers", "2", "--quiet"]) == 3
    cap = capsys.readouterr()
    assert _ours(cap.err) == (f"npvae sweep: seed-1 failed: {message}\n"
                       "npvae sweep: 1 of 2 runs failed; the others are finished\n")
    assert [r["epoch"] for r in _rows(out / "seed-0")] == [1, 2]
    assert read_meta(rd.checkpoint_path(out / "seed-1", "last"))["epoch"] == 1  # left as it is
    assert damaged.read_bytes() == whole[: len(whole) // 2]  # nothing overwritten

    damaged.write_bytes(whole)  # restored, as the message says: the run goes on
    assert main(["sweep", str(spec), "--workers", "2", "--quiet"]) == 0
    assert [r["epoch"] for r in _rows(out / "seed-1")] == [1, 2] and _rows(out / "seed-1")[0] == json.loads(whole)[0]


def test_a_row_whose_evals_json_is_damaged_mid_sweep_is_kept(tmp_path, monkeypatch, capsys):
    spec = tmp_path / "two.toml"
    spec.write_text(TWO.format(epochs=2).replace("seed = [0, 1]", "seed = [0]"))
    out = tmp_path / "runs"
    evals = out / "seed-0" / "evals.json"
    whole = []

    def on_event(kind, run, result, client):
        if kind == "train" and result["epoch"] == 2:  # after the epoch-1 row, before the last one
            whole.append(_truncate(evals))

    _hook(monkeypatch, on_event)
    assert main(["sweep", str(spec), "--workers", "1", "--quiet"]) == 3
    kept = out / driver.PENDING / "seed-0.json"
    err = _ours(capsys.readouterr().err)
    assert err.startswith(f"npvae sweep: seed-0 failed: {evals} is damaged (not JSON: ")
    assert err.endswith(f"; its evaluation row (epoch 2) is kept in {kept}, and the next sweep writes it into "
                        "evals.json\nnpvae sweep: 1 of 1 runs failed; the others are finished\n")
    assert evals.read_bytes() == whole[0][: len(whole[0]) // 2]  # left as it was
    row = json.loads(kept.read_text())
    assert [r["epoch"] for r in row] == [2]
    monkeypatch.undo()
    evals.write_bytes(whole[0])
    assert main(["sweep", str(spec), "--workers", "1", "--quiet"]) == 0
    assert _rows(out / "seed-0") == json.loads(whole[0]) + row and not kept.exists()


def test_a_damaged_last_checkpoint_fails_its_run_only_and_is_reported(tmp_path, capsys):
    spec = tmp_path / "two.toml"
    spec.write_text(TWO.format(epochs=1).replace("[eval]\nk = 5\nepochs = [1]\n", ""))
    run = tmp_path / "runs" / "seed-1"
    run.mkdir(parents=True)
    (run / rd.MARKER).touch()
    (run / "last.safetensors").write_bytes(b"not a checkpoint")
    assert main(["sweep", str(spec), "--check"]) == 3
    cap = capsys.readouterr()
    assert f"  seed-1: cannot go on: checkpoint {run / 'last.safetensors'}: cannot read as safetensors" in cap.out
    assert "  seed-0: 0/1 epochs\n" in cap.out
    assert main(["sweep", str(spec), "--report"]) == 0
    err = capsys.readouterr().err
    assert err.startswith(f"npvae sweep: note: seed-1: last checkpoint damaged: checkpoint {run / 'last.safetensors'}: ")
