"""The bounds' hand-written gradients against central differences of forward-only surrogates (npvae.checks.gradcheck).

Every (likelihood, bound, kl, estimator) is checked per parameter in a random direction, and element-wise
on a tiny model. The surrogates are built from forward passes only, so they are independent of the backward code.
"""

import numpy as np
import pytest

from conftest import AGREE_RTOL, FD_RTOL, assert_fd_close, random_problem
from npvae import flatten, objective, param_names, unflatten
from npvae.checks.gradcheck import elementwise, per_parameter, surrogate
from npvae.nn.layers import ACTIVATIONS
from npvae.likelihoods import LIKELIHOODS
from npvae.objectives import VALID

CASES = [(b, k, e) for (b, k), es in VALID.items() for e in es]
# kl_weight (warm-up) exists for the ELBO only.
WEIGHTED = [(b, k, e, w) for (b, k, e) in CASES for w in ((1.0, 0.4) if b == "elbo" else (1.0,))]


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
@pytest.mark.parametrize("bound,kl,estimator,kl_weight", WEIGHTED)
def test_gradient_per_parameter(rng, likelihood, bound, kl, estimator, kl_weight):
    arch, params, x, eps = random_problem(rng, likelihood, "tanh", hidden=(5, 4))
    options = dict(bound=bound, kl=kl, estimator=estimator, kl_weight=kl_weight)
    _, grads = objective(params, arch, x, eps, **options)
    for r in per_parameter(params, grads, arch, x, eps, options, rng, param_names(arch)):
        assert r.status == "ok", f"{r.name}: analytic {r.analytic!r} vs finite difference {r.fd!r} (|diff| {r.error:.2e}, tol {r.tol:.2e})"


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("bound,kl,estimator", CASES)
def test_gradient_elementwise(rng, likelihood, activation, bound, kl, estimator):
    arch, params, x, eps = random_problem(rng, likelihood, activation, D=3, hidden=(2,), Z=2, N=2, K=2)
    options = dict(bound=bound, kl=kl, estimator=estimator)
    _, grads = objective(params, arch, x, eps, **options)
    arrays = flatten(params)
    f = lambda a: surrogate(unflatten(arch, a), params, arch, x, eps, **options)
    for i, g in enumerate(flatten(grads)):
        assert_fd_close(g, elementwise(f, arrays, i, 1e-6), f(arrays))


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_free_bits_gradient(rng, likelihood):
    """lambda chosen between the dimensions' KLs, so some are floored and some are not (no point sits on the kink)."""
    from npvae.maths.gaussian import kl_std_normal_per_dim
    from npvae.vae.model import encode

    arch, params, x, eps = random_problem(rng, likelihood, N=6)
    kl_j = kl_std_normal_per_dim(*encode(params, arch, x)[:2])
    vals = np.sort(kl_j.ravel())
    i = vals.size // 2
    lam = float(0.5 * (vals[i - 1] + vals[i]))  # half the dimensions floored, none within reach of the FD step
    options = dict(bound="elbo", kl="analytic", estimator="reparam", kl_weight=0.8, free_bits=lam)
    value, grads = objective(params, arch, x, eps, **options)
    for r in per_parameter(params, grads, arch, x, eps, options, rng, param_names(arch)):
        assert r.status == "ok", r
    # Value: floored dimensions count lambda each.
    v0, _ = objective(params, arch, x, eps, kl_weight=0.8)
    np.testing.assert_allclose(value - v0, -0.8 * (np.maximum(kl_j, lam) - kl_j).sum(-1), rtol=1e-12)


def test_value_is_the_bound_the_name_says(rng):
    """Values against the definitions, computed from log-weights in the test: mean for the ELBO, LME for IWAE."""
    from scipy.special import logsumexp

    from npvae import log_weights

    arch, params, x, eps = random_problem(rng, "bernoulli", K=6)
    a = log_weights(params, arch, x, eps)
    v_elbo, _ = objective(params, arch, x, eps, bound="elbo", kl="mc")
    v_iwae, _ = objective(params, arch, x, eps, bound="iwae", kl="mc")
    np.testing.assert_allclose(v_elbo, a.mean(0), rtol=1e-13)
    np.testing.assert_allclose(v_iwae, logsumexp(a, axis=0) - np.log(6), rtol=1e-13)
    assert np.all(v_elbo <= v_iwae)  # Jensen, sample by sample


