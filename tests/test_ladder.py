"""The VAE of L stochastic layers (npvae.vae.ladder, npvae.vae.ladder_objective) against oracles and identities, L = 1, 2, 3.

- hand-written gradients vs element-wise central differences of forward-only surrogates (npvae.vae.ladder_surrogate),
  every array of all 2L MLPs, for L = 1 (one stochastic layer), 2 (Burda et al.'s model) and 3;
- L = 1 is the one-layer model (npvae.vae.model.Arch) to rounding: the same values and gradients, every estimator;
- Monte Carlo identities: analytic-top ELBO = MC-top ELBO in expectation, IWAE_1 = ELBO, DReG_1 = STL;
- the exact linear-Gaussian chain (npvae.oracle.linear_chain), L = 2 and 3: log-weights against its log joint, the
  ELBO against its closed form, IWAE_K rising with K below log p(x), and zero variance at the exact posterior;
- the architecture: spec parsing, the two-layer parameter names checkpoints depend on, the deprecated aliases,
  copying and pickling.
"""

import copy
import pickle

import numpy as np
import pytest
from scipy.special import logsumexp

from conftest import AGREE_RTOL, REPO, assert_fd_close
from conftest import random_problem as one_layer_problem
from npvae.vae import models
from npvae.backends import numba_available
from npvae.store.checkpoint import load_checkpoint
from npvae.checks.gradcheck import elementwise
from npvae.vae.ladder import (
    LadderArch,
    LadderParams,
    TwoLayerArch,
    TwoLayerParams,
    flatten,
    gaussian_head,
    init_params,
    param_names,
    param_shapes,
    unflatten,
)
from npvae.maths.estimators import VALID
from npvae.vae.ladder_surrogate import surrogate
from npvae.nn.layers import ACTIVATIONS, Dense
from npvae.likelihoods import LIKELIHOODS, Likelihood
from npvae.oracle.linear_vae import best_linear_ladder, ladder_q, linear_ladder_arch
from npvae.objectives import objective
from npvae.oracle.linear_chain import ChainQ, LinearChain
from npvae.training.state import load_state
from ladder_lists import bound_and_grad, bound_value, log_weights

CASES = [(b, k, e) for (b, k), es in VALID.items() for e in es]
WEIGHTED = [(b, k, e, w) for (b, k, e) in CASES for w in ((1.0, 0.4) if b == "elbo" else (1.0,))]
SE_TOL = 4.0  # Monte Carlo checks: |difference| <= 4 standard errors (a false alarm about once in 16,000)
SPECS = {1: "5-4-3", 2: "5-4-3:3-2", 3: "6-5-3:4-2:3-2"}  # one spec per L, tiny so that element-wise FD stays fast
needs_numba = pytest.mark.skipif(not numba_available(), reason="numba is not installed")


