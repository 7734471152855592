"""The general VAE code against the exact linear-Gaussian oracle (a linear VAE IS a LinearGaussian; Lucas et al. 2019).

Nothing here compares against a number the VAE code produced: the reference is always the oracle's
closed form (log p(x), the closed-form ELBO, the pPCA maximum likelihood).
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npvae import LinearGaussian, adam_init, adam_update, bound_value, flatten, log_weights, objective, ppca_fit, unflatten
from npvae.oracle.linear_vae import best_linear_vae, linear_arch, linear_vae_params, orthogonal_model
from npvae.maths.lme import log_mean_exp_core
from npvae.vae.model import init_params

dims = st.integers(2, 7).flatmap(lambda D: st.tuples(st.just(D), st.integers(1, D - 1)))


@settings(max_examples=60, deadline=None)
@given(dims, st.integers(0, 2**32 - 1), st.floats(0.1, 2.0), st.floats(0.1, 5.0))
def test_exact_posterior_makes_every_bound_exact_for_every_eps(DZ, seed, sigma2, eps_scale):
    """At q = p(z|x) each log-weight equals log p(x): MC ELBO and IWAE_K are exact with zero variance (docs/maths.md, "At the exact posterior")."""
    D, Z = DZ
    rng = np.random.default_rng(seed)
    model = orthogonal_model(rng, D, Z, sigma2)
    x, _ = model.sample(4, rng)
    arch, params = best_linear_vae(model)
    eps = rng.standard_normal((5, 4, Z)) * eps_scale  # any eps, including far tails
    exact = model.log_marginal(x)
    tol = 1e-10 * max(1.0, np.abs(exact).max())
    np.testing.assert_allclose(log_weights(params, arch, x, eps), np.broadcast_to(exact, (5, 4)), rtol=0, atol=tol)
    for bound in ("elbo", "iwae"):
        np.testing.assert_allclose(bound_value(params, arch, x, eps, bound=bound, kl="mc"), exact, rtol=0, atol=tol)
    # STL and DReG use only the path derivative d a_k / d z_k, which is 0 when a_k is constant in z.
    for bound, est in (("elbo", "stl"), ("iwae", "dreg")):
        _, grads = objective(params, arch, x, eps, bound=bound, kl="mc", estimator=est)
        enc = np.concatenate([a.ravel() for layer in grads.encoder for a in layer])
        assert np.abs(enc).max() <= tol


def _random_linear_vae(rng, D=5, Z=2, N=3):
    """A general (non-orthogonal) model and a deliberately imperfect amortised q."""
    model = LinearGaussian(rng.standard_normal((D, Z)), rng.standard_normal(D), 0.6)
    V = rng.standard_normal((Z, D)) * 0.3
    log_S = rng.uniform(-1.5, 0.0, Z)
    x, _ = model.sample(N, rng)
    arch = linear_arch(D, Z, float(model.sigma2))
    params = linear_vae_params(model, V, log_S)
    q_mean = (x - model.b) @ V.T
    return model, arch, params, x, q_mean, np.broadcast_to(log_S, q_mean.shape)


@pytest.mark.parametrize("kl", ["analytic", "mc"])
def test_monte_carlo_elbo_is_unbiased_for_the_closed_form(kl):
    """n independent one-sample ELBO estimates per point average to the oracle's closed form within 5 SE."""
    rng = np.random.default_rng(7)
    model, arch, params, x, q_mean, q_log_var = _random_linear_vae(rng)
    n, N, Z = 20_000, x.shape[0], 2
    # Repeat each point n times so that one call gives n independent one-sample estimates per point.
    x_rep = np.tile(x, (n, 1))  # (n N, D)
    est = bound_value(params, arch, x_rep, rng.standard_normal((1, n * N, Z)), bound="elbo", kl=kl).reshape(n, N)
    exact = model.elbo(x, q_mean, np.ascontiguousarray(q_log_var))
    se = est.std(axis=0) / np.sqrt(n)
    assert np.all(se > 0)
    assert np.all(np.abs(est.mean(axis=0) - exact) < 5 * se), (est.mean(axis=0), exact, se)


