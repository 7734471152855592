"""The decoder's data-dependent output bias (Burda et al. 2016's code), and evaluation subsets that are samples.

Oracles: scipy.special.logit of the clipped mean pixel, the data mean, and the bound itself (a model that
starts at the data's marginals starts from a better bound than one that starts at 0).
"""

import json
import re

import numpy as np
import pytest
from scipy.special import logit

from npvae import cli
from npvae.training.config import TrainConfig
from npvae.store.data import load, subset_indices
from npvae.likelihoods import Likelihood, output_bias_from_data
from npvae.vae.model import unflatten
from npvae.training.loop import new_state, train, validation_bound

from conftest import REPO, SHARED_DATA


@pytest.fixture(scope="module")
def digits():
    return load("digits")


def _initial(config, dataset):
    arch = config.make_arch(dataset.train.shape[1])
    return arch, new_state(config, arch, dataset.train)


def test_bernoulli_bias_is_the_logit_of_the_clipped_mean_pixel(digits):
    arch, state = _initial(TrainConfig(), digits)
    mean = digits.train.mean(axis=0)
    assert mean.min() == 0.0  # digits has pixels that are never on: the clip is exercised
    expected = logit(np.clip(mean, 0.001, 0.999))
    np.testing.assert_allclose(state.params[-1], expected, rtol=1e-13, atol=0)
    assert np.all(np.isfinite(state.params[-1]))
    np.testing.assert_allclose(state.params[-1][mean == 0], logit(0.001), rtol=1e-13)


@pytest.mark.parametrize("likelihood", ["gaussian", "gaussian-learned"])
def test_gaussian_output_mean_bias_is_the_data_mean(likelihood):
    data = load("synthetic")
    arch, state = _initial(TrainConfig(dataset="synthetic", likelihood=likelihood), data)
    D = data.train.shape[1]
    b = state.params[-1]
    assert b.shape == (arch.decoder_sizes()[-1],)
    np.testing.assert_allclose(b[:D], data.train.mean(axis=0), rtol=1e-12, atol=1e-15)
    if likelihood == "gaussian-learned":  # the raw log-variances start where they always did
        assert np.array_equal(b[D:], np.zeros(D))


def test_zero_option_is_the_old_initialisation_and_draws_the_same_weights(digits):
    _, data_state = _initial(TrainConfig(output_bias="data"), digits)
    _, zero_state = _initial(TrainConfig(output_bias="zero"), digits)
    assert np.array_equal(zero_state.params[-1], np.zeros_like(zero_state.params[-1]))
    for a, b in zip(data_state.params[:-1], zero_state.params[:-1]):
        assert np.array_equal(a, b)
    for name, g in data_state.rngs.items():  # nothing extra was drawn
        assert g.bit_generator.state == zero_state.rngs[name].bit_generator.state


def test_float32_config_gets_a_float32_bias(digits):
    data = load("digits", dtype=np.float32)
    _, state = _initial(TrainConfig(dtype="float32"), data)
    assert state.params[-1].dtype == np.float32


def test_output_bias_refuses_bad_input():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        output_bias_from_data(Likelihood("bernoulli"), np.array([0.5, 1.5]))
    with pytest.raises(ValueError, match="output_bias"):
        TrainConfig(output_bias="mean")


def test_a_config_written_before_the_option_means_zero():
    old = {k: v for k, v in TrainConfig().to_dict().items() if k != "output_bias"}
    assert TrainConfig.from_dict(old).output_bias == "zero"
    assert TrainConfig.from_dict(TrainConfig().to_dict()).output_bias == "data"


def _start_and_first_epoch(config, dataset, tmp_path):
    arch, state = _initial(config, dataset)
    rng = np.random.default_rng(7)  # the same validation noise for both options
    start = validation_bound(unflatten(arch, state.params), arch, config, dataset.valid, rng)
    run = train(config, dataset, tmp_path / config.output_bias, progress=False, log=lambda s: None)
    return start, run.history["train_bound"][0], run.history["valid_bound"][0]


def test_default_digits_run_starts_from_a_better_bound(digits, tmp_path):
    cfg = TrainConfig(epochs=1)
    data = _start_and_first_epoch(cfg, digits, tmp_path)
    zero = _start_and_first_epoch(TrainConfig(epochs=1, output_bias="zero"), digits, tmp_path)
    # The bias alone is worth about 10 nats on 64 pixels at the start (-44.4 vs -54.7 at this seed).
    assert data[0] > zero[0] + 5.0
    assert data[1] > zero[1] and data[2] > zero[2]  # and the first epoch is better for it


