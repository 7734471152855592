"""A run directory under attack: kill -9 at fixed points, two writers, Ctrl-C, foreign directories, default names."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from npvae.store import run_dir as rd
from npvae.cli import main
from npvae.training.loop import load_state, read_meta

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ["train", "--epochs", "3", "--no-pictures", "--quiet"]


def _sigint_default():
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


# Runs `npvae train` and SIGKILLs itself at one point of epoch 2's writes (history.json, then last, then best).
KILLER = textwrap.dedent('''
    import os, signal, sys
    import npvae.training.loop as t
    from npvae.store import atomic  # the checkpoint's writer
    point, out = sys.argv[1], sys.argv[2]
    real_save, calls = t.save_state, []

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    def save_state(path, *a):
        calls.append(path.name)
        if len(calls) == 3 and point == "before-last":  # epoch 2's history.json is written, its last is not
            die()
        if len(calls) == 3 and point == "inside-last":  # the temp file is written and synced, not yet renamed
            atomic.os = type("os", (), {"replace": staticmethod(lambda *_: die()), "__getattr__": lambda s, n: getattr(os, n)})()
        real_save(path, *a)
        if len(calls) == 3 and point == "before-best":  # epoch 2's last is written, its best is not
            die()
    t.save_state = save_state
    from npvae.cli import main
    sys.exit(main(["train", "--out", out, "--epochs", "3", "--no-pictures", "--quiet"]))
''')


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted 3-epoch run, whose validation bound improves at epochs 1 and 2 (so both write best)."""
    d = tmp_path_factory.mktemp("ref") / "run"
    assert main([*TRAIN, "--out", str(d)]) == 0
    h = load_state(d / "last.safetensors")[2].history
    assert h["valid_bound"][1] > h["valid_bound"][0]
    return d


def _params(path):
    return [a.tobytes() for a in load_state(path)[2].params]


@pytest.mark.parametrize("point", ["before-last", "inside-last", "before-best"])
def test_kill_9_at_each_write_leaves_a_consistent_run_that_resumes_bit_for_bit(tmp_path, reference, point):
    d = tmp_path / "run"
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    r = subprocess.run([sys.executable, str(script), point, str(d)], env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == -signal.SIGKILL, r.stderr

    last = read_meta(d / "last.safetensors")
    assert last["epoch"] == (2 if point == "before-best" else 1)
    history = json.loads((d / "history.json").read_text())
    assert len(history["epoch"]) >= last["epoch"]  # history.json never lags the checkpoint
    leftovers = [p.name for p in d.iterdir() if p.name.endswith(".tmp")]
    assert bool(leftovers) == (point == "inside-last")
    if point == "before-best":  # best lags: last names the epoch best must hold
        assert read_meta(d / "best.safetensors")["epoch"] == 1 and last["best_epoch"] == 2

    # eval repairs best before reading it, so the bound it reports is held by the checkpoint it reads
    assert main(["eval", str(d), "--k", "2", "--n", "5", "--quiet", "--json"]) == 0
    best = read_meta(d / "best.safetensors")
    assert best["epoch"] == last["best_epoch"] and best["best_valid"] == last["best_valid"]

    assert main(["train", "--resume", str(d), "--no-pictures", "--quiet"]) == 0
    assert not [p.name for p in d.iterdir() if p.name.endswith(".tmp")]
    for which in ("last", "best"):
        assert _params(d / f"{which}.safetensors") == _params(reference / f"{which}.safetensors"), which
    assert json.loads((d / "history.json").read_text())["valid_bound"] == json.loads((reference / "history.json").read_text())["valid_bound"]


def test_a_second_writer_is_refused_with_the_holders_pid(tmp_path, capsys):
    d = tmp_path / "run"
    assert main([*TRAIN[:2], "1", *TRAIN[3:], "--out", str(d)]) == 0
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom npvae.store.run_dir import RunLock\n"
                               "with RunLock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(60)", str(d)],
                              env=_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = (d / "last.safetensors").read_bytes()
        capsys.readouterr()
        assert main(["train", "--resume", str(d), "--epochs", "2", "--no-pictures", "--quiet"]) == 2
        err = capsys.readouterr().err
        assert f"in use by another npvae process (pid {holder.pid})" in err
        assert (d / "last.safetensors").read_bytes() == before
    finally:
        holder.kill()
        holder.wait()
    assert main(["train", "--resume", str(d), "--epochs", "2", "--no-pictures", "--quiet"]) == 0  # released by the kernel


