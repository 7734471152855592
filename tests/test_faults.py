"""Faults a careful operator plants (issue 27): links in a run directory, foreign output directories, memory limits of
processes and containers, evaluations that would run for ever, SIGTERM and SIGHUP, a resume that would make a run's
records disagree, a read-only run directory, a run with no best checkpoint. Each asserts the one-line message, the
exit code and that nothing was lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from npvae.cli import main
from npvae.training.loop import load_state, read_meta
from npvae.vae import memory

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ["train", "--epochs", "2", "--no-pictures", "--quiet"]


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _params(path):
    return [a.tobytes() for a in load_state(path)[2].params]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished two-epoch digits run (copied by the tests that change it)."""
    d = tmp_path_factory.mktemp("ref") / "run"
    assert main([*TRAIN, "--out", str(d)]) == 0
    return d


def _copy(run, tmp_path) -> Path:
    import shutil

    return Path(shutil.copytree(run, tmp_path / "run"))


def _one_line_error(err: str, command: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and lines[-1].startswith(f"npvae {command}: error: ") and "Traceback" not in err, err
    return lines[-1]


# ---- nothing npvae writes goes through a link ----

def test_a_linked_lock_is_refused_and_its_target_left_whole(run, tmp_path, capsys):
    d = _copy(run, tmp_path)
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    (d / ".lock").unlink(missing_ok=True)
    (d / ".lock").symlink_to(target)
    assert main(["train", "--resume", str(d), "--epochs", "3", "--no-pictures", "--quiet"]) == 2
    line = _one_line_error(capsys.readouterr().err, "train")
    assert f"{d / '.lock'} is a symbolic link (to {target})" in line and "never writes through a link" in line
    assert target.read_text() == "keep me" and read_meta(d / "last.safetensors")["epoch"] == 2


def test_a_lock_that_is_a_directory_is_refused(run, tmp_path, capsys):
    d = _copy(run, tmp_path)
    (d / ".lock").unlink(missing_ok=True)
    (d / ".lock").mkdir()
    assert main(["train", "--resume", str(d), "--epochs", "3", "--no-pictures", "--quiet"]) == 2
    assert "is not a regular file" in _one_line_error(capsys.readouterr().err, "train")


@pytest.mark.parametrize("name", ["config.json", "history.json", "data.json", "metrics.json", "samples.png",
                                  "reconstructions.png"])
def test_every_file_written_replaces_a_planted_link_and_never_writes_through_it(run, tmp_path, name):
    d = _copy(run, tmp_path)
    target = tmp_path / f"target-of-{name}"
    target.write_text("keep me")
    (d / name).unlink(missing_ok=True)
    (d / name).symlink_to(target)
    assert main(["train", "--resume", str(d), "--epochs", "3", "--no-pictures", "--quiet"]) == 0
    assert main(["eval", str(d), "--k", "2", "--n", "5", "--quiet", "--json"]) == 0
    assert main(["sample", str(d)]) == 0
    assert target.read_text() == "keep me"
    assert not (d / name).is_symlink() and (d / name).is_file()


# ---- a directory of the user's own files is never written into ----

def test_explain_out_refuses_a_directory_of_the_users_files(tmp_path, capsys):
    d = tmp_path / "mine"
    d.mkdir()
    (d / "iwae.png").write_bytes(b"my picture")
    assert main(["explain", "iwae", "--quick", "--out", str(d)]) == 2
    line = _one_line_error(capsys.readouterr().err, "explain")
    assert f"{d} exists and is not an npvae explain directory (it holds iwae.png)" in line
    assert (d / "iwae.png").read_bytes() == b"my picture" and sorted(p.name for p in d.iterdir()) == ["iwae.png"]


@pytest.mark.slow
def test_explain_out_may_be_written_again(tmp_path):
    d = tmp_path / "explain"
    assert main(["explain", "iwae", "--quick", "--out", str(d)]) == 0
    assert main(["explain", "iwae", "--quick", "--out", str(d)]) == 0
    (d / ".npvae-explain").unlink()  # written by an npvae before the marker: its topic's JSON marks it
    assert main(["explain", "iwae", "--quick", "--out", str(d)]) == 0


def test_a_sweep_out_that_is_a_directory_of_the_users_files_is_refused(tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "report.txt").write_text("my own report")
    spec = tmp_path / "s.toml"
    spec.write_text(f'[sweep]\nout = "{mine}"\n[base]\ndataset = "digits"\nepochs = 1\n[grid]\nseed = [0]\n')
    for command in (["sweep", str(spec)], ["sweep", str(spec), "--report"]):
        assert main(command) == 2
        line = _one_line_error(capsys.readouterr().err, "sweep")
        assert f"{mine} exists and is not an npvae sweep directory (it holds report.txt)" in line
    assert sorted(p.name for p in mine.iterdir()) == ["report.txt"] and (mine / "report.txt").read_text() == "my own report"


# ---- memory: the smallest of the machine's, the process limit and the container's ----

def _fake_system(monkeypatch, files: dict):
    monkeypatch.setattr(memory, "read_text", lambda path: files.get(path))


def test_a_cgroup_v2_limit_bounds_what_is_available(monkeypatch):
    _fake_system(monkeypatch, {"/proc/meminfo": "MemTotal: 100000000 kB\nMemAvailable: 90000000 kB\n",
                               "/proc/self/cgroup": "0::/job\n", "/sys/fs/cgroup/job/memory.max": "1073741824\n",
                               "/sys/fs/cgroup/job/memory.current": "73741824\n"})
    assert memory.memory_limits()["the container's limit (cgroup)"] == 1_000_000_000
    assert memory.available_bytes() == 1_000_000_000
    with pytest.raises(memory.MemoryRequestError, match=r"but 953.7 MiB is available \(the container's limit \(cgroup\)\)"):
        memory.check_fits("a step", 2_000_000_000, "lower --batch-size")


def test_a_cgroup_v1_limit_in_a_namespace_and_no_limit(monkeypatch):
    files = {"/proc/meminfo": "MemAvailable: 90000000 kB\n", "/proc/self/cgroup": "4:memory:/outer/path\n0::/\n",
             "/sys/fs/cgroup/memory/memory.limit_in_bytes": "2000000000", "/sys/fs/cgroup/memory/memory.usage_in_bytes": "0"}
    _fake_system(monkeypatch, files)
    assert memory.available_bytes() == 2_000_000_000  # the container sees its own cgroup at the mount's root
    files["/sys/fs/cgroup/memory/memory.limit_in_bytes"] = "9223372036854771712"  # v1's "no limit"
    _fake_system(monkeypatch, {**files, "/sys/fs/cgroup/memory.max": "max"})
    assert memory.available_bytes() == 90000000 * 1024


def test_a_process_limit_refuses_training_that_the_machine_would_fit(tmp_path):
    """Under ulimit -v a model the machine fits is refused in one line (exit 2), before any directory is made."""
    import resource

    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (3 << 30, resource.RLIM_INFINITY)); "
            "from npvae.cli import main; sys.exit(main(sys.argv[1:]))")
    d = tmp_path / "run"
    r = subprocess.run([sys.executable, "-c", code, "train", "--arch", "64-4000-4000-2", "--batch-size", "2000", "--k", "50",
                        "--out", str(d), "--no-pictures", "--quiet"], env=_env(), capture_output=True, text=True, timeout=300)
    assert resource.RLIMIT_AS  # the platform has the limit this test plants
    assert r.returncode == 2, r.stderr
    line = _one_line_error(r.stderr, "train")
    assert "would need about" in line and "(the process limit (ulimit -v))" in line
    assert not d.exists()


