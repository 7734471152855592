"""npvae sweep on a real Dask LocalCluster (loopback): bit-exact against npvae train, killed workers, reruns, the lock."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("distributed")

from npvae.store import run_dir as rd  # noqa: E402
from npvae.store.checkpoint import load_checkpoint  # noqa: E402
from npvae.cli import main  # noqa: E402
from npvae.training.config import TrainConfig  # noqa: E402
from npvae.sweeps.driver import run_sweep  # noqa: E402
from npvae.sweeps.spec import load_spec  # noqa: E402
from npvae.training.loop import load_state  # noqa: E402

pytestmark = pytest.mark.slow  # Dask clusters and killed workers (a minute): the full suite only, with the sweep extra

DATA = {"search_dirs": [], "cache_dir": None, "download": False}
TINY = """
[sweep]
out = "runs"
chunk_epochs = 1
[base]
dataset = "digits"
epochs = 3
arch = "64-16-2"
[grid]
k = [1, 3]
objective = {{ vae = {{ bound = "elbo" }}, iwae = {{ bound = "iwae", kl = "mc" }} }}
{extra}
"""


def _spec(tmp_path: Path, text: str, name: str = "spec.toml"):
    p = tmp_path / name
    p.write_text(text)
    return load_spec(p)


def _arrays(run_dir: Path) -> dict:
    return load_checkpoint(rd.checkpoint_path(run_dir, "last"))[0]


def _same_run(a: Path, b: Path) -> None:
    """Every array of the last checkpoints (parameters, Adam's moments) equal bit for bit, and the same history of bounds."""
    xa, xb = _arrays(a), _arrays(b)
    assert sorted(xa) == sorted(xb)
    for name in xa:
        assert np.array_equal(xa[name], xb[name]), f"{a.name}: {name} differs"
    ha, hb = load_state(rd.checkpoint_path(a, "last"))[2].history, load_state(rd.checkpoint_path(b, "last"))[2].history
    assert ha["valid_bound"] == hb["valid_bound"] and ha["train_bound"] == hb["train_bound"]


def _train_args(config: TrainConfig) -> list[str]:
    """npvae train's options for config (the fields that differ from the defaults)."""
    default, args = TrainConfig(), []
    for f in dataclasses.fields(config):
        v = getattr(config, f.name)
        if v != getattr(default, f.name):
            args += [f"--{f.name.replace('_', '-')}"] + ([] if isinstance(v, bool) else [str(v)])
    return args


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A finished 4-run sweep (3 epochs, a chunk per epoch, an evaluation at epoch 2 and at the end) on 2 workers."""
    tmp = tmp_path_factory.mktemp("sweep")
    spec = _spec(tmp, TINY.format(extra="[eval]\nk = 20\nepochs = [2]"))
    events = []
    result = run_sweep(spec, DATA, workers=2, dashboard=False, log=lambda *a, **k: None,
                       on_event=lambda kind, run, res, client: events.append((kind, run.point.name, res)))
    return spec, result, events


def test_a_sweep_matches_npvae_train_bit_for_bit(tiny, tmp_path):
    spec, result, events = tiny
    assert result["failed"] == {} and len(spec.points) == 4
    assert sum(kind == "train" for kind, _, _ in events) == 4 * 3  # a chunk per epoch: every run resumed twice
    for p in spec.points:
        ref = tmp_path / p.name
        assert main(["train", *_train_args(p.config), "--out", str(ref), "--quiet", "--no-pictures"]) == 0
        _same_run(spec.out / p.name, ref)
        evals = [(e["epoch"], e["checkpoint_epoch"], e["k"], e["split"])
                 for e in __import__("json").loads((spec.out / p.name / "evals.json").read_text())]
        assert evals == [(2, 2, 20, "test"), (3, 3, 20, "test")]


def test_rerunning_a_finished_sweep_does_no_work(tiny):
    spec, _, _ = tiny
    before = {p: p.stat().st_mtime_ns for p in spec.out.rglob("*") if p.is_file() and p.name != ".lock"}
    result = run_sweep(spec, DATA, workers=2, dashboard=False, log=lambda *a, **k: None)
    assert result["tasks"] == 0
    assert {p: p.stat().st_mtime_ns for p in spec.out.rglob("*") if p.is_file() and p.name != ".lock"} == before


def test_an_edited_grid_adds_only_the_new_points(tiny):
    spec, _, _ = tiny
    text = spec.path.read_text().replace("k = [1, 3]", "k = [1, 3, 2]")
    edited = _spec(spec.path.parent, text, "edited.toml")
    before = {p.name: _arrays(spec.out / p.name)["param.decoder.0.W"].copy() for p in spec.points}
    touched = set()
    result = run_sweep(edited, DATA, workers=2, dashboard=False, log=lambda *a, **k: None,
                       on_event=lambda kind, run, res, client: touched.add(run.point.name))
    assert result["failed"] == {}
    assert touched == {"k-2_objective-vae", "k-2_objective-iwae"}
    for name, w in before.items():
        assert np.array_equal(_arrays(spec.out / name)["param.decoder.0.W"], w)


def test_a_killed_worker_costs_a_chunk_and_the_sweep_still_matches_an_uninterrupted_run(tmp_path):
    spec = _spec(tmp_path, """
[sweep]
out = "runs"
chunk_epochs = 10
[base]
dataset = "digits"
epochs = 20
batch_size = 10
bound = "iwae"
kl = "mc"
k = 10
[grid]
seed = [0, 1]
""")
    killed, results = [], []

    def killer(client):  # once seed-0 is a few epochs into its second chunk, SIGKILL the worker training it
        history = spec.out / "seed-0" / "history.json"
        deadline = time.time() + 60
        while time.time() < deadline and not killed:
            try:
                epochs = len(__import__("json").loads(history.read_text())["epoch"])
            except (OSError, ValueError):
                epochs = 0
            if epochs >= 13:
                for addr, keys in client.processing().items():
                    if any(str(k).startswith("train-seed-0-e20") for k in keys):
                        pid = client.run(os.getpid, workers=[addr])[addr]
                        os.kill(pid, signal.SIGKILL)
                        killed.append((pid, epochs))
                        return
            time.sleep(0.02)

    def on_event(kind, run, res, client):
        results.append((run.point.name, res))
        if len(results) == 1:
            threading.Thread(target=killer, args=(client,), daemon=True).start()

    result = run_sweep(spec, DATA, workers=2, dashboard=False, log=lambda *a, **k: None, on_event=on_event)
    assert killed, "the worker training seed-0 was never killed"
    assert result["failed"] == {}
    resumed = [r["started_at"] for name, r in results if name == "seed-0" and r["epoch"] == 20]
    assert resumed and 10 < resumed[-1] < 20, f"the retried chunk did not resume mid-chunk: {resumed}"
    for p in spec.points:
        d = spec.out / p.name
        assert not [f.name for f in d.iterdir() if f.name.endswith(".tmp")] and not (d / "diverged.json").exists()
        assert load_state(rd.checkpoint_path(d, "last"))[2].epoch == 20
        ref = tmp_path / "ref" / p.name
        assert main(["train", *_train_args(p.config), "--out", str(ref), "--quiet", "--no-pictures"]) == 0
        _same_run(d, ref)


def _kill_when_processing(client, prefix: str, killed: list, timeout: float = 60) -> None:
    """SIGKILL the first worker seen processing a task whose key starts with prefix."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for addr, keys in client.processing().items():  # only such tasks: processing() lists queued ones too
            if keys and all(str(k).startswith(prefix) for k in keys):
                try:
                    pid = client.run(os.getpid, workers=[addr])[addr]
                    os.kill(pid, signal.SIGKILL)
                except OSError:  # the worker finished or went away between the two calls (CommClosedError): look again
                    continue
                killed.append(pid)
                return
        time.sleep(0.01)


def test_a_worker_killed_during_an_evaluation_loses_nothing(tmp_path):
    from npvae.evaluation.chunks import evaluate_chunked
    from npvae.vae.models import unflatten
    from npvae.sweeps.tasks import dataset_for

    spec = _spec(tmp_path, """
[sweep]
out = "runs"
[base]
dataset = "digits"
epochs = 1
[grid]
seed = [0, 1]
[eval]
k = 1000
split = "train"
""")
    killed = []

    def on_event(kind, run, res, client):
        if kind == "train" and not killed:
            threading.Thread(target=_kill_when_processing, args=(client, "eval-chunk", killed), daemon=True).start()

    result = run_sweep(spec, DATA, workers=2, dashboard=False, log=lambda *a, **k: None, on_event=on_event)
    assert killed and result["failed"] == {}
    for p in spec.points:
        rows = __import__("json").loads((spec.out / p.name / "evals.json").read_text())
        assert [r["epoch"] for r in rows] == [1]
        config, arch, state = load_state(rd.checkpoint_path(spec.out / p.name, "last"))
        data = dataset_for(config, DATA)
        m = evaluate_chunked(unflatten(arch, state.params), arch, data.train, k=1000, run_seed=config.seed, x_active=data.train)
        assert (rows[0]["nll"], rows[0]["nll_se"], rows[0]["kl"]) == (m["nll"], m["nll_se"], m["kl"])


def test_a_second_sweep_on_the_same_directory_is_refused(tmp_path):
    spec_path = tmp_path / "slow.toml"
    spec_path.write_text('[sweep]\nout = "runs"\nchunk_epochs = 50\n[base]\ndataset = "digits"\nepochs = 200\n'
                         'batch_size = 10\n[grid]\nseed = [0]\n')
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "first.log"
    with open(log, "w") as out_file:
        first = subprocess.Popen([sys.executable, "-m", "npvae.cli", "sweep", str(spec_path), "--workers", "1"],
                                 stdout=out_file, stderr=subprocess.STDOUT, env=env, text=True,
                                 preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # not ignored, as under `&`
    try:
        lock = tmp_path / "runs" / rd.LOCK
        deadline = time.time() + 60
        while time.time() < deadline and not (lock.exists() and lock.read_text().strip() == str(first.pid)):
            time.sleep(0.1)
        assert lock.read_text().strip() == str(first.pid)
        second = subprocess.run([sys.executable, "-m", "npvae.cli", "sweep", str(spec_path), "--workers", "1"],
                                capture_output=True, text=True, env=env, timeout=120)
        assert second.returncode == 2
        assert "in use by another npvae process" in second.stderr and str(first.pid) in second.stderr
        # Ctrl-C once its cluster is up (a Ctrl-C during Dask's start-up is held by npvae.evaluation.cluster.connect, but one run
        # in ~6 of this test ended -2 with no output there: not understood, see bench/RESULTS.md, issue 15)
        while time.time() < deadline and "Dask dashboard" not in log.read_text():
            time.sleep(0.1)
    finally:
        first.send_signal(signal.SIGINT)
        first.wait(timeout=60)
    out = log.read_text()
    assert first.returncode == 130, out


def test_the_report_has_a_row_per_run_with_its_latest_evaluation(tiny):
    import csv
    import json

    from npvae.sweeps.report import write_report

    spec, _, _ = tiny
    md, paths = write_report(spec)
    assert [p.name for p in paths] == ["report.md", "report.csv", "report.png"] and all(p.stat().st_size > 0 for p in paths)
    rows = list(csv.DictReader(paths[1].read_text().splitlines()))
    assert [r["run"] for r in rows] == [p.name for p in spec.points]
    for r, p in zip(rows, spec.points):
        last = json.loads((spec.out / p.name / "evals.json").read_text())[-1]
        assert (r["epochs_done"], r["eval_epoch"], float(r["nll"])) == ("3", "3", last["nll"])
        assert f"| {p.name} | {p.config.k} | {p.values['objective']} | 3/3 |" in md
        assert f"{last['nll']:.2f} +- {last['nll_se']:.2f}" in md


def test_the_verdict_follows_two_standard_errors_plus_rounding_at_the_end_only():
    from npvae.sweeps.report import verdict

    row = {"published_nll": 87.63, "nll_se": 0.24, "epochs": 3280, "eval_epoch": 3280}
    assert verdict({**row, "nll": 87.63 + 0.48}).startswith("reproduced")
    assert verdict({**row, "nll": 87.63 - 0.48}).startswith("reproduced")  # 2 s.e. = 0.48, + 0.005
    assert verdict({**row, "nll": 87.63 + 0.49}).startswith("not reproduced")
    assert verdict({**row, "nll": 87.63 - 0.49}).startswith("not reproduced")
    assert verdict({**row, "nll": 87.0, "eval_epoch": 40}).startswith("not yet")


def test_a_run_trained_past_a_lowered_epochs_is_evaluated_where_it_stands(tmp_path):
    text = '[sweep]\nout = "runs"\n[base]\ndataset = "digits"\nepochs = 2\narch = "64-8-2"\n[grid]\nseed = [0]\n'
    spec = _spec(tmp_path, text)
    assert run_sweep(spec, DATA, workers=1, dashboard=False, log=lambda *a, **k: None)["failed"] == {}
    lowered = _spec(tmp_path, text.replace("epochs = 2", "epochs = 1") + "[eval]\nk = 5\n", "lowered.toml")
    result = run_sweep(lowered, DATA, workers=1, dashboard=False, log=lambda *a, **k: None)
    assert result["failed"] == {} and result["tasks"] == 1
    rows = __import__("json").loads((spec.out / "seed-0" / "evals.json").read_text())
    assert [(r["epoch"], r["checkpoint_epoch"]) for r in rows] == [(2, 2)]
    assert load_state(rd.checkpoint_path(spec.out / "seed-0", "last"))[2].epoch == 2  # not trained any further


def test_a_failing_run_is_reported_and_the_others_finish(tmp_path):
    spec = _spec(tmp_path, '[sweep]\nout = "runs"\n[base]\ndataset = "digits"\nepochs = 2\narch = "64-8-2"\n'
                           '[grid]\nlr = [1e-3, 1e30]\n')
    result = run_sweep(spec, DATA, workers=2, dashboard=False, log=lambda *a, **k: None)
    assert list(result["failed"]) == ["lr-1e+30"] and "TrainingDiverged" in result["failed"]["lr-1e+30"]
    assert load_state(rd.checkpoint_path(spec.out / "lr-0.001", "last"))[2].epoch == 2
