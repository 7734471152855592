"""The L-layer linear-Gaussian chain against independent routes, for L = 1, 2, 3 (and 4): scipy densities and
textbook conditioning on the explicit joint covariance of (z_1, ..., z_L, x), the ELBO of q's explicit joint
Gaussian, a generic two-Gaussian KL, importance sampling, and the identity log p(x) - ELBO = KL(q || p(z|x))."""

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from npvae.maths import gaussian
from npvae.oracle.linear_chain import ChainQ, LinearChain, LinearGaussian

SHAPES = [(5, 2), (6, 3, 2), (3, 5, 2), (7, 3, 2, 4), (4, 2, 3, 1), (6, 3, 2, 2, 1)]   # (D, Z1, ..., ZL)


def random_q(rng, model, N):
    D, *Zs = model.shape
    return ChainQ(rng.uniform(-2, 2, (N, Zs[0])), rng.uniform(-2, 1, (N, Zs[0])),
                  tuple(rng.standard_normal((Zu, Z)) for Z, Zu in zip(Zs, Zs[1:])),
                  tuple(rng.standard_normal(Zu) for Zu in Zs[1:]), tuple(rng.uniform(-2, 1, Zu) for Zu in Zs[1:]))


def random_x(rng, model, N=5):
    """Points from the model, plus one far out in the tail."""
    x = model.sample(N, rng)[0]
    x[-1] += 10 * rng.standard_normal(model.shape[0])
    return x


def sem(blocks, sizes, m0, omega):
    """Mean and covariance of v = G v + m0 + e, e ~ N(0, diag(omega)), G given by blocks {(row, col): matrix}."""
    off = np.cumsum([0, *sizes])
    G = np.zeros((off[-1], off[-1]))
    for (i, j), M in blocks.items():
        G[off[i]:off[i + 1], off[j]:off[j + 1]] = M
    T = np.linalg.inv(np.eye(off[-1]) - G)
    return T @ m0, T @ np.diag(omega) @ T.T


def joint(model):
    """Mean and covariance of (z_1, ..., z_L, x), built explicitly: allowed here, never in the code under test."""
    D, *Zs = model.shape
    L = model.L
    blocks = {(l, l + 1): A for l, A in enumerate(model.A)} | {(L, 0): model.W}
    m0 = np.concatenate([*model.c, np.zeros(Zs[-1]), model.b])
    omega = np.concatenate([*map(np.exp, model.log_var), np.ones(Zs[-1]), np.full(D, model.sigma2)])
    return sem(blocks, [*Zs, D], m0, omega)


def q_joint(model, q, n):
    """q's joint Gaussian over (z_1, ..., z_L) for point n: z_1 = m1 + e_1, z_{l+1} = B_l z_l + d_l + e_{l+1}."""
    blocks = {(l + 1, l): B for l, B in enumerate(q.B)}
    return sem(blocks, model.shape[1:], np.concatenate([q.m1[n], *q.d]), np.exp(np.concatenate([q.lv1[n], *q.lv])))


def condition(mean, cov, keep, given_idx, values):
    """p(a|b = values) for a = mean[keep]: (mean (N, |a|), cov, regression matrix), by an explicit solve."""
    S_ab, S_bb = cov[np.ix_(keep, given_idx)], cov[np.ix_(given_idx, given_idx)]
    H = np.linalg.solve(S_bb, S_ab.T).T
    return mean[keep] + (values - mean[given_idx]) @ H.T, cov[np.ix_(keep, keep)] - H @ S_ab.T, H


def blocks_of(model):
    """Index arrays of z_1, ..., z_L and x in the joint."""
    off = np.cumsum([0, *model.shape[1:], model.shape[0]])
    return [np.arange(off[i], off[i + 1]) for i in range(model.L + 1)]


