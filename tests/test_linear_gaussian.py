"""The linear-Gaussian oracle against independent routes: scipy densities, textbook Gaussian conditioning,
scikit-learn's PCA, explicit full-covariance formulas, and the identities of pPCA (Tipping & Bishop 1999; docs/maths.md, "The linear-Gaussian model")."""

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy.stats import multivariate_normal
from sklearn.decomposition import PCA

from npvae.oracle.linear_chain import LinearGaussian, ppca_fit


def random_model(seed, D, Z, sigma2=0.5, dtype=np.float64):
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((D, Z)).astype(dtype)
    b = rng.standard_normal(D).astype(dtype)
    return LinearGaussian(W, b, sigma2)


def random_x(seed, model, N=7):
    """Points around b at about the marginal's scale, plus a few far out in the tails."""
    rng = np.random.default_rng(seed + 1000)
    scale = np.concatenate([np.ones(N - 2), [5.0, 20.0]])[:, None]
    return (model.b + scale * rng.standard_normal((N, model.D))).astype(model.dtype)


def covariance(model):
    """C = W W^T + s2 I, formed explicitly: allowed here, never in the code under test."""
    return model.W @ model.W.T + model.sigma2 * np.eye(model.D)


# ---- log p(x) and p(z|x) against independent routes ----

@pytest.mark.parametrize("D, Z", [(2, 1), (5, 2), (8, 3), (4, 4), (30, 5)])
def test_log_marginal_matches_scipy(D, Z):
    model = random_model(D * 10 + Z, D, Z, sigma2=0.3)
    x = random_x(1, model)
    expected = multivariate_normal(mean=model.b, cov=covariance(model)).logpdf(x)
    np.testing.assert_allclose(model.log_marginal(x), expected, rtol=1e-12, atol=1e-12)


def test_float32_model_stays_float32_and_agrees_with_float64():
    m64 = random_model(3, 6, 2, sigma2=0.4)
    m32 = LinearGaussian(m64.W.astype(np.float32), m64.b.astype(np.float32), 0.4)
    x64 = random_x(3, m64)[:5]   # the bulk, not the far tail, where float32 rounding of x dominates
    x32 = x64.astype(np.float32)
    mean32, log_var32 = m32.best_diagonal_q(x32)
    outputs = {
        "log_marginal": m32.log_marginal(x32),
        "posterior mean": m32.posterior(x32)[0],
        "posterior cov": m32.posterior(x32)[1],
        "q mean": mean32,
        "q log_var": log_var32,
        "elbo": m32.elbo(x32, mean32, log_var32),
        "kl": m32.kl_to_posterior(x32, mean32, log_var32),
        "sample x": m32.sample(3, np.random.default_rng(0))[0],
        "sample z": m32.sample(3, np.random.default_rng(0))[1],
    }
    for name, out in outputs.items():
        assert out.dtype == np.float32, name
    assert m32.sigma2.dtype == np.float32
    # float32 eps is 1.2e-7; a few dozen roundings on O(10) values stay well inside 1e-5 relative.
    np.testing.assert_allclose(m32.log_marginal(x32), m64.log_marginal(x64), rtol=1e-5)
    np.testing.assert_allclose(outputs["elbo"], m64.elbo(x64, *m64.best_diagonal_q(x64)), rtol=1e-5)


