"""The numba backend of the L-layer model (its fused latent kernels, npvae.backends.latent_kernels) against the NumPy
specification, npvae.vae.ladder_objective: L = 1, 2, 3, every (bound, kl, estimator), kl_weight 1 and 0.3, both float types,
every likelihood; and NaN / inf in, non-finite out, where the specification's is.

Error model: the backends compute the same formulas and differ only in the order of some sums. A log-weight a_k of size
|a| then carries an absolute rounding error of a few eps |a| in either (its terms are of that size, with cancellation),
IWAE's weights exp(a_k - max a) inherit it as a relative error, and every gradient is a sum through those weights; so
each array is held to ULPS eps max(1, max |a|) relative to its largest element (gradcheck.rel_err). Measured over these
problems and two more seeds: at most 3.0 eps max|a| in float32 and 1.6 in float64, so ULPS = 8; that is 1.4e-5 and 3e-14
here, and a factor 1 + 1e-4 anywhere fails.
"""

import numpy as np
import pytest

from npvae.vae import models
from npvae.backends import numba_available
from npvae.maths.estimators import VALID
from npvae.checks.gradcheck import rel_err
from npvae.vae.ladder import LadderArch
from npvae.likelihoods import LIKELIHOODS, Likelihood
from npvae.objectives import bound_value, log_px, log_weights, objective

pytestmark = pytest.mark.skipif(not numba_available(), reason="numba is not installed")

SPECS = ["6-5-3", "6-5-3:4-2", "6-5-3:4-2:3-2"]  # L = 1, 2, 3
CASES = [(b, kl, e, beta) for (b, kl), ests in VALID.items() for e in ests for beta in ((1.0, 0.3) if b == "elbo" else (1.0,))]
ULPS = 8


def problem(spec, likelihood, dtype, seed=0, N=7, K=4, activation="tanh", density=0.5):
    arch = LadderArch.parse(spec, activation=activation, likelihood=Likelihood(likelihood, sigma2=0.7, min_log_var=-3.0))
    rng = np.random.default_rng(seed)
    params = models.init_params(arch, rng, dtype)
    D = arch.data_dim
    x = (rng.random((N, D)) < density).astype(dtype) if likelihood == "bernoulli" else rng.standard_normal((N, D)).astype(dtype)
    return arch, params, x, rng.standard_normal((K, N, arch.noise_dim)).astype(dtype)


def tolerance(params, arch, x, eps):
    a = log_weights(params, arch, x, eps)  # the specification's
    return ULPS * float(np.finfo(x.dtype).eps) * max(1.0, float(np.max(np.abs(a))))


def assert_within(got, want, rtol, what):
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype}, want {want.dtype}"
    assert rel_err(got, want) <= rtol, f"{what}: relative error {rel_err(got, want):.2e} > {rtol:.1e}"


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("likelihood", LIKELIHOODS)
@pytest.mark.parametrize("spec", SPECS)
def test_numba_equals_the_numpy_specification(spec, likelihood, dtype):
    """Value and every gradient for every (bound, kl, estimator, kl_weight); and the forward-only paths."""
    arch, params, x, eps = problem(spec, likelihood, dtype)
    rtol = tolerance(params, arch, x, eps)
    for bound, kl, est, beta in CASES:
        case = f"{spec} {bound} {kl} {est} beta={beta}"
        v0, g0 = objective(params, arch, x, eps, bound=bound, kl=kl, estimator=est, kl_weight=beta, backend="numpy")
        v1, g1 = objective(params, arch, x, eps, bound=bound, kl=kl, estimator=est, kl_weight=beta, backend="numba")
        assert_within(v1, v0, rtol, f"value {case}")
        for name, a, b in zip(models.param_names(arch), models.flatten(g1), models.flatten(g0)):
            assert_within(a, b, rtol, f"d/d {name} {case}")
    for bound, kl in VALID:
        assert_within(bound_value(params, arch, x, eps, bound=bound, kl=kl, backend="numba"),
                      bound_value(params, arch, x, eps, bound=bound, kl=kl), rtol, f"bound_value {bound} {kl}")
    assert_within(log_weights(params, arch, x, eps, backend="numba"), log_weights(params, arch, x, eps), rtol, "log_weights")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("activation, density, K", [("softplus", 0.1, 1), ("relu", 0.5, 6)])
