"""The two-stochastic-layer VAE (npvae.two_layer, npvae.two_layer_objective) against oracles and identities.

- hand-written gradients vs element-wise central differences of forward-only surrogates, every array of all four MLPs;
- Monte Carlo identities: analytic-top ELBO = MC-top ELBO in expectation, IWAE_1 = ELBO, DReG_1 = STL;
- the exact two-layer linear-Gaussian oracle (npvae.linear_gaussian2): log-weights against its log joint, the ELBO
  against its closed form, IWAE_K rising with K below log p(x), and zero variance at the exact posterior.
"""

import numpy as np
import pytest
from scipy.special import logsumexp

from conftest import AGREE_RTOL, assert_fd_close
from npvae.gradcheck import elementwise
from npvae.layers import ACTIVATIONS, Dense
from npvae.likelihoods import LIKELIHOODS, Likelihood
from npvae.linear_gaussian2 import TwoLayerLinearGaussian, TwoLayerQ
from npvae.two_layer import TwoLayerArch, TwoLayerParams, flatten, gaussian_head, init_params, param_names, param_shapes, unflatten
from npvae.two_layer_objective import VALID, bound_and_grad, bound_value, log_weights
from npvae.two_layer_surrogate import surrogate

CASES = [(b, k, e) for (b, k), es in VALID.items() for e in es]
WEIGHTED = [(b, k, e, w) for (b, k, e) in CASES for w in ((1.0, 0.4) if b == "elbo" else (1.0,))]
SE_TOL = 4.0  # Monte Carlo checks: |difference| <= 4 standard errors (a false alarm about once in 16,000)


