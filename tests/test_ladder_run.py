"""The model of L stochastic layers through the whole product: backends, the public objective, training, resume, eval, CLI.

The maths itself (finite differences for every parameter and estimator, the exact linear-Gaussian chain)
is tests/test_ladder.py's; here the numba backend is held to the NumPy specification for L = 1, 2, 3, and the
trainer, checkpoints, evaluation and command line are run end to end on L = 2 (Burda et al.'s model) and L = 3.
"""

import json

import numpy as np
import pytest

from npvae import cli, log_px, models
from npvae.backends import numba_available
from npvae.training.config import TrainConfig
from npvae.store.data import load
from npvae.maths.estimators import VALID
from npvae.evaluation.evaluate import evaluate
from npvae.vae.ladder import LadderArch, LadderParams, init_params
from npvae.vae.ladder_objective import bound_and_grad_core
from npvae.likelihoods import Likelihood, output_bias_from_data
from npvae.objectives import bound_value, log_weights, objective
from npvae.training.loop import load_state, train

CASES = [(b, kl, e) for (b, kl), ests in VALID.items() for e in ests]
needs_numba = pytest.mark.skipif(not numba_available(), reason="numba is not installed")
AGREE = 1e-12  # float64: the backends differ only in the order of sums (rounding), far below this
SPECS = ["12-9-6", "12-9-6:5-3", "12-9-6:5-3:4-2"]  # L = 1, 2, 3 (all LadderArch: L = 1 is the ladder's loop, one layer)


def problem(rng, likelihood="bernoulli", activation="tanh", N=7, K=4, density=0.3, spec="12-9-6:5-3"):
    arch = LadderArch.parse(spec, activation=activation, likelihood=Likelihood(likelihood))
    params = init_params(arch, rng)
    x = (rng.random((N, 12)) < density).astype(np.float64) if likelihood == "bernoulli" else rng.standard_normal((N, 12))
    return arch, params, x, rng.standard_normal((K, N, arch.noise_dim))


@pytest.mark.parametrize("spec", SPECS)
def test_public_objective_is_the_specification_on_the_split_noise(rng, spec):
    """objective(..., eps), eps = [eps_1, ..., eps_L] along the last axis, is the specification's core on that noise, bit for bit."""
    arch, params, x, eps = problem(rng, spec=spec)
    parts = arch.split_noise(eps)
    assert len(parts) == arch.L and [p.shape[-1] for p in parts] == list(arch.latents)
    for bound, kl, est in CASES:
        v, g = objective(params, arch, x, eps, bound=bound, kl=kl, estimator=est)
        v0, g0 = bound_and_grad_core(params, arch, x, eps, bound, kl, est)
        assert type(g) is LadderParams and np.array_equal(v, v0)
        assert all(np.array_equal(a, b) for a, b in zip(models.flatten(g), models.flatten(g0)))


@needs_numba
@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian", "gaussian-learned"])
@pytest.mark.parametrize("activation", ["tanh", "relu", "softplus"])
@pytest.mark.parametrize("density", [0.05, 0.5])  # sparse binary x takes numba's sum-of-rows first product
def test_numba_equals_numpy(rng, likelihood, activation, density, spec):
    arch, params, x, eps = problem(rng, likelihood, activation, density=density, spec=spec)
    for bound, kl, est in CASES:
        v0, g0 = objective(params, arch, x, eps, bound=bound, kl=kl, estimator=est, backend="numpy")
        v1, g1 = objective(params, arch, x, eps, bound=bound, kl=kl, estimator=est, backend="numba")
        np.testing.assert_allclose(v1, v0, rtol=AGREE, err_msg=f"{bound} {kl} {est}")
        for name, a, b in zip(models.param_names(arch), models.flatten(g1), models.flatten(g0)):
            np.testing.assert_allclose(a, b, rtol=AGREE, atol=AGREE * np.abs(b).max(), err_msg=f"{bound} {kl} {est} {name}")
        np.testing.assert_allclose(bound_value(params, arch, x, eps, bound=bound, kl=kl, backend="numba"), v0, rtol=AGREE)
    np.testing.assert_allclose(log_weights(params, arch, x, eps, backend="numba"), log_weights(params, arch, x, eps), rtol=AGREE)


