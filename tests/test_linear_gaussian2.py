"""The two-layer linear-Gaussian oracle against independent routes: scipy densities, textbook Gaussian
conditioning on the explicit joint covariance of (z1, z2, x), a generic two-Gaussian KL, Monte Carlo,
and the identity log p(x) - ELBO = KL(q || p(z1, z2|x))."""

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy.stats import multivariate_normal

from npvae.linear_gaussian2 import TwoLayerLinearGaussian, TwoLayerQ


def random_model(seed, D, Z1, Z2, sigma2=0.5, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return TwoLayerLinearGaussian(rng.standard_normal((D, Z1)).astype(dtype), rng.standard_normal(D).astype(dtype),
                                  rng.standard_normal((Z1, Z2)).astype(dtype), rng.standard_normal(Z1).astype(dtype),
                                  rng.uniform(-1, 1, Z1).astype(dtype), sigma2)


def random_q(rng, model, N):
    D, Z1, Z2 = model.shape
    return TwoLayerQ(rng.uniform(-2, 2, (N, Z1)), rng.uniform(-2, 1, (N, Z1)), rng.standard_normal((Z2, Z1)),
                     rng.standard_normal(Z2), rng.uniform(-2, 1, Z2))


def random_x(rng, model, N=5):
    """Points from the model, plus one far out in the tail."""
    x = model.sample(N, rng)[0]
    x[-1] += 10 * rng.standard_normal(model.shape[0])
    return x


def joint(model):
    """Mean and covariance of (z1, z2, x), built explicitly: allowed here, never in the code under test."""
    W, A, c, b = model.W, model.A, model.c, model.b
    D, Z1, Z2 = model.shape
    P = A @ A.T + np.diag(np.exp(model.log_var1))
    rows = [[P, A, P @ W.T], [A.T, np.eye(Z2), A.T @ W.T], [W @ P, W @ A, W @ P @ W.T + model.sigma2 * np.eye(D)]]
    return np.concatenate([c, np.zeros(Z2), W @ c + b]), np.block(rows)


def condition(mean, cov, keep, given_idx, values):
    """p(a|b = values) for a = mean[keep]: (mean (N, |a|), cov, regression matrix) with an explicit solve."""
    S_ab, S_bb = cov[np.ix_(keep, given_idx)], cov[np.ix_(given_idx, given_idx)]
    H = np.linalg.solve(S_bb, S_ab.T).T
    return mean[keep] + (values - mean[given_idx]) @ H.T, cov[np.ix_(keep, keep)] - H @ S_ab.T, H


def exact_posterior(model, x):
    """p(z1, z2|x) by conditioning the explicit joint: mean (N, Z1 + Z2), cov."""
    D, Z1, Z2 = model.shape
    mean, cov = joint(model)
    Z = Z1 + Z2
    m, S, _ = condition(mean, cov, np.arange(Z), np.arange(Z, Z + D), x)
    return m, S


def q_joint(q):
    """q's joint Gaussian over (z1, z2): mean (N, Z), cov (N, Z, Z) = [[V1, V1 B^T], [B V1, B V1 B^T + V2]]."""
    V2 = np.diag(np.exp(q.lv2))
    means, covs = [], []
    for m1, lv1 in zip(q.m1, q.lv1):
        V1 = np.diag(np.exp(lv1))
        means.append(np.concatenate([m1, q.B @ m1 + q.d]))
        covs.append(np.block([[V1, V1 @ q.B.T], [q.B @ V1, q.B @ V1 @ q.B.T + V2]]))
    return np.array(means), np.array(covs)


def kl_gauss(m0, S0, m1, S1):
    """KL(N(m0, S0) || N(m1, S1)) = 1/2 [tr(S1^-1 S0) + d^T S1^-1 d - k + log|S1| - log|S0|]."""
    d = m1 - m0
    return 0.5 * (np.trace(np.linalg.solve(S1, S0)) + d @ np.linalg.solve(S1, d) - len(m0)
                  + np.linalg.slogdet(S1)[1] - np.linalg.slogdet(S0)[1])


# ---- log p(x) and the posterior against independent routes ----

@pytest.mark.parametrize("D, Z1, Z2", [(1, 1, 1), (5, 2, 1), (6, 3, 4), (4, 6, 2), (200, 20, 5)])
def test_log_marginal_matches_scipy(D, Z1, Z2):
    model = random_model(D + 10 * Z1 + 100 * Z2, D, Z1, Z2, sigma2=0.3)
    x = random_x(np.random.default_rng(1), model)
    mean, cov = joint(model)
    expected = multivariate_normal(mean[Z1 + Z2:], cov[Z1 + Z2:, Z1 + Z2:]).logpdf(x)
    np.testing.assert_allclose(model.log_marginal(x), expected, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("D, Z1, Z2", [(3, 1, 1), (6, 3, 2), (4, 4, 5), (3, 5, 2)])
def test_posterior_matches_gaussian_conditioning(D, Z1, Z2):
    model = random_model(7 * D + Z1 + Z2, D, Z1, Z2, sigma2=0.7)
    x = random_x(np.random.default_rng(2), model)
    mean, cov = joint(model)
    i1, i2, ix = np.arange(Z1), np.arange(Z1, Z1 + Z2), np.arange(Z1 + Z2, Z1 + Z2 + D)
    m1, S1, _ = condition(mean, cov, i1, ix, x)
    post = model.posterior(x)
    assert post.z1_mean.shape == (len(x), Z1) and post.z1_cov.shape == (Z1, Z1)
    np.testing.assert_allclose(post.z1_mean, m1, rtol=1e-10, atol=1e-11)
    np.testing.assert_allclose(post.z1_cov, S1, rtol=1e-10, atol=1e-12)
    # p(z2|z1, x), conditioning on (z1, x) together: the x columns of the regression vanish.
    z1 = np.random.default_rng(3).standard_normal((4, Z1))
    given_idx = np.concatenate([i1, ix])
    m2, S2, H = condition(mean, cov, i2, given_idx, np.concatenate([z1, x[:4]], axis=1))
    np.testing.assert_allclose(H[:, Z1:], 0, atol=1e-11)
    np.testing.assert_allclose(post.F, H[:, :Z1], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(z1 @ post.F.T + post.g, m2, rtol=1e-10, atol=1e-11)
    np.testing.assert_allclose(post.z2_cov, S2, rtol=1e-10, atol=1e-12)


def test_log_joint_and_log_q_match_scipy():
    model = random_model(5, 4, 3, 2)
    rng = np.random.default_rng(6)
    x = random_x(rng, model, N=3)
    q = random_q(rng, model, 3)
    z1, z2 = rng.standard_normal((2, 3, 3)), rng.standard_normal((2, 3, 2))     # (K, N, Z)
    mq, Sq = q_joint(q)
    lp, lq = model.log_joint(x, z1, z2), model.log_q(z1, z2, *q)
    assert lp.shape == lq.shape == (2, 3)
    V1 = np.diag(np.exp(model.log_var1))
    for k in range(2):
        for n in range(3):
            expected = (multivariate_normal(model.W @ z1[k, n] + model.b, model.sigma2 * np.eye(4)).logpdf(x[n])
                        + multivariate_normal(model.A @ z2[k, n] + model.c, V1).logpdf(z1[k, n])
                        + multivariate_normal(np.zeros(2), np.eye(2)).logpdf(z2[k, n]))
            np.testing.assert_allclose(lp[k, n], expected, rtol=1e-12)
            z = np.concatenate([z1[k, n], z2[k, n]])
            np.testing.assert_allclose(lq[k, n], multivariate_normal(mq[n], Sq[n]).logpdf(z), rtol=1e-12)


# ---- the ELBO and the KL ----

def test_elbo_matches_monte_carlo():
    model = random_model(21, 5, 3, 2)
    rng = np.random.default_rng(22)
    x = random_x(rng, model, N=3)
    q = random_q(rng, model, 3)
    K = 40_000
    z1 = q.m1 + np.exp(0.5 * q.lv1) * rng.standard_normal((K, 3, 3))
    z2 = z1 @ q.B.T + q.d + np.exp(0.5 * q.lv2) * rng.standard_normal((K, 3, 2))
    log_w = model.log_joint(x, z1, z2) - model.log_q(z1, z2, *q)                # (K, N)
    # 6 standard errors: a 2e-9 two-sided chance per point; a wrong term of O(0.1) is ~10 SE or more.
    se = log_w.std(axis=0) / math.sqrt(K)
    assert np.all(np.abs(log_w.mean(axis=0) - model.elbo(x, *q)) < 6 * se)


def test_kl_to_posterior_matches_generic_two_gaussian_kl():
    model = random_model(11, 5, 3, 2, sigma2=0.6)
    rng = np.random.default_rng(12)
    x = random_x(rng, model)
    q = random_q(rng, model, len(x))
    mp, Sp = exact_posterior(model, x)
    mq, Sq = q_joint(q)
    expected = [kl_gauss(mq[n], Sq[n], mp[n], Sp) for n in range(len(x))]
    np.testing.assert_allclose(model.kl_to_posterior(x, *q), expected, rtol=1e-10)


def test_best_q_gap_is_the_two_correlation_terms():
    # log p(x) - ELBO(best q) = 1/2 [sum log Lam1_jj - log|Lam1|] + 1/2 [sum log Q_kk - log|Q|], with Lam1 and Q
    # the precisions of p(z1|x) and p(z2|z1), here inverted from the explicit conditional covariances.
    model = random_model(13, 6, 3, 2)
    x = random_x(np.random.default_rng(14), model)
    D, Z1, Z2 = model.shape
    mean, cov = joint(model)
    _, S1, _ = condition(mean, cov, np.arange(Z1), np.arange(Z1 + Z2, Z1 + Z2 + D), x)
    _, S2, _ = condition(mean, cov, np.arange(Z1, Z1 + Z2), np.arange(Z1), np.zeros((1, Z1)))

    def correlation_term(S):
        Lam = np.linalg.inv(S)
        return 0.5 * (np.sum(np.log(np.diag(Lam))) - np.linalg.slogdet(Lam)[1])

    expected = correlation_term(S1) + correlation_term(S2)
    assert expected > 1e-3
    q = model.best_q(x)
    np.testing.assert_allclose(model.log_marginal(x) - model.elbo(x, *q), expected, rtol=1e-10)
    np.testing.assert_allclose(model.kl_to_posterior(x, *q), expected, rtol=1e-10)


def test_best_q_maximises_elbo_over_the_family():
    rng = np.random.default_rng(41)
    for seed in range(3):
        model = random_model(seed, 6, 3, 2, sigma2=0.4)
        x = random_x(rng, model)
        q = model.best_q(x)
        best = model.elbo(x, *q)
        for step in (1e-4, 1e-2, 1.0):
            for _ in range(10):
                moved = TwoLayerQ(*(p + step * rng.standard_normal(p.shape) for p in q))
                # A step of 1e-4 lowers the ELBO by ~1e-8, far above rounding (~1e-14 |ELBO|).
                assert np.all(model.elbo(x, *moved) < best)


# ---- identities over random models (hypothesis) ----

@st.composite
def models_and_q(draw, in_family=False):
    D = draw(st.integers(1, 8))
    Z1 = draw(st.integers(1, D if in_family else 6))
    Z2 = draw(st.integers(1, 5))
    sigma2 = draw(st.floats(0.1, 2.0))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if in_family:
        model = TwoLayerLinearGaussian.with_posterior_in_family(rng, D, Z1, Z2, sigma2)
    else:
        model = random_model(int(rng.integers(2**32)), D, Z1, Z2, sigma2)
    x = model.b + 2 * rng.standard_normal((4, D))
    return model, x, random_q(rng, model, 4)


def tol(log_p):
    """Absolute slack for a difference of O(|log p|) quantities: 1e-10 relative to their size."""
    return 1e-10 * np.maximum(1.0, np.abs(log_p))


@settings(max_examples=60, deadline=None)
@given(models_and_q())
def test_gap_equals_kl_to_posterior(case):
    model, x, q = case
    log_p = model.log_marginal(x)
    elbo = model.elbo(x, *q)
    kl = model.kl_to_posterior(x, *q)
    assert np.all(kl >= 0)
    assert np.all(elbo <= log_p + tol(log_p))
    assert np.all(np.abs((log_p - elbo) - kl) <= 1e-10 * kl + tol(log_p))


@settings(max_examples=40, deadline=None)
@given(models_and_q(in_family=True))
def test_best_q_is_exact_when_the_posterior_is_in_the_family(case):
    model, x, q = case
    best = model.best_q(x)
    log_p = model.log_marginal(x)
    assert np.all(np.abs(model.elbo(x, *best) - log_p) <= tol(log_p))
    assert np.all(np.abs(model.kl_to_posterior(x, *best)) <= 1e-12)
    # and any other q of the family is strictly worse
    assert np.all(model.kl_to_posterior(x, *q) > 1e-6)


def test_in_family_posterior_is_diagonal():
    # Independent of best_q: the explicit conditional covariances are diagonal.
    model = TwoLayerLinearGaussian.with_posterior_in_family(np.random.default_rng(3), 7, 4, 3)
    D, Z1, Z2 = model.shape
    mean, cov = joint(model)
    _, S1, _ = condition(mean, cov, np.arange(Z1), np.arange(Z1 + Z2, Z1 + Z2 + D), np.zeros((1, D)))
    _, S2, _ = condition(mean, cov, np.arange(Z1, Z1 + Z2), np.arange(Z1), np.zeros((1, Z1)))
    for S in (S1, S2):
        np.testing.assert_allclose(S - np.diag(np.diag(S)), 0, atol=1e-13)
    assert np.count_nonzero(model.A) == min(Z1, Z2)


# ---- sampling, dtype ----

def test_sample_moments_and_reproducibility():
    model = random_model(51, 3, 2, 2, sigma2=0.5)
    n = 100_000
    x, z1, z2 = model.sample(n, np.random.default_rng(52))
    assert x.shape == (n, 3) and z1.shape == (n, 2) and z2.shape == (n, 2)
    mean, C = joint(model)
    v = np.concatenate([z1, z2, x], axis=1)
    # Standard errors of Gaussian sample moments (see test_linear_gaussian); 5 SE over 27 distinct statistics.
    np.testing.assert_array_less(np.abs(v.mean(0) - mean), 5 * np.sqrt(np.diag(C) / n))
    se_cov = np.sqrt((np.outer(np.diag(C), np.diag(C)) + C**2) / n)
    np.testing.assert_array_less(np.abs(np.cov(v, rowvar=False, bias=True) - C), 5 * se_cov)
    for a, b in zip((x, z1, z2), model.sample(n, np.random.default_rng(52))):
        np.testing.assert_array_equal(a, b)


def test_float32_model_stays_float32_and_agrees_with_float64():
    m64 = random_model(3, 6, 3, 2, sigma2=0.4)
    m32 = TwoLayerLinearGaussian(*(p.astype(np.float32) for p in (m64.W, m64.b, m64.A, m64.c, m64.log_var1)), 0.4)
    x64 = m64.sample(4, np.random.default_rng(4))[0]
    x32 = x64.astype(np.float32)
    q32 = m32.best_q(x32)
    q64 = m64.best_q(x64)
    z1, z2 = q32.m1[None], np.ones((1, 4, 2), np.float32)
    outputs = {"log_marginal": m32.log_marginal(x32), "elbo": m32.elbo(x32, *q32), "kl": m32.kl_to_posterior(x32, *q32),
               "log_joint": m32.log_joint(x32, z1, z2), "log_q": m32.log_q(z1, z2, *q32),
               **{f"posterior {k}": v for k, v in m32.posterior(x32)._asdict().items()},
               **{f"q {k}": v for k, v in q32._asdict().items()},
               **{f"sample {i}": v for i, v in enumerate(m32.sample(3, np.random.default_rng(0)))}}
    for name, out in outputs.items():
        assert out.dtype == np.float32, name
    assert m32.sigma2.dtype == np.float32
    np.testing.assert_allclose(outputs["log_marginal"], m64.log_marginal(x64), rtol=1e-5)
    np.testing.assert_allclose(outputs["elbo"], m64.elbo(x64, *q64), rtol=1e-5)


# ---- bad input is refused at the boundary ----

def test_bad_model_parameters_raise():
    W, b, A, c, lv = np.ones((4, 2)), np.zeros(4), np.ones((2, 3)), np.zeros(2), np.zeros(2)
    for bad in (0.0, -1.0, np.nan, np.inf, "a"):
        with pytest.raises(ValueError, match="sigma2"):
            TwoLayerLinearGaussian(W, b, A, c, lv, bad)
    f32 = [p.astype(np.float32) for p in (W, b, A, c, lv)]
    with pytest.raises(ValueError, match="sigma2"):
        TwoLayerLinearGaussian(*f32, 1e-50)   # underflows to 0 in float32
    with pytest.raises(ValueError, match="log_var1"):
        TwoLayerLinearGaussian(*f32[:4], np.full(2, 200, np.float32), 1.0)   # exp overflows in float32
    bad_params = {
        "W": [np.ones(4), np.ones((4, 0)), np.ones((4, 2), dtype=np.int64), np.full((4, 2), np.nan)],
        "b": [np.zeros(3), np.zeros(4, dtype=np.float32)],
        "A": [np.ones((3, 3)), np.ones((2, 0)), np.full((2, 3), np.inf), [[1.0] * 3] * 2],
        "c": [np.zeros(3), np.zeros((2, 1))],
        "log_var1": [np.zeros(3), np.array([0.0, np.nan])],
    }
    good = dict(W=W, b=b, A=A, c=c, log_var1=lv)
    for name, values in bad_params.items():
        for v in values:
            with pytest.raises(ValueError, match=name):
                TwoLayerLinearGaussian(**{**good, name: v}, sigma2=1.0)


def test_bad_x_q_and_z_raise():
    model = random_model(61, 4, 3, 2)
    x = np.zeros((5, 4))
    q = random_q(np.random.default_rng(0), model, 5)
    bad_xs = [np.zeros((5, 3)), np.zeros(4), np.full((5, 4), np.nan), np.zeros((5, 4), np.float32),
              np.zeros((5, 4), np.int64), [[0.0] * 4] * 5]
    for bad in bad_xs:
        for call in (model.log_marginal, model.posterior, model.best_q, lambda x: model.elbo(x, *q),
                     lambda x: model.kl_to_posterior(x, *q)):
            with pytest.raises(ValueError, match="x"):
                call(bad)
    bad_q = {"m1": [np.zeros((4, 3)), np.zeros((5, 2)), np.full((5, 3), np.inf)],
             "lv1": [np.zeros((5,)), np.zeros((5, 3), np.float32)],
             "B": [np.zeros((3, 2)), np.zeros((2, 3, 1))],
             "d": [np.zeros(3), np.array([0.0, np.nan])],
             "lv2": [np.zeros((5, 2)), np.zeros(3)]}
    z1, z2 = np.zeros((2, 5, 3)), np.zeros((2, 5, 2))
    for name, values in bad_q.items():
        for v in values:
            moved = q._replace(**{name: v})
            for call in (lambda: model.elbo(x, *moved), lambda: model.kl_to_posterior(x, *moved),
                         lambda: model.log_q(z1, z2, *moved)):
                with pytest.raises(ValueError, match=name):
                    call()
    for bz1, bz2, name in [(np.zeros((2, 4, 3)), z2, "z1"), (z1, np.zeros((3, 5, 2)), "z2"), (np.zeros(3), z2, "z1"),
                           (z1, np.zeros((2, 5, 3)), "z2"), (z1.astype(np.float32), z2, "z1")]:
        with pytest.raises(ValueError, match=name):
            model.log_joint(x, bz1, bz2)
        with pytest.raises(ValueError, match="z1|z2"):   # in log_q z1 sets N, so a wrong N is z1 and z2 disagreeing
            model.log_q(bz1, bz2, *q)
    with pytest.raises(ValueError, match="rng"):
        model.sample(3, 0)
    with pytest.raises(ValueError, match="n"):
        model.sample(0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="Z1 <= D"):
        TwoLayerLinearGaussian.with_posterior_in_family(np.random.default_rng(0), 2, 3, 1)


def test_model_is_read_only():
    model = random_model(81, 4, 2, 2)
    with pytest.raises(AttributeError):
        model.sigma2 = 1.0
    for a in (model.W, model.b, model.A, model.c, model.log_var1):
        with pytest.raises(ValueError):
            a[...] = 1.0