def random_problem(rng, likelihood="bernoulli", activation="tanh", spec="5-4-3:3-2", N=3, K=4, dtype=np.float64):
    """(arch, params, x, eps1, eps2), biases drawn too so that no unit starts at a symmetric point."""
    arch = TwoLayerArch.parse(spec, activation=activation, likelihood=Likelihood(likelihood, sigma2=0.7, min_log_var=-3.0))
    params = unflatten(arch, [a + 0.3 * rng.standard_normal(a.shape) for a in flatten(init_params(arch, rng))])
    # Log-variances feed log-variances (lv1 -> z1 -> lv2 -> z2 -> lvp); with unbounded activations a random point can
    # reach exp(-lvp) ~ 1e60, where no finite difference means anything. Smaller log-variance weights keep |lv| ~ 1.
    heads = {part: getattr(params, part) for part in ("enc1", "enc2", "dec2")}
    for part, layers in heads.items():
        W = layers[-1].W.copy()
        W[:, W.shape[1] // 2:] *= 0.3
        params = params._replace(**{part: (*layers[:-1], layers[-1]._replace(W=W))})
    params = unflatten(arch, [a.astype(dtype) for a in flatten(params)])
    D = arch.data_dim
    x = (rng.random((N, D)) < 0.5) if likelihood == "bernoulli" else rng.standard_normal((N, D))
    eps1 = rng.standard_normal((K, N, arch.latent1))
    eps2 = rng.standard_normal((K, N, arch.latent2))
    return arch, params, x.astype(dtype), eps1.astype(dtype), eps2.astype(dtype)


def mean_and_se(v, axis=0):
    return v.mean(axis=axis), v.std(axis=axis, ddof=1) / np.sqrt(v.shape[axis])


# ---- architecture and parameters ----

def test_parse_spec_sizes_and_names():
    arch = TwoLayerArch.parse("784-200-200-100:100-100-50")
    assert (arch.data_dim, arch.hidden1, arch.latent1, arch.hidden2, arch.latent2) == (784, (200, 200), 100, (100, 100), 50)
    assert arch.spec == "784-200-200-100:100-100-50"
    assert arch.sizes() == {"enc1": (784, 200, 200, 200), "enc2": (100, 100, 100, 100),
                            "dec2": (50, 100, 100, 200), "dec1": (100, 200, 200, 784)}
    for spec in ("5-3:2", "5-4-3:3-2", "7-6-5-4:3-2-1"):
        assert TwoLayerArch.parse(spec).spec == spec
    learned = TwoLayerArch.parse("5-3:2", likelihood=Likelihood("gaussian-learned"))
    assert learned.sizes()["dec1"] == (3, 10)
    arch = TwoLayerArch.parse("5-4-3:3-2")
    params = init_params(arch, np.random.default_rng(0))
    names = param_names(arch)
    assert names[:4] == ["enc1.0.W", "enc1.0.b", "enc1.1.W", "enc1.1.b"] and names[-1] == "dec1.1.b"
    assert [n.split(".")[0] for n in names[::4]] == ["enc1", "enc2", "dec2", "dec1"]
    assert [a.shape for a in flatten(params)] == param_shapes(arch)
    assert all(a is b for a, b in zip(flatten(unflatten(arch, flatten(params))), flatten(params)))
    for a, b in zip(flatten(params), flatten(init_params(arch, np.random.default_rng(0)))):
        np.testing.assert_array_equal(a, b)  # randomness is the Generator passed in


@pytest.mark.parametrize("spec, match", [
    ("784-200-100", "exactly one ':'"), ("5-3:2:1", "exactly one ':'"), ("5-x-3:2", "looks like"),
    ("5:2", "at least D and Z1"), ("5-3:", "looks like"), ("5-0-3:2", "hidden layer size"), ("5-3:3-0", "latent2"),
    ("0-3:2", "data_dim"),
])
def test_bad_spec(spec, match):
    with pytest.raises(ValueError, match=match):
        TwoLayerArch.parse(spec)


def test_bad_arch_fields():
    with pytest.raises(ValueError, match="tuple"):
        TwoLayerArch(5, [4], 3, (), 2)
    with pytest.raises(ValueError, match="activation"):
        TwoLayerArch(5, (4,), 3, (), 2, activation="gelu")


# ---- gradients against finite differences of the surrogates ----

def _check_elementwise(arch, params, x, eps1, eps2, bound, kl, estimator, kl_weight=1.0):
    _, grads = bound_and_grad(params, arch, x, eps1, eps2, bound, kl, estimator, kl_weight)
    arrays = flatten(params)
    f = lambda a: surrogate(unflatten(arch, a), params, arch, x, eps1, eps2, bound, kl, estimator, kl_weight)
    f0 = f(arrays)
    for i, (name, g) in enumerate(zip(param_names(arch), flatten(grads))):
        try:
            assert_fd_close(g, elementwise(f, arrays, i, 1e-6), f0)
        except AssertionError as err:
            raise AssertionError(f"{bound}/{kl}/{estimator} beta={kl_weight}: {name}\n{err}") from None


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
@pytest.mark.parametrize("bound,kl,estimator,kl_weight", WEIGHTED)
def test_gradient_elementwise(rng, likelihood, bound, kl, estimator, kl_weight):
    arch, params, x, eps1, eps2 = random_problem(rng, likelihood)
    _check_elementwise(arch, params, x, eps1, eps2, bound, kl, estimator, kl_weight)


@pytest.mark.parametrize("activation", [a for a in ACTIVATIONS if a != "tanh"])
@pytest.mark.parametrize("bound,kl,estimator", CASES)
def test_gradient_elementwise_other_activations(rng, activation, bound, kl, estimator):
    arch, params, x, eps1, eps2 = random_problem(rng, "gaussian", activation, spec="4-3-3:3-2", N=2, K=3)
    _check_elementwise(arch, params, x, eps1, eps2, bound, kl, estimator)


def test_estimators_share_value_and_decoder_gradient_and_differ_on_the_encoders(rng):
    """STL and DReG change only the encoders' gradients, and by enough that the FD tests can tell them from reparam."""
    arch, params, x, eps1, eps2 = random_problem(rng, "gaussian")
    n_enc = 8  # enc1 and enc2: two layers each, W and b
    assert param_names(arch)[n_enc - 1] == "enc2.1.b"
    for bound, est in (("elbo", "stl"), ("iwae", "dreg")):
        v_r, g_r = bound_and_grad(params, arch, x, eps1, eps2, bound, "mc", "reparam")
        v, g = bound_and_grad(params, arch, x, eps1, eps2, bound, "mc", est)
        np.testing.assert_array_equal(v, v_r)
        g, g_r = flatten(g), flatten(g_r)
        assert min(np.abs(a - b).max() for a, b in zip(g[:n_enc], g_r[:n_enc])) > 1e-3, est
        # The decoders' gradient is reparam's: the ELBO's for STL, the IWAE bound's for DReG (Tucker et al. 2018).
        for name, a, b in zip(param_names(arch)[n_enc:], g[n_enc:], g_r[n_enc:]):
            np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15, err_msg=f"{est} {name}")