def random_problem(rng, likelihood="bernoulli", activation="tanh", spec=SPECS[2], N=3, K=4, dtype=np.float64):
    """(arch, params, x, eps = [eps_1, ..., eps_L]), biases drawn too so that no unit starts at a symmetric point."""
    arch = LadderArch.parse(spec, activation=activation, likelihood=Likelihood(likelihood, sigma2=0.7, min_log_var=-3.0))
    params = unflatten(arch, [a + 0.3 * rng.standard_normal(a.shape) for a in flatten(init_params(arch, rng))])
    # Log-variances feed log-variances (lv_1 -> z_1 -> lv_2 -> ... -> lvp); with unbounded activations a random point
    # can reach exp(-lvp) ~ 1e60, where no finite difference means anything. Smaller log-variance weights keep |lv| ~ 1.
    heads = [f"enc{l}" for l in range(1, arch.L + 1)] + [f"dec{l}" for l in range(2, arch.L + 1)]
    for part in heads:
        layers = getattr(params, part)
        W = layers[-1].W.copy()
        W[:, W.shape[1] // 2:] *= 0.3
        params = params._replace(**{part: (*layers[:-1], layers[-1]._replace(W=W))})
    params = unflatten(arch, [a.astype(dtype) for a in flatten(params)])
    D = arch.data_dim
    x = (rng.random((N, D)) < 0.5) if likelihood == "bernoulli" else rng.standard_normal((N, D))
    eps = [rng.standard_normal((K, N, Z)).astype(dtype) for Z in arch.latents]
    return arch, params, x.astype(dtype), eps


def mean_and_se(v, axis=0):
    return v.mean(axis=axis), v.std(axis=axis, ddof=1) / np.sqrt(v.shape[axis])


def n_encoder_arrays(arch):
    """enc_1..enc_L come first in PARTS order: how many of the flattened arrays are theirs."""
    return sum(name.startswith("enc") for name in param_names(arch))


# ---- architecture and parameters ----

def test_parse_spec_sizes_and_names():
    arch = LadderArch.parse("784-200-200-100:100-100-50")
    assert (arch.data_dim, arch.hidden, arch.latents, arch.L) == (784, ((200, 200), (100, 100)), (100, 50), 2)
    assert (arch.hidden1, arch.latent1, arch.hidden2, arch.latent2) == ((200, 200), 100, (100, 100), 50)  # old names
    assert arch.spec == "784-200-200-100:100-100-50" and arch.FAMILY == "ladder" and arch.noise_dim == 150
    assert arch.sizes() == {"enc1": (784, 200, 200, 200), "enc2": (100, 100, 100, 100),
                            "dec2": (50, 100, 100, 200), "dec1": (100, 200, 200, 784)}
    assert arch.parts() == ["enc1", "enc2", "dec2", "dec1"]
    three = LadderArch.parse("6-5-3:4-2:3-2")
    assert (three.L, three.hidden, three.latents, three.noise_dim) == (3, ((5,), (4,), (3,)), (3, 2, 2), 7)
    assert three.sizes() == {"enc1": (6, 5, 6), "enc2": (3, 4, 4), "enc3": (2, 3, 4),
                             "dec3": (2, 3, 4), "dec2": (2, 4, 6), "dec1": (3, 5, 6)}
    assert three.parts() == ["enc1", "enc2", "enc3", "dec3", "dec2", "dec1"]
    with pytest.raises(AttributeError):
        three.latent4
    eps = np.arange(2 * 3 * 7.0).reshape(2, 3, 7)
    parts = three.split_noise(eps)
    assert [p.shape for p in parts] == [(2, 3, 3), (2, 3, 2), (2, 3, 2)]
    np.testing.assert_array_equal(np.concatenate(parts, axis=-1), eps)
    learned = LadderArch.parse("5-3:2", likelihood=Likelihood("gaussian-learned"))
    assert learned.sizes()["dec1"] == (3, 10)
    one = LadderArch.parse("5-4-3")
    assert (one.L, one.hidden, one.latents, one.parts()) == (1, ((4,),), (3,), ["enc1", "dec1"])
    arch = LadderArch.parse("6-5-3:4-2:3-2")
    params = init_params(arch, np.random.default_rng(0))
    names = param_names(arch)
    assert [n.split(".")[0] for n in names[::4]] == arch.parts()  # one hidden layer each: 4 arrays a part
    assert [a.shape for a in flatten(params)] == param_shapes(arch)
    assert all(a is b for a, b in zip(flatten(unflatten(arch, flatten(params))), flatten(params)))
    for a, b in zip(flatten(params), flatten(init_params(arch, np.random.default_rng(0)))):
        np.testing.assert_array_equal(a, b)  # randomness is the Generator passed in


@pytest.mark.parametrize("spec, want", [
    ("5-3", (5, ((),), (3,))),
    ("784-200-200-100", (784, ((200, 200),), (100,))),
    ("784-200-200-100:100-100-50", (784, ((200, 200), (100, 100)), (100, 50))),
    ("5-3:2", (5, ((), ()), (3, 2))),
    ("6-5-3:4-2:3-2", (6, ((5,), (4,), (3,)), (3, 2, 2))),
    ("7-6-5-4:3-2-1:2:3-4-2", (7, ((6, 5), (3, 2), (), (3, 4)), (4, 1, 2, 2))),
])
def test_spec_parse_and_round_trip_for_one_to_four_layers(spec, want):
    arch = LadderArch.parse(spec)
    assert (arch.data_dim, arch.hidden, arch.latents) == want and arch.L == len(want[2]) == spec.count(":") + 1
    assert arch.spec == spec
    assert LadderArch.parse(arch.spec) == arch == LadderArch(*want)
    if arch.L > 1:
        assert models.parse(spec) == arch  # ':' picks the ladder; without one models.parse gives the one-layer Arch
    else:
        assert models.parse(spec).FAMILY == "one-layer" and models.parse(spec).spec == spec


@pytest.mark.parametrize("spec, match", [
    ("784-200:", "looks like"), ("784:100", "at least D and Z_1"), ("a-b", "looks like"), ("5-x-3:2", "looks like"),
    ("5:2", "at least D and Z_1"), ("5-3:", "looks like"), ("5-3::2", "looks like"), ("", "looks like"),
    ("5-0-3:2", "hidden layer size"), ("5-3:3-0", "latent size"), ("5-3:0", "latent size"), ("0-3:2", "data_dim"),
    (None, "looks like"), (784, "looks like"),
])
def test_bad_spec(spec, match):
    with pytest.raises(ValueError, match=match):
        LadderArch.parse(spec)


def test_bad_arch_fields():
    with pytest.raises(ValueError, match="tuple"):
        LadderArch(5, [(4,)], (3,))
    with pytest.raises(ValueError, match="tuple"):
        LadderArch(5, ((4,),), [3])
    with pytest.raises(ValueError, match="must be a tuple"):
        LadderArch(5, ([4], ()), (3, 2))
    with pytest.raises(ValueError, match="2 latent sizes need as many hidden tuples, got 1"):
        LadderArch(5, ((4,),), (3, 2))
    with pytest.raises(ValueError, match="tuples, one entry a layer"):
        LadderArch(5, (), ())
    with pytest.raises(ValueError, match="activation"):
        LadderArch(5, ((4,), ()), (3, 2), activation="gelu")
    with pytest.raises(ValueError, match="needs 2 L parts"):
        LadderParams((), (), ())


def test_two_layer_param_names_are_the_old_ones():
    """Shipped two-layer checkpoints are read by these names, in this order (npvae 0.2's TwoLayerArch)."""
    arch = LadderArch.parse("5-4-3:3-2")
    assert param_names(arch) == [
        "enc1.0.W", "enc1.0.b", "enc1.1.W", "enc1.1.b",
        "enc2.0.W", "enc2.0.b", "enc2.1.W", "enc2.1.b",
        "dec2.0.W", "dec2.0.b", "dec2.1.W", "dec2.1.b",
        "dec1.0.W", "dec1.0.b", "dec1.1.W", "dec1.1.b",
    ]
    assert param_shapes(arch) == [(5, 4), (4,), (4, 6), (6,), (3, 3), (3,), (3, 4), (4,),
                                  (2, 3), (3,), (3, 6), (6,), (3, 4), (4,), (4, 5), (5,)]
    assert models.param_names(arch) == param_names(arch)
    no_hidden = LadderArch.parse("5-3:2")
    assert param_names(no_hidden) == ["enc1.0.W", "enc1.0.b", "enc2.0.W", "enc2.0.b",
                                      "dec2.0.W", "dec2.0.b", "dec1.0.W", "dec1.0.b"]
    # A checkpoint shipped with npvae 0.2 (Burda et al.'s two-layer model): its arrays, by name, are this model's.
    path = REPO / "bench" / "runs" / "burda" / "layers-two_objective-iwae_k-5" / "last.safetensors"
    arrays, _ = load_checkpoint(path)
    shipped = LadderArch.parse("784-200-200-100:100-100-50")
    assert sorted(arrays) == sorted(f"{kind}.{n}" for kind in ("param", "adam_m", "adam_v") for n in param_names(shipped))
    assert all(arrays[f"param.{n}"].shape == s for n, s in zip(param_names(shipped), param_shapes(shipped)))
    _, arch, state = load_state(path)  # which checks every name, shape and dtype against the config's architecture
    assert arch == shipped and arch.FAMILY == "ladder" and type(unflatten(arch, state.params)) is LadderParams


def test_deprecated_two_layer_aliases_warn_and_build_the_ladder():
    direct = LadderArch(5, ((4,), (3,)), (3, 2), "softplus", Likelihood("gaussian", sigma2=0.5))
    with pytest.warns(DeprecationWarning, match="TwoLayerArch is deprecated"):
        old = TwoLayerArch(5, (4,), 3, (3,), 2, "softplus", Likelihood("gaussian", sigma2=0.5))
    assert type(old) is LadderArch and old == direct and old.spec == "5-4-3:3-2"
    with pytest.warns(DeprecationWarning, match="TwoLayerArch.parse is deprecated"):
        parsed = TwoLayerArch.parse("5-4-3:3-2", activation="softplus", likelihood=Likelihood("gaussian", sigma2=0.5))
    assert type(parsed) is LadderArch and parsed == direct
    for spec in ("5-4-3", "5-3:2:1"):
        with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="exactly one ':'"):
            TwoLayerArch.parse(spec)
    p = init_params(direct, np.random.default_rng(0))
    with pytest.warns(DeprecationWarning, match="TwoLayerParams is deprecated"):
        old_p = TwoLayerParams(p.enc1, p.enc2, p.dec2, p.dec1)
    assert type(old_p) is LadderParams and old_p.L == 2
    assert all(a is b for a, b in zip(flatten(old_p), flatten(p)))
    assert old_p._fields == ("enc1", "enc2", "dec2", "dec1")
    assert all(old_p.dec(l) is p.dec(l) and old_p.enc(l) is p.enc(l) for l in (1, 2))


