"""The one Gaussian parameterisation (mu, log_var): sampling, densities and the KL, against scipy and closed forms."""

import numpy as np
import pytest
from scipy import stats

from npvae.maths import gaussian as g
from npvae.checks.gradcheck import elementwise


def test_reparameterised_sample_has_variance_exp_log_var(rng):
    """Pins the meaning of log_var (the numpy-ml bug: read as log sigma in one place, log sigma^2 in another)."""
    mu = np.array([[0.3, -1.0, 2.0]])
    log_var = np.array([[np.log(4.0), 0.0, np.log(0.25)]])  # variances 4, 1, 0.25; log-sd reading would give 2, 1, 0.5
    n = 400_000
    z, _ = g.sample_forward(mu, log_var, rng.standard_normal((n, 1, 3)))
    var = z.var(axis=0)[0]
    # Sample variance has relative standard error sqrt(2/n) ~ 0.0022; 5 SE = 1.1%, far below the 2x of the bug.
    np.testing.assert_allclose(var, [4.0, 1.0, 0.25], rtol=5 * np.sqrt(2 / n))
    np.testing.assert_allclose(z.mean(axis=0)[0], mu[0], atol=5 * np.sqrt(4.0 / n))


def test_log_prob_matches_scipy_and_eps_form(rng):
    mu, log_var = rng.standard_normal((4, 3)), rng.uniform(-2, 2, (4, 3))
    eps = rng.standard_normal((5, 4, 3))
    z, _ = g.sample_forward(mu, log_var, eps)
    ref = stats.norm.logpdf(z, loc=mu, scale=np.sqrt(np.exp(log_var))).sum(-1)
    np.testing.assert_allclose(g.log_prob(z, mu, log_var), ref, rtol=1e-13)
    np.testing.assert_allclose(g.log_prob_eps(log_var, eps), ref, rtol=1e-13)
    np.testing.assert_allclose(g.log_std_normal(z), stats.norm.logpdf(z).sum(-1), rtol=1e-13)


def test_log_std_normal_grad_vs_finite_differences(rng):
    """d log N(z; 0, I) / dz = -z, against central differences of log_std_normal (docs/maths.md, "The log-densities")."""
    z, c = rng.standard_normal((3, 2, 4)), rng.standard_normal((3, 2))
    f = lambda a: float(np.sum(c * g.log_std_normal(a[0])))
    np.testing.assert_allclose(c[..., None] * g.log_std_normal_grad(z), elementwise(f, [z], 0, 1e-6), rtol=1e-7, atol=1e-9)


def test_log_q_total_derivative_along_the_sample_is_zero_and_minus_half(rng):
    """sum_k log q(z_k(mu, v); mu, v), z_k = mu + exp(v/2) eps_k, has total derivative 0 in mu and -K/2 in each v_j.

    The density is the z form (log_prob), not the eps form whose structure the claim comes from. |f| ~ 30 and
    h = 1e-6 give a rounding error of ~1e-16 |f| / h ~ 3e-9 per derivative; a wrong factor (-1 instead of -1/2,
    or a score term left in) is off by O(1).
    """
    K = 4
    mu, lv, eps = rng.standard_normal((2, 3)), rng.uniform(-1, 1, (2, 3)), rng.standard_normal((K, 2, 3))
    f = lambda a: float(np.sum(g.log_prob(g.sample_forward(a[0], a[1], eps)[0], a[0], a[1])))
    np.testing.assert_allclose(elementwise(f, [mu, lv], 0, 1e-6), 0.0, atol=1e-7)
    np.testing.assert_allclose(elementwise(f, [mu, lv], 1, 1e-6), -K / 2, rtol=0, atol=1e-7)


