"""Inputs that used to be accepted but wrong, absurd sizes, and the command line's messages (issue 12)."""

from __future__ import annotations

import dataclasses
import json
import tracemalloc

import numpy as np
import pytest

from npvae import Arch, init_params, models, objective
from npvae.cli import build_parser, main
from npvae.training.config import TrainConfig
from npvae.store.data import load
from npvae.vae.ladder import LadderArch
from npvae.vae.memory import MemoryRequestError, check_fits, step_bytes
from npvae.vae.model import flatten
from npvae.nn.optim import adam_init, adam_update
from npvae.training.loop import AbsurdBoundWarning, load_state, save_state, train

ONE = ["train", "--epochs", "1", "--no-pictures", "--quiet"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs") / "run"
    assert main([*ONE, "--out", str(d)]) == 0
    return d


@pytest.mark.parametrize("argv", [["eval", "RUN", "--n", "-5"], ["eval", "RUN", "--n", "0"], ["eval", "RUN", "--k", "0"],
                                  ["train", "--threads", "0"], ["train", "--threads", "-1"], ["eval", "RUN", "--threads", "0"],
                                  ["train", "--dataset", "cifar"]])
def test_nonsense_options_are_refused_by_the_parser(argv, capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(argv)
    assert e.value.code == 2
    assert "error: argument" in capsys.readouterr().err


def test_n_larger_than_the_split_is_refused(run, capsys):
    assert main(["eval", str(run), "--n", "251", "--k", "2"]) == 2
    assert "only 250" in capsys.readouterr().err


def _forged(run, tmp_path, **changes):
    """A copy of run's last checkpoint with the state edited, re-saved so that every hash matches."""
    config, arch, state = load_state(run / "last.safetensors")
    history = changes.pop("history", state.history)
    state = dataclasses.replace(state, history=history, **changes)
    path = tmp_path / "last.safetensors"
    save_state(path, config, arch, state)
    return path


@pytest.mark.parametrize("change, words", [
    (dict(epoch=5), "history"),
    (dict(epoch=-1), "epoch must be an integer >= 0"),
    (dict(step=3), "Adam has taken"),
    (dict(best_valid=12.0), "best_valid"),
    (dict(history={"epoch": [1], "train_bound": [1.0], "valid_bound": [float("nan")], "kl_weight": [1.0], "seconds": [0.1]}), "finite"),
    (dict(history={"epoch": [1], "train_bound": [1.0], "valid_bound": [1.0], "kl_weight": [1.0], "seconds": [0.1], "junk": []}), "keys"),
    (dict(history={"epoch": [7], "train_bound": [1.0], "valid_bound": [1.0], "kl_weight": [1.0], "seconds": [0.1]}), "1..1"),
])
def test_checkpoint_with_matching_hashes_but_nonsense_state_is_refused(run, tmp_path, change, words):
    path = _forged(run, tmp_path, **change)
    with pytest.raises(ValueError, match="training state is unusable") as e:
        load_state(path)
    assert words in str(e.value)


def test_forged_checkpoint_is_a_clear_cli_error(run, tmp_path, capsys):
    d = tmp_path / "copy"
    d.mkdir()
    _forged(run, d, epoch=5)
    assert main(["eval", str(d), "--checkpoint", "last", "--k", "2"]) == 2
    assert "training state is unusable" in capsys.readouterr().err


@pytest.mark.parametrize("split", ["train", "valid"])
def test_empty_split_is_a_clear_error(tmp_path, split):
    data = load("digits")
    empty = dataclasses.replace(data, **{split: data.train[:0], f"{split}_labels": None})
    with pytest.raises(ValueError, match=f"the {split} split is empty"):
        train(TrainConfig(epochs=1), empty, tmp_path / "run", progress=False, log=lambda *a: None)
    assert not (tmp_path / "run").exists()


def test_an_exploding_but_finite_bound_warns_once(tmp_path):
    with pytest.warns(AbsurdBoundWarning, match="training is blowing up") as record:
        train(TrainConfig(epochs=2, lr=3.0), load("digits"), tmp_path / "run", progress=False, log=lambda *a: None)
    assert len([w for w in record if w.category is AbsurdBoundWarning]) == 1


def test_a_sane_run_does_not_warn(tmp_path, recwarn):
    train(TrainConfig(epochs=2), load("digits"), tmp_path / "run", progress=False, log=lambda *a: None)
    assert not [w for w in recwarn if issubclass(w.category, (RuntimeWarning, AbsurdBoundWarning))]


def test_divergence_says_there_is_no_checkpoint_when_there_is_none(tmp_path, capsys):
    assert main([*ONE, "--lr", "30", "--out", str(tmp_path / "run")]) == 3
    err = capsys.readouterr().err
    assert "no epoch was completed, so there is no checkpoint" in err and "untouched" not in err


@pytest.mark.parametrize("argv, option", [
    (["-k", "1000000000000"], "-k"),
    (["-k", "100000000000", "--bound", "iwae", "--kl", "mc"], "-k"),
    (["--arch", "64-100000000000-2"], "--arch"),
    (["--valid-k", "1000000000000"], "--valid-k"),
])
def test_absurd_sizes_are_refused_before_allocating(tmp_path, capsys, argv, option):
    assert main([*ONE, *argv, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "would need about" in err and "is available" in err and option in err
    assert not (tmp_path / "run").exists()


def test_check_fits_compares_with_what_is_given():
    check_fits("x", 10, "advice", available=10)
    with pytest.raises(MemoryRequestError, match="1.0 KiB of memory, but 10 B is available: advice"):
        check_fits("x", 1024, "advice", available=10)


@pytest.mark.parametrize("arch, n, k", [(Arch(784, (200, 200), 50), 20, 5), (Arch(784, (400,), 20, activation="relu"), 128, 1),
                                        (Arch(64, (32,), 2), 10, 50),
                                        (LadderArch(784, ((200, 200), (100, 100)), (100, 50)), 20, 5),
                                        (LadderArch.parse("784-200-100:100-50:50-20"), 20, 5)])
def test_step_estimate_bounds_the_real_peak_within_a_small_factor(arch, n, k):
    """tracemalloc sees numpy's allocations: the estimate must be above one step's peak, and not far above."""
    rng = np.random.default_rng(0)
    params = models.init_params(arch, rng, np.float64)
    x = (rng.random((n, arch.data_dim)) < 0.3).astype(np.float64)
    eps = rng.standard_normal((k, n, arch.noise_dim))
    flat = models.flatten(params)
    adam = adam_init(flat)
    objective(params, arch, x, eps, bound="iwae" if k > 1 else "elbo", kl="mc")  # warm caches outside the trace
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    value, grads = objective(params, arch, x, eps, bound="iwae" if k > 1 else "elbo", kl="mc")
    new, adam = adam_update(flat, [-g for g in models.flatten(grads)], adam, 1e-3, (0.9, 0.999), 1e-8)
    peak = tracemalloc.get_traced_memory()[1] - before
    tracemalloc.stop()
    held = sum(a.nbytes for a in flat) * 3  # params and Adam's two moments, already allocated before the trace
    estimate = step_bytes(arch, n, k, 8)
    assert peak + held <= estimate <= 2 * (peak + held), (peak + held, estimate)


def test_quiet_prints_no_epoch_lines_and_counts_are_singular(tmp_path, capsys):
    assert main([*ONE, "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "epoch    1" not in out and "done, 1 epoch," in out


def test_version_and_help_texts(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("npvae 0.")
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, p in sub.choices.items():
        assert p.description, name
        if name == "bench":
            continue
        for action in p._actions:
            if action.dest != "help":
                assert action.help, f"{name} {action.dest}"


def test_run_remembers_where_its_data_came_from(run, tmp_path, monkeypatch, capsys):
    import npvae.store.data

    seen = []
    real = npvae.store.data.load
    monkeypatch.setattr(npvae.store.data, "load", lambda name, **kw: seen.append(kw["search_dirs"]) or real(name, **kw))
    here = tmp_path / "datadir"
    here.mkdir()
    (run / "data.json").write_text(json.dumps({"dataset": "digits", "dir": str(here)}))
    assert main(["sample", str(run)]) == 0
    assert seen[-1][0] == here
    (run / "data.json").write_text(json.dumps({"dataset": "digits", "dir": str(tmp_path / "gone")}))
    capsys.readouterr()
    assert main(["eval", str(run), "--k", "2", "--n", "5", "--quiet"]) == 0
    assert f"the run's data came from {tmp_path / 'gone'}, which is gone" in capsys.readouterr().err
    (run / "data.json").write_text(json.dumps({"dataset": "digits", "dir": None}))


def test_train_records_the_data_directory(tmp_path):
    data = dataclasses.replace(load("digits"), source="/somewhere")
    train(TrainConfig(epochs=1), data, tmp_path / "run", progress=False, log=lambda *a: None, data_source={"dataset": "digits", "dir": data.source})
    assert json.loads((tmp_path / "run" / "data.json").read_text()) == {"dataset": "digits", "dir": "/somewhere"}


def test_checkpoints_are_as_readable_as_the_other_files(run):
    modes = {p.name: p.stat().st_mode & 0o777 for p in run.iterdir() if not p.name.startswith(".")}
    assert len(set(modes.values())) == 1, modes




def test_eval_progress_moves_inside_a_batch_and_counts_every_sample():
    """With k = 10^9 a batch of points takes hours: progress must come per chunk of samples, not per batch."""
    from npvae.evaluation.evaluate import evaluate

    rng = np.random.default_rng(0)
    arch = Arch(64, (16,), 2)
    params = init_params(arch, rng, np.float64)
    x = (rng.random((30, 64)) < 0.3).astype(np.float64)
    for backend in ("numpy", "numba"):
        ticks = []
        evaluate(params, arch, x, np.random.default_rng(1), k=8000, batch=10, progress=ticks.append, backend=backend)
        assert sum(ticks) == 30 * 8000
        assert len(ticks) >= 3 * 2  # several updates per batch of 10 points


def test_k_may_be_written_in_scientific_notation():
    assert build_parser().parse_args(["eval", "RUN", "--k", "1e9"]).k == 10**9