def test_params_survive_deepcopy_and_pickle(rng):
    arch, params, x, eps = random_problem(rng, spec=SPECS[3])
    v0, _ = bound_and_grad(params, arch, x, eps, "iwae", "mc", "dreg")
    arch_copies = [copy.deepcopy(arch), pickle.loads(pickle.dumps(arch))]
    for other in arch_copies:
        assert other == arch and other.latent3 == 2 and other.spec == arch.spec
    for other in (copy.deepcopy(params), pickle.loads(pickle.dumps(params)), copy.copy(params)):
        assert type(other) is LadderParams and other.L == 3 and other._fields == params._fields
        assert [type(d) for part in other for d in part] == [Dense] * (len(flatten(params)) // 2)
        for a, b in zip(flatten(other), flatten(params)):
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)
        assert other.enc3[0].W.shape == params.enc3[0].W.shape and other.dec(1)[-1].b.shape == (6,)
        np.testing.assert_array_equal(bound_and_grad(other, arch, x, eps, "iwae", "mc", "dreg")[0], v0)
    deep = copy.deepcopy(params)
    deep.enc1[0].W[0, 0] += 1.0
    assert deep.enc1[0].W[0, 0] != params.enc1[0].W[0, 0]  # a deep copy owns its arrays


# ---- L = 1 is the one-layer model ----

