"""The trainer: bit-exact resume, best/last checkpoints, non-finite stops, and the config's guard rails."""

import json

import numpy as np
import pytest

from npvae.training.config import TrainConfig
from npvae.store.data import load
from npvae.training.loop import TrainingDiverged, load_state, train


@pytest.fixture(scope="module")
def digits():
    return load("digits")


def test_resume_is_bit_identical(tmp_path, digits):
    """2 epochs straight == 1 epoch + resume 1 epoch: parameters, Adam state and every Generator."""
    cfg = TrainConfig(epochs=2, bound="iwae", k=3, kl="mc", estimator="dreg", batch_size=64)
    straight = train(cfg, digits, tmp_path / "a", progress=False, log=lambda s: None)
    train(TrainConfig(**{**cfg.to_dict(), "epochs": 1}), digits, tmp_path / "b", progress=False, log=lambda s: None)
    resumed = train(cfg, digits, tmp_path / "b", resume=True, progress=False, log=lambda s: None)
    for a, b in zip(straight.params + list(straight.adam.m) + list(straight.adam.v), resumed.params + list(resumed.adam.m) + list(resumed.adam.v)):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    for name in straight.rngs:
        assert straight.rngs[name].bit_generator.state == resumed.rngs[name].bit_generator.state
    assert straight.history["valid_bound"] == resumed.history["valid_bound"]


def test_checkpoints_and_history(tmp_path, digits):
    state = train(TrainConfig(epochs=3, dtype="float32"), load("digits", dtype=np.float32), tmp_path, progress=False, log=lambda s: None)
    for f in ("config.json", "last.safetensors", "best.safetensors", "history.json"):
        assert (tmp_path / f).exists(), f
    cfg, arch, last = load_state(tmp_path / "last.safetensors")
    assert cfg.dtype == "float32" and last.params[0].dtype == np.float32 and last.epoch == 3
    h = json.loads((tmp_path / "history.json").read_text())
    assert h["epoch"] == [1, 2, 3] and h["valid_bound"] == state.history["valid_bound"]
    _, _, best = load_state(tmp_path / "best.safetensors")
    assert best.best_valid == max(h["valid_bound"])


def test_nan_mid_training_stops_and_keeps_the_last_good_checkpoint(tmp_path, digits, monkeypatch):
    import npvae.training.loop as T

    cfg = TrainConfig(epochs=3)
    train(TrainConfig(**{**cfg.to_dict(), "epochs": 1}), digits, tmp_path, progress=False, log=lambda s: None)
    before = (tmp_path / "last.safetensors").read_bytes()
    real_get, calls = T.get_backend, {"n": 0}

    def poisoned_backend(name):  # the trainer's backend, whose fifth gradient has a NaN
        backend = real_get(name)

        def poisoned(*a, **kw):
            value, grads = backend.bound_and_grad(*a, **kw)
            calls["n"] += 1
            if calls["n"] == 5:  # mid-epoch
                grads.decoder[0].W[0, 0] = np.nan
            return value, grads

        return backend._replace(bound_and_grad=poisoned)

    monkeypatch.setattr(T, "get_backend", poisoned_backend)
    with pytest.raises(TrainingDiverged, match="non-finite bound or gradient at epoch 2"):
        train(cfg, digits, tmp_path, resume=True, progress=False, log=lambda s: None)
    assert (tmp_path / "last.safetensors").read_bytes() == before
    diag = json.loads((tmp_path / "diverged.json").read_text())
    assert diag["epoch"] == 1 and diag["grads_nonfinite"] == {"decoder.0.W": 1} and diag["last_good_checkpoint"].endswith("last.safetensors")
    assert set(diag["param_max_abs"]) == {"encoder.0.W", "encoder.0.b", "encoder.1.W", "encoder.1.b",
                                          "decoder.0.W", "decoder.0.b", "decoder.1.W", "decoder.1.b"}
    monkeypatch.setattr(T, "get_backend", real_get)
    train(TrainConfig(**{**cfg.to_dict(), "epochs": 2}), digits, tmp_path, resume=True, progress=False, log=lambda s: None)
    assert not (tmp_path / "diverged.json").exists()  # the report of the failed attempt does not outlive it


def test_bernoulli_on_data_outside_0_1_points_to_a_gaussian_likelihood(tmp_path):
    synthetic = load("synthetic", seed=0)
    with pytest.raises(ValueError, match="not in \\[0, 1\\]: use --likelihood gaussian"):
        train(TrainConfig(dataset="synthetic", epochs=1), synthetic, tmp_path / "r", progress=False, log=lambda s: None)
    assert not (tmp_path / "r").exists()  # refused before the run directory is made