def kl_gauss(m0, S0, m1, S1):
    """KL(N(m0, S0) || N(m1, S1)) = 1/2 [tr(S1^-1 S0) + d^T S1^-1 d - k + log|S1| - log|S0|]."""
    d = m1 - m0
    return 0.5 * (np.trace(np.linalg.solve(S1, S0)) + d @ np.linalg.solve(S1, d) - len(m0)
                  + np.linalg.slogdet(S1)[1] - np.linalg.slogdet(S0)[1])


def correlation_term(S):
    """1/2 [sum log Lam_jj - log|Lam|], Lam = S^-1: what the best diagonal Gaussian misses of N(., S)."""
    Lam = np.linalg.inv(S)
    return 0.5 * (np.sum(np.log(np.diag(Lam))) - np.linalg.slogdet(Lam)[1])


def model_for(shape, seed, sigma2=0.5, in_family=False, dtype=np.float64):
    make = LinearChain.with_posterior_in_family if in_family else LinearChain.random
    return make(np.random.default_rng(seed), shape[0], shape[1:], sigma2, dtype)


# ---- log p(x) and the posterior against the explicit joint ----

@pytest.mark.parametrize("shape", SHAPES + [(150, 5, 3, 2), (1, 1, 1), (1, 1)])
def test_log_marginal_matches_scipy(shape):
    model = model_for(shape, sum(shape), sigma2=0.3)
    x = random_x(np.random.default_rng(1), model)
    mean, cov = joint(model)
    ix = blocks_of(model)[-1]
    expected = multivariate_normal(mean[ix], cov[np.ix_(ix, ix)]).logpdf(x)
    np.testing.assert_allclose(model.log_marginal(x), expected, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("shape", SHAPES)
def test_posterior_matches_gaussian_conditioning(shape):
    model = model_for(shape, 7 * sum(shape), sigma2=0.7)
    rng = np.random.default_rng(2)
    x = random_x(rng, model, N=4)
    mean, cov = joint(model)
    *iz, ix = blocks_of(model)
    post = model.posterior(x)
    m1, S1, _ = condition(mean, cov, iz[0], ix, x)
    np.testing.assert_allclose(post.z1_mean, m1, rtol=1e-10, atol=1e-11)
    np.testing.assert_allclose(post.z1_cov, S1, rtol=1e-10, atol=1e-12)
    for l in range(model.L - 1):
        # p(z_{l+1} | z_1..z_l, x): the regression on everything but z_l vanishes (the posterior is a chain).
        given_idx = np.concatenate([*iz[:l + 1], ix])
        zs = rng.standard_normal((4, len(given_idx) - len(ix)))
        m, S, H = condition(mean, cov, iz[l + 1], given_idx, np.concatenate([zs, x], axis=1))
        own = np.isin(given_idx, iz[l])
        np.testing.assert_allclose(H[:, ~own], 0, atol=1e-10)
        np.testing.assert_allclose(post.F[l], H[:, own], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(zs[:, own[:zs.shape[1]]] @ post.F[l].T + post.g[l], m, rtol=1e-10, atol=1e-11)
        np.testing.assert_allclose(post.cov[l], S, rtol=1e-10, atol=1e-12)
    jm, jS = model.joint_posterior(x)
    m_all, S_all, _ = condition(mean, cov, np.concatenate(iz), ix, x)
    np.testing.assert_allclose(jm, m_all, rtol=1e-10, atol=1e-11)
    np.testing.assert_allclose(jS, S_all, rtol=1e-10, atol=1e-12)


def test_log_joint_and_log_q_match_scipy():
    model = model_for((4, 3, 2, 2), 5)
    rng = np.random.default_rng(6)
    x, q = random_x(rng, model, N=3), random_q(rng, model, 3)
    zs = [rng.standard_normal((2, 3, Z)) for Z in model.shape[1:]]             # (K, N, Z_l)
    mean, cov = joint(model)
    *iz, ix = blocks_of(model)
    lp, lq = model.log_joint(x, zs), model.log_q(zs, q)
    assert lp.shape == lq.shape == (2, 3)
    for k in range(2):
        for n in range(3):
            v = np.concatenate([*(z[k, n] for z in zs), x[n]])
            np.testing.assert_allclose(lp[k, n], multivariate_normal(mean, cov).logpdf(v), rtol=1e-12)
            np.testing.assert_allclose(lq[k, n], multivariate_normal(*q_joint(model, q, n)).logpdf(v[:-len(ix)]),
                                       rtol=1e-12)


# ---- the ELBO and the KL against explicit joint Gaussians ----

@pytest.mark.parametrize("shape", SHAPES)
def test_elbo_matches_explicit_joint_expectation(shape):
    # ELBO = E_q log N((z, x); mu, Sigma) + H(q), with (z, x) having mean (mq, x) and covariance blockdiag(Sq, 0).
    model = model_for(shape, 11 * sum(shape))
    rng = np.random.default_rng(12)
    x, q = random_x(rng, model, N=4), random_q(rng, model, 4)
    mean, cov = joint(model)
    Zt = sum(model.shape[1:])
    P = np.linalg.inv(cov)
    expected = []
    for n in range(len(x)):
        mq, Sq = q_joint(model, q, n)
        r = np.concatenate([mq, x[n]]) - mean
        e_log_p = -0.5 * (len(mean) * math.log(2 * math.pi) + np.linalg.slogdet(cov)[1] + r @ P @ r
                          + np.trace(P[:Zt, :Zt] @ Sq))
        expected.append(e_log_p + 0.5 * (Zt * math.log(2 * math.pi * math.e) + np.linalg.slogdet(Sq)[1]))
    np.testing.assert_allclose(model.elbo(x, q), expected, rtol=1e-10)


@pytest.mark.parametrize("shape", SHAPES)
def test_kl_to_posterior_matches_generic_two_gaussian_kl(shape):
    model = model_for(shape, 13 * sum(shape), sigma2=0.6)
    rng = np.random.default_rng(14)
    x, q = random_x(rng, model, N=4), random_q(rng, model, 4)
    mean, cov = joint(model)
    *iz, ix = blocks_of(model)
    mp, Sp, _ = condition(mean, cov, np.concatenate(iz), ix, x)
    expected = [kl_gauss(*q_joint(model, q, n), mp[n], Sp) for n in range(len(x))]
    np.testing.assert_allclose(model.kl_to_posterior(x, q), expected, rtol=1e-10)


@pytest.mark.parametrize("shape", SHAPES[1:])
def test_best_q_gap_is_the_sum_of_correlation_terms(shape):
    # log p(x) - ELBO(best q) = sum over p(z_1|x) and every p(z_{l+1}|z_l) of 1/2 [sum log Lam_jj - log|Lam|],
    # with the precisions inverted here from the explicit conditional covariances.
    model = model_for(shape, 17 * sum(shape))
    x = random_x(np.random.default_rng(18), model)
    mean, cov = joint(model)
    *iz, ix = blocks_of(model)
    covs = [condition(mean, cov, iz[0], ix, x)[1]]
    covs += [condition(mean, cov, iz[l + 1], iz[l], np.zeros((1, len(iz[l]))))[1] for l in range(model.L - 1)]
    q = model.best_q(x)
    for lv, S in zip([q.lv1[0], *q.lv], covs):
        np.testing.assert_allclose(lv, -np.log(np.diag(np.linalg.inv(S))), rtol=1e-10, atol=1e-12)
    expected = sum(map(correlation_term, covs))
    assert expected > 1e-3
    np.testing.assert_allclose(model.log_marginal(x) - model.elbo(x, q), expected, rtol=1e-9)
    np.testing.assert_allclose(model.kl_to_posterior(x, q), expected, rtol=1e-10)


@pytest.mark.parametrize("shape", [(5, 2), (6, 3, 2), (5, 3, 2, 2)])
def test_importance_weights_bracket_the_closed_forms(shape):
    # IWAE_K = E[LME_K(a)], a_k = log p(x, z_k) - log q(z_k|x), z_k ~ q. Sample by sample LME(a) >= mean(a) exactly;
    # over R replicates the mean of mean(a) estimates the ELBO and the mean of LME estimates IWAE_K <= log p(x),
    # each to within 5 standard errors (a 6e-7 two-sided chance per check; the seeds are fixed).
    model = model_for(shape, 19 * sum(shape))
    rng = np.random.default_rng(20)
    x, q = random_x(rng, model, N=3), random_q(rng, model, 3)
    R, K = 400, 64
    zs = [q.m1 + gaussian.std(q.lv1) * rng.standard_normal((R, K, *q.m1.shape))]
    for B, d, lv in zip(q.B, q.d, q.lv):
        zs.append(zs[-1] @ B.T + d + gaussian.std(lv) * rng.standard_normal((R, K, 3, len(d))))
    a = model.log_joint(x, zs) - model.log_q(zs, q)                              # (R, K, N)
    lme, mean_a = logsumexp(a, axis=1) - math.log(K), a.mean(axis=1)             # (R, N)
    assert np.all(lme >= mean_a - 1e-12 * np.abs(mean_a))
    elbo, log_p = model.elbo(x, q), model.log_marginal(x)
    se = lambda v: v.std(axis=0) / math.sqrt(R)                                   # noqa: E731
    assert np.all(np.abs(mean_a.mean(axis=0) - elbo) < 5 * se(mean_a))
    assert np.all(lme.mean(axis=0) <= log_p + 5 * se(lme))
    assert np.all(lme.mean(axis=0) > elbo + 5 * se(lme))                          # K = 64 gains clearly over K = 1


def test_exact_posterior_gives_constant_log_weights():
    # With the posterior in the family, best_q is p(z|x): every log-weight is log p(x), whatever z is.
    model = model_for((6, 3, 2, 2), 21, in_family=True)
    rng = np.random.default_rng(22)
    x = random_x(rng, model, N=3)
    zs = [rng.standard_normal((5, 3, Z)) for Z in model.shape[1:]]
    a = model.log_joint(x, zs) - model.log_q(zs, model.best_q(x))
    np.testing.assert_allclose(a, np.broadcast_to(model.log_marginal(x), a.shape), rtol=1e-12)


def test_in_family_posterior_is_diagonal():
    # Independent of best_q: the explicit conditional covariances of p(z_1|x) and p(z_{l+1}|z_l) are diagonal.
    model = model_for((7, 4, 3, 5, 2), 23, in_family=True)
    mean, cov = joint(model)
    *iz, ix = blocks_of(model)
    covs = [condition(mean, cov, iz[0], ix, np.zeros((1, len(ix))))[1]]
    covs += [condition(mean, cov, iz[l + 1], iz[l], np.zeros((1, len(iz[l]))))[1] for l in range(model.L - 1)]
    for S in covs:
        np.testing.assert_allclose(S - np.diag(np.diag(S)), 0, atol=1e-12)
    assert [np.count_nonzero(A) for A in model.A] == [3, 3, 2]


# ---- identities over random models (hypothesis) ----

@st.composite
def models_and_q(draw, in_family=False):
    D = draw(st.integers(1, 8))
    L = draw(st.integers(1, 4))
    Zs = [draw(st.integers(1, D if in_family else 6))] + [draw(st.integers(1, 5)) for _ in range(L - 1)]
    sigma2 = draw(st.floats(0.1, 2.0))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    model = model_for((D, *Zs), int(rng.integers(2**32)), sigma2, in_family)
    x = model.b + 2 * rng.standard_normal((4, D))
    return model, x, random_q(rng, model, 4)


def tol(log_p):
    """Absolute slack for a difference of O(|log p|) quantities: 1e-10 relative to their size."""
    return 1e-10 * np.maximum(1.0, np.abs(log_p))


@settings(max_examples=40, deadline=None)
@given(models_and_q())
def test_gap_equals_kl_to_posterior(case):
    model, x, q = case
    log_p, elbo, kl = model.log_marginal(x), model.elbo(x, q), model.kl_to_posterior(x, q)
    assert np.all(kl >= 0)
    assert np.all(elbo <= log_p + tol(log_p))
    assert np.all(np.abs((log_p - elbo) - kl) <= 1e-10 * kl + tol(log_p))


@settings(max_examples=30, deadline=None)
@given(models_and_q())
def test_best_q_maximises_the_elbo(case):
    model, x, q = case
    best = model.best_q(x)
    top = model.elbo(x, best)
    assert np.all(top >= model.elbo(x, q) - tol(top))
    rng = np.random.default_rng(0)
    for step in (1e-2, 1.0):
        moved = ChainQ(*(p + step * rng.standard_normal(p.shape) for p in best[:2]),
                       *(tuple(p + step * rng.standard_normal(p.shape) for p in ps) for ps in best[2:]))
        # A step of 1e-2 lowers the ELBO by ~1e-4 times a curvature of order one, far above rounding (~1e-14 |ELBO|).
        assert np.all(model.elbo(x, moved) < top)


@settings(max_examples=30, deadline=None)
@given(models_and_q(in_family=True))
def test_best_q_is_exact_when_the_posterior_is_in_the_family(case):
    model, x, q = case
    best = model.best_q(x)
    log_p = model.log_marginal(x)
    assert np.all(np.abs(model.elbo(x, best) - log_p) <= tol(log_p))
    assert np.all(np.abs(model.kl_to_posterior(x, best)) <= 1e-12)
    assert np.all(model.kl_to_posterior(x, q) > 1e-6)            # and any other q of the family is strictly worse


# ---- sampling, dtype, L = 1 ----

def test_sample_moments_and_reproducibility():
    model = model_for((3, 2, 2, 1), 51)
    n = 100_000
    x, zs = model.sample(n, np.random.default_rng(52))
    assert x.shape == (n, 3) and [z.shape for z in zs] == [(n, 2), (n, 2), (n, 1)]
    mean, C = joint(model)
    v = np.concatenate([*zs, x], axis=1)
    # Standard errors of Gaussian sample moments: mean_i has variance C_ii / n, a covariance entry
    # (C_ii C_jj + C_ij^2) / n. 5 SE over 44 distinct statistics: a false-alarm chance of ~3e-5 at a fixed seed.
    np.testing.assert_array_less(np.abs(v.mean(0) - mean), 5 * np.sqrt(np.diag(C) / n))
    se_cov = np.sqrt((np.outer(np.diag(C), np.diag(C)) + C**2) / n)
    np.testing.assert_array_less(np.abs(np.cov(v, rowvar=False, bias=True) - C), 5 * se_cov)
    x2, zs2 = model.sample(n, np.random.default_rng(52))
    for a, b in zip((x, *zs), (x2, *zs2)):
        np.testing.assert_array_equal(a, b)


def test_float32_model_stays_float32_and_agrees_with_float64():
    m64 = model_for((6, 3, 2, 2), 3, sigma2=0.4)
    m32 = model_for((6, 3, 2, 2), 3, sigma2=0.4, dtype=np.float32)
    x64 = m64.sample(4, np.random.default_rng(4))[0]
    x32 = x64.astype(np.float32)
    q32 = m32.best_q(x32)
    up = lambda a: np.asarray(a, np.float64)  # noqa: E731
    zs = [q32.m1[None], np.ones((1, 4, 2), np.float32), np.ones((1, 4, 2), np.float32)]
    post = m32.posterior(x32)
    outputs = {"log_marginal": m32.log_marginal(x32), "elbo": m32.elbo(x32, q32), "kl": m32.kl_to_posterior(x32, q32),
               "log_joint": m32.log_joint(x32, zs), "log_q": m32.log_q(zs, q32), "z1_mean": post.z1_mean,
               "z1_cov": post.z1_cov, **{f"joint {i}": a for i, a in enumerate(m32.joint_posterior(x32))},
               **{f"post {k}[{i}]": a for k in ("F", "g", "cov") for i, a in enumerate(getattr(post, k))},
               **{f"q {k}[{i}]": a for k in ("B", "d", "lv") for i, a in enumerate(getattr(q32, k))},
               "q m1": q32.m1, "q lv1": q32.lv1, "sample x": m32.sample(3, np.random.default_rng(0))[0],
               **{f"sample z{i}": z for i, z in enumerate(m32.sample(3, np.random.default_rng(0))[1])}}
    for name, out in outputs.items():
        assert out.dtype == np.float32, name
    assert m32.sigma2.dtype == np.float32
    # Error model: against float64 arithmetic on the same (rounded) inputs, a float32 evaluation of log N(x; m, C) errs by
    # at most ~ u kappa S: u float32's eps, kappa the condition number of x's covariance C, S the magnitude of the terms
    # summed (D log(2 pi) / 2 + |value|). Over 300 random models of this shape the largest error is 0.35 of that (0.17
    # here, where u kappa S is 1.1e-4 of the value: a relative error above that fails).
    m = LinearChain(up(m32.W), up(m32.b), float(m32.sigma2), *(tuple(map(up, t)) for t in (m32.A, m32.c, m32.log_var)))
    q = type(q32)(*(tuple(map(up, v)) if isinstance(v, tuple) else up(v) for v in q32))
    x = up(x32)
    ix = blocks_of(m)[-1]
    kappa = np.linalg.cond(joint(m)[1][np.ix_(ix, ix)])
    for name, want in (("log_marginal", m.log_marginal(x)), ("elbo", m.elbo(x, q))):
        scale = 0.5 * x.shape[1] * np.log(2 * np.pi) + np.abs(want)
        tol = np.finfo(np.float32).eps * kappa * scale
        assert np.all(np.abs(outputs[name] - want) <= tol), name


def test_linear_gaussian_is_the_one_layer_chain():
    chain = model_for((5, 2), 31)
    ppca = LinearGaussian(chain.W, chain.b, chain.sigma2)
    assert isinstance(ppca, LinearChain) and ppca.L == 1 and ppca.shape == (5, 2)
    x = random_x(np.random.default_rng(32), chain)
    q = chain.best_q(x)
    assert q.B == q.d == q.lv == ()
    np.testing.assert_array_equal(ppca.best_diagonal_q(x), q[:2])
    np.testing.assert_array_equal(ppca.elbo(x, *q[:2]), chain.elbo(x, q))
    np.testing.assert_array_equal(ppca.joint_posterior(x)[1], ppca.posterior(x)[1])
    with pytest.raises(ValueError, match="one-layer"):
        LinearGaussian(chain.W, chain.b, 0.5, (np.ones((2, 1)),), (np.zeros(2),), (np.zeros(2),))


# ---- bad input is refused at the boundary ----

def test_bad_model_parameters_raise():
    W, b, A, c, lv = np.ones((4, 2)), np.zeros(4), (np.ones((2, 3)), np.ones((3, 1))), (np.zeros(2), np.zeros(3)), \
        (np.zeros(2), np.zeros(3))
    good = dict(W=W, b=b, sigma2=1.0, A=A, c=c, log_var=lv)
    bad = {"sigma2": [0.0, -1.0, np.nan, np.inf, "a"],
           "W": [np.ones(4), np.ones((4, 0)), np.full((4, 2), np.nan), np.ones((4, 2), np.int64), [[1.0] * 2] * 4],
           "b": [np.zeros(3), np.zeros(4, np.float32)],
           "A": [A[0], (A[0],), (A[0], np.ones((2, 1))), (A[0], np.ones((3, 0)))],
           "A[1]": [(A[0], np.ones((3, 1), np.float32)), (A[0], [[1.0]] * 3)],
           "c[0]": [(np.zeros(3), c[1])], "log_var[1]": [(lv[0], np.full(3, np.inf)), (lv[0], np.zeros(2))]}
    for name, values in bad.items():
        field = name.split("[")[0]
        for v in values:
            with pytest.raises(ValueError, match=name.replace("[", r"\[")):
                LinearChain(**{**good, field: v})
    f32 = {k: (tuple(a.astype(np.float32) for a in v) if isinstance(v, tuple) else v.astype(np.float32))
           for k, v in good.items() if k != "sigma2"}
    with pytest.raises(ValueError, match="sigma2"):
        LinearChain(**f32, sigma2=1e-50)                                          # underflows to 0 in float32
    with pytest.raises(ValueError, match=r"log_var\[0\]"):
        LinearChain(**{**f32, "log_var": (np.full(2, 100, np.float32), f32["log_var"][1])}, sigma2=1.0)
    with pytest.raises(ValueError, match="Z1 <= D"):
        LinearChain.with_posterior_in_family(np.random.default_rng(0), 2, (3, 1))


def test_bad_x_q_and_zs_raise():
    model = model_for((4, 3, 2, 2), 61)
    x, q = np.zeros((5, 4)), random_q(np.random.default_rng(0), model, 5)
    for bad in (np.zeros((5, 3)), np.zeros(4), np.full((5, 4), np.nan), np.zeros((5, 4), np.float32),
                np.zeros((5, 4), np.int64), [[0.0] * 4] * 5):
        for call in (model.log_marginal, model.posterior, model.best_q, model.joint_posterior,
                     lambda x: model.elbo(x, q), lambda x: model.kl_to_posterior(x, q)):
            with pytest.raises(ValueError, match="x"):
                call(bad)
    bad_q = {"m1": q._replace(m1=np.zeros((4, 3))), "lv1": q._replace(lv1=np.zeros((5, 3), np.float32)),
             r"B\[1\]": q._replace(B=(q.B[0], np.zeros((2, 3)))), "q.d": q._replace(d=q.d[:1]),
             r"lv\[0\]": q._replace(lv=(np.zeros(3), q.lv[1])), "ChainQ": tuple(q[:4]),
             "m1 contains": q._replace(m1=np.full((5, 3), np.inf)),
             r"d\[1\] contains": q._replace(d=(q.d[0], np.array([0.0, np.nan])))}
    zs = [np.zeros((2, 5, Z)) for Z in (3, 2, 2)]
    for name, moved in bad_q.items():
        for call in (lambda: model.elbo(x, moved), lambda: model.kl_to_posterior(x, moved),
                     lambda: model.log_q(zs, moved)):
            with pytest.raises(ValueError, match=name):
                call()
    for bad, name in [(zs[:2], "zs"), ([zs[0], np.zeros((2, 4, 2)), zs[2]], r"zs\[1\]"),
                      ([zs[0][0], *zs[1:]], r"zs\[1\]"), ([zs[0], zs[1], zs[2].astype(np.float32)], r"zs\[2\]")]:
        with pytest.raises(ValueError, match=name):
            model.log_joint(x, bad)
    with pytest.raises(ValueError, match=r"zs\[0\]"):
        model.log_joint(x[:4], zs)
    with pytest.raises(ValueError, match="rng"):
        model.sample(3, 0)
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        model.sample(0, np.random.default_rng(0))


def test_model_is_read_only():
    model = model_for((4, 2, 2), 81)
    with pytest.raises(AttributeError):
        model.sigma2 = 1.0
    for a in (model.W, model.b, *model.A, *model.c, *model.log_var):
        with pytest.raises(ValueError):
            a[...] = 1.0