@pytest.mark.parametrize("D, Z", [(3, 1), (6, 2), (5, 5)])
def test_posterior_matches_gaussian_conditioning(D, Z):
    model = random_model(D + 7 * Z, D, Z, sigma2=0.7)
    x = random_x(2, model)
    # Joint (z, x): Cov(z) = I, Cov(z, x) = W^T, Cov(x) = C; condition with an explicit solve against C.
    C = covariance(model)
    expected_mean = (model.W.T @ np.linalg.solve(C, (x - model.b).T)).T
    expected_cov = np.eye(Z) - model.W.T @ np.linalg.solve(C, model.W)
    mean, cov = model.posterior(x)
    assert mean.shape == (x.shape[0], Z) and cov.shape == (Z, Z)
    np.testing.assert_allclose(mean, expected_mean, rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(cov, expected_cov, rtol=1e-11, atol=1e-13)


def test_kl_to_posterior_matches_full_covariance_kl():
    model = random_model(11, 5, 3, sigma2=0.6)
    x = random_x(11, model)
    rng = np.random.default_rng(12)
    q_mean = rng.uniform(-2, 2, (x.shape[0], 3))
    q_log_var = rng.uniform(-2, 2, (x.shape[0], 3))
    # KL(N(m0, S0) || N(m1, S1)) = 1/2 [tr(S1^-1 S0) + d^T S1^-1 d - Z + log|S1| - log|S0|], S1 from conditioning.
    C = covariance(model)
    S1 = np.eye(3) - model.W.T @ np.linalg.solve(C, model.W)
    m1 = (model.W.T @ np.linalg.solve(C, (x - model.b).T)).T
    S1_inv = np.linalg.inv(S1)
    expected = []
    for m0, lv in zip(q_mean, q_log_var):
        d = m1[len(expected)] - m0
        expected.append(0.5 * (np.trace(S1_inv @ np.diag(np.exp(lv))) + d @ S1_inv @ d - 3
                               + np.linalg.slogdet(S1)[1] - lv.sum()))
    np.testing.assert_allclose(model.kl_to_posterior(x, q_mean, q_log_var), expected, rtol=1e-10)


def test_kl_to_posterior_keeps_relative_precision_near_the_posterior():
    # Axis-aligned W makes M exactly diagonal, so best_diagonal_q is the posterior and a log-variance
    # offset delta gives KL = 1/2 sum_j (e^delta_j - 1 - delta_j) = 1/2 sum_j (delta^2/2 + delta^3/6 + ...).
    # At delta ~ 1e-6 that is ~1e-12; e^u - 1 without expm1 carries an absolute error ~1e-16, far above rtol.
    W = np.zeros((5, 2))
    W[0, 0], W[1, 1] = 1.5, 0.7
    model = LinearGaussian(W, np.arange(5.0), 0.4)
    x = random_x(91, model)
    q_mean, q_log_var = model.best_diagonal_q(x)
    delta = np.array([1e-6, -2e-6])
    shifted = q_log_var + delta
    delta = shifted - q_log_var   # the offset actually represented in floating point
    expected = 0.5 * np.sum(delta**2 / 2 + delta**3 / 6 + delta**4 / 24, axis=1)
    np.testing.assert_allclose(model.kl_to_posterior(x, q_mean, shifted), expected, rtol=1e-8)


def test_elbo_matches_monte_carlo():
    model = random_model(21, 4, 2, sigma2=0.5)
    x = random_x(21, model)[:3]
    q_mean = np.array([[0.3, -0.2], [1.0, 0.5], [-1.5, 0.0]])
    q_log_var = np.array([[-0.5, 0.2], [0.0, -1.0], [0.7, -0.3]])
    rng = np.random.default_rng(22)
    K = 100_000
    for n in range(3):
        z = q_mean[n] + np.exp(0.5 * q_log_var[n]) * rng.standard_normal((K, 2))
        log_w = (multivariate_normal(np.zeros(4), model.sigma2 * np.eye(4)).logpdf(x[n] - model.b - z @ model.W.T)
                 + multivariate_normal(np.zeros(2), np.eye(2)).logpdf(z)
                 - multivariate_normal(q_mean[n], np.diag(np.exp(q_log_var[n]))).logpdf(z))
        # The Monte Carlo mean is within 5 standard errors (a 6e-7 two-sided chance) of the exact ELBO.
        se = log_w.std() / math.sqrt(K)
        assert abs(log_w.mean() - model.elbo(x[n:n + 1], q_mean[n:n + 1], q_log_var[n:n + 1])[0]) < 5 * se


# ---- closed-form pPCA maximum likelihood ----

@pytest.fixture(scope="module")
def ppca_data():
    truth = random_model(31, 6, 2, sigma2=0.3)
    X, _ = truth.sample(500, np.random.default_rng(32))
    return X


def test_ppca_fit_matches_sklearn(ppca_data):
    X = ppca_data
    N, D = X.shape
    model, max_loglik = ppca_fit(X, 2)
    pca = PCA(n_components=2, svd_solver="full").fit(X)
    unbias = (N - 1) / N   # sklearn divides by N-1, the ML estimate by N
    np.testing.assert_allclose(model.b, pca.mean_, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(model.sigma2, pca.noise_variance_ * unbias, rtol=1e-12)
    WWt = pca.components_.T @ np.diag(pca.explained_variance_ * unbias - model.sigma2) @ pca.components_
    np.testing.assert_allclose(model.W @ model.W.T, WWt, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(covariance(model), pca.get_covariance() * unbias, rtol=1e-10, atol=1e-12)


def test_ppca_max_loglik_by_three_routes(ppca_data):
    X = ppca_data
    N, D = X.shape
    model, max_loglik = ppca_fit(X, 2)
    assert isinstance(max_loglik, float)
    # Route 2: evaluate the fitted density at every point (Woodbury path, no eigenvalues).
    np.testing.assert_allclose(model.log_marginal(X).sum(), max_loglik, rtol=1e-12)
    # Route 3: sklearn's score uses its own covariance c * C_ml with c = N/(N-1), so it is *not* the
    # maximum. Because tr(C_ml^-1 S) = D at the pPCA optimum, the gap is exactly
    # N*score = max_loglik - N D/2 (log c + 1/c - 1), which is > 0 for c != 1.
    c = N / (N - 1)
    pca = PCA(n_components=2, svd_solver="full").fit(X)
    np.testing.assert_allclose(N * pca.score(X), max_loglik - N * D / 2 * (math.log(c) + 1 / c - 1), rtol=1e-12)
    assert N * pca.score(X) < max_loglik
    # And a model built from sklearn's own (N-1) parameters reproduces sklearn's score through log_marginal.
    W_sk = pca.components_.T * np.sqrt(pca.explained_variance_ - pca.noise_variance_)
    sk_model = LinearGaussian(W_sk, pca.mean_, pca.noise_variance_)
    np.testing.assert_allclose(sk_model.log_marginal(X).mean(), pca.score(X), rtol=1e-12)


def test_ppca_fit_is_a_maximum(ppca_data):
    X = ppca_data
    model, max_loglik = ppca_fit(X, 2)
    rng = np.random.default_rng(33)
    slack = 1e-12 * abs(max_loglik)   # rounding in a sum of 500 terms; a step of 1e-3 costs ~1e-4
    for step in (1e-3, 1e-2, 1e-1):
        for _ in range(10):
            W = model.W + step * rng.standard_normal(model.W.shape)
            b = model.b + step * rng.standard_normal(model.D)
            s2 = model.sigma2 * math.exp(step * rng.standard_normal())
            assert LinearGaussian(W, b, s2).log_marginal(X).sum() <= max_loglik + slack


def test_ppca_fit_float32_stays_float32(ppca_data):
    model, max_loglik = ppca_fit(ppca_data.astype(np.float32), 2)
    assert model.dtype == np.float32 and model.b.dtype == np.float32
    _, loglik64 = ppca_fit(ppca_data, 2)
    np.testing.assert_allclose(max_loglik, loglik64, rtol=1e-5)


# ---- identities over random models (hypothesis) ----

@st.composite
def models_and_q(draw, orthogonal=False):
    D = draw(st.integers(2, 8))
    Z = draw(st.integers(1, D - 1))
    seed = draw(st.integers(0, 2**32 - 1))
    sigma2 = draw(st.floats(0.1, 2.0))
    rng = np.random.default_rng(seed)
    if orthogonal:
        Q, _ = np.linalg.qr(rng.standard_normal((D, Z)))
        W = Q * rng.uniform(0.2, 3.0, Z)   # orthogonal columns with positive scales: M is diagonal
    else:
        W = rng.standard_normal((D, Z))
    model = LinearGaussian(W, rng.standard_normal(D), sigma2)
    N = 4
    x = model.b + 2 * rng.standard_normal((N, D))
    return model, x, rng.uniform(-2, 2, (N, Z)), rng.uniform(-2, 2, (N, Z))


def tol(log_p):
    """Absolute slack for a difference of O(|log p|) quantities: 1e-10 relative to their size."""
    return 1e-10 * np.maximum(1.0, np.abs(log_p))


@settings(max_examples=50, deadline=None)
@given(models_and_q())
def test_elbo_is_a_lower_bound(case):
    model, x, q_mean, q_log_var = case
    log_p = model.log_marginal(x)
    assert np.all(model.elbo(x, q_mean, q_log_var) <= log_p + tol(log_p))


@settings(max_examples=50, deadline=None)
@given(models_and_q())
def test_gap_equals_kl_to_posterior(case):
    model, x, q_mean, q_log_var = case
    log_p = model.log_marginal(x)
    gap = log_p - model.elbo(x, q_mean, q_log_var)
    kl = model.kl_to_posterior(x, q_mean, q_log_var)
    assert np.all(kl >= 0)
    assert np.all(np.abs(gap - kl) <= 1e-10 * np.abs(kl) + tol(log_p))


@settings(max_examples=50, deadline=None)
@given(models_and_q(orthogonal=True))
def test_best_diagonal_q_is_exact_for_orthogonal_W(case):
    model, x, _, _ = case
    q_mean, q_log_var = model.best_diagonal_q(x)
    log_p = model.log_marginal(x)
    assert np.all(np.abs(model.elbo(x, q_mean, q_log_var) - log_p) <= tol(log_p))
    assert np.all(np.abs(model.kl_to_posterior(x, q_mean, q_log_var)) <= 1e-12)


@settings(max_examples=50, deadline=None)
@given(models_and_q())
def test_best_diagonal_q_gap_is_the_correlation_term(case):
    model, x, _, _ = case
    M = model.W.T @ model.W + model.sigma2 * np.eye(model.Z)
    sign, log_det_M = np.linalg.slogdet(M)
    expected_gap = 0.5 * (np.sum(np.log(np.diag(M))) - log_det_M)
    q_mean, q_log_var = model.best_diagonal_q(x)
    log_p = model.log_marginal(x)
    gap = log_p - model.elbo(x, q_mean, q_log_var)
    assert sign > 0
    assert np.all(np.abs(gap - expected_gap) <= 1e-10 * expected_gap + tol(log_p))
    np.testing.assert_allclose(model.kl_to_posterior(x, q_mean, q_log_var), expected_gap, rtol=1e-10, atol=1e-13)


def test_best_diagonal_q_maximises_elbo_over_diagonal_q():
    rng = np.random.default_rng(41)
    for seed in range(5):
        model = random_model(seed, 6, 3, sigma2=0.4)
        x = random_x(seed, model)
        q_mean, q_log_var = model.best_diagonal_q(x)
        best = model.elbo(x, q_mean, q_log_var)
        for step in (1e-4, 1e-2, 1.0):
            for _ in range(10):
                mean = q_mean + step * rng.standard_normal(q_mean.shape)
                log_var = q_log_var + step * rng.standard_normal(q_log_var.shape)
                # A step of 1e-4 lowers the ELBO by ~1e-8, far above rounding (~1e-14 * |ELBO|).
                assert np.all(model.elbo(x, mean, log_var) < best)


# ---- sampling ----

def test_sample_moments_and_reproducibility():
    model = random_model(51, 4, 2, sigma2=0.5)
    n = 200_000
    x, z = model.sample(n, np.random.default_rng(52))
    assert x.shape == (n, 4) and z.shape == (n, 2)
    C = covariance(model)
    # Standard errors of Gaussian sample moments: mean_i has variance C_ii / n; a covariance entry
    # has variance (C_ii C_jj + C_ij^2) / n. 5 standard errors over 14 distinct statistics leaves a
    # false-alarm chance of ~1e-5, and the seed is fixed.
    np.testing.assert_array_less(np.abs(x.mean(0) - model.b), 5 * np.sqrt(np.diag(C) / n))
    se_cov = np.sqrt((np.outer(np.diag(C), np.diag(C)) + C**2) / n)
    np.testing.assert_array_less(np.abs(np.cov(x, rowvar=False, bias=True) - C), 5 * se_cov)
    # The latent draws are the z that generated x: the residual is N(0, s2 I) and independent of z.
    resid = x - z @ model.W.T - model.b
    s2 = model.sigma2
    np.testing.assert_array_less(np.abs(np.cov(resid, rowvar=False, bias=True) - s2 * np.eye(4)),
                                 5 * np.sqrt((s2**2 + s2**2 * np.eye(4)) / n))
    np.testing.assert_array_less(np.abs(resid.T @ z / n), 5 * np.sqrt(s2 / n))
    x2, z2 = model.sample(n, np.random.default_rng(52))
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(z, z2)


# ---- bad input is refused at the boundary ----

def test_bad_model_parameters_raise():
    W, b = np.ones((4, 2)), np.zeros(4)
    for bad in (0.0, -1.0, np.nan, np.inf, "a"):
        with pytest.raises(ValueError, match="sigma2"):
            LinearGaussian(W, b, bad)
    with pytest.raises(ValueError, match="sigma2"):
        LinearGaussian(W.astype(np.float32), b.astype(np.float32), 1e-50)   # underflows to 0 in float32
    with pytest.raises(ValueError, match="W"):
        LinearGaussian(np.ones(4), b, 1.0)
    with pytest.raises(ValueError, match="W"):
        LinearGaussian(np.ones((2, 3)), np.zeros(2), 1.0)   # Z > D
    with pytest.raises(ValueError, match="W"):
        LinearGaussian(np.ones((4, 2), dtype=np.int64), b, 1.0)
    with pytest.raises(ValueError, match="W"):
        LinearGaussian(np.full((4, 2), np.nan), b, 1.0)
    with pytest.raises(ValueError, match="b"):
        LinearGaussian(W, np.zeros(3), 1.0)
    with pytest.raises(ValueError, match="b"):
        LinearGaussian(W, np.zeros(4, dtype=np.float32), 1.0)


def test_bad_x_and_q_raise():
    model = random_model(61, 4, 2)
    good_x, good_q = np.zeros((3, 4)), np.zeros((3, 2))
    bad_xs = {
        "wrong shape": np.zeros((3, 5)),
        "1-D": np.zeros(4),
        "NaN": np.where(np.eye(3, 4) > 0, np.nan, 0.0),
        "int dtype": np.zeros((3, 4), dtype=np.int64),
        "float32 on float64 model": np.zeros((3, 4), dtype=np.float32),
        "list": [[0.0] * 4] * 3,
    }
    for what, x in bad_xs.items():
        for call in (model.log_marginal, model.posterior, model.best_diagonal_q,
                     lambda x: model.elbo(x, good_q, good_q), lambda x: model.kl_to_posterior(x, good_q, good_q)):
            with pytest.raises(ValueError, match="x"):
                call(x)
    for bad_q in (np.zeros((2, 2)), np.zeros(2), np.zeros((3, 2), dtype=np.float32), np.full((3, 2), np.inf)):
        for call in (model.elbo, model.kl_to_posterior):
            with pytest.raises(ValueError, match="q_mean"):
                call(good_x, bad_q, good_q)
            with pytest.raises(ValueError, match="q_log_var"):
                call(good_x, good_q, bad_q)
    with pytest.raises(ValueError, match="rng"):
        model.sample(3, 0)
    with pytest.raises(ValueError, match="n"):
        model.sample(0, np.random.default_rng(0))


def test_ppca_fit_refuses_bad_input():
    X = np.random.default_rng(71).standard_normal((50, 4))
    for Z in (4, 5):
        with pytest.raises(ValueError, match="Z"):
            ppca_fit(X, Z)
    with pytest.raises(ValueError, match="Z"):
        ppca_fit(X, 0)
    with pytest.raises(ValueError, match="rows"):
        ppca_fit(X[:1], 2)
    with pytest.raises(ValueError, match="X"):
        ppca_fit(X.astype(int), 2)
    # Data exactly in a 2-D subspace leave nothing for sigma2.
    flat = np.random.default_rng(72).standard_normal((50, 2)) @ np.random.default_rng(73).standard_normal((2, 4))
    with pytest.raises(ValueError, match="degenerate"):
        ppca_fit(flat, 2)
    assert LinearGaussian.ppca_fit is ppca_fit


def test_model_is_read_only():
    model = random_model(81, 4, 2)
    with pytest.raises(AttributeError):
        model.sigma2 = 1.0
    with pytest.raises(ValueError):
        model.W[0, 0] = 1.0