# The two codes compute the same maths in a different order (the one-layer fast path against the ladder's loop over
# layers): each value and gradient entry is a sum of at most K N (12) sample terms and a few layer widths (<= 6), so a
# reordered sum differs by a few ulps of its largest term. Measured over 180 random models: numpy at most 2 ulps
# (the analytic KL's sum; everything else bit for bit), numba 8. 16 ulps of the largest entry holds with margin,
# while a real difference (a dropped term, a factor 1 + 1e-4, a wrong beta) is 1e-4 or more.
ONE_LAYER_ULPS = 16


@pytest.mark.parametrize("backend", ["numpy", pytest.param("numba", marks=needs_numba)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("likelihood, activation", [("bernoulli", "tanh"), ("gaussian", "relu"),
                                                    ("gaussian-learned", "softplus")])
def test_one_layer_ladder_is_the_one_layer_model(rng, backend, dtype, likelihood, activation):
    arch, params, x, eps = one_layer_problem(rng, likelihood, activation, hidden=(5, 4), dtype=dtype)
    ladder = LadderArch(arch.data_dim, (arch.hidden,), (arch.latent_dim,), arch.activation, arch.likelihood)
    lparams = LadderParams(params.encoder, params.decoder)
    assert ladder.L == 1 and ladder.FAMILY == "ladder" and ladder.spec == arch.spec and ladder.noise_dim == arch.noise_dim
    assert [a.shape for a in flatten(lparams)] == param_shapes(ladder)
    tol = ONE_LAYER_ULPS * np.finfo(dtype).eps
    for bound, kl, estimator, kl_weight in [(b, k, e, w) for (b, k, e) in CASES for w in ((1.0, 0.3) if b == "elbo" else (1.0,))]:
        case = f"{bound}/{kl}/{estimator} beta={kl_weight}"
        options = dict(bound=bound, kl=kl, estimator=estimator, kl_weight=kl_weight, free_bits=0.0, backend=backend)
        v0, g0 = objective(params, arch, x, eps, **options)
        v1, g1 = objective(lparams, ladder, x, eps, **options)
        assert type(g1) is LadderParams and v1.dtype == v0.dtype == dtype
        np.testing.assert_allclose(v1, v0, rtol=tol, atol=tol * np.abs(v0).max(), err_msg=case)
        for name, a, b in zip(param_names(ladder), flatten(g1), flatten(g0)):
            assert a.dtype == b.dtype == dtype
            np.testing.assert_allclose(a, b, rtol=tol, atol=tol * np.abs(b).max(), err_msg=f"{case} {name}")


# ---- gradients against finite differences of the surrogates ----

def _check_elementwise(arch, params, x, eps, bound, kl, estimator, kl_weight=1.0):
    _, grads = bound_and_grad(params, arch, x, eps, bound, kl, estimator, kl_weight)
    arrays = flatten(params)
    f = lambda a: surrogate(unflatten(arch, a), params, arch, x, eps, bound, kl, estimator, kl_weight)  # noqa: E731
    f0 = f(arrays)
    for i, (name, g) in enumerate(zip(param_names(arch), flatten(grads))):
        try:
            assert_fd_close(g, elementwise(f, arrays, i, 1e-6), f0)
        except AssertionError as err:
            raise AssertionError(f"L={arch.L} {bound}/{kl}/{estimator} beta={kl_weight}: {name}\n{err}") from None


@pytest.mark.parametrize("L", [1, 2, 3])
@pytest.mark.parametrize("likelihood", LIKELIHOODS)
@pytest.mark.parametrize("bound,kl,estimator,kl_weight", WEIGHTED)
def test_gradient_elementwise(rng, L, likelihood, bound, kl, estimator, kl_weight):
    arch, params, x, eps = random_problem(rng, likelihood, spec=SPECS[L])
    _check_elementwise(arch, params, x, eps, bound, kl, estimator, kl_weight)


@pytest.mark.parametrize("spec", ["4-3-3", "4-3-3:3-2", "4-3-3:3-2:2-2"])
@pytest.mark.parametrize("activation", [a for a in ACTIVATIONS if a != "tanh"])
@pytest.mark.parametrize("bound,kl,estimator", CASES)
def test_gradient_elementwise_other_activations(rng, spec, activation, bound, kl, estimator):
    arch, params, x, eps = random_problem(rng, "gaussian", activation, spec=spec, N=2, K=3)
    _check_elementwise(arch, params, x, eps, bound, kl, estimator)


@pytest.mark.parametrize("L", [1, 2, 3])
def test_estimators_share_value_and_decoder_gradient_and_differ_on_the_encoders(rng, L):
    """STL and DReG change only the encoders' gradients, and by enough that the FD tests can tell them from reparam."""
    arch, params, x, eps = random_problem(rng, "gaussian", spec=SPECS[L])
    n_enc = n_encoder_arrays(arch)
    assert n_enc == 4 * L and param_names(arch)[n_enc - 1] == f"enc{L}.1.b"  # one hidden layer each: two Dense, W and b
    for bound, est in (("elbo", "stl"), ("iwae", "dreg")):
        v_r, g_r = bound_and_grad(params, arch, x, eps, bound, "mc", "reparam")
        v, g = bound_and_grad(params, arch, x, eps, bound, "mc", est)
        np.testing.assert_array_equal(v, v_r)
        g, g_r = flatten(g), flatten(g_r)
        assert min(np.abs(a - b).max() for a, b in zip(g[:n_enc], g_r[:n_enc])) > 1e-3, est
        # The decoders' gradient is reparam's: the ELBO's for STL, the IWAE bound's for DReG (Tucker et al. 2018).
        for name, a, b in zip(param_names(arch)[n_enc:], g[n_enc:], g_r[n_enc:]):
            np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15, err_msg=f"{est} {name}")


# ---- values and Monte Carlo identities ----

@pytest.mark.parametrize("L", [1, 2, 3])
def test_values_are_the_bounds_the_names_say(rng, L):
    arch, params, x, eps = random_problem(rng, "bernoulli", spec=SPECS[L], K=6)
    a = log_weights(params, arch, x, eps)
    assert a.shape == (6, 3)
    np.testing.assert_allclose(bound_value(params, arch, x, eps, "elbo", "mc"), a.mean(0), rtol=1e-13)
    np.testing.assert_allclose(bound_value(params, arch, x, eps, "iwae", "mc"), logsumexp(a, 0) - np.log(6), rtol=1e-13)
    for b, k, e, w in WEIGHTED:
        v, _ = bound_and_grad(params, arch, x, eps, b, k, e, w)
        if w == 1.0:
            np.testing.assert_array_equal(v, bound_value(params, arch, x, eps, b, k))
    # The public objective takes the layers' noise concatenated along the last axis (arch.split_noise's inverse).
    for b, k, e in CASES:
        v, g = objective(params, arch, x, np.concatenate(eps, axis=-1), bound=b, kl=k, estimator=e)
        v0, g0 = bound_and_grad(params, arch, x, eps, b, k, e)
        assert np.array_equal(v, v0) and all(np.array_equal(p, q) for p, q in zip(flatten(g), flatten(g0)))


@pytest.mark.parametrize("L", [1, 2, 3])
def test_k1_iwae_is_elbo_and_dreg_is_stl(rng, L):
    """K = 1: LME of one log-weight is that log-weight; DReG's squared weight is 1 (Tucker et al. 2018)."""
    arch, params, x, eps = random_problem(rng, "gaussian", spec=SPECS[L], K=1)
    v_e, g_e = bound_and_grad(params, arch, x, eps, "elbo", "mc", "reparam")
    v_i, g_i = bound_and_grad(params, arch, x, eps, "iwae", "mc", "reparam")
    np.testing.assert_array_equal(v_e, v_i)
    for a, b in zip(flatten(g_e), flatten(g_i)):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)
    v_s, g_s = bound_and_grad(params, arch, x, eps, "elbo", "mc", "stl")
    v_d, g_d = bound_and_grad(params, arch, x, eps, "iwae", "mc", "dreg")
    np.testing.assert_array_equal(v_s, v_d)
    for name, a, b in zip(param_names(arch), flatten(g_s), flatten(g_d)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15, err_msg=name)