def test_checkpoint_whose_training_state_is_incomplete_is_refused(tmp_path, digits):
    from npvae.store.checkpoint import load_checkpoint, save_checkpoint

    train(TrainConfig(epochs=1), digits, tmp_path, progress=False, log=lambda s: None)
    arrays, meta = load_checkpoint(tmp_path / "last.safetensors")
    for key in ("rngs", "epoch"):
        broken = {k: v for k, v in meta.items() if k != key}
        save_checkpoint(tmp_path / "broken.npz", arrays, broken)  # a valid file whose metadata lacks a field
        with pytest.raises(ValueError, match="training state is unusable"):
            load_state(tmp_path / "broken.npz")
    meta["rngs"].pop("eps")
    save_checkpoint(tmp_path / "broken.npz", arrays, meta)
    with pytest.raises(ValueError, match="random streams"):
        load_state(tmp_path / "broken.npz")


def test_warmup_and_lr_schedule():
    c = TrainConfig(warmup_epochs=2, kl_weight=0.5)
    assert c.kl_weight_at(0, 0, 10) == 0.0
    assert c.kl_weight_at(1, 0, 10) == pytest.approx(0.25)
    assert c.kl_weight_at(5, 3, 10) == 0.5
    b = TrainConfig(lr_schedule="burda", lr=1.0)
    # Burda et al. 2016: stage i lasts 3^i epochs at 10^(-i/7): epochs [0], [1, 3], [4, 12], [13, 39], ...
    assert [b.lr_at(e) for e in (0, 1, 3, 4, 12, 13)] == pytest.approx([1, 10 ** (-1 / 7), 10 ** (-1 / 7), 10 ** (-2 / 7), 10 ** (-2 / 7), 10 ** (-3 / 7)])


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(bound="iwae", kl="analytic"), "no analytic-KL form"),
        (dict(k=0), "k must be"),
        (dict(dtype="float16"), "dtype must be one of"),
        (dict(lr=-1.0), "lr must be"),
        (dict(free_bits=1.0, kl="mc"), "free bits need the analytic KL"),
        (dict(bound="iwae", kl="mc", k=5, warmup_epochs=3), "warm-up applies to the ELBO"),
    ],
)
def test_bad_config(kw, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kw)


def test_arch_must_match_the_data(tmp_path, digits):
    with pytest.raises(ValueError, match="D=784 but the data set has D=64"):
        train(TrainConfig(arch="784-10-2", epochs=1), digits, tmp_path, progress=False)


def test_bernoulli_on_grey_data_is_an_error_with_a_hint(tmp_path, digits):
    from npvae.store.data import Dataset

    grey = Dataset("grey-digits", digits.train * 0.5, digits.valid * 0.5, digits.test * 0.5, image_shape=(8, 8), binary=False)
    with pytest.raises(ValueError, match="grey-digits is grey-level: add --binarize"):
        train(TrainConfig(epochs=1), grey, tmp_path / "r", progress=False)
    assert not (tmp_path / "r").exists()


@pytest.mark.skipif(not __import__("os").path.isdir("/usr/share/datasets/fashion-mnist"), reason="needs Debian's dataset-fashion-mnist")
def test_bernoulli_on_fashion_mnist_from_the_command_line_points_to_binarize(tmp_path, capsys):
    from npvae import cli

    assert cli.main(["train", "--dataset", "fashion-mnist", "--epochs", "1", "--out", str(tmp_path / "f"), "--quiet"]) == 2
    assert "fashion-mnist is grey-level: add --binarize" in capsys.readouterr().err


def test_resume_with_a_different_config_is_refused(tmp_path, digits):
    train(TrainConfig(epochs=1), digits, tmp_path, progress=False, log=lambda s: None)
    with pytest.raises(ValueError, match="only --epochs may change"):
        train(TrainConfig(epochs=2, lr=0.01), digits, tmp_path, resume=True, progress=False)


def test_dynamic_binarisation_resumes_bit_for_bit(tmp_path):
    """Grey-level data redrawn every epoch from the run's 'binarize' Generator: resume must continue that stream."""
    from sklearn.datasets import load_digits

    from npvae.store.data import Dataset

    grey = load_digits().data[:600] / 16.0
    ds = Dataset("grey-digits", grey[:400], grey[400:500], grey[500:], (8, 8), binary=False, dynamic_binarize=True)
    cfg = TrainConfig(dataset="grey-digits", epochs=2, batch_size=50)
    straight = train(cfg, ds, tmp_path / "a", progress=False, log=lambda s: None)
    train(TrainConfig(**{**cfg.to_dict(), "epochs": 1}), ds, tmp_path / "b", progress=False, log=lambda s: None)
    resumed = train(cfg, ds, tmp_path / "b", resume=True, progress=False, log=lambda s: None)
    assert all(np.array_equal(a, b) for a, b in zip(straight.params, resumed.params))
    # The draws really change between epochs: the stream advanced by one binarisation of the training set per epoch.
    fresh = TrainConfig(**cfg.to_dict()).streams()["binarize"]
    fresh.random(grey[:400].shape)
    fresh.random(grey[:400].shape)
    assert fresh.bit_generator.state == straight.rngs["binarize"].bit_generator.state