# ---- values and Monte Carlo identities ----

def test_values_are_the_bounds_the_names_say(rng):
    arch, params, x, eps1, eps2 = random_problem(rng, "bernoulli", K=6)
    a = log_weights(params, arch, x, eps1, eps2)
    assert a.shape == (6, 3)
    np.testing.assert_allclose(bound_value(params, arch, x, eps1, eps2, "elbo", "mc"), a.mean(0), rtol=1e-13)
    np.testing.assert_allclose(bound_value(params, arch, x, eps1, eps2, "iwae", "mc"), logsumexp(a, 0) - np.log(6), rtol=1e-13)
    for b, k, e, w in WEIGHTED:
        v, _ = bound_and_grad(params, arch, x, eps1, eps2, b, k, e, w)
        if w == 1.0:
            np.testing.assert_array_equal(v, bound_value(params, arch, x, eps1, eps2, b, k))


def test_k1_iwae_is_elbo_and_dreg_is_stl(rng):
    """K = 1: LME of one log-weight is that log-weight; DReG's squared weight is 1 (Tucker et al. 2018)."""
    arch, params, x, eps1, eps2 = random_problem(rng, "gaussian", K=1)
    v_e, g_e = bound_and_grad(params, arch, x, eps1, eps2, "elbo", "mc", "reparam")
    v_i, g_i = bound_and_grad(params, arch, x, eps1, eps2, "iwae", "mc", "reparam")
    np.testing.assert_array_equal(v_e, v_i)
    for a, b in zip(flatten(g_e), flatten(g_i)):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)
    v_s, g_s = bound_and_grad(params, arch, x, eps1, eps2, "elbo", "mc", "stl")
    v_d, g_d = bound_and_grad(params, arch, x, eps1, eps2, "iwae", "mc", "dreg")
    np.testing.assert_array_equal(v_s, v_d)
    for name, a, b in zip(param_names(arch), flatten(g_s), flatten(g_d)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15, err_msg=name)


def test_analytic_top_equals_mc_top_in_expectation(rng):
    """E_eps2[log p(z2) - log q(z2|z1)] = -KL(q(z2|z1) || N(0, I)) at every z1: one eps1, many eps2 (M per point)."""
    arch, params, x, eps1, _ = random_problem(rng, "bernoulli", K=1)
    M, N = 40000, x.shape[0]
    xs, e1 = np.tile(x, (M, 1)), np.tile(eps1, (1, M, 1))  # replicate r, point n at row r N + n; z1 fixed per point
    e2 = rng.standard_normal((1, M * N, arch.latent2))
    v_an = bound_value(params, arch, xs, e1, e2, "elbo", "analytic").reshape(M, N)
    v_mc = bound_value(params, arch, xs, e1, e2, "elbo", "mc").reshape(M, N)
    diff, se = mean_and_se(v_mc - v_an)
    assert np.all(np.abs(diff) <= SE_TOL * se), (diff, se)
    # How big the term is that the check is about: KL(q(z2|z1) || N(0, I)) per point, written out here.
    mu1, lv1, _ = gaussian_head(params.enc1, x, arch.activation)
    mu2, lv2, _ = gaussian_head(params.enc2, mu1 + np.exp(0.5 * lv1) * eps1[0], arch.activation)
    kl_top = 0.5 * np.sum(mu2**2 + np.exp(lv2) - 1 - lv2, axis=-1)
    assert SE_TOL * se.mean() < 0.1 * kl_top.mean(), (se, kl_top)  # a 10% error in the top KL would show