@needs_numba
@pytest.mark.parametrize("spec", SPECS)
def test_numba_float32_stays_float32_and_agrees(rng, spec):
    arch, params, x, eps = problem(rng, spec=spec)
    p32 = models.unflatten(arch, [a.astype(np.float32) for a in models.flatten(params)])
    v, g = objective(p32, arch, x.astype(np.float32), eps.astype(np.float32), bound="iwae", kl="mc", estimator="dreg",
                     backend="numba")
    v64, g64 = objective(params, arch, x, eps, bound="iwae", kl="mc", estimator="dreg")
    assert v.dtype == np.float32 and all(a.dtype == np.float32 for a in models.flatten(g))
    np.testing.assert_allclose(v, v64, rtol=1e-4)


@needs_numba
@pytest.mark.parametrize("spec", SPECS[1:])
def test_log_px_is_the_same_estimate_on_both_backends_and_below_nothing_it_should_not_be(rng, spec):
    arch, params, x, _ = problem(rng, spec=spec)
    a = log_px(params, arch, x, 300, np.random.default_rng(5), max_elements=2000)  # several chunks
    b = log_px(params, arch, x, 300, np.random.default_rng(5), backend="numba")
    np.testing.assert_allclose(b, a, rtol=AGREE)
    # The same draws in one chunk: the chunking does not change the estimate (one (k, N, Z1 + ... + ZL) order).
    np.testing.assert_allclose(log_px(params, arch, x, 300, np.random.default_rng(5)), a, rtol=AGREE)
    # An IWAE estimate from k samples is itself log p-hat; with k = 1 it is one ELBO sample of the same draws.
    eps = np.random.default_rng(6).standard_normal((1, x.shape[0], arch.noise_dim))
    np.testing.assert_allclose(log_px(params, arch, x, 1, np.random.default_rng(6)), log_weights(params, arch, x, eps)[0],
                               rtol=AGREE)


def test_refusals(rng):
    arch, params, x, eps = problem(rng)
    with pytest.raises(ValueError, match="free bits"):
        objective(params, arch, x, eps, bound="elbo", kl="analytic", free_bits=0.5)
    with pytest.raises(ValueError, match=r"eps must have shape \(\?, 7, 9\), got \(4, 7, 8\)"):
        objective(params, arch, x, eps[..., :-1])  # noise_dim is Z1 + Z2 = 9
    with pytest.raises(ValueError, match=r"enc2.1.W must have shape \(5, 6\), got \(5, 4\)"):
        objective(init_params(LadderArch.parse("12-9-6:5-2"), rng), arch, x, eps)
    with pytest.raises(ValueError, match="params must be a LadderParams, got VAEParams"):
        objective(models.init_params(models.parse("12-9-6"), rng), arch, x, eps)
    with pytest.raises(ValueError, match="params must be a VAEParams, got LadderParams"):
        objective(init_params(LadderArch.parse("12-9-6"), rng), models.parse("12-9-6"), x, eps[..., :6])
    with pytest.raises(ValueError, match="params have 16 arrays but architecture 12-9-6:5-3:4-2 needs 24"):
        objective(params, LadderArch.parse("12-9-6:5-3:4-2"), x, rng.standard_normal((4, 7, 11)))
    with pytest.raises(ValueError, match="free bits"):
        TrainConfig(arch="64-20-8:6-3", kl="analytic", free_bits=0.5).make_arch(64)
    with pytest.raises(ValueError, match="free bits"):
        TrainConfig(arch="64-20-8:6-3:4-2", kl="analytic", free_bits=0.5).make_arch(64)


