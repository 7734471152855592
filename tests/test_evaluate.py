"""Evaluation metrics against the exact linear-Gaussian model, where every one of them has a closed form."""

import numpy as np
import pytest

from npvae.evaluation.evaluate import evaluate
from npvae.maths.gaussian import kl_std_normal_per_dim
from npvae.oracle.linear_vae import best_linear_vae, orthogonal_model


@pytest.fixture(scope="module")
def exact_setup():
    rng = np.random.default_rng(0)
    model = orthogonal_model(rng, 5, 2, 0.3)
    x, _ = model.sample(2000, rng)
    arch, params = best_linear_vae(model)
    m = evaluate(params, arch, x, np.random.default_rng(1), k=7, elbo_k=3)
    return model, x, arch, params, m


def test_nll_is_exact_at_the_true_posterior(exact_setup):
    model, x, _, _, m = exact_setup
    lp = model.log_marginal(x)
    assert m["nll"] == pytest.approx(-lp.mean(), rel=1e-12)
    assert m["nll_se"] == pytest.approx(lp.std(ddof=1) / np.sqrt(x.shape[0]), rel=1e-10)


def test_kl_terms_match_the_closed_form(exact_setup):
    model, x, _, _, m = exact_setup
    mean, log_var = model.best_diagonal_q(x)
    kl_dim = kl_std_normal_per_dim(mean, log_var).mean(axis=0)
    np.testing.assert_allclose(m["kl_per_dim"], kl_dim, rtol=1e-10)
    assert m["kl"] == pytest.approx(kl_dim.sum(), rel=1e-10)
    # The ELBO estimate's expectation is log p(x) here (exact q); 5 SE of the per-point spread suffice.
    assert m["elbo"] == pytest.approx(-m["nll"], abs=5 * m["elbo_se"])


def test_mutual_information_of_the_linear_model(exact_setup):
    """x from the model and q = p(z|x): the aggregate posterior is the prior and I(x; z) = 1/2 log|M| - Z/2 log sigma2."""
    model, _, _, _, m = exact_setup
    W, s2 = model.W, float(model.sigma2)
    M = W.T @ W + s2 * np.eye(2)
    exact = 0.5 * np.linalg.slogdet(M)[1] - 0.5 * 2 * np.log(s2)
    # The mixture estimate of log q(z) from 2000 points is biased by O(1/M); 0.05 nats is ~1% of I here.
    assert m["mutual_information"] == pytest.approx(exact, abs=0.05)


def test_active_units_counts_dimensions_that_vary_with_x(exact_setup):
    model, x, arch, params, m = exact_setup
    assert m["active_units"] == 2
    # Zero the encoder weights of dimension 0's mean: it no longer depends on x, so it is inactive.
    enc = params.encoder[0]
    W = enc.W.copy()
    W[:, 0] = 0.0
    dead = params._replace(encoder=(enc._replace(W=W),))
    m2 = evaluate(dead, arch, x[:300], np.random.default_rng(2), k=2, elbo_k=1)
    assert m2["active_units"] == 1
    assert m2["var_of_mean_per_dim"][0] < 1e-20  # a constant, up to the rounding of np.var
