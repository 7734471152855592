"""The two-stochastic-layer model through the whole product: backends, the public objective, training, resume, eval, CLI.

The maths itself (finite differences for every parameter and estimator, the exact linear-Gaussian oracle)
is tests/test_two_layer.py's; here the numba backend is held to the NumPy specification, and the
trainer, checkpoints, evaluation and command line are run on the model end to end.
"""

import json

import numpy as np
import pytest

from npvae import cli, models
from npvae.backends import numba_available
from npvae.config import TrainConfig
from npvae.data import load
from npvae.estimators import VALID
from npvae.importance import log_px
from npvae.likelihoods import Likelihood, output_bias_from_data
from npvae.objectives import bound_value, log_weights, objective
from npvae.train import load_state, train
from npvae.two_layer import TwoLayerArch, init_params
from npvae.two_layer_objective import bound_and_grad

CASES = [(b, kl, e) for (b, kl), ests in VALID.items() for e in ests]
needs_numba = pytest.mark.skipif(not numba_available(), reason="numba is not installed")
AGREE = 1e-12  # float64: the backends differ only in the order of sums (rounding), far below this


def problem(rng, likelihood="bernoulli", activation="tanh", N=7, K=4, density=0.3):
    arch = TwoLayerArch.parse("12-9-6:5-3", activation=activation, likelihood=Likelihood(likelihood))
    params = init_params(arch, rng)
    x = (rng.random((N, 12)) < density).astype(np.float64) if likelihood == "bernoulli" else rng.standard_normal((N, 12))
    return arch, params, x, rng.standard_normal((K, N, arch.noise_dim))


def test_public_objective_is_the_specification_on_the_split_noise(rng):
    """objective(..., eps) with eps = [eps1, eps2] along the last axis is two_layer_objective.bound_and_grad(eps1, eps2)."""
    arch, params, x, eps = problem(rng)
    eps1, eps2 = eps[..., :arch.latent1], eps[..., arch.latent1:]
    for bound, kl, est in CASES:
        v, g = objective(params, arch, x, eps, bound=bound, kl=kl, estimator=est)
        v0, g0 = bound_and_grad(params, arch, x, eps1, eps2, bound, kl, est)
        assert np.array_equal(v, v0)
        assert all(np.array_equal(a, b) for a, b in zip(models.flatten(g), models.flatten(g0)))


@needs_numba
@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian", "gaussian-learned"])
@pytest.mark.parametrize("activation", ["tanh", "relu", "softplus"])
@pytest.mark.parametrize("density", [0.05, 0.5])  # sparse binary x takes numba's sum-of-rows first product
def test_numba_equals_numpy(rng, likelihood, activation, density):
    arch, params, x, eps = problem(rng, likelihood, activation, density=density)
    for bound, kl, est in CASES:
        v0, g0 = objective(params, arch, x, eps, bound=bound, kl=kl, estimator=est, backend="numpy")
        v1, g1 = objective(params, arch, x, eps, bound=bound, kl=kl, estimator=est, backend="numba")
        np.testing.assert_allclose(v1, v0, rtol=AGREE, err_msg=f"{bound} {kl} {est}")
        for name, a, b in zip(models.param_names(arch), models.flatten(g1), models.flatten(g0)):
            np.testing.assert_allclose(a, b, rtol=AGREE, atol=AGREE * np.abs(b).max(), err_msg=f"{bound} {kl} {est} {name}")
        np.testing.assert_allclose(bound_value(params, arch, x, eps, bound=bound, kl=kl, backend="numba"), v0, rtol=AGREE)
    np.testing.assert_allclose(log_weights(params, arch, x, eps, backend="numba"), log_weights(params, arch, x, eps), rtol=AGREE)


@needs_numba
def test_numba_float32_stays_float32_and_agrees(rng):
    arch, params, x, eps = problem(rng)
    p32 = models.unflatten(arch, [a.astype(np.float32) for a in models.flatten(params)])
    v, g = objective(p32, arch, x.astype(np.float32), eps.astype(np.float32), bound="iwae", kl="mc", estimator="dreg",
                     backend="numba")
    v64, g64 = objective(params, arch, x, eps, bound="iwae", kl="mc", estimator="dreg")
    assert v.dtype == np.float32 and all(a.dtype == np.float32 for a in models.flatten(g))
    np.testing.assert_allclose(v, v64, rtol=1e-4)


@needs_numba
def test_log_px_is_the_same_estimate_on_both_backends_and_below_nothing_it_should_not_be(rng):
    arch, params, x, _ = problem(rng)
    a = log_px(params, arch, x, 300, np.random.default_rng(5), max_elements=2000)  # several chunks
    b = log_px(params, arch, x, 300, np.random.default_rng(5), backend="numba")
    np.testing.assert_allclose(b, a, rtol=AGREE)
    # The same draws in one chunk: the chunking does not change the estimate (one (k, N, Z1 + Z2) order).
    np.testing.assert_allclose(log_px(params, arch, x, 300, np.random.default_rng(5)), a, rtol=AGREE)
    # An IWAE estimate from k samples is itself log p-hat; with k = 1 it is one ELBO sample of the same draws.
    eps = np.random.default_rng(6).standard_normal((1, x.shape[0], arch.noise_dim))
    np.testing.assert_allclose(log_px(params, arch, x, 1, np.random.default_rng(6)), log_weights(params, arch, x, eps)[0],
                               rtol=AGREE)