def test_dreg_with_one_sample_is_stl(rng):
    """Tucker et al. 2018: with K = 1 the squared weight is 1 and DReG reduces to STL."""
    arch, params, x, eps = random_problem(rng, "gaussian", K=1)
    v1, g1 = objective(params, arch, x, eps, bound="iwae", kl="mc", estimator="dreg")
    v2, g2 = objective(params, arch, x, eps, bound="elbo", kl="mc", estimator="stl")
    np.testing.assert_allclose(v1, v2, rtol=1e-14)
    for a, b in zip(flatten(g1), flatten(g2)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_estimators_share_value_and_decoder_gradient(rng, likelihood):
    """The estimators differ only in the encoder's gradient: the value and every decoder array (W and b) agree."""
    arch, params, x, eps = random_problem(rng, likelihood, K=4)
    n_dec = 2 * len(arch.decoder_sizes()) - 2
    for (bound, kl), estimators in VALID.items():
        ref_v, ref_g = objective(params, arch, x, eps, bound=bound, kl=kl, estimator=estimators[0])
        ref_dec = flatten(ref_g)[-n_dec:]
        for est in estimators[1:]:
            v, g = objective(params, arch, x, eps, bound=bound, kl=kl, estimator=est)
            np.testing.assert_array_equal(v, ref_v)
            dec = flatten(g)[-n_dec:]
            assert len(dec) == len(g.decoder) * 2 == n_dec
            for name, a, b in zip(param_names(arch)[-n_dec:], dec, ref_dec):
                np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15, err_msg=f"{bound}/{kl}/{est} {name}")


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
@pytest.mark.parametrize("bound,kl,estimator", CASES)
def test_float32_preserved_and_agrees_with_float64(rng, likelihood, bound, kl, estimator):
    """float32 in, float32 out (value and every gradient array), and the float64 answer to AGREE_RTOL.

    The float64 reference runs on the float32-rounded inputs, so the two differ by arithmetic alone.
    The float64 path itself is held to finite differences by the gradient tests above.
    """
    arch, p64, x64, eps64 = random_problem(rng, likelihood)
    p32 = unflatten(arch, [a.astype(np.float32) for a in flatten(p64)])
    x32, eps32 = x64.astype(np.float32), eps64.astype(np.float32)
    options = dict(bound=bound, kl=kl, estimator=estimator)
    v32, g32 = objective(p32, arch, x32, eps32, **options)
    p64 = unflatten(arch, [a.astype(np.float64) for a in flatten(p32)])
    v64, g64 = objective(p64, arch, x32.astype(np.float64), eps32.astype(np.float64), **options)
    assert v32.dtype == np.float32, v32.dtype
    for name, a in zip(param_names(arch), flatten(g32)):
        assert a.dtype == np.float32, f"{name}: {a.dtype}"
    tol = AGREE_RTOL[np.float32]
    np.testing.assert_allclose(v32, v64, rtol=tol)
    for name, a, b in zip(param_names(arch), flatten(g32), flatten(g64)):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * np.abs(b).max(), err_msg=name)


def _bad(rng):
    arch, params, x, eps = random_problem(rng, "bernoulli")
    return arch, params, x, eps


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda a, p, x, e: (a, p, x[:, :-1], e), "x must have shape"),
        (lambda a, p, x, e: (a, p, x[0], e), "x must have 2 dimension"),
        (lambda a, p, x, e: (a, p, np.where(x == 1, np.nan, x), e), "non-finite"),
        (lambda a, p, x, e: (a, p, x.astype(np.int64), e), "dtype float32 or float64"),
        (lambda a, p, x, e: (a, p, x.astype(np.float32), e), "convert explicitly"),
        (lambda a, p, x, e: (a, p, x * 0.5, e), "binary x"),
        (lambda a, p, x, e: (a, p, x, e[:, :-1]), "eps must have shape"),
        (lambda a, p, x, e: (a, p, x, e[0]), "eps must have 3 dimension"),
        (lambda a, p, x, e: (a, p, x, e * np.inf), "non-finite"),
        (lambda a, p, x, e: (a, p._replace(decoder=p.decoder[:1]), x, e), "needs"),
        (lambda a, p, x, e: (a, unflatten(a, [np.full_like(t, np.nan) for t in flatten(p)]), x, e), "non-finite"),
    ],
)
def test_bad_input_is_a_clear_value_error(rng, mutate, match):
    arch, params, x, eps = mutate(*_bad(rng))
    with pytest.raises(ValueError, match=match):
        objective(params, arch, x, eps)


@pytest.mark.parametrize(
    "options, match",
    [
        (dict(bound="iwae", kl="analytic"), "no analytic-KL form"),
        (dict(bound="elbo", kl="analytic", estimator="stl"), "not defined"),
        (dict(bound="elbo", kl="mc", estimator="dreg"), "not defined"),
        (dict(bound="vae"), "bound must be one of"),
        (dict(bound="iwae", kl="mc", kl_weight=0.5), "kl_weight must be 1"),
        (dict(kl_weight=-1.0), "kl_weight"),
        (dict(bound="elbo", kl="mc", free_bits=0.5), "analytic KL"),
        (dict(free_bits=-0.1), "free_bits"),
    ],
)
def test_bad_options(rng, options, match):
    arch, params, x, eps = _bad(rng)
    with pytest.raises(ValueError, match=match):
        objective(params, arch, x, eps, **options)


def test_stl_log_var_gradient_finite_when_sigma_underflows():
    """Review finding: at log_var = -1500 (sigma = 0 in float64) STL's log_var gradient is the finite beta w eps^2 / 2."""
    from npvae import Arch, Dense, Likelihood, VAEParams, init_params

    arch = Arch(3, (), 2, "identity", Likelihood("gaussian", sigma2=1.0))
    p = init_params(arch, np.random.default_rng(0))
    b = p.encoder[0].b.copy()
    b[2:] = -1500.0
    p = VAEParams((Dense(p.encoder[0].W * 0, b),), p.decoder)
    with np.errstate(divide="ignore", invalid="ignore"):
        _, g = objective(p, arch, np.ones((1, 3)), np.full((1, 1, 2), 0.5), bound="elbo", kl="mc", estimator="stl")
    np.testing.assert_array_equal(g.encoder[0].b[2:], [0.125, 0.125])  # 0.5^2 / 2