@pytest.mark.parametrize("L", [1, 2, 3])
def test_analytic_top_equals_mc_top_in_expectation(rng, L):
    """E_eps_L[log p(z_L) - log q(z_L|z_{L-1})] = -KL(q(z_L|z_{L-1}) || N(0, I)) at every z_{L-1}: one draw of the
    layers below per point, many eps_L (M per point). At L = 1 the top is q(z_1|x) itself: every replicate draws z_1."""
    arch, params, x, eps = random_problem(rng, "bernoulli", spec=SPECS[L], K=1)
    M, N = 40000, x.shape[0]
    xs = np.tile(x, (M, 1))  # replicate r, point n at row r N + n; z_1..z_{L-1} fixed per point
    e = [np.tile(e_l, (1, M, 1)) for e_l in eps[:-1]] + [rng.standard_normal((1, M * N, arch.latents[-1]))]
    v_an = bound_value(params, arch, xs, e, "elbo", "analytic").reshape(M, N)
    v_mc = bound_value(params, arch, xs, e, "elbo", "mc").reshape(M, N)
    diff, se = mean_and_se(v_mc - v_an)
    assert np.all(np.abs(diff) <= SE_TOL * se), (diff, se)
    # How big the term is that the check is about: KL(q(z_L|z_{L-1}) || N(0, I)) per point, written out here.
    h = x
    for l in range(1, L):
        mu, lv, _ = gaussian_head(params.enc(l), h, arch.activation)
        h = mu + np.exp(0.5 * lv) * eps[l - 1][0]
    mu, lv, _ = gaussian_head(params.enc(L), h, arch.activation)
    kl_top = 0.5 * np.sum(mu**2 + np.exp(lv) - 1 - lv, axis=-1)
    assert SE_TOL * se.mean() < 0.1 * kl_top.mean(), (se, kl_top)  # a 10% error in the top KL would show