def test_a_memory_error_that_still_happens_is_one_line(monkeypatch, capsys):
    from npvae import cli

    def out_of_memory(args):
        raise MemoryError()

    monkeypatch.setitem(cli.COMMANDS, "check", out_of_memory)
    assert cli.main(["check"]) == 2
    assert "out of memory" in _one_line_error(capsys.readouterr().err, "check")


# ---- every cost bounded before it is spent ----

def test_an_evaluation_that_would_run_for_years_is_refused_before_it_starts(run, capsys):
    before = (run / "metrics.json").read_bytes() if (run / "metrics.json").exists() else None
    t0 = time.perf_counter()
    assert main(["eval", str(run), "--k", "1e14"]) == 2
    line = _one_line_error(capsys.readouterr().err, "eval")
    assert "evaluating k=100000000000000 importance samples on 250 points would take about" in line
    assert "years on one process (the limit is 30.0 days): lower --k, or evaluate a subset with --n" in line
    assert time.perf_counter() - t0 < 30
    assert ((run / "metrics.json").read_bytes() if (run / "metrics.json").exists() else None) == before


def test_a_sweep_whose_evaluation_would_run_for_years_is_refused_before_anything_trains(tmp_path, capsys):
    spec = tmp_path / "s.toml"
    spec.write_text('[sweep]\nout = "runs"\n[base]\ndataset = "digits"\nepochs = 1\n[grid]\nseed = [0, 1]\n'
                    '[eval]\nk = 100000000000000\n')
    t0 = time.perf_counter()
    assert main(["sweep", str(spec), "--check"]) == 2
    line = _one_line_error(capsys.readouterr().err, "sweep")
    assert f"{spec}: run seed-0: evaluating k=100000000000000 importance samples on 250 points would take about" in line
    assert line.endswith("years on one process (the limit is 30.0 days): lower eval.k")
    assert main(["sweep", str(spec)]) == 2 and not list(tmp_path.glob("runs/seed-*"))  # no run was started
    assert time.perf_counter() - t0 < 60


