"""backend="cuda" against the NumPy specification, on numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1) or a real GPU.

The simulator runs every GPU thread as a Python thread (~50 ms a launch), so shapes are tiny and the
(bound, kl, estimator) x likelihood x activation grid is covered along each axis, not as a product.
The main suite runs this directory in a subprocess with the simulator on (tests/test_cuda_sim.py); where an
NVIDIA GPU is present, the main suite also runs it directly, on the GPU.
"""

import numba
import numpy as np
import pytest

from npvae.backends import cuda_available

if not cuda_available():  # the simulator (as tests/test_cuda_sim.py runs this file), or a real GPU
    pytest.skip("needs NUMBA_ENABLE_CUDASIM=1 (run by tests/test_cuda_sim.py) or an NVIDIA GPU", allow_module_level=True)

from numba import cuda

from conftest import extreme_problem, random_problem
from gemm_paths import gemm_path, pytest_generate_tests  # noqa: F401  (each test with each matrix-product path)
from npvae import flatten, log_px, log_weights, objective, param_names, unflatten
from npvae.backends import resolve
from npvae.backends import cuda_gpu, cuda_kernels, cuda_train_kernels
from npvae.maths.estimators import VALID
from npvae.checks.gradcheck import rel_err
from npvae.maths.lme import log_mean_exp
from npvae.objectives import bound_value
from npvae.nn.optim import adam_init, adam_update

RTOL = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-5}
SHAPE = dict(D=6, hidden=(5,), Z=2, N=3, K=2)
# (bound, kl, estimator, kl_weight, free_bits): every valid estimator, with beta != 1 and free bits > 0 on the way.
ESTIMATOR_CASES = [("elbo", "analytic", "reparam", 0.7, 0.05), ("elbo", "mc", "reparam", 0.4, 0.0),
                   ("elbo", "mc", "stl", 1.0, 0.0), ("iwae", "mc", "reparam", 1.0, 0.0), ("iwae", "mc", "dreg", 1.0, 0.0)]


def _close(got, want, dtype, what):
    assert got.dtype == want.dtype == dtype, f"{what}: dtype {got.dtype}, want {want.dtype}"
    assert rel_err(got, want) <= RTOL[np.dtype(dtype)], f"{what}: relative error {rel_err(got, want):.2e}"


def _check_objective(likelihood, activation, case, dtype, seed=0):
    arch, params, x, eps = random_problem(np.random.default_rng(seed), likelihood, activation, dtype=dtype, **SHAPE)
    bound, kl, estimator, kl_weight, free_bits = case
    options = dict(bound=bound, kl=kl, estimator=estimator, kl_weight=kl_weight, free_bits=free_bits)
    v_ref, g_ref = objective(params, arch, x, eps, **options)
    v, g = objective(params, arch, x, eps, backend="cuda", **options)
    _close(v, v_ref, dtype, f"value {case}")
    for name, a, b in zip(param_names(arch), flatten(g), flatten(g_ref)):
        _close(a, b, dtype, f"d/d {name} {case} {likelihood} {activation}")


def test_resolve_takes_the_simulator_only_when_asked():
    assert resolve("cuda") == "cuda"
    # The simulator is never chosen by "auto"; a real GPU is.
    assert (resolve("auto") == "cuda") == (not numba.config.ENABLE_CUDASIM)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", ESTIMATOR_CASES, ids=lambda c: "-".join(c[:3]))
