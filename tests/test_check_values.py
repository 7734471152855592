"""`npvae check`'s value rows pass on correct code and fail on each classic bug they exist to catch.

Each bug is made by hand (a wrong function swapped in for the real one where the check calls it) and must
turn its row, and only rows of its kind, to FAIL.
"""

import numpy as np
import pytest

from npvae.checks import values as cv
from npvae import likelihoods as lik
from npvae.maths.gaussian import kl_std_normal_per_dim
from npvae.maths.stable import softplus


def _failed(rows):
    return [r["case"] for r in rows if r["status"] == "FAIL"]


@pytest.mark.parametrize("seed", range(5))
def test_value_rows_pass_on_correct_code(seed):
    rows = cv.value_rows(seed)
    assert len(rows) >= 30 and not _failed(rows), _failed(rows)


def test_sigma_points_have_mean_zero_and_identity_covariance():
    e = cv.sigma_points(4, 1)[:, 0]
    np.testing.assert_allclose(e.mean(axis=0), 0, atol=1e-15)
    np.testing.assert_allclose(e.T @ e / e.shape[0], np.eye(4), atol=1e-15)


def test_kl_without_its_half_is_caught(monkeypatch):
    monkeypatch.setattr(cv, "kl_std_normal_forward", lambda mu, lv: 2 * kl_std_normal_per_dim(mu, lv).sum(-1))
    assert _failed(cv.elbo_and_kl_rows(np.random.default_rng(0))) == ["KL(q || N(0, I)) vs 1/2 [tr S + m'm - Z - log det S] (slogdet)"]


def test_an_elbo_whose_sampler_reads_log_var_as_log_std_is_caught(monkeypatch):
    """numpy-ml's VAE bug: z = mu + exp(log_var) eps. The value rows see it in the MC ELBO against the closed form."""
    import npvae.vae.one_layer_objective as obj
    from npvae.maths import gaussian

    real = gaussian.sample_forward
    monkeypatch.setattr(obj, "sample_forward", lambda mu, lv, eps: real(mu, 2 * lv, eps))
    failed = _failed(cv.elbo_and_kl_rows(np.random.default_rng(0)))
    assert failed and all("ELBO" in c for c in failed)


def test_an_iwae_that_is_a_mean_of_log_weights_is_caught(monkeypatch):
    real = cv.bound_value
    monkeypatch.setattr(cv, "bound_value", lambda *a, **kw: real(*a, **{**kw, "bound": "elbo"}))
    assert _failed(cv.iwae_value_rows(np.random.default_rng(0))) == ["IWAE_12 from bound_value vs scipy logsumexp of the log-weights"]


def test_log_weights_with_a_wrong_constant_are_caught(monkeypatch):
    real = cv.log_weights
    monkeypatch.setattr(cv, "log_weights", lambda *a, **kw: real(*a, **kw) + 0.5 * np.log(2 * np.pi))
    assert "log-weights log p(x, z) - log q(z|x) vs scipy.stats.norm densities" in _failed(cv.iwae_value_rows(np.random.default_rng(0)))


def test_a_log_px_without_the_max_shift_underflows_and_is_caught(monkeypatch):
    """log mean exp(a) computed as log(mean(exp(a))): at log-weights near -900, exp underflows to 0 in both dtypes."""
    def naive(params, arch, x, k, rng, max_elements=1 << 22):
        eps = rng.standard_normal((k, x.shape[0], arch.latent_dim), dtype=x.dtype)
        with np.errstate(divide="ignore"):
            return np.log(np.mean(np.exp(cv.log_weights(params, arch, x, eps)), axis=0))

    monkeypatch.setattr(cv, "log_px", naive)
    with np.errstate(invalid="ignore"):
        failed = {c.split(":")[0] for c in _failed(cv.log_px_rows(np.random.default_rng(0)))}
    # -inf estimates: every row fails (a NaN error is never <= its tolerance), the value rows first of all.
    assert {"log_px, D=784, float64, log p(x) about -900", "log_px, D=784, float32, log p(x) about -900"} <= failed


def test_a_log_px_that_forgets_log_k_is_caught(monkeypatch):
    real = cv.log_px
    monkeypatch.setattr(cv, "log_px", lambda params, arch, x, k, rng, **kw: real(params, arch, x, k, rng, **kw) + np.log(k).astype(x.dtype))
    assert len(_failed(cv.log_px_rows(np.random.default_rng(0)))) == 2


def test_a_bernoulli_on_probabilities_is_caught_at_extreme_logits(monkeypatch):
    """x log sigmoid(l) + (1 - x) log(1 - sigmoid(l)): log(0) = -inf at logits of +-100, log(1 - p) loses everything at 30."""
    real = lik.forward

    def on_probabilities(spec, out, x):
        if spec.name != "bernoulli":
            return real(spec, out, x)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            p = 1 / (1 + np.exp(-out))
            return (x * np.log(p) + (1 - x) * np.log(1 - p)).sum(-1), None

    monkeypatch.setattr(cv.lik, "forward", on_probabilities)
    failed = _failed(cv.likelihood_rows())
    assert failed and all(c.startswith("Bernoulli") for c in failed)


def test_a_gaussian_missing_its_normaliser_is_caught(monkeypatch):
    real = lik.forward

    def no_log_sigma(spec, out, x):
        v, c = real(spec, out, x)
        if spec.name == "gaussian":
            v = v + out.dtype.type(0.5 * x.shape[-1] * np.log(spec.sigma2))
        return v, c

    monkeypatch.setattr(cv.lik, "forward", no_log_sigma)
    failed = _failed(cv.likelihood_rows())
    assert failed and all(c.startswith("Gaussian log-density, sigma2=1e") for c in failed)


def test_an_adam_without_bias_correction_is_caught(monkeypatch):
    real = cv.adam_update

    def uncorrected(params, grads, state, lr, betas, eps):
        b1, b2 = betas
        t = state.step + 1  # undo the bias corrections: lr' = lr (1 - b1^t) / sqrt(1 - b2^t)
        return real(params, grads, state, lr * (1 - b1**t) / np.sqrt(1 - b2**t), betas, eps)

    monkeypatch.setattr(cv, "adam_update", uncorrected)
    assert {c.split(",")[0] for c in _failed(cv.optimiser_rows())} == {"Adam"}


def test_an_sgd_with_dampened_momentum_is_caught(monkeypatch):
    real = cv.sgd_update

    def dampened(params, grads, state, lr, momentum):
        return real(params, [g * (1 - momentum) if state.step else g for g in grads], state, lr, momentum)

    monkeypatch.setattr(cv, "sgd_update", dampened)
    assert {c.split(" ")[0] for c in _failed(cv.optimiser_rows())} == {"SGD"}


def test_softplus_reference_is_independent():
    """The Bernoulli reference is decimal arithmetic, not npvae's softplus: they agree where both are exact."""
    assert float(cv._decimal_bernoulli(0.0, 1.0)) == pytest.approx(-float(softplus(np.array(0.0))), rel=1e-15)
