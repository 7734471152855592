"""`npvae check` has no false alarms on correct code, for any seed, and still fails on real bugs.

bench/gradcheck_seeds.py runs 500 seeds and reports each row's worst error/tolerance; here 25 seeds run in CI.
"""

import numpy as np
import pytest

from npvae.checks import check as check_mod
from npvae.checks.gradcheck import per_parameter
from npvae.nn.layers import Dense
from npvae.vae.model import VAEParams, param_names
from npvae.objectives import objective


# Three seeds in the quick suite, all 25 in the full one (--full).
@pytest.mark.parametrize("seed", [s if s < 3 else pytest.param(s, marks=pytest.mark.slow) for s in range(25)])
def test_every_row_passes_and_decides_on_correct_code(seed):
    rows = check_mod.run_all(seed=seed)
    bad = [(r["case"], r["status"], r["error"], r["tol"]) for r in rows if r["status"] != "ok"]
    assert not bad, bad


def test_a_bias_gradient_off_by_one_part_in_a_thousand_fails_on_every_seed(monkeypatch):
    real = check_mod.objective

    def wrong(params, arch, x, eps, **kw):
        v, g = real(params, arch, x, eps, **kw)
        g = g._replace(decoder=tuple(Dense(l.W, l.b * (1 + 1e-3)) for l in g.decoder))
        return v, g

    monkeypatch.setattr(check_mod, "objective", wrong)
    for seed in range(3):
        failed = {r["case"].split(" ")[0] for r in check_mod.gradient_rows(seed) if r["status"] == "FAIL"}
        assert failed == {f"{lik}/{act}" for lik, act in check_mod.GRADIENT_MODELS}, (seed, failed)


def test_a_transposed_square_weight_gradient_fails(monkeypatch):
    """The 5 x 5 hidden layers: a gradient transposed by mistake keeps its shape, and only values can show it."""
    real = check_mod.objective

    def wrong(params, arch, x, eps, **kw):
        v, g = real(params, arch, x, eps, **kw)
        enc = list(g.encoder)
        enc[1] = Dense(enc[1].W.T.copy(), enc[1].b)
        return v, g._replace(encoder=tuple(enc))

    monkeypatch.setattr(check_mod, "objective", wrong)
    failed = {r["case"].rsplit(" ", 1)[1] for r in check_mod.gradient_rows(0) if r["status"] == "FAIL"}
    assert failed == {"encoder.1.W"}


def test_log_weights_off_by_a_constant_fail_the_unbiasedness_row(monkeypatch):
    real = check_mod.log_weights
    monkeypatch.setattr(check_mod, "log_weights", lambda *a, **kw: real(*a, **kw) + 0.05)
    for seed in range(3):
        failed = [r["case"] for r in check_mod.bound_rows(seed) if r["status"] == "FAIL"]
        assert failed and all("E w / p(x) = 1" in c for c in failed), failed


def test_a_point_on_a_relu_kink_is_inconclusive_not_failed():
    """Zero biases and an all-zero input put every first-layer ReLU exactly on its kink: no direction is clear of it."""
    rng = np.random.default_rng(0)
    arch, params, x, eps = check_mod.gradient_model(rng, "bernoulli", "relu")
    params = VAEParams(tuple(Dense(l.W, np.zeros_like(l.b)) for l in params.encoder), params.decoder)
    x = np.zeros_like(x)
    options = dict(bound="elbo", kl="analytic", estimator="reparam", kl_weight=1.0)
    _, grads = objective(params, arch, x, eps, **options)
    rows = {r.name: r.status for r in per_parameter(params, grads, arch, x, eps, options, rng, param_names(arch))}
    assert rows["encoder.0.b"] == "inconclusive" and "FAIL" not in rows.values()
    assert rows["decoder.2.W"] == "ok"  # the decoder's last layer moves no encoder pre-activation


@pytest.mark.slow
def test_ladder_rows_fail_on_a_conditional_prior_bias_off_by_one_part_in_a_thousand(monkeypatch):
    real = check_mod.objective

    def wrong(params, arch, x, eps, **kw):
        v, g = real(params, arch, x, eps, **kw)
        return v, g._replace(dec2=tuple(Dense(l.W, l.b * (1 + 1e-3)) for l in g.dec2))

    monkeypatch.setattr(check_mod, "objective", wrong)
    assert {spec.count(":") + 1 for _, _, spec in check_mod.LADDER_MODELS} == {2, 3}  # dec2 is in every model, two Dense
    for seed in range(3):
        rows = check_mod.ladder_gradient_rows(seed)
        failed = {(r["case"].split(" ")[0], r["case"].rsplit(" ", 1)[1]) for r in rows if r["status"] == "FAIL"}
        assert failed == {(f"L={L}", f"dec2.{i}.b") for L in (2, 3) for i in (0, 1)}, (seed, failed)


@pytest.mark.slow
def test_ladder_rows_fail_when_stl_holds_the_input_of_q_zl_given_the_layer_below(monkeypatch):
    """A plausible bug: STL/DReG holding all of log q(z_l|z_{l-1}) fixed, its input z_{l-1} too. Only the encoders
    below layer l see it: enc1 at L = 2; enc1 and enc2 at L = 3 (q(z_3|z_2)'s input z_2 is enc2's output)."""
    from npvae.vae import ladder_objective

    real = ladder_objective.latent_backward
    monkeypatch.setattr(ladder_objective, "latent_backward", lambda *a: (real(*a)[0], None))
    for seed in range(3):
        rows = check_mod.ladder_gradient_rows(seed)
        failed = {(r["case"].split(" ")[0], r["case"].split(" ")[5], r["case"].rsplit(" ", 1)[1].split(".")[0])
                  for r in rows if r["status"] == "FAIL"}
        assert {est for _, est, _ in failed} == {"stl", "dreg"}, (seed, failed)
        assert {net for L, _, net in failed if L == "L=2"} == {"enc1"}, (seed, failed)
        assert {net for L, _, net in failed if L == "L=3"} == {"enc1", "enc2"}, (seed, failed)


def test_ladder_log_weights_off_by_a_billionth_of_a_nat_fail_the_oracle_row(monkeypatch):
    real = check_mod.log_weights
    monkeypatch.setattr(check_mod, "log_weights", lambda *a, **kw: real(*a, **kw) + 1e-9)
    failed = [r["case"] for r in check_mod.ladder_bound_rows(0) if r["status"] == "FAIL"]
    assert failed and all("log-weight" in c for c in failed), failed
    assert {c.split(" ")[0] for c in failed} == {"L=2", "L=3"}, failed
