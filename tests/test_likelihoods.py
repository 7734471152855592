"""Decoder likelihoods against scipy, exactness at extreme logits, and gradients against central differences."""

import numpy as np
import pytest
from scipy import stats

from npvae import likelihoods as L
from npvae.checks.gradcheck import elementwise
from npvae.maths.stable import sigmoid, softplus


def test_bernoulli_matches_scipy(rng):
    logits = rng.uniform(-6, 6, (3, 2, 5))
    x = (rng.random((2, 5)) < 0.5).astype(float)
    p = 1.0 / (1.0 + np.exp(-logits))  # safe in this range
    ref = stats.bernoulli.logpmf(np.broadcast_to(x, logits.shape), p).sum(-1)
    logp, _ = L.bernoulli_forward(logits, x)
    np.testing.assert_allclose(logp, ref, rtol=1e-12)


def test_bernoulli_exact_at_extreme_logits():
    """At |l| = 800, log(sigmoid(l)) gives -inf/NaN; the logit form is exact."""
    logits = np.array([[[800.0, -800.0, 800.0, -800.0]]])
    x = np.array([[1.0, 0.0, 0.0, 1.0]])
    logp, cache = L.bernoulli_forward(logits, x)
    assert logp[0, 0] == -1600.0  # the two right answers cost 0, the two wrong ones 800 each
    grad = L.bernoulli_backward(np.ones((1, 1)), cache)
    np.testing.assert_array_equal(grad, [[[0.0, 0.0, -1.0, 1.0]]])


def test_bernoulli_gradient_is_exactly_x_minus_sigmoid(rng):
    logits = rng.uniform(-30, 30, (2, 3, 4))
    x = (rng.random((3, 4)) < 0.5).astype(float)
    _, cache = L.bernoulli_forward(logits, x)
    grad = L.bernoulli_backward(np.ones((2, 3)), cache)
    np.testing.assert_array_equal(grad, x - sigmoid(logits))
    np.testing.assert_allclose(sigmoid(logits), 1.0 / (1.0 + np.exp(-logits)), rtol=1e-15)
    np.testing.assert_allclose(softplus(logits), np.log1p(np.exp(logits)), rtol=1e-14)


def test_gaussian_matches_scipy(rng):
    mean, x = rng.standard_normal((3, 2, 5)), rng.standard_normal((2, 5))
    logp, _ = L.gaussian_forward(mean, x, 0.3)
    np.testing.assert_allclose(logp, stats.norm.logpdf(x, mean, np.sqrt(0.3)).sum(-1), rtol=1e-13)


def test_gaussian_learned_matches_scipy_and_is_floored(rng):
    D = 5
    out = np.concatenate([rng.standard_normal((3, 2, D)), rng.uniform(-2, 2, (3, 2, D))], axis=-1)
    x = rng.standard_normal((2, D))
    smin = -4.0
    logp, _ = L.gaussian_learned_forward(out, x, smin)
    s = smin + np.log1p(np.exp(out[..., D:] - smin))
    ref = stats.norm.logpdf(x, out[..., :D], np.exp(0.5 * s)).sum(-1)
    np.testing.assert_allclose(logp, ref, rtol=1e-13)
    # Far below the floor the log-variance stays at s_min, so log p is bounded by its value at x = mean.
    out2 = np.concatenate([np.broadcast_to(x, (1, 2, D)), np.full((1, 2, D), -1e6)], axis=-1)
    logp2, _ = L.gaussian_learned_forward(out2, x, smin)
    np.testing.assert_allclose(logp2, -0.5 * D * (np.log(2 * np.pi) + smin), rtol=1e-14)


@pytest.mark.parametrize("name", L.LIKELIHOODS)
def test_likelihood_backward_vs_finite_differences(rng, name):
    lik = L.Likelihood(name, sigma2=0.6, min_log_var=-2.0)
    D = 4
    out = rng.standard_normal((2, 3, lik.out_dim(D)))
    x = (rng.random((3, D)) < 0.5).astype(float) if name == "bernoulli" else rng.standard_normal((3, D))
    dlogp = rng.standard_normal((2, 3))
    _, cache = L.forward(lik, out, x)
    fd = elementwise(lambda a: float(np.sum(dlogp * L.forward(lik, a[0], x)[0])), [out], 0, 1e-6)
    np.testing.assert_allclose(L.backward(lik, dlogp, cache), fd, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("likelihood, match", [
    (L.Likelihood("poisson"), "likelihood must be one of"),
    (L.Likelihood("gaussian", sigma2=0.0), "sigma2"),
    (L.Likelihood("gaussian", sigma2=float("nan")), "sigma2"),
    (L.Likelihood("gaussian-learned", min_log_var=float("-inf")), "min_log_var must be finite"),
])
def test_each_likelihood_checks_its_own_constants_for_every_model(likelihood, match):
    """The checks live with the likelihood (npvae.likelihoods.check), and both model families run them."""
    from npvae.vae.ladder import LadderArch
    from npvae.vae.model import Arch

    for build in (lambda: Arch(4, (3,), 2, likelihood=likelihood), lambda: LadderArch(4, ((3,), ()), (2, 1), likelihood=likelihood)):
        with pytest.raises(ValueError, match=match):
            build()