# ---- the linear-Gaussian chain (npvae.oracle.linear_chain) ----

def random_chain(rng, D, Zs, sigma2=0.5, scale=0.6):
    """A LinearChain with every weight scale * N(0, 1) (log-variances too), as the old two-layer oracle tests drew."""
    W, b = scale * rng.standard_normal((D, Zs[0])), scale * rng.standard_normal(D)
    A = tuple(scale * rng.standard_normal((Z, Zu)) for Z, Zu in zip(Zs, Zs[1:]))
    c = tuple(scale * rng.standard_normal(Z) for Z in Zs[:-1])
    log_var = tuple(scale * rng.standard_normal(Z) for Z in Zs[:-1])
    return LinearChain(W, b, sigma2, A, c, log_var)


def q_of(p, arch, x):
    """The q of a linear ladder at x, read off its encoders' weights here: enc_1 x = [m1, lv1], enc_l z = [B z + d, lv]."""
    Zs = arch.latents
    h = x @ p.enc1[0].W + p.enc1[0].b
    up = [p.enc(l)[0] for l in range(2, arch.L + 1)]
    for e, Z in zip(up, Zs[1:]):
        assert not e.W[:, Z:].any()  # the log-variance of q(z_l|z_{l-1}) is its bias alone: the oracle's family
    return ChainQ(h[:, :Zs[0]], h[:, Zs[0]:], tuple(e.W[:, :Z].T for e, Z in zip(up, Zs[1:])),
                  tuple(e.b[:Z] for e, Z in zip(up, Zs[1:])), tuple(e.b[Z:] for e, Z in zip(up, Zs[1:])))


def linear_problem(rng, Zs, D=4, N=3, sigma2=0.5):
    """A linear L-layer VAE whose decoders are an oracle chain, random encoders of the chain's q family, and its q."""
    model = random_chain(rng, D, Zs, sigma2)
    arch, p = best_linear_ladder(model)
    assert arch == linear_ladder_arch(model) == LadderArch(D, ((),) * len(Zs), tuple(Zs), "identity",
                                                           Likelihood("gaussian", sigma2=sigma2))
    enc1 = Dense(0.6 * rng.standard_normal((D, 2 * Zs[0])), 0.6 * rng.standard_normal(2 * Zs[0]))  # lv1 depends on x
    up = [Dense(np.concatenate([0.6 * rng.standard_normal((Z, Zu)), np.zeros((Z, Zu))], 1), 0.6 * rng.standard_normal(2 * Zu))
          for Z, Zu in zip(Zs, Zs[1:])]  # q(z_l|z_{l-1}) of the family: its log-variance a constant
    p = p._replace(**{f"enc{l}": (e,) for l, e in enumerate([enc1, *up], 1)})
    x = model.sample(N, rng)[0]
    q = q_of(p, arch, x)
    for a, b in zip(q[:2], ladder_q(p, arch, x)[:2]):
        np.testing.assert_allclose(a, b, rtol=1e-14)
    return arch, p, model, x, q


def draw_z(q, eps):
    """The samples z_1..z_L from q's parameters and the layers' noise, written out here."""
    zs = [q.m1 + np.exp(0.5 * q.lv1) * eps[0]]
    for B, d, lv, e in zip(q.B, q.d, q.lv, eps[1:]):
        zs.append(zs[-1] @ B.T + d + np.exp(0.5 * lv) * e)
    return zs


CHAINS = [(3,), (3, 2), (3, 2, 2)]  # Zs for L = 1, 2, 3