# ---- the linear-Gaussian oracle ----

def linear_problem(rng, D=4, Z1=3, Z2=2, N=3, sigma2=0.5):
    """A linear two-layer VAE with shared-variance q(z2|z1) and p(z1|z2), the same model as an oracle, and its q."""
    arch = TwoLayerArch(D, (), Z1, (), Z2, "identity", Likelihood("gaussian", sigma2=sigma2))
    p = unflatten(arch, [0.6 * rng.standard_normal(s) for s in param_shapes(arch)])
    enc2, dec2 = p.enc2[0], p.dec2[0]
    enc2 = Dense(np.concatenate([enc2.W[:, :Z2], np.zeros((Z1, Z2))], 1), enc2.b)  # lv2 = its bias, shared
    dec2 = Dense(np.concatenate([dec2.W[:, :Z1], np.zeros((Z2, Z1))], 1), dec2.b)  # log_var1 = its bias
    p = p._replace(enc2=(enc2,), dec2=(dec2,))
    (dec1,) = p.dec1
    model = TwoLayerLinearGaussian(dec1.W.T.copy(), dec1.b.copy(), dec2.W[:, :Z1].T.copy(), dec2.b[:Z1].copy(),
                                   dec2.b[Z1:].copy(), sigma2)
    x = model.sample(N, rng)[0]
    h = x @ p.enc1[0].W + p.enc1[0].b  # q(z1|x) per point, written out here
    q = TwoLayerQ(h[:, :Z1], h[:, Z1:], enc2.W[:, :Z2].T.copy(), enc2.b[:Z2].copy(), enc2.b[Z2:].copy())
    return arch, p, model, x, q


def test_log_weights_equal_the_oracles_log_joint_minus_log_q(rng):
    arch, p, model, x, q = linear_problem(rng)
    eps1, eps2 = rng.standard_normal((5, 3, 3)), rng.standard_normal((5, 3, 2))
    z1 = q.m1 + np.exp(0.5 * q.lv1) * eps1  # the samples, drawn here from q's parameters
    z2 = z1 @ q.B.T + q.d + np.exp(0.5 * q.lv2) * eps2
    want = model.log_joint(x, z1, z2) - model.log_q(z1, z2, *q)
    np.testing.assert_allclose(log_weights(p, arch, x, eps1, eps2), want, rtol=1e-12)


@pytest.mark.parametrize("kl", ["mc", "analytic"])
def test_elbo_mean_equals_the_oracles_closed_form(rng, kl):
    arch, p, model, x, q = linear_problem(rng)
    K = 40000
    eps1, eps2 = rng.standard_normal((K, 3, 3)), rng.standard_normal((K, 3, 2))
    xs = np.tile(x, (K, 1))  # K draws of each point as K one-sample ELBOs, to read off the standard error
    v = bound_value(p, arch, xs, eps1.reshape(1, -1, 3), eps2.reshape(1, -1, 2), "elbo", kl).reshape(K, 3)
    m, se = mean_and_se(v)
    exact = model.elbo(x, *q)
    assert np.all(np.abs(m - exact) <= SE_TOL * se), (m, exact, se)
    gap = model.log_marginal(x) - exact
    np.testing.assert_allclose(gap, model.kl_to_posterior(x, *q), rtol=1e-10)  # log p(x) - ELBO = KL(q || p(.|x))
    assert np.all(SE_TOL * se < 0.05 * gap), "the q is too good for this test to see a 5% error"


def best_encoders(model):
    """enc1 and enc2 computing the oracle's best_q: its m1 is affine in x (read off at x = 0 and the unit vectors)."""
    D, Z1, Z2 = model.shape
    q0, qI = model.best_q(np.zeros((1, D))), model.best_q(np.eye(D))
    enc1 = Dense(np.concatenate([qI.m1 - q0.m1, np.zeros((D, Z1))], 1), np.concatenate([q0.m1[0], q0.lv1[0]]))
    enc2 = Dense(np.concatenate([q0.B.T, np.zeros((Z1, Z2))], 1), np.concatenate([q0.d, q0.lv2]))
    return (enc1,), (enc2,)