def test_iwae_increases_with_k_towards_log_px():
    """Burda et al. 2016, Thm 1: E IWAE_1 < E IWAE_10 < E IWAE_100 < log p(x), each step by more than 5 SE."""
    rng = np.random.default_rng(3)
    model, arch, params, x, _, _ = _random_linear_vae(rng, N=2)
    R = 4000  # independent replicates of each estimator
    means, ses = [], []
    for k in (1, 10, 100):
        a = log_weights(params, arch, x, rng.standard_normal((R * k, 2, 2))).reshape(R, k, 2)
        est = log_mean_exp_core(a, axis=1)  # (R, N)
        means.append(est.mean(axis=0))
        ses.append(est.std(axis=0) / np.sqrt(R))
    exact = model.log_marginal(x)
    for lo, hi, se_lo, se_hi in zip(means, means[1:] + [exact], ses, ses[1:] + [0 * exact]):
        assert np.all(hi - lo > 5 * np.sqrt(se_lo**2 + se_hi**2)), (lo, hi)


def test_linear_vae_at_the_ppca_optimum_attains_the_maximum_likelihood():
    """Lucas et al. 2019: with R = I the pPCA W has orthogonal columns, the best diagonal q is exact and the ELBO is the max log-lik."""
    rng = np.random.default_rng(11)
    truth = LinearGaussian(rng.standard_normal((6, 2)) * 2, rng.standard_normal(6), 0.4)
    X, _ = truth.sample(300, rng)
    fitted, max_ll = ppca_fit(X, 2)
    arch, params = best_linear_vae(fitted)
    eps = rng.standard_normal((3, 300, 2))
    # q is exact, so the Monte Carlo ELBO has zero variance: the max log-lik for this (any) eps.
    assert bound_value(params, arch, X, eps, bound="elbo", kl="mc").sum() == pytest.approx(max_ll, rel=1e-12)
    mean, log_var = fitted.best_diagonal_q(X)
    assert fitted.elbo(X, mean, log_var).sum() == pytest.approx(max_ll, rel=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_adam_trains_the_linear_vae_to_the_ppca_maximum(seed):
    """Train encoder and decoder from a random start with STL (Roeder et al. 2017) at the pPCA noise level; compare with the closed form."""
    rng = np.random.default_rng(seed)
    D, Z, N = 5, 2, 400
    truth = LinearGaussian(rng.standard_normal((D, Z)) * 1.5, rng.standard_normal(D), 0.5)
    X, _ = truth.sample(N, rng)
    fitted, max_ll = ppca_fit(X, Z)
    arch = linear_arch(D, Z, float(fitted.sigma2))
    flat = flatten(init_params(arch, rng))
    state = adam_init(flat)
    steps = 3000
    for i in range(steps):
        _, grads = objective(unflatten(arch, flat), arch, X, rng.standard_normal((1, N, Z)), bound="elbo", kl="mc", estimator="stl")
        lr = 0.05 * 0.01 ** (i / steps)  # exponential decay 0.05 -> 5e-4
        flat, state = adam_update(flat, [-g for g in flatten(grads)], state, lr=lr)
    p = unflatten(arch, flat)
    enc, dec = p.encoder[0], p.decoder[0]
    q_mean = X @ enc.W[:, :Z] + enc.b[:Z]
    q_log_var = X @ enc.W[:, Z:] + enc.b[Z:]
    learned = LinearGaussian(dec.W.T.copy(), dec.b.copy(), fitted.sigma2)
    elbo = learned.elbo(X, q_mean, q_log_var).sum()
    assert elbo <= max_ll + 1e-9 * abs(max_ll)
    assert elbo == pytest.approx(max_ll, rel=1e-4)