@pytest.mark.parametrize("Zs", CHAINS)
def test_log_weights_equal_the_oracles_log_joint_minus_log_q(rng, Zs):
    arch, p, model, x, q = linear_problem(rng, Zs)
    eps = [2 * rng.standard_normal((5, 3, Z)) for Z in Zs]  # any eps, tails too
    zs = draw_z(q, eps)
    want = model.log_joint(x, zs) - model.log_q(zs, q)
    np.testing.assert_allclose(log_weights(p, arch, x, eps), want, rtol=1e-12)


@pytest.mark.parametrize("kl", ["mc", "analytic"])
@pytest.mark.parametrize("Zs", CHAINS[1:])
def test_elbo_mean_equals_the_oracles_closed_form(rng, Zs, kl):
    arch, p, model, x, q = linear_problem(rng, Zs)
    K = 40000
    eps = [rng.standard_normal((1, K * 3, Z)) for Z in Zs]
    xs = np.tile(x, (K, 1))  # K draws of each point as K one-sample ELBOs, to read off the standard error
    v = bound_value(p, arch, xs, eps, "elbo", kl).reshape(K, 3)
    m, se = mean_and_se(v)
    exact = model.elbo(x, q)
    assert np.all(np.abs(m - exact) <= SE_TOL * se), (m, exact, se)
    gap = model.log_marginal(x) - exact
    np.testing.assert_allclose(gap, model.kl_to_posterior(x, q), rtol=1e-10)  # log p(x) - ELBO = KL(q || p(.|x))
    assert np.all(SE_TOL * se < 0.05 * gap), "the q is too good for this test to see a 5% error"


@pytest.mark.parametrize("Zs", CHAINS[1:])
def test_iwae_rises_with_k_and_stays_below_log_marginal(rng, Zs):
    """Burda et al. 2016, Theorem 1: L_1 <= L_10 <= L_100 <= log p(x), each L_K the mean of R independent estimates.

    q is the oracle's best q with m1 and lv1 moved by 0.5 (best_linear_ladder's shift1): a gap of 1-3 nats, so L_K
    rises by many standard errors, and L_100 ends well within the gap of log p(x), close enough that a bound
    exceeding it would show.
    """
    model = random_chain(rng, 4, Zs)
    x = model.sample(3, rng)[0]
    Z1 = Zs[0]
    shift = 0.5 * np.array([1, -1, 1] * 2)[:2 * Z1]
    arch, p = best_linear_ladder(model, shift1=shift)
    best = model.best_q(x)
    q = ladder_q(p, arch, x)
    np.testing.assert_allclose(q.m1, best.m1 + shift[:Z1], rtol=1e-10, atol=1e-12)  # the mapping, and the shift
    np.testing.assert_allclose(q.lv1, best.lv1 + shift[Z1:], rtol=1e-10, atol=1e-12)
    for a, b in zip((*q.B, *q.d, *q.lv), (*best.B, *best.d, *best.lv)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    log_px = model.log_marginal(x)
    gap = log_px - model.elbo(x, q)
    assert np.all((gap > 0.5) & (gap < 5)), gap
    means, ses = [], []
    for K in (1, 10, 100):
        R = 40000 // K
        eps = [rng.standard_normal((K, R * 3, Z)) for Z in Zs]
        est = bound_value(p, arch, np.tile(x, (R, 1)), eps, "iwae", "mc").reshape(R, 3)
        m, se = mean_and_se(est)
        assert np.all(m <= log_px + SE_TOL * se), (K, m, log_px, se)
        means.append(m), ses.append(se)
    assert np.all(np.abs(means[0] - (log_px - gap)) <= SE_TOL * ses[0])  # L_1 = ELBO
    for i in range(2):
        rise, se = means[i + 1] - means[i], np.hypot(ses[i], ses[i + 1])
        assert np.all(rise > SE_TOL * se), (i, rise, se)  # strictly, beyond the noise
    assert np.all(log_px - means[2] < 0.5 * gap)


@pytest.mark.parametrize("Zs", CHAINS)
def test_zero_variance_at_the_exact_posterior(rng, Zs):
    """Encoders set to the exact posterior (an in-family model): every log-weight is log p(x), and the STL and DReG
    encoder gradients vanish (the path derivative of a constant), while reparam's keeps the zero-mean score term."""
    D, N = 5, 4
    model = LinearChain.with_posterior_in_family(rng, D, Zs)
    x = model.sample(N, rng)[0]
    arch, p = best_linear_ladder(model)
    np.testing.assert_allclose(x @ p.enc1[0].W[:, :Zs[0]] + p.enc1[0].b[:Zs[0]], model.best_q(x).m1, rtol=1e-10, atol=1e-12)
    eps = [2 * rng.standard_normal((50, N, Z)) for Z in Zs]
    log_px = model.log_marginal(x)
    np.testing.assert_allclose(log_weights(p, arch, x, eps), np.broadcast_to(log_px, (50, N)), rtol=0, atol=1e-9)
    n_enc = n_encoder_arrays(arch)
    assert n_enc == 2 * len(Zs)  # enc_1..enc_L, one Dense (W, b) each
    for bound, est in (("elbo", "stl"), ("iwae", "dreg"), ("elbo", "reparam")):
        value, g = bound_and_grad(p, arch, x, eps, bound, "mc", est)
        np.testing.assert_allclose(value, log_px, rtol=0, atol=1e-9)
        worst = max(np.abs(a).max() for a in flatten(g)[:n_enc])
        if est == "reparam":
            assert worst > 1e-2, worst  # the score term: zero in expectation only
        else:
            assert worst < 1e-9, (est, worst)


# ---- dtype and the public boundary ----

@pytest.mark.parametrize("L", [1, 2, 3])
@pytest.mark.parametrize("bound,kl,estimator", CASES)
def test_float32_preserved_and_agrees_with_float64(rng, L, bound, kl, estimator):
    arch, p32, x32, e32 = random_problem(rng, "gaussian", spec=SPECS[L], dtype=np.float32)
    v32, g32 = bound_and_grad(p32, arch, x32, e32, bound, kl, estimator)
    up = lambda a: a.astype(np.float64)  # noqa: E731
    v64, g64 = bound_and_grad(unflatten(arch, map(up, flatten(p32))), arch, up(x32), list(map(up, e32)), bound, kl, estimator)
    tol = AGREE_RTOL[np.float32]
    assert v32.dtype == np.float32 and all(a.dtype == np.float32 for a in flatten(g32))
    np.testing.assert_allclose(v32, v64, rtol=tol)
    for name, a, b in zip(param_names(arch), flatten(g32), flatten(g64)):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * np.abs(b).max(), err_msg=name)