def test_iwae_rises_with_k_and_stays_below_log_marginal(rng):
    """Burda et al. 2016, Theorem 1: L_1 <= L_10 <= L_100 <= log p(x), each L_K the mean of R independent estimates.

    q is the oracle's best diagonal q with m1 and lv1 moved by 0.5: a gap of 1-3 nats, so L_K rises by many standard
    errors, and L_100 ends within ~0.2 nats of log p(x), close enough that a bound exceeding it would show.
    """
    arch, p, model, x, _ = linear_problem(rng)
    (enc1,), enc2 = best_encoders(model)
    best = model.best_q(x)
    np.testing.assert_allclose(x @ enc1.W[:, :3] + enc1.b[:3], best.m1, rtol=1e-10, atol=1e-12)  # the mapping
    enc1 = enc1._replace(b=enc1.b + 0.5 * np.array([1, -1, 1, 1, -1, 1]))
    p = p._replace(enc1=(enc1,), enc2=enc2)
    h = x @ enc1.W + enc1.b
    log_px = model.log_marginal(x)
    gap = log_px - model.elbo(x, h[:, :3], h[:, 3:], best.B, best.d, best.lv2)
    assert np.all((gap > 0.5) & (gap < 5)), gap
    means, ses = [], []
    for K in (1, 10, 100):
        R = 40000 // K
        e1, e2 = rng.standard_normal((K, R * 3, 3)), rng.standard_normal((K, R * 3, 2))
        est = bound_value(p, arch, np.tile(x, (R, 1)), e1, e2, "iwae", "mc").reshape(R, 3)
        m, se = mean_and_se(est)
        assert np.all(m <= log_px + SE_TOL * se), (K, m, log_px, se)
        means.append(m), ses.append(se)
    assert np.all(np.abs(means[0] - (log_px - gap)) <= SE_TOL * ses[0])  # L_1 = ELBO
    for i in range(2):
        rise, se = means[i + 1] - means[i], np.hypot(ses[i], ses[i + 1])
        assert np.all(rise > SE_TOL * se), (i, rise, se)  # strictly, beyond the noise
    assert np.all(log_px - means[2] < 0.5 * gap)


def test_zero_variance_at_the_exact_posterior(rng):
    """Encoders set to the exact posterior (an in-family model): every log-weight is log p(x), and the STL and DReG
    encoder gradients vanish (the path derivative of a constant), while reparam's keeps the zero-mean score term."""
    D, Z1, Z2, N = 5, 3, 2, 4
    model = TwoLayerLinearGaussian.with_posterior_in_family(rng, D, Z1, Z2)
    x = model.sample(N, rng)[0]
    dec2 = Dense(np.concatenate([model.A.T, np.zeros((Z2, Z1))], 1), np.concatenate([model.c, model.log_var1]))
    p = TwoLayerParams(*best_encoders(model), (dec2,), (Dense(model.W.T.copy(), model.b.copy()),))
    arch = TwoLayerArch(D, (), Z1, (), Z2, "identity", Likelihood("gaussian", sigma2=float(model.sigma2)))
    np.testing.assert_allclose(x @ p.enc1[0].W[:, :Z1] + p.enc1[0].b[:Z1], model.best_q(x).m1, rtol=1e-10, atol=1e-12)
    eps1, eps2 = 2 * rng.standard_normal((50, N, Z1)), 2 * rng.standard_normal((50, N, Z2))
    log_px = model.log_marginal(x)
    np.testing.assert_allclose(log_weights(p, arch, x, eps1, eps2), np.broadcast_to(log_px, (50, N)), rtol=0, atol=1e-9)
    n_enc = 4  # enc1 and enc2 W, b
    for bound, est in (("elbo", "stl"), ("iwae", "dreg"), ("elbo", "reparam")):
        value, g = bound_and_grad(p, arch, x, eps1, eps2, bound, "mc", est)
        np.testing.assert_allclose(value, log_px, rtol=0, atol=1e-9)
        worst = max(np.abs(a).max() for a in flatten(g)[:n_enc])
        if est == "reparam":
            assert worst > 1e-2, worst  # the score term: zero in expectation only
        else:
            assert worst < 1e-9, (est, worst)