def test_default_names_are_unique_within_one_second(tmp_path):
    dirs = {rd.new_default(tmp_path, "digits") for _ in range(5)}
    assert len(dirs) == 5 and all((d / rd.MARKER).exists() for d in dirs)


def test_out_that_is_not_a_run_is_refused_and_left_alone(tmp_path, capsys):
    d = tmp_path / "mine"
    d.mkdir()
    (d / "config.json").write_text("my own config")
    assert main([*TRAIN, "--out", str(d)]) == 2
    assert "is not an npvae run directory (it holds config.json)" in capsys.readouterr().err
    assert (d / "config.json").read_text() == "my own config" and sorted(p.name for p in d.iterdir()) == ["config.json"]


def test_out_that_holds_a_run_points_to_resume(tmp_path, capsys):
    d = tmp_path / "run"
    assert main([*TRAIN[:2], "1", *TRAIN[3:], "--out", str(d)]) == 0
    assert main([*TRAIN, "--out", str(d)]) == 2
    assert f"--resume {d}" in capsys.readouterr().err


def test_bad_arch_leaves_no_directory(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--arch", "63-10-2", "--no-pictures"]) == 2
    assert main(["train", "--arch", "64-x-2", "--out", "given", "--no-pictures"]) == 2
    assert "D=63" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_stops_cleanly_with_exit_130_and_the_resume_command(tmp_path):
    d = tmp_path / "run"
    # SIGINT restored: a job started in the background by a shell (`cmd &`) inherits it ignored, and then Python
    # installs no KeyboardInterrupt handler (the cause of this test's rare failures: the process never saw Ctrl-C).
    p = subprocess.Popen([sys.executable, "-m", "npvae.cli", "train", "--epochs", "100000", "--out", str(d), "--no-pictures"],
                         env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_sigint_default)
    deadline = time.time() + 120
    while not (d / "last.safetensors").exists() and time.time() < deadline and p.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)  # somewhere in a later epoch: any instant must do
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert f"continue with: npvae train --resume {d}" in err
    epoch = read_meta(d / "last.safetensors")["epoch"]
    assert f"holds epoch {epoch}" in err
    assert not [q.name for q in d.iterdir() if q.name.endswith(".tmp")]
    assert main(["train", "--resume", str(d), "--epochs", str(epoch + 1), "--no-pictures", "--quiet"]) == 0


def test_run_of_npvae_0_1_is_read_and_converted_on_resume(tmp_path, reference):
    """A run with last.npz/best.npz (format 2) evaluates as it is, and resuming rewrites it as safetensors."""
    import npvae.store.checkpoint as ck
    from npvae.store.safe_npz import read_npz

    d = tmp_path / "run"
    assert main([*TRAIN[:2], "2", *TRAIN[3:], "--out", str(d)]) == 0
    for which in ("last", "best"):  # rewrite each checkpoint as npvae 0.1 did
        arrays, meta = ck.load_checkpoint(d / f"{which}.safetensors")
        meta.pop("best_epoch")
        env = {"format": "npvae-checkpoint", "version": 2, "arrays": {n: [a.dtype.str, list(a.shape)] for n, a in sorted(arrays.items())},
               "sha256": ck._digest(arrays), "meta_sha256": ck._meta_digest(meta), "meta": meta}
        np.savez(d / f"{which}.npz", **arrays, __meta__=np.array(json.dumps(env)))
        (d / f"{which}.safetensors").unlink()
    (d / rd.MARKER).unlink()
    assert sorted(read_npz(d / "last.npz", text=("__meta__",)))  # a readable old file
    assert main(["eval", str(d), "--k", "2", "--n", "5", "--quiet", "--json"]) == 0
    assert main(["train", "--resume", str(d), "--epochs", "3", "--no-pictures", "--quiet"]) == 0
    assert not (d / "last.npz").exists() and not (d / "best.npz").exists()
    assert _params(d / "last.safetensors") == _params(reference / "last.safetensors")  # as if never interrupted