def _with(eps, i, value):
    return [value if j == i else e for j, e in enumerate(eps)]


@pytest.mark.parametrize("mutate, match", [
    (lambda p, x, e: (p, x, _with(e, 0, e[0][..., :-1])), r"eps must have shape \(\?, 3, 7\), got \(4, 3, 6\)"),
    (lambda p, x, e: (p, x, _with(e, 2, e[2][:, :-1])), "all the input array dimensions"),
    (lambda p, x, e: (p, x, [a[:0] for a in e]), "K = 0"),
    (lambda p, x, e: (p, x, _with(e, 2, e[2] * np.inf)), "eps contains .* non-finite"),
    (lambda p, x, e: (p, x, e[:2]), r"eps must have shape \(\?, 3, 7\), got \(4, 3, 5\)"),
    (lambda p, x, e: (p, x * 0.5, e), "binary x"),
    (lambda p, x, e: (p._replace(dec2=p.dec2[:1]), x, e), "needs"),
    (lambda p, x, e: (p._replace(enc3=(p.enc3[0], p.enc3[1]._replace(W=p.enc3[1].W[:, :-1]))), x, e),
     r"enc3.1.W must have shape \(3, 4\), got \(3, 3\)"),
    (lambda p, x, e: (tuple(p), x, e), "params must be a LadderParams, got tuple"),
])
def test_bad_input_is_a_clear_value_error(rng, mutate, match):
    arch, params, x, eps = random_problem(rng, spec=SPECS[3])
    params, x, eps = mutate(params, x, eps)
    with pytest.raises(ValueError, match=match):
        bound_and_grad(params, arch, x, eps, "elbo", "mc", "reparam")
    with pytest.raises(ValueError, match=match):
        log_weights(params, arch, x, eps)
    with pytest.raises(ValueError, match=match):
        bound_value(params, arch, x, eps, "iwae", "mc")


@pytest.mark.parametrize("options, match", [
    (("iwae", "mc", "stl"), "not defined"), (("elbo", "mc", "dreg"), "not defined"),
    (("elbo", "analytic", "stl"), "not defined"), (("iwae", "analytic", "reparam"), "no analytic-KL form"),
    (("elbo", "mc", "score"), "estimator must be one of"), (("vae", "mc", "reparam"), "bound must be one of"),
])
def test_bad_options(rng, options, match):
    arch, params, x, eps = random_problem(rng)
    with pytest.raises(ValueError, match=match):
        bound_and_grad(params, arch, x, eps, *options)


def test_kl_weight_only_for_the_elbo(rng):
    arch, params, x, eps = random_problem(rng)
    with pytest.raises(ValueError, match="kl_weight must be 1"):
        bound_and_grad(params, arch, x, eps, "iwae", "mc", "reparam", kl_weight=0.5)
    with pytest.raises(ValueError, match="kl_weight"):
        bound_and_grad(params, arch, x, eps, "elbo", "mc", "reparam", kl_weight=-1.0)
    with pytest.raises(ValueError, match="arch must be an Arch or a LadderArch, got object"):
        bound_and_grad(params, object(), x, eps, "elbo", "mc", "reparam")