# ---- SIGTERM and SIGHUP stop like Ctrl-C ----

@pytest.mark.parametrize("sig", ["SIGTERM", "SIGHUP"])
def test_sigterm_and_sighup_stop_training_cleanly_with_128_plus_n(tmp_path, sig):
    signum = getattr(signal, sig)
    d = tmp_path / "run"
    p = subprocess.Popen([sys.executable, "-m", "npvae.cli", "train", "--epochs", "100000", "--out", str(d), "--no-pictures"],
                         env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (d / "last.safetensors").exists() and time.time() < deadline and p.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)
    p.send_signal(signum)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 128 + signum, err
    assert "Traceback" not in err
    epoch = read_meta(d / "last.safetensors")["epoch"]
    assert f"stopped by {sig} during epoch {epoch + 1}; {d / 'last.safetensors'} holds epoch {epoch}" in err
    assert f"continue with: npvae train --resume {d}" in err
    assert not [q.name for q in d.iterdir() if q.name.endswith(".tmp")]
    assert main(["train", "--resume", str(d), "--epochs", str(epoch + 1), "--no-pictures", "--quiet"]) == 0


@pytest.mark.slow
def test_sigterm_outside_training_exits_143(run):
    p = subprocess.Popen([sys.executable, "-m", "npvae.cli", "eval", str(run), "--k", "10000000"], env=_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(8)  # in the evaluation (imports and the probe take a few seconds)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 143 and "npvae eval: interrupted (SIGTERM)" in err and "Traceback" not in err, err


# ---- the records of a run never disagree ----

def test_resume_with_fewer_epochs_than_done_is_refused_and_changes_nothing(run, tmp_path, capsys):
    d = _copy(run, tmp_path)
    config = (d / "config.json").read_bytes()
    assert main(["train", "--resume", str(d), "--epochs", "1", "--no-pictures", "--quiet"]) == 2
    line = _one_line_error(capsys.readouterr().err, "train")
    assert f"{d} has trained 2 epochs, more than the 1 asked for; give --epochs 2 or more" in line
    assert (d / "config.json").read_bytes() == config and json.loads(config)["epochs"] == 2


# ---- eval: numbers first, then the write; a run without best ----

def test_eval_on_a_run_directory_it_cannot_write_prints_the_numbers_first(run, tmp_path, monkeypatch, capsys):
    import npvae.cli.eval as cli_eval

    d = _copy(run, tmp_path)

    def read_only(path, obj, **kw):
        raise OSError(30, "Read-only file system", str(path))

    monkeypatch.setattr(cli_eval, "write_json", read_only)
    assert main(["eval", str(d), "--k", "2", "--n", "5", "--json"]) == 2
    captured = capsys.readouterr()
    assert json.loads(captured.out)["k"] == 2  # the numbers are out before the write is tried
    line = _one_line_error(captured.err, "eval")
    assert f"the numbers above are not saved: could not write {d / 'metrics.json'}" in line and "Read-only" in line


def test_eval_and_sample_of_a_run_without_best_use_last_and_say_so(run, tmp_path, capsys):
    """As the shipped reference runs: last only, its best epoch an earlier one (so best cannot be restored from it)."""
    from npvae.training.state import save_state

    d = _copy(run, tmp_path)
    config, arch, state = load_state(d / "last.safetensors")
    state.history["valid_bound"][1] = state.history["valid_bound"][0] - 1.0
    state.best_valid = state.history["valid_bound"][0]
    save_state(d / "last.safetensors", config, arch, state)
    assert read_meta(d / "last.safetensors")["best_epoch"] == 1
    (d / "best.safetensors").unlink()
    capsys.readouterr()
    assert main(["eval", str(d), "--k", "2", "--n", "5", "--json"]) == 0
    captured = capsys.readouterr()
    assert f"note: {d} has no best checkpoint (only last was kept); using last.safetensors" in captured.err
    assert json.loads(captured.out)["checkpoint"] == "last"
    assert main(["sample", str(d)]) == 0
    assert main(["eval", str(d), "--checkpoint", "best", "--k", "2", "--n", "5"]) == 2  # asked for by name: no fallback
    assert "holds no checkpoint best.safetensors" in _one_line_error(capsys.readouterr().err, "eval")