@pytest.mark.skipif(not (SHARED_DATA / "binarized_mnist.npz").exists(), reason="needs binarized_mnist.npz (set NPVAE_DATA_DIR)")
def test_binarized_mnist_run_starts_from_a_better_bound():
    data = load("binarized-mnist", search_dirs=[SHARED_DATA], dtype=np.float32)
    x_valid = data.valid[subset_indices(500, data.valid.shape[0], np.random.default_rng(0))]
    bounds = {}
    for option in ("data", "zero"):
        cfg = TrainConfig(dataset="binarized-mnist", arch="784-200-200-50", dtype="float32", output_bias=option)
        arch, state = _initial(cfg, data)
        bounds[option] = validation_bound(unflatten(arch, state.params), arch, cfg, x_valid, np.random.default_rng(7))
    # 784 pixels with mean 0.13 at logit 0 cost 784 log 2 = 543 nats; at their marginals about 206 (Burda et al.).
    assert bounds["zero"] < -500 and bounds["data"] > -260
    assert bounds["data"] > bounds["zero"] + 250


def test_cli_records_the_option(tmp_path):
    assert cli.main(["train", "--epochs", "1", "--out", str(tmp_path / "z"), "--output-bias", "zero", "--quiet", "--no-pictures"]) == 0
    assert json.loads((tmp_path / "z" / "config.json").read_text())["output_bias"] == "zero"


# Subsets of a split for evaluation.

def test_subset_is_seeded_sorted_unique_and_not_a_prefix():
    a = subset_indices(100, 1000, np.random.default_rng(3))
    assert np.array_equal(a, subset_indices(100, 1000, np.random.default_rng(3)))
    assert not np.array_equal(a, subset_indices(100, 1000, np.random.default_rng(4)))
    assert np.all(np.diff(a) > 0) and a[0] >= 0 and a[-1] < 1000
    assert a[-1] > 500  # not a prefix: the largest of 100 uniform draws from 1000 is below 500 with probability 2^-100


def test_subset_stratified_by_class_gives_each_class_its_share():
    labels = np.repeat(np.arange(10), [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009])  # MNIST test, sorted
    for seed in range(5):
        idx = subset_indices(1000, labels.size, np.random.default_rng(seed), labels)
        assert np.unique(idx).size == 1000
        counts = np.bincount(labels[idx], minlength=10)
        share = 1000 * np.bincount(labels) / labels.size
        assert np.all(np.abs(counts - share) <= 1.0), (counts, share)


def test_subset_refuses_bad_sizes():
    for n in (0, -5):
        with pytest.raises(ValueError, match="n must be"):
            subset_indices(n, 10, np.random.default_rng(0))
    with pytest.raises(ValueError, match="only 10"):
        subset_indices(11, 10, np.random.default_rng(0))


def test_eval_subset_says_so_and_counts_active_units_on_training_points(tmp_path, capsys, digits):
    run_dir = tmp_path / "r"
    assert cli.main(["train", "--epochs", "1", "--out", str(run_dir), "--quiet", "--no-pictures"]) == 0
    capsys.readouterr()
    assert cli.main(["eval", str(run_dir), "--k", "5", "--n", "40"]) == 0
    out = capsys.readouterr().out
    assert "digits test (40 of 250 points, a seeded random subset stratified by class (--seed 0))" in out
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["n_points"] == 40 and m["active_units_points"] == digits.train.shape[0]
    assert cli.main(["eval", str(run_dir), "--k", "5", "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["n_points"] == 250 and m["points"] == "all 250"
    assert cli.main(["eval", str(run_dir), "--k", "5", "--n", "-5"]) == 2
    assert cli.main(["eval", str(run_dir), "--k", "5", "--n", "251"]) == 2


def test_no_figure_comes_from_a_prefix_of_a_split():
    """The binarised-MNIST test split is ordered by class: no code that evaluates may slice a prefix of a split."""
    pattern = re.compile(r"(test|valid)\[\s*:")  # data.test[:n], x_test[:n], ...
    hits = [f"{p.relative_to(REPO)}:{i + 1}" for p in [*REPO.glob("npvae/**/*.py"), *REPO.glob("bench/*.py")]
            for i, line in enumerate(p.read_text().splitlines()) if pattern.search(line)]
    assert not hits, hits