def test_every_estimator_equals_numpy(case, dtype):
    _check_objective("gaussian-learned", "tanh", case, dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_every_likelihood_equals_numpy(likelihood, dtype):
    _check_objective(likelihood, "tanh", ESTIMATOR_CASES[4], dtype, seed=1)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("activation", ["identity", "relu", "softplus"])
def test_every_activation_equals_numpy(activation, dtype):
    _check_objective("bernoulli", activation, ESTIMATOR_CASES[0], dtype, seed=2)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_forward_only_paths_equal_numpy(dtype):
    arch, params, x, eps = random_problem(np.random.default_rng(3), "gaussian", "softplus", dtype=dtype, **SHAPE)
    _close(log_weights(params, arch, x, eps, backend="cuda"), log_weights(params, arch, x, eps), dtype, "log_weights")
    for bound, kl in (("elbo", "analytic"), ("elbo", "mc"), ("iwae", "mc")):
        _close(bound_value(params, arch, x, eps, bound=bound, kl=kl, backend="cuda"),
               bound_value(params, arch, x, eps, bound=bound, kl=kl), dtype, f"bound_value {bound} {kl}")
    per = arch.likelihood.out_dim(arch.data_dim) * x.shape[0]  # chunks of 2 samples: 5 = 2 + 2 + 1
    got = log_px(params, arch, x, 5, np.random.default_rng(4), max_elements=2 * per, backend="cuda")
    want = log_px(params, arch, x, 5, np.random.default_rng(4), max_elements=2 * per)
    _close(got, want, dtype, "log_px")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_log_mean_exp_kernel(dtype):
    a = np.random.default_rng(5).standard_normal((4, 3)).astype(dtype) * 30
    a[:, 2] = -np.inf  # an all -inf column gives -inf, not NaN
    got, want = cuda_gpu.log_mean_exp(a), log_mean_exp(a, axis=0)
    assert got[2] == want[2] == -np.inf
    _close(got[:2], want[:2], dtype, "log_mean_exp")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_adam_kernel_equals_adam_update(dtype):
    rng = np.random.default_rng(6)
    params = [rng.standard_normal(s).astype(dtype) for s in ((3, 4), (5,))]
    p_ref, s_ref = params, adam_init(params)
    p, s = [a.copy() for a in params], adam_init(params)
    for step in range(3):
        g = [rng.standard_normal(a.shape).astype(dtype) * 10.0 ** (step - 1) for a in params]
        p_ref, s_ref = adam_update(p_ref, [-a for a in g], s_ref, lr=0.01, betas=(0.8, 0.99), eps=1e-6)
        p, s = cuda_gpu.adam_update_(p, g, s, lr=0.01, betas=(0.8, 0.99), eps=1e-6, sign=-1.0)
    assert s.step == s_ref.step
    for a, b in zip([*p, *s.m, *s.v], [*p_ref, *s_ref.m, *s_ref.v]):
        _close(a, b, dtype, "adam")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("tile", [cuda_kernels.TILE, 16])
def test_tiled_gemm_equals_matmul(dtype, tile):
    """Shapes that are not multiples of the tile, and each transpose the backward uses."""
    rng = np.random.default_rng(7)
    A, B = rng.standard_normal((7, 5)).astype(dtype), rng.standard_normal((5, 6)).astype(dtype)
    for ta, tb in ((False, False), (True, False), (False, True)):
        a, b = (A.T.copy() if ta else A), (B.T.copy() if tb else B)
        C = cuda.device_array((7, 6), dtype=dtype)
        cuda_kernels.gemm(cuda.to_device(a), cuda.to_device(b), C, ta, tb, tile=tile)
        _close(C.copy_to_host(), A @ B, dtype, f"gemm ta={ta} tb={tb} tile={tile}")


@pytest.mark.parametrize("n_blocks", [1, 3])
def test_count_nonfinite_over_blocks(n_blocks):
    """Grid-stride counting over fewer threads than elements, blocks added without atomics; NaN, +inf and -inf all count."""
    a = np.arange(150, dtype=np.float32)
    a[[0, 77, 149]] = np.nan, np.inf, -np.inf
    out = cuda.to_device(np.full(2, -1.0))
    cuda_train_kernels.launch_count_nonfinite(cuda.to_device(a), cuda.device_array(n_blocks, np.int64), out, 1)
    assert out.copy_to_host().tolist() == [-1.0, 3.0]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("regime", ["logits+-100"])  # the larger regimes take many minutes each on the simulator
def test_equals_numpy_at_the_extremes(regime, dtype):
    """Saturated logits (tests/test_backends.py's regime), IWAE/DReG; tolerance from the same error model (a
    log-weight's rounding ~ eps |a|, inherited by IWAE's weights). On a real GPU, bench/gpu_check.sh runs this file."""
    for case in (ESTIMATOR_CASES[4],):
        arch, params, x, eps = extreme_problem(regime, dtype, 0)
        a = log_weights(params, arch, x, eps)
        rtol = max(RTOL[np.dtype(dtype)], 2 * float(np.finfo(dtype).eps) * float(np.max(np.abs(a))))
        bound, kl, estimator, kl_weight, free_bits = case
        options = dict(bound=bound, kl=kl, estimator=estimator, kl_weight=kl_weight, free_bits=free_bits)
        v_ref, g_ref = objective(params, arch, x, eps, **options)
        v, g = objective(params, arch, x, eps, backend="cuda", **options)
        assert rel_err(v, v_ref) <= rtol, f"{regime} value {case}: {rel_err(v, v_ref):.2e} > {rtol:.1e}"
        for name, got, want in zip(param_names(arch), flatten(g), flatten(g_ref)):
            assert got.dtype == want.dtype == dtype and rel_err(got, want) <= rtol, f"{regime} d/d {name} {case}: {rel_err(got, want):.2e}"
    assert rel_err(log_weights(params, arch, x, eps, backend="cuda"), a) <= rtol


def _ladder_problem(likelihood, dtype, seed=8, spec="6-5-3:3-2"):
    from npvae.vae.ladder import LadderArch, init_params
    from npvae.likelihoods import Likelihood

    arch = LadderArch.parse(spec, likelihood=Likelihood(likelihood))
    rng = np.random.default_rng(seed)
    params = unflatten(arch, [a.astype(dtype) for a in flatten(init_params(arch, rng))])
    x = (rng.random((3, 6)) < 0.5) if likelihood == "bernoulli" else rng.standard_normal((3, 6))
    return arch, params, x.astype(dtype), rng.standard_normal((2, 3, arch.noise_dim)).astype(dtype)  # N = 3, K = 2


@pytest.mark.parametrize("likelihood, spec", [("bernoulli", "6-5-3:3-2"), ("gaussian", "6-5-3:3-2"),
                                              ("gaussian-learned", "6-5-3:3-2"), ("bernoulli", "6-5-3:3-2:2-2")])
@pytest.mark.slow
def test_stochastic_layers_equal_numpy(likelihood, spec):
    """Every (bound, kl, estimator), the forward-only paths and log p(x) of Burda et al.'s model (L = 2) and of L = 3
    against the specification."""
    dtype = np.float64
    arch, params, x, eps = _ladder_problem(likelihood, dtype, spec=spec)
    for (bound, kl), estimators in VALID.items():
        for estimator in estimators:
            case = (bound, kl, estimator, 0.6 if bound == "elbo" else 1.0)
            options = dict(bound=bound, kl=kl, estimator=estimator, kl_weight=case[3])
            v_ref, g_ref = objective(params, arch, x, eps, **options)
            v, g = objective(params, arch, x, eps, backend="cuda", **options)
            _close(v, v_ref, dtype, f"value {case} {likelihood}")
            for name, a, b in zip(param_names(arch), flatten(g), flatten(g_ref)):
                _close(a, b, dtype, f"d/d {name} {case} {likelihood}")
        _close(bound_value(params, arch, x, eps, bound=bound, kl=kl, backend="cuda"),
               bound_value(params, arch, x, eps, bound=bound, kl=kl), dtype, f"bound_value {bound} {kl} {likelihood}")
    _close(log_weights(params, arch, x, eps, backend="cuda"), log_weights(params, arch, x, eps), dtype, "log_weights")
    per = arch.likelihood.out_dim(arch.data_dim) * x.shape[0]  # chunks of 2 samples: 3 = 2 + 1
    got = log_px(params, arch, x, 3, np.random.default_rng(4), max_elements=2 * per, backend="cuda")
    _close(got, log_px(params, arch, x, 3, np.random.default_rng(4), max_elements=2 * per), dtype, f"log_px {likelihood}")


@pytest.mark.parametrize("spec", ["6-5-3:3-2", "6-5-3:3-2:2-2"])
def test_stochastic_layers_float32_stays_float32(spec):
    dtype = np.float32
    arch, params, x, eps = _ladder_problem("gaussian-learned", dtype, seed=9, spec=spec)
    options = dict(bound="iwae", kl="mc", estimator="dreg")
    v_ref, g_ref = objective(params, arch, x, eps, **options)
    v, g = objective(params, arch, x, eps, backend="cuda", **options)
    _close(v, v_ref, dtype, "value float32")
    for name, a, b in zip(param_names(arch), flatten(g), flatten(g_ref)):
        _close(a, b, dtype, f"d/d {name} float32")
    _close(log_weights(params, arch, x, eps, backend="cuda"), log_weights(params, arch, x, eps), dtype, "log_weights float32")


def test_stochastic_layers_are_refused_by_the_device_trainer_with_a_message():
    """Device-resident training runs one stochastic layer; a ladder gets a message naming the backends that train it."""
    from npvae.backends import cuda_backend
    from npvae.nn.optim import adam_init as init

    arch, params, _, _ = _ladder_problem("bernoulli", np.float64)
    b = cuda_backend.BACKEND
    with pytest.raises(ValueError, match="the cuda backend trains one-layer models on the device; to train the ladder "
                                         "architecture 6-5-3:3-2 use backend 'numpy', 'numba'"):
        b.stepper(b, arch, flatten(params), init(flatten(params)), batch_size=2, bound="elbo", kl="mc", estimator="reparam",
                  free_bits=0.0, betas=(0.9, 0.999), adam_eps=1e-8)


def test_training_a_ladder_on_cuda_is_refused_before_the_run_directory(tmp_path):
    from npvae.training.config import TrainConfig
    from npvae.store.data import load
    from npvae.training.loop import train

    cfg = TrainConfig(arch="64-20-8:6-3", backend="cuda", epochs=1, binarize=True)
    with pytest.raises(ValueError, match="use backend 'numpy', 'numba'"):
        train(cfg, load("digits", binarize=True), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


LADDER_CASES = [(b, kl, e, 0.6 if b == "elbo" else 1.0) for (b, kl), ests in VALID.items() for e in ests]
LADDER_ULPS = {np.dtype(np.float64): 32, np.dtype(np.float32): 8}


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("spec", ["6-5-3:3-2", "6-5-3:4-2:3-2"])
def test_fused_latent_kernels_equal_numpy(spec, dtype, monkeypatch):
    """The latent layers through npvae.backends.cuda_latent_kernels (each launched, none left to the host) against the
    specification: every (bound, kl, estimator), the forward-only paths and log p(x), L = 2 and 3, both float types.

    Error model as tests/test_numba_ladder.py's: the same formulas, some sums in another order, so each array is held to
    LADDER_ULPS eps max(1, max |a|) relative to its largest element. Measured on the simulator over these problems and the
    Bernoulli likelihood at seed 9: at most 11 eps max|a| in float64 (from the MLPs' products: the same with
    cuda_ladder.FUSE_LATENT = False) and 3.1 in float32, so 32 and 8: about 1.6e-13 and 2.2e-5 here.
    """
    from npvae.backends import cuda_ladder, cuda_latent_kernels as clk

    ran = set()
    monkeypatch.setattr(cuda_ladder, "launch", lambda kernel, n, *args: (ran.add(kernel), cuda_kernels.launch(kernel, n, *args)))
    arch, params, x, eps = _ladder_problem("gaussian-learned", dtype, spec=spec)
    a = log_weights(params, arch, x, eps)
    rtol = LADDER_ULPS[np.dtype(dtype)] * float(np.finfo(dtype).eps) * max(1.0, float(np.max(np.abs(a))))

    def close(got, want, what):
        assert got.dtype == want.dtype == dtype and rel_err(got, want) <= rtol, f"{what}: {rel_err(got, want):.2e} > {rtol:.1e}"

    for bound, kl, estimator, beta in LADDER_CASES:
        options = dict(bound=bound, kl=kl, estimator=estimator, kl_weight=beta)
        v_ref, g_ref = objective(params, arch, x, eps, **options)
        v, g = objective(params, arch, x, eps, backend="cuda", **options)
        close(v, v_ref, f"value {spec} {options}")
        for name, got, want in zip(param_names(arch), flatten(g), flatten(g_ref)):
            close(got, want, f"d/d {name} {spec} {options}")
    for bound, kl in VALID:
        close(bound_value(params, arch, x, eps, bound=bound, kl=kl, backend="cuda"),
              bound_value(params, arch, x, eps, bound=bound, kl=kl), f"bound_value {bound} {kl}")
    close(log_weights(params, arch, x, eps, backend="cuda"), a, "log_weights")
    per = arch.likelihood.out_dim(arch.data_dim) * x.shape[0]  # chunks of 2 samples: 3 = 2 + 1
    close(log_px(params, arch, x, 3, np.random.default_rng(4), max_elements=2 * per, backend="cuda"),
          log_px(params, arch, x, 3, np.random.default_rng(4), max_elements=2 * per), "log_px")
    assert ran == {clk.sample, clk.kl_rows, clk.prior, clk.prior_backward, clk.layer_backward, clk.first_backward}


@pytest.mark.slow
def test_fused_latent_kernels_keep_a_nan_in_the_noise():
    """No fastmath: a NaN in one eps_l element of one sample shows in the value and gradients element by element as in the
    specification's (the cores check nothing; the public objective refuses non-finite eps)."""
    from npvae.backends import cuda_ladder
    from npvae.vae import ladder_objective

    arch, params, x, eps = _ladder_problem("bernoulli", np.float64, spec="6-5-3:4-2:3-2")
    for l, start in enumerate(np.cumsum((0, *arch.latents[:-1]))):
        e = eps.copy()
        e[1, 2, start] = np.nan  # sample k = 1 of point n = 2, layer l + 1
        for bound, kl, estimator, beta in LADDER_CASES:
            case = f"layer {l + 1} {bound} {kl} {estimator}"
            v_ref, g_ref = ladder_objective.bound_and_grad_core(params, arch, x, e, bound, kl, estimator, beta)
            v, g = cuda_ladder.bound_and_grad(params, arch, x, e, bound, kl, estimator, beta)
            assert np.isnan(v_ref[2]) and np.isnan(v[2]), f"value {case}"
            assert np.array_equal(np.isnan(v), np.isnan(v_ref)), f"value {case}"
            for name, got, want in zip(param_names(arch), flatten(g), flatten(g_ref)):
                assert np.array_equal(np.isnan(got), np.isnan(want)), f"d/d {name} {case}"
