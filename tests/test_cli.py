"""The `npvae` command line on tiny data: train -> eval -> sample -> resume, and clear errors for hostile input."""

import json
import subprocess
import sys

import numpy as np
import pytest

from npvae import cli
from npvae.training.loop import load_state


def run(*argv):
    return cli.main([str(a) for a in argv])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("run")
    assert run("train", "--epochs", 2, "--out", d, "--quiet", "--no-pictures") == 0
    return d


def test_train_eval_sample_resume(trained, capsys, tmp_path):
    assert run("eval", trained, "--k", 20, "--n", 50, "--json") == 0
    m = json.loads(capsys.readouterr().out)
    assert m["n_points"] == 50 and m["k"] == 20
    assert m["nll"] > 0 and np.isfinite(m["nll_se"])
    # The importance-sampled log p(x) is (in expectation) at least the ELBO.
    assert -m["nll"] >= m["elbo"] - 5 * m["elbo_se"]
    assert json.loads((trained / "metrics.json").read_text())["nll"] == m["nll"]

    assert run("eval", trained, "--k", 5, "--n", 20) == 0
    assert "-log p(x) (k=5)" in capsys.readouterr().out

    run_dir = tmp_path / "r"
    assert run("train", "--epochs", 1, "--out", run_dir, "--quiet", "--no-pictures") == 0
    assert run("train", "--resume", run_dir, "--epochs", 2, "--quiet", "--no-pictures") == 0
    a, b = load_state(trained / "last.safetensors")[2], load_state(run_dir / "last.safetensors")[2]
    assert all(np.array_equal(x, y) for x, y in zip(a.params, b.params))


def test_sample_draws_pictures(trained, capsys):
    pytest.importorskip("npvae.pictures.plots")
    assert run("sample", trained) == 0
    assert (trained / "samples.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (trained / "reconstructions.png").exists()


def test_train_refuses_to_overwrite_a_run(trained, capsys):
    assert run("train", "--epochs", 1, "--out", trained, "--quiet") == 2
    assert "already holds a run" in capsys.readouterr().err


def _copy_run(src, dst):
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "pickle"])
def test_damaged_checkpoints_are_refused(trained, tmp_path, capsys, damage):
    d = _copy_run(trained, tmp_path / "copy")
    ck = d / "best.safetensors"
    data = ck.read_bytes()
    if damage == "truncate":
        ck.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        b = bytearray(data)
        b[len(b) // 3] ^= 0x01
        ck.write_bytes(bytes(b))
    elif damage == "garbage":
        ck.write_bytes(b"not a checkpoint" * 100)
    else:
        marker = tmp_path / "pwned"

        class Evil:
            def __reduce__(self):
                return (open, (str(marker), "w"))

        with open(ck, "wb") as f:
            np.savez(f, evil=np.array([Evil()], dtype=object))
    assert run("eval", d, "--k", 2, "--n", 2) == 2
    err = capsys.readouterr().err
    assert "checkpoint" in err and "Traceback" not in err
    if damage == "pickle":
        assert not (tmp_path / "pwned").exists()


def test_missing_run_and_missing_data_are_clear(tmp_path, capsys):
    assert run("eval", tmp_path / "nowhere") == 2
    assert "nowhere" in capsys.readouterr().err
    assert run("train", "--dataset", "mnist", "--binarize", "--data-dir", tmp_path, "--epochs", 1, "--out", tmp_path / "m", "--quiet") == 2
    err = capsys.readouterr().err
    assert "train-images-idx3-ubyte" in err and str(tmp_path) in err


def test_bad_options_are_clear(tmp_path, capsys):
    assert run("train", "--bound", "iwae", "--kl", "analytic", "--out", tmp_path / "x") == 2
    assert "no analytic-KL form" in capsys.readouterr().err
    assert run("train", "--arch", "10-5-2", "--out", tmp_path / "y", "--quiet") == 2
    assert "D=10 but the data set has D=64" in capsys.readouterr().err


def test_console_script_runs_as_a_process(tmp_path):
    """The real entry point, as a user types it: no arguments trains the embedded digits."""
    out = subprocess.run([sys.executable, "-m", "npvae.cli", "train", "--epochs", "1", "--out", str(tmp_path / "p"), "--no-pictures"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert str(tmp_path / "p") in out.stdout


def test_explain_writes_its_numbers_and_pictures(tmp_path, capsys):
    assert run("explain", "joint", "--quick", "--out", tmp_path) == 0
    assert (tmp_path / "joint.json").exists() and (tmp_path / "joint.png").exists()
    assert str(tmp_path / "joint.png") in capsys.readouterr().out
    assert run("explain", "nonsense") == 2  # argparse refuses an unknown topic, listing the choices


def test_resume_refuses_options_it_would_ignore(trained, capsys):
    assert run("train", "--resume", trained, "--epochs", 3, "--lr", 0.1, "--activation", "relu", "--quiet") == 2
    err = capsys.readouterr().err
    assert "--activation, --lr cannot change" in err and "only --epochs and --backend" in err
    assert load_state(trained / "last.safetensors")[2].epoch == 2  # nothing was trained


def test_sample_draws_the_whole_history_not_the_best_epochs(tmp_path, monkeypatch):
    """best.safetensors carries the history up to the best epoch; the curves must show the run to its last epoch."""
    pytest.importorskip("npvae.pictures.plots")
    import shutil

    import npvae.pictures.plots

    d = tmp_path / "r"
    assert run("train", "--epochs", 1, "--out", d, "--quiet", "--no-pictures") == 0
    shutil.copy(d / "last.safetensors", tmp_path / "epoch1.npz")
    assert run("train", "--resume", d, "--epochs", 2, "--quiet", "--no-pictures") == 0
    shutil.copy(tmp_path / "epoch1.npz", d / "best.safetensors")  # as if epoch 1 had been the best
    seen = {}
    monkeypatch.setattr(npvae.pictures.plots, "run_pictures", lambda *a, history, **k: seen.setdefault("epochs", history["epoch"]) and [])
    assert run("sample", d) == 0
    assert seen["epochs"] == [1, 2]


def test_adam_betas_are_options(tmp_path):
    assert run("train", "--epochs", 1, "--beta1", 0.5, "--beta2", 0.9, "--out", tmp_path / "b", "--quiet", "--no-pictures") == 0
    cfg = json.loads((tmp_path / "b" / "config.json").read_text())
    assert (cfg["beta1"], cfg["beta2"]) == (0.5, 0.9)


@pytest.mark.parametrize("argv", [["bench", "--help"], ["bench", "--", "--help"]])
def test_bench_passes_its_options_on(argv, capsys):
    with pytest.raises(SystemExit) as e:
        run(*argv)
    assert e.value.code == 0 and "bench_train.py" in capsys.readouterr().out