def test_kl_matches_full_covariance_formula(rng):
    """Diagonal KL to N(0, I) vs the general KL(N(m0, S0) || N(m1, S1)) (docs/maths.md, "Full covariance"), with dense matrices."""
    mu, log_var = rng.standard_normal((3, 4)), rng.uniform(-3, 3, (3, 4))
    for n in range(3):
        S0 = np.diag(np.exp(log_var[n]))
        ref = 0.5 * (np.trace(S0) + mu[n] @ mu[n] - 4 - np.linalg.slogdet(S0)[1])
        assert g.kl_std_normal_forward(mu, log_var)[n] == pytest.approx(ref, rel=1e-13)


def test_kl_precise_near_zero():
    """expm1 keeps KL ~ log_var^2 / 4 accurate where exp(v) - 1 - v would cancel."""
    v = np.array([[1e-9]])
    assert g.kl_std_normal_forward(np.zeros((1, 1)), v)[0] == pytest.approx(v[0, 0] ** 2 / 4, rel=1e-6)


def test_kl_and_sample_backward_vs_finite_differences(rng):
    mu, log_var = rng.standard_normal((2, 3)), rng.uniform(-1, 1, (2, 3))
    dkl = rng.standard_normal(2)
    dmu, dlv = g.kl_std_normal_backward(dkl, mu, log_var)
    f = lambda a: float(dkl @ g.kl_std_normal_forward(a[0], a[1]))
    np.testing.assert_allclose(dmu, elementwise(f, [mu, log_var], 0, 1e-6), rtol=1e-7)
    np.testing.assert_allclose(dlv, elementwise(f, [mu, log_var], 1, 1e-6), rtol=1e-7)

    eps, dz = rng.standard_normal((4, 2, 3)), rng.standard_normal((4, 2, 3))
    _, cache = g.sample_forward(mu, log_var, eps)
    dmu, dlv = g.sample_backward(dz, cache)
    f = lambda a: float(np.sum(dz * g.sample_forward(a[0], a[1], eps)[0]))
    np.testing.assert_allclose(dmu, elementwise(f, [mu, log_var], 0, 1e-6), rtol=1e-7)
    np.testing.assert_allclose(dlv, elementwise(f, [mu, log_var], 1, 1e-6), rtol=1e-7)


def test_path_backward_is_the_gradient_with_q_held_fixed(rng):
    """d/d(mu, log_var) of sum_k c_k log q(z_k(mu, log_var); mu0, log_var0), the stop-gradient of STL, by central differences."""
    mu0, lv0 = rng.standard_normal((2, 3)), rng.uniform(-1, 1, (2, 3))
    eps, c = rng.standard_normal((4, 2, 3)), rng.random((4, 2))
    f = lambda a: float(np.sum(c * g.log_prob(g.sample_forward(a[0], a[1], eps)[0], mu0, lv0)))
    dmu, dlv = g.log_prob_path_backward(c, lv0, eps)
    np.testing.assert_allclose(dmu, elementwise(f, [mu0, lv0], 0, 1e-6), rtol=1e-6)
    np.testing.assert_allclose(dlv, elementwise(f, [mu0, lv0], 1, 1e-6), rtol=1e-6)


def test_path_backward_log_var_part_survives_sigma_underflow():
    """At log_var = -1500, sigma = 0 in float64; the log_var part -c eps^2 / 2 must stay finite (review finding)."""
    eps = np.full((1, 1, 2), 0.5)
    with np.errstate(divide="ignore"):  # the mu part is -inf/0 here by design; only the log_var part is under test
        _, dlv = g.log_prob_path_backward(np.ones((1, 1)), np.full((1, 2), -1500.0), eps)
    np.testing.assert_array_equal(dlv, [[-0.125, -0.125]])


def test_float32_stays_float32(rng):
    mu = rng.standard_normal((2, 3)).astype(np.float32)
    lv = rng.standard_normal((2, 3)).astype(np.float32)
    eps = rng.standard_normal((4, 2, 3)).astype(np.float32)
    z, _ = g.sample_forward(mu, lv, eps)
    assert z.dtype == np.float32
    assert g.kl_std_normal_forward(mu, lv).dtype == np.float32
    assert g.log_prob_eps(lv, eps).dtype == np.float32
    assert g.log_std_normal(z).dtype == np.float32