# ---- dtype and the public boundary ----

@pytest.mark.parametrize("bound,kl,estimator", CASES)
def test_float32_preserved_and_agrees_with_float64(rng, bound, kl, estimator):
    arch, p32, x32, e1, e2 = random_problem(rng, "gaussian", dtype=np.float32)
    v32, g32 = bound_and_grad(p32, arch, x32, e1, e2, bound, kl, estimator)
    up = lambda a: a.astype(np.float64)
    v64, g64 = bound_and_grad(unflatten(arch, map(up, flatten(p32))), arch, up(x32), up(e1), up(e2), bound, kl, estimator)
    tol = AGREE_RTOL[np.float32]
    assert v32.dtype == np.float32 and all(a.dtype == np.float32 for a in flatten(g32))
    np.testing.assert_allclose(v32, v64, rtol=tol)
    for name, a, b in zip(param_names(arch), flatten(g32), flatten(g64)):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * np.abs(b).max(), err_msg=name)


@pytest.mark.parametrize("mutate, match", [
    (lambda p, x, e1, e2: (p, x, e1[..., :-1], e2), "eps1 must have shape"),
    (lambda p, x, e1, e2: (p, x, e1, e2[..., :-1]), "eps2 must have shape"),
    (lambda p, x, e1, e2: (p, x, e1, e2[:, :-1]), "eps2 must have shape"),
    (lambda p, x, e1, e2: (p, x, e1, e2[0]), "eps2 must have 3 dimension"),
    (lambda p, x, e1, e2: (p, x, e1, e2[:-1]), "same number of samples"),
    (lambda p, x, e1, e2: (p, x, e1[:0], e2[:0]), "K = 0"),
    (lambda p, x, e1, e2: (p, x, e1.astype(np.float32), e2), "convert explicitly"),
    (lambda p, x, e1, e2: (p, x, e1 * np.inf, e2), "non-finite"),
    (lambda p, x, e1, e2: (p, x * 0.5, e1, e2), "binary x"),
    (lambda p, x, e1, e2: (p._replace(dec2=p.dec2[:1]), x, e1, e2), "needs"),
    (lambda p, x, e1, e2: (tuple(p), x, e1, e2), "TwoLayerParams"),
])
def test_bad_input_is_a_clear_value_error(rng, mutate, match):
    arch, params, x, eps1, eps2 = random_problem(rng)
    params, x, eps1, eps2 = mutate(params, x, eps1, eps2)
    with pytest.raises(ValueError, match=match):
        bound_and_grad(params, arch, x, eps1, eps2, "elbo", "mc", "reparam")
    with pytest.raises(ValueError, match=match):
        log_weights(params, arch, x, eps1, eps2)


@pytest.mark.parametrize("options, match", [
    (("iwae", "mc", "stl"), "not defined"), (("elbo", "mc", "dreg"), "not defined"),
    (("elbo", "analytic", "stl"), "not defined"), (("iwae", "analytic", "reparam"), "no analytic-KL form"),
    (("elbo", "mc", "score"), "estimator must be one of"), (("vae", "mc", "reparam"), "bound must be one of"),
])
def test_bad_options(rng, options, match):
    arch, params, x, eps1, eps2 = random_problem(rng)
    with pytest.raises(ValueError, match=match):
        bound_and_grad(params, arch, x, eps1, eps2, *options)


def test_kl_weight_only_for_the_elbo(rng):
    arch, params, x, eps1, eps2 = random_problem(rng)
    with pytest.raises(ValueError, match="kl_weight must be 1"):
        bound_and_grad(params, arch, x, eps1, eps2, "iwae", "mc", "reparam", kl_weight=0.5)
    with pytest.raises(ValueError, match="kl_weight"):
        bound_and_grad(params, arch, x, eps1, eps2, "elbo", "mc", "reparam", kl_weight=-1.0)
    with pytest.raises(ValueError, match="TwoLayerArch"):
        bound_and_grad(params, object(), x, eps1, eps2, "elbo", "mc", "reparam")