def test_other_activations_sparse_input_and_one_sample(activation, density, K, dtype):
    """softplus and relu; sparse binary x (enc1's sum-of-rows product); K = 1, where a layer's rows are its points'."""
    for spec in SPECS[1:]:
        arch, params, x, eps = problem(spec, "bernoulli", dtype, seed=3, N=9, K=K, activation=activation, density=density)
        rtol = tolerance(params, arch, x, eps)
        for bound, kl, est, beta in CASES:
            v0, g0 = objective(params, arch, x, eps, bound=bound, kl=kl, estimator=est, kl_weight=beta)
            v1, g1 = objective(params, arch, x, eps, bound=bound, kl=kl, estimator=est, kl_weight=beta, backend="numba")
            assert_within(v1, v0, rtol, f"{spec} value {bound} {kl} {est}")
            for name, a, b in zip(models.param_names(arch), models.flatten(g1), models.flatten(g0)):
                assert_within(a, b, rtol, f"{spec} d/d {name} {bound} {kl} {est}")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_log_px(dtype):
    arch, params, x, eps = problem(SPECS[2], "bernoulli", dtype)
    rtol = tolerance(params, arch, x, eps)
    assert_within(log_px(params, arch, x, 50, np.random.default_rng(1), backend="numba"),
                  log_px(params, arch, x, 50, np.random.default_rng(1)), rtol, "log_px")


def test_the_fused_kernels_are_the_ones_that_ran():
    """The numba path goes through latent_kernels (not the specification's NumPy latent code it falls back to)."""
    from npvae.backends import latent_kernels as lk
    from npvae.backends import numba_ladder

    arch, params, x, eps = problem(SPECS[1], "bernoulli", np.float64)
    assert numba_ladder.FUSE_LATENT
    objective(params, arch, x, eps, bound="iwae", kl="mc", estimator="dreg", backend="numba")
    for kernel in (lk.sample, lk.prior, lk.prior_backward, lk.layer_backward, lk.first_backward):
        assert kernel.signatures, kernel


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # non-finite noise on purpose: NumPy's RuntimeWarnings are expected
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("spec", SPECS)
def test_non_finite_noise_gives_non_finite_results_where_the_specification_does(spec, bad):
    """The cores do no checking (the public objective refuses non-finite eps): one bad eps_l element of one sample must show
    in the value and gradients as it does in the specification's, never be turned into a number. (A z_l = +-inf may leave
    the value finite, tanh saturating, as in the specification; its gradients then are not.)"""
    from npvae.vae import ladder_objective
    from npvae.backends import numba_ladder

    arch, params, x, eps = problem(spec, "bernoulli", np.float64)
    for l, start in enumerate(np.cumsum((0, *arch.latents[:-1]))):
        e = eps.copy()
        e[1, 2, start] = bad  # sample k = 1 of point n = 2, layer l + 1
        for bound, kl, est, beta in CASES:
            case = f"{spec} layer {l + 1} {bound} {kl} {est}"
            v0, g0 = ladder_objective.bound_and_grad_core(params, arch, x, e, bound, kl, est, beta)
            v1, g1 = numba_ladder.bound_and_grad(params, arch, x, e, bound, kl, est, beta)
            assert not all(np.all(np.isfinite(a)) for a in (v0, *models.flatten(g0))), case  # the oracle sees it
            assert np.array_equal(np.isfinite(v1), np.isfinite(v0)), f"value {case}"
            for name, a, b in zip(models.param_names(arch), models.flatten(g1), models.flatten(g0)):
                assert np.array_equal(np.isfinite(a), np.isfinite(b)), f"d/d {name} {case}"  # element by element
