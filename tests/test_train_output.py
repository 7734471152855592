"""What `npvae train` draws and prints: the progress bar on a terminal, the time estimate, the header, the next commands.

The bar is tqdm's, on stderr, drawn only where stderr is a terminal (tqdm's disable=None asks stderr.isatty()): the
tests stand in a StringIO that says it is one, and read the frames tqdm wrote into it (each starts with a carriage return).
"""

from __future__ import annotations

import io
import json
import re
import sys
from types import SimpleNamespace

import pytest

from npvae.cli import main
from npvae.store.data import load
from npvae.training.config import TrainConfig
from npvae.training.loop import train

COUNT = re.compile(r"\| *(\d+)/(\d+) \[")  # tqdm's "| 26/39 [" after the bar


class FakeTTY(io.StringIO):
    """A stderr (or stdout) that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def _frames(text: str) -> list[str]:
    return [f.rstrip() for f in re.split(r"[\r\n]", text) if f.strip()]


def _tty_stderr(monkeypatch) -> FakeTTY:
    """sys.stderr replaced by a FakeTTY: in the test's body, as pytest's capture sets sys.stderr after the fixtures."""
    monkeypatch.setenv("COLUMNS", "200")  # tqdm's width when it cannot ask the terminal: wide enough to cut nothing
    fake = FakeTTY()
    monkeypatch.setattr(sys, "stderr", fake)
    return fake


def test_the_bar_on_a_terminal_counts_the_batches_of_the_run_and_shows_the_last_validation_bound(tmp_path, monkeypatch):
    tty_stderr = _tty_stderr(monkeypatch)
    data = load("digits")
    steps = -(-data.train.shape[0] // TrainConfig().batch_size)  # batches per epoch
    train(TrainConfig(epochs=3), data, tmp_path / "run", progress=True, epoch_lines=False, log=lambda *a: None)
    valid = json.loads((tmp_path / "run" / "history.json").read_text())["valid_bound"]
    frames = [f for f in _frames(tty_stderr.getvalue()) if COUNT.search(f)]
    counts = [tuple(map(int, COUNT.search(f).groups())) for f in frames]
    assert {total for _, total in counts} == {3 * steps}  # one bar for the run, not one per epoch
    done = [n for n, _ in counts]
    assert done == sorted(done) and {steps, 2 * steps, 3 * steps} <= set(done)  # drawn at least at each epoch's end
    for epoch, v in enumerate(valid, 1):  # each epoch's bound is shown once it is known
        assert any(f"last valid {v:.3f}" in f for f in frames), (epoch, frames)
    assert any(f.startswith("epoch 2/3") for f in frames)
    last = frames[-1]  # left on screen: the run done, with the final bound
    assert last.startswith(f"epoch 3/3, last valid {valid[-1]:.3f}") and "100%" in last and f"{3 * steps}/{3 * steps}" in last


def test_a_resumed_run_s_bar_starts_at_the_batches_done(tmp_path, monkeypatch):
    tty_stderr = _tty_stderr(monkeypatch)
    data = load("digits")
    steps = -(-data.train.shape[0] // TrainConfig().batch_size)
    train(TrainConfig(epochs=1), data, tmp_path / "run", progress=False, log=lambda *a: None)
    train(TrainConfig(epochs=3), data, tmp_path / "run", resume=True, progress=True, epoch_lines=False, log=lambda *a: None)
    counts = [tuple(map(int, COUNT.search(f).groups())) for f in _frames(tty_stderr.getvalue()) if COUNT.search(f)]
    assert counts[0] == (steps, 3 * steps) and counts[-1] == (3 * steps, 3 * steps)
    assert _frames(tty_stderr.getvalue())[0].startswith("epoch 2/3, last valid ")


def test_npvae_train_on_a_terminal_draws_the_bar_then_the_summary(tmp_path, monkeypatch):
    tty_stderr = _tty_stderr(monkeypatch)
    out = FakeTTY()
    monkeypatch.setattr(sys, "stdout", out)
    d = tmp_path / "run"
    assert main(["train", "--epochs", "2", "--out", str(d), "--no-pictures"]) == 0
    lines = out.getvalue().splitlines()
    assert lines[0] == f"npvae train: digits, elbo K=1, run directory {d}"
    assert not [s for s in lines if s.startswith("epoch ")]  # on a terminal: no line per epoch, the bar instead
    assert lines[1].startswith("npvae train: done, 2 epochs")
    assert _frames(tty_stderr.getvalue())[-1].startswith("epoch 2/2, last valid ")


def test_the_estimate_is_announced_after_the_second_epoch_of_a_process_from_its_time(capsys):
    from npvae.cli.train import announce

    on_epoch = announce(TrainConfig(epochs=3280))
    on_epoch(SimpleNamespace(epoch=1), 700.0)  # epoch 1: numba compiling, caches cold
    assert capsys.readouterr().err == ""
    on_epoch(SimpleNamespace(epoch=2), 15.0)  # 3278 epochs x 15 s = 49170 s
    assert "epoch 2 took 15 s; the 3278 left will take about 13.7 h" in capsys.readouterr().err
    on_epoch(SimpleNamespace(epoch=3), 15.0)
    assert capsys.readouterr().err == ""  # once
    resumed = announce(TrainConfig(epochs=3280))  # a process resuming at epoch 40 times its epoch 42
    resumed(SimpleNamespace(epoch=41), 700.0)
    resumed(SimpleNamespace(epoch=42), 15.0)
    assert "epoch 42 took 15 s; the 3238 left" in capsys.readouterr().err


def test_on_epoch_is_given_the_epoch_s_wall_time_with_its_checkpoints(tmp_path):
    seen = []
    state = train(TrainConfig(epochs=2), load("digits"), tmp_path / "run", progress=False, log=lambda *a: None,
                  on_epoch=lambda st, seconds: seen.append((st.epoch, seconds)))
    assert [e for e, _ in seen] == [1, 2]
    # history's seconds stop before history.json and the checkpoints are written; what the user waits for does not
    assert all(s > h for (_, s), h in zip(seen, state.history["seconds"]))


def _header(d) -> str:
    return f"run directory {d}"


def test_a_refused_out_prints_no_header(tmp_path, capsys):
    d = tmp_path / "run"
    assert main(["train", "--epochs", "1", "--out", str(d), "--no-pictures"]) == 0
    assert _header(d) in capsys.readouterr().out  # a run that starts says where
    assert main(["train", "--epochs", "1", "--out", str(d), "--no-pictures"]) == 2
    said = capsys.readouterr()
    assert f"{d} already holds a run: continue it with --resume {d}" in said.err and said.out == ""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    assert main(["train", "--epochs", "1", "--out", str(mine), "--no-pictures"]) == 2
    said = capsys.readouterr()
    assert "is not an npvae run directory (it holds notes.txt)" in said.err and said.out == ""


def test_a_refused_resume_prints_no_header(tmp_path, capsys):
    d = tmp_path / "run"
    assert main(["train", "--epochs", "2", "--out", str(d), "--no-pictures", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(d), "--epochs", "1", "--no-pictures"]) == 2  # fewer epochs than it holds
    said = capsys.readouterr()
    assert "has trained 2 epochs, more than the 1 asked for" in said.err and said.out == ""


def _next(out: str) -> list[str]:
    lines = out.splitlines()
    return lines[lines.index("next:") + 1:]


@pytest.mark.parametrize("arch", [None, "64-16-3"])
def test_the_next_commands_name_the_pictures_drawn_and_align_their_comments(tmp_path, capsys, arch):
    d = tmp_path / ("a-long-directory-name-" * 3) / "run"
    assert main(["train", "--epochs", "1", "--out", str(d), *(["--arch", arch] if arch else [])]) == 0
    steps = _next(capsys.readouterr().out)
    assert [s.split()[:2] for s in steps] == [["npvae", "sample"], ["npvae", "eval"], ["npvae", "train"]]
    assert f"--resume {d} --epochs 2 " in steps[2]
    assert len({s.index("#") for s in steps}) == 1  # the comments in one column
    assert min(s.index("#") - len(s[:s.index("#")].rstrip()) for s in steps) >= 2  # and apart from the longest command
    named = re.search(r"# its pictures again \(([^)]*)\)", steps[0]).group(1).split(", ")
    drawn = sorted(p.stem for p in d.glob("*.png"))  # what train drew (sample draws the same, from the same code)
    assert sorted(named) == drawn
    assert ({"manifold", "latent"} <= set(named)) == (arch is None)  # the latent plane only for Z == 2