def test_refusals(rng):
    arch, params, x, eps = problem(rng)
    with pytest.raises(ValueError, match="free bits"):
        objective(params, arch, x, eps, bound="elbo", kl="analytic", free_bits=0.5)
    with pytest.raises(ValueError, match="eps"):
        objective(params, arch, x, eps[..., :-1])  # noise_dim is Z1 + Z2 = 9
    with pytest.raises(ValueError, match=r"enc2.1.W must have shape \(5, 6\), got \(5, 4\)"):
        objective(init_params(TwoLayerArch.parse("12-9-6:5-2"), rng), arch, x, eps)
    with pytest.raises(ValueError, match="params must be a TwoLayerParams, got VAEParams"):
        objective(models.init_params(models.parse("12-9-6"), rng), arch, x, eps)
    with pytest.raises(ValueError, match="free bits"):
        TrainConfig(arch="64-20-8:6-3", kl="analytic", free_bits=0.5).make_arch(64)


def test_models_parse_and_the_config_make_the_right_family():
    assert models.parse("784-200-200-100:100-100-50") == TwoLayerArch(784, (200, 200), 100, (100, 100), 50)
    assert models.parse("784-200-50").FAMILY == "one-layer"
    arch = TrainConfig(arch="64-20-8:6-3").make_arch(64)
    assert arch.FAMILY == "two-layer" and arch.spec == "64-20-8:6-3" and arch.noise_dim == 11


def test_output_bias_starts_at_the_data(rng):
    arch = TwoLayerArch.parse("12-9-6:5-3")
    x = (rng.random((50, 12)) < 0.3).astype(np.float64)
    bias = output_bias_from_data(arch.likelihood, x.mean(axis=0))
    p = init_params(arch, np.random.default_rng(1), output_bias=bias)
    np.testing.assert_array_equal(p.dec1[-1].b, bias)
    q = init_params(arch, np.random.default_rng(1))  # the bias draws nothing: the weights are the same
    assert all(np.array_equal(a, b) for a, b in zip(models.flatten(p)[:-1], models.flatten(q)[:-1]))
    assert not q.dec1[-1].b.any()


@pytest.fixture(scope="module")
def digits():
    return load("digits", binarize=True)


TWO = dict(arch="64-24-8:12-4", likelihood="bernoulli", dataset="digits", binarize=True, batch_size=64)


@pytest.mark.parametrize("options", [dict(bound="iwae", k=3, kl="mc", estimator="dreg"),
                                     dict(bound="elbo", k=2, kl="mc", estimator="stl", warmup_epochs=2)])
def test_training_resumes_bit_for_bit(tmp_path, digits, options):
    """2 epochs straight == 1 epoch + resume: parameters, Adam state, Generators and the history."""
    cfg = TrainConfig(**TWO, **options, epochs=2)
    straight = train(cfg, digits, tmp_path / "a", progress=False, log=lambda s: None)
    train(TrainConfig(**{**cfg.to_dict(), "epochs": 1}), digits, tmp_path / "b", progress=False, log=lambda s: None)
    resumed = train(cfg, digits, tmp_path / "b", resume=True, progress=False, log=lambda s: None)
    for a, b in zip(straight.params + list(straight.adam.m) + list(straight.adam.v),
                    resumed.params + list(resumed.adam.m) + list(resumed.adam.v)):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    for name in straight.rngs:
        assert straight.rngs[name].bit_generator.state == resumed.rngs[name].bit_generator.state
    assert {k: v for k, v in straight.history.items() if k != "seconds"} == {k: v for k, v in resumed.history.items() if k != "seconds"}
    _, arch, state = load_state(tmp_path / "b" / "last.safetensors")
    assert arch == TrainConfig(**TWO).make_arch(64) and state.epoch == 2


@needs_numba
def test_numba_training_follows_numpy(tmp_path, digits):
    """The same run on both backends: the bounds agree to rounding after 2 epochs of Adam (the backends' sums differ in order)."""
    cfg = TrainConfig(**TWO, bound="iwae", k=3, kl="mc", estimator="dreg", epochs=2)
    a = train(cfg, digits, tmp_path / "a", progress=False, log=lambda s: None)
    b = train(TrainConfig(**{**cfg.to_dict(), "backend": "numba"}), digits, tmp_path / "b", progress=False, log=lambda s: None)
    np.testing.assert_allclose(b.history["valid_bound"], a.history["valid_bound"], rtol=1e-9)


def test_command_line_trains_evaluates_and_draws(tmp_path, capsys):
    d = tmp_path / "run"
    argv = ["train", "--dataset", "digits", "--binarize", "--arch", "64-24-8:12-4", "--bound", "iwae", "-k", "2",
            "--kl", "mc", "--epochs", "2", "--out", d, "--quiet"]
    assert cli.main([str(a) for a in argv]) == 0
    assert (d / "samples.png").exists() and (d / "reconstructions.png").exists()
    out = capsys.readouterr().out
    assert "latent" in out  # the latent-plane pictures are named as not drawn, with the reason
    assert cli.main(["eval", str(d), "--k", "50", "--n", "40", "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["n_points"] == 40 and m["latent_dims"] == [8, 4] and len(m["active_units_per_layer"]) == 2
    assert -m["nll"] >= m["elbo"] - 5 * m["elbo_se"] and m["kl"] > 0
    assert cli.main(["eval", str(d), "--k", "10", "--n", "20"]) == 0
    assert "per stochastic layer" in capsys.readouterr().out