def test_models_parse_and_the_config_make_the_right_family():
    assert models.parse("784-200-200-100:100-100-50") == LadderArch(784, ((200, 200), (100, 100)), (100, 50))
    assert models.parse("784-200-50").FAMILY == "one-layer"
    arch = TrainConfig(arch="64-20-8:6-3").make_arch(64)
    assert arch.FAMILY == "ladder" and arch.spec == "64-20-8:6-3" and arch.noise_dim == 11 and arch.L == 2
    arch = TrainConfig(arch="64-20-8:6-3:4-2").make_arch(64)
    assert arch == LadderArch(64, ((20,), (6,), (4,)), (8, 3, 2)) and arch.FAMILY == "ladder" and arch.noise_dim == 13


@pytest.mark.parametrize("spec", SPECS[1:])
def test_output_bias_starts_at_the_data(rng, spec):
    arch = LadderArch.parse(spec)
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
THREE = {**TWO, "arch": "64-8-4:4-3:3-2"}


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
@pytest.mark.parametrize("model", [TWO, THREE], ids=["L=2", "L=3"])
def test_numba_training_follows_numpy(tmp_path, digits, model):
    """The same run on both backends: the bounds agree to rounding after 2 epochs of Adam (the backends' sums differ in order)."""
    cfg = TrainConfig(**model, bound="iwae", k=3, kl="mc", estimator="dreg", epochs=2)
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


@pytest.mark.parametrize("backend", ["numpy", pytest.param("numba", marks=needs_numba)])
def test_three_layers_train_reload_and_evaluate(tmp_path, capsys, digits, backend):
    """L = 3 end to end: a couple of epochs, the checkpoint read back is the trained model (the same evaluation, number
    for number), and evaluation reports each of the three stochastic layers."""
    cfg = TrainConfig(**THREE, bound="elbo", k=2, kl="analytic", estimator="reparam", epochs=2, backend=backend)
    d = tmp_path / "run"
    trained = train(cfg, digits, d, progress=False, log=lambda s: None)
    assert len(trained.history["valid_bound"]) == 2 and all(np.isfinite(trained.history["valid_bound"]))
    config, arch, state = load_state(d / "last.safetensors")
    assert arch == LadderArch(64, ((8,), (4,), (3,)), (4, 3, 2)) and arch.L == 3 and state.epoch == 2
    assert config.backend == backend
    assert all(a.dtype == b.dtype and np.array_equal(a, b) for a, b in zip(trained.params, state.params))
    x = digits.test[:30]
    m_trained = evaluate(models.unflatten(arch, trained.params), arch, x, np.random.default_rng(7), k=20, backend=backend)
    m_loaded = evaluate(models.unflatten(arch, state.params), arch, x, np.random.default_rng(7), k=20, backend=backend)
    assert m_loaded == m_trained
    assert m_loaded["latent_dims"] == [4, 3, 2] and m_loaded["latent_dim"] == 9
    assert len(m_loaded["active_units_per_layer"]) == 3 and sum(m_loaded["active_units_per_layer"]) == m_loaded["active_units"]
    assert [len(v) for v in m_loaded["var_of_mean_per_dim"]] == [4, 3, 2]
    assert -m_loaded["nll"] >= m_loaded["elbo"] - 5 * m_loaded["elbo_se"] and m_loaded["kl"] > 0

    runs = []
    for _ in range(2):  # the command line reads the checkpoint again each time: the same numbers
        assert cli.main(["eval", str(d), "--k", "20", "--n", "30", "--json", "--backend", backend]) == 0
        runs.append(json.loads(capsys.readouterr().out))
    assert runs[0] == runs[1]
    m = runs[0]
    assert m["n_points"] == 30 and m["latent_dims"] == [4, 3, 2] and len(m["active_units_per_layer"]) == 3
    assert cli.main(["eval", str(d), "--k", "10", "--n", "20", "--backend", backend]) == 0
    out = capsys.readouterr().out
    assert "per stochastic layer" in out
    assert all(f"/ {z}" in out.split("per stochastic layer")[1].splitlines()[0] for z in (4, 3, 2)), out
