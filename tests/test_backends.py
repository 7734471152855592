"""Every backend runs the same test bodies: equal to the NumPy specification on the same (params, x, eps), and the oracles.

Tolerances are relative to each array's largest element (gradcheck.rel_err), keyed by dtype: the
kernels compute the NumPy formulas in the same order, so float64 agrees to ~1e-15 and float32 to a
few ulps; a wrong factor anywhere fails by orders of magnitude. Shapes are tiny: the time here is
numba's compilation, once per dtype (and cached on disk).
"""

import subprocess
import sys

import numpy as np
import pytest
from scipy.special import logsumexp

from conftest import FD_RTOL, EXTREMES, extreme_problem, random_problem
from npvae import flatten, log_px, log_weights, objective, param_names
from npvae.backends import BACKENDS, numba_available, resolve
from npvae.checks.gradcheck import per_parameter, rel_err
from npvae.nn.layers import ACTIVATIONS
from npvae.likelihoods import LIKELIHOODS
from npvae.maths.lme import log_mean_exp
from npvae.objectives import VALID, bound_and_grad as numpy_bound_and_grad, bound_value
from npvae.nn.optim import adam_init, adam_update

RUN = ["numpy"] + (["numba"] if numba_available() else [])
RTOL = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 1e-5}
# (bound, kl, estimator, kl_weight, free_bits); free_bits=None: lambda between the batch's KL_j (see _free_bits).
CASES = [(b, k, e, w, None if fb else 0.0) for (b, k), es in VALID.items() for e in es
         for w, fb in (((1.0, 0), (0.4, 0), (0.7, 1)) if k == "analytic" else ((1.0, 0), (0.4, 0)) if b == "elbo" else ((1.0, 0),))]


def _free_bits(params, arch, x):
    """lambda halfway between two of the batch's KL_j: some dimensions floored, none on the kink."""
    from npvae.maths.gaussian import kl_std_normal_per_dim
    from npvae.vae.model import encode

    v = np.sort(kl_std_normal_per_dim(*encode(params, arch, x)[:2]).ravel())
    return float(0.5 * (v[v.size // 2 - 1] + v[v.size // 2]))


def _options(params, arch, x, case):
    bound, kl, estimator, kl_weight, free_bits = case
    fb = _free_bits(params, arch, x) if free_bits is None else free_bits
    return dict(bound=bound, kl=kl, estimator=estimator, kl_weight=kl_weight, free_bits=fb)


def _assert_close(got, want, dtype, what):
    assert got.dtype == want.dtype == dtype, f"{what}: dtype {got.dtype}, want {want.dtype}"
    assert rel_err(got, want) <= RTOL[np.dtype(dtype)], f"{what}: relative error {rel_err(got, want):.2e}"


@pytest.mark.parametrize("backend", RUN)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("likelihood", LIKELIHOODS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_equals_the_numpy_specification(backend, dtype, likelihood, activation):
    """Value and every gradient, for every (bound, kl, estimator), with kl_weight != 1 and free bits > 0; and the forward-only paths."""
    for i, case in enumerate(CASES):
        arch, params, x, eps = random_problem(np.random.default_rng(i), likelihood, activation, hidden=(5, 4), N=6, K=4, dtype=dtype)
        options = _options(params, arch, x, case)
        v_ref, g_ref = objective(params, arch, x, eps, **options)
        v, g = objective(params, arch, x, eps, backend=backend, **options)
        _assert_close(v, v_ref, dtype, f"value {case}")
        for name, a, b in zip(param_names(arch), flatten(g), flatten(g_ref)):
            _assert_close(a, b, dtype, f"d/d {name} {case}")
    _assert_close(log_weights(params, arch, x, eps, backend=backend), log_weights(params, arch, x, eps), dtype, "log_weights")
    for bound, kl in VALID:
        want = bound_value(params, arch, x, eps, bound=bound, kl=kl)
        _assert_close(bound_value(params, arch, x, eps, bound=bound, kl=kl, backend=backend), want, dtype, f"bound_value {bound} {kl}")


@pytest.mark.skipif("numba" not in RUN, reason="numba is not installed")
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sparse_binary_input_path_equals_numpy(dtype):
    """Binary x with few ones (one row all zeros): the encoder's first product is binary_input's row sums; same numbers."""
    from npvae.backends import binary_input

    for i, case in enumerate(CASES):
        arch, params, _, eps = random_problem(np.random.default_rng(i), "bernoulli", "tanh", D=20, hidden=(5,), N=6, K=3, dtype=dtype)
        x = (np.random.default_rng(100 + i).random((6, 20)) < 0.15).astype(dtype)
        x[2] = 0
        assert binary_input.support(x, np.empty(21, np.int64), np.empty(120, np.int32), dtype(binary_input.MAX_DENSITY)) >= 0
        options = _options(params, arch, x, case)
        v_ref, g_ref = objective(params, arch, x, eps, **options)
        v, g = objective(params, arch, x, eps, backend="numba", **options)
        _assert_close(v, v_ref, dtype, f"value {case}")
        for name, a, b in zip(param_names(arch), flatten(g), flatten(g_ref)):
            _assert_close(a, b, dtype, f"d/d {name} {case}")
    _assert_close(log_px(params, arch, x, 7, np.random.default_rng(0), backend="numba"),
                  log_px(params, arch, x, 7, np.random.default_rng(0)), dtype, "log_px")


@pytest.mark.skipif("numba" not in RUN, reason="numba is not installed")
def test_binary_support_refuses_what_is_not_sparse_binary():
    from npvae.backends import binary_input

    def nnz(x, max_density=0.3):
        return binary_input.support(x, np.empty(x.shape[1] + 1, np.int64), np.empty(x.size, np.int32), max_density)

    x = np.zeros((3, 4))
    x[0, 1] = x[2, 3] = x[2, 1] = 1.0
    colptr, rows = np.empty(5, np.int64), np.empty(12, np.int32)
    assert binary_input.support(x, colptr, rows, 0.3) == 3
    assert colptr.tolist() == [0, 0, 2, 2, 3] and rows[:3].tolist() == [0, 2, 2]  # column 1: points 0, 2; column 3: point 2
    W, dy = np.arange(20.0).reshape(4, 5), np.arange(15.0).reshape(3, 5)
    out, out_t = np.empty((3, 5)), np.empty((4, 5))
    binary_input.matmul(colptr, rows, W, out)
    binary_input.matmul_t(colptr, rows, dy, out_t)
    assert np.array_equal(out, x @ W) and np.array_equal(out_t, x.T @ dy)  # small integers: exact in any order
    for bad in (0.5, np.nan, -1.0, 2.0):
        y = x.copy()
        y[1, 2] = bad
        assert nnz(y) == -1, bad
    assert nnz(np.ones((3, 4))) == -1  # too dense: BLAS is faster
    assert nnz(np.ones((3, 4)), max_density=1.0) == 12


@pytest.mark.parametrize("backend", RUN)
@pytest.mark.parametrize("likelihood", LIKELIHOODS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c)))
def test_gradient_against_finite_differences(backend, likelihood, case, rng):
    """The gradcheck oracle (forward-only surrogates, central differences in float64), per parameter."""
    arch, params, x, eps = random_problem(rng, likelihood, "tanh", hidden=(5, 4), N=6)
    options = _options(params, arch, x, case)
    _, grads = objective(params, arch, x, eps, backend=backend, **options)
    for r in per_parameter(params, grads, arch, x, eps, options, rng, param_names(arch)):
        assert r.status == "ok", f"{r.name}: analytic {r.analytic!r} vs finite difference {r.fd!r} (|diff| {r.error:.2e}, tol {r.tol:.2e})"


def _adam(backend):
    """The optimiser step a backend's trainer uses, as a function of (params, loss gradients, state)."""
    if backend == "numba":
        from npvae.backends.numba_cpu import adam_update_

        return lambda p, g, s, **kw: adam_update_([a.copy() for a in p], g, s._replace(m=tuple(a.copy() for a in s.m), v=tuple(a.copy() for a in s.v)), **kw)
    return adam_update


@pytest.mark.parametrize("backend", RUN)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_adam_equals_adam_update_bit_for_bit(backend, dtype, rng):
    params = [rng.standard_normal(s).astype(dtype) for s in ((3, 4), (4,), (2, 5, 3))]
    state_ref = state = adam_init(params)
    p_ref = p = params
    for step in range(5):
        g = [rng.standard_normal(a.shape).astype(dtype) * 10.0 ** (step - 2) for a in params]
        kw = dict(lr=0.01 * (step + 1), betas=(0.8, 0.99), eps=1e-6)
        p_ref, state_ref = adam_update(p_ref, g, state_ref, **kw)
        p, state = _adam(backend)(p, g, state, **kw)
        assert state.step == state_ref.step
        for a, b in zip([*p, *state.m, *state.v], [*p_ref, *state_ref.m, *state_ref.v]):
            assert a.dtype == dtype
            np.testing.assert_array_equal(a, b)


def test_in_place_adam_descends_on_minus_the_gradient(rng):
    """sign=-1 on the bound's gradient is adam_update on the loss gradient, with no copy made; parameters change in place."""
    pytest.importorskip("numba")
    from npvae.backends.numba_cpu import adam_update_

    params = [rng.standard_normal((4, 3)), rng.standard_normal(3)]
    g = [rng.standard_normal(a.shape) for a in params]
    p_ref, _ = adam_update(params, [-a for a in g], adam_init(params), lr=0.1)
    p, _ = adam_update_(params, g, adam_init(params), lr=0.1, sign=-1.0)
    assert p[0] is params[0]
    for a, b in zip(p, p_ref):
        np.testing.assert_array_equal(a, b)


def _lme(backend):
    if backend == "numba":
        from npvae.backends.numba_cpu import log_mean_exp as lme

        return lme
    return lambda a: log_mean_exp(a, axis=0)


@pytest.mark.parametrize("backend", RUN)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_log_mean_exp_with_minus_infinity(backend, dtype, rng):
    """Against scipy's logsumexp; a column of all -inf gives -inf (never NaN), partly -inf columns ignore the -inf."""
    a = (rng.standard_normal((7, 6)) * 30).astype(dtype)
    a[:, 1] = -np.inf
    a[2:5, 3] = -np.inf
    a[:, 5] = 1e4  # equal, large: no overflow
    got = _lme(backend)(a)
    assert got.dtype == dtype
    assert got[1] == -np.inf and not np.any(np.isnan(got))
    want = logsumexp(a.astype(np.float64), axis=0) - np.log(7)
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], rtol=RTOL[np.dtype(dtype)])
    ref = log_mean_exp(a, axis=0)  # the specification
    np.testing.assert_array_equal(np.isfinite(got), np.isfinite(ref))
    np.testing.assert_allclose(got[finite], ref[finite], rtol=RTOL[np.dtype(dtype)])


@pytest.mark.parametrize("backend", RUN)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_importance_sampled_log_px(backend, dtype):
    """Same Generator state, same estimate as the NumPy path, whatever the chunk size; float32 stays float32."""
    arch, params, x, _ = random_problem(np.random.default_rng(5), "bernoulli", "relu", hidden=(5,), N=3, dtype=dtype)
    want = log_px(params, arch, x, 50, np.random.default_rng(9))
    for max_elements in (1, 100, 1 << 20):
        got = log_px(params, arch, x, 50, np.random.default_rng(9), max_elements=max_elements, backend=backend)
        _assert_close(got, want, dtype, f"log_px, max_elements={max_elements}")


def test_streaming_log_mean_exp_keeps_minus_infinity_out_of_nan():
    """The log p(x) accumulator: an all -inf chunk before finite ones, and a point that is -inf throughout."""
    pytest.importorskip("numba")
    from npvae.backends import kernels

    chunks = [np.array([[-np.inf, -np.inf, 1.0], [-np.inf, -np.inf, 2.0]]), np.array([[0.5, -np.inf, np.nan], [-1.0, -np.inf, 3.0]])]
    m, s, out = np.full(3, -np.inf), np.zeros(3), np.empty(3)
    for c in chunks:
        kernels.lme_update(c, m, s)
    kernels.lme_finish(m, s, np.log(4.0), out)
    assert out[0] == pytest.approx(logsumexp([0.5, -1.0]) - np.log(4), rel=1e-15)
    assert out[1] == -np.inf
    assert np.isnan(out[2])  # NaN in, NaN out


@pytest.mark.parametrize("backend", RUN)
@pytest.mark.parametrize("where", ["encoder", "decoder"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_nan_propagates_as_in_numpy(backend, where, activation):
    """A NaN weight (past the public checks, into the cores) gives NaN exactly where NumPy's specification gives NaN."""
    for likelihood in LIKELIHOODS:
        for case in [c for c in CASES if c[4] == 0.0 and c[3] == 1.0]:
            arch, params, x, eps = random_problem(np.random.default_rng(0), likelihood, activation, hidden=(5,), N=3, K=2)
            getattr(params, where)[0].W[1, 2] = np.nan
            args = (params, arch, x, eps, *case[:4])
            v_ref, g_ref = numpy_bound_and_grad(*args)
            if backend == "numba":
                from npvae.backends.numba_cpu import bound_and_grad

                v, g = bound_and_grad(*args)
            else:
                v, g = numpy_bound_and_grad(*args)
            assert np.any(np.isnan(v_ref))
            for a, b in zip([v, *flatten(g)], [v_ref, *flatten(g_ref)]):
                np.testing.assert_array_equal(np.isnan(a), np.isnan(b))


_FLOAT32_IR_CHECK = """
import re, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
from conftest import random_problem
from npvae import objective
from npvae.backends import kernels
from npvae.likelihoods import REGISTRY
from npvae.objectives import VALID

arch, params, x, eps = random_problem(np.random.default_rng(0), "gaussian-learned", "softplus", dtype=np.float32)
for (bound, kl), estimators in VALID.items():
    objective(params, arch, x, eps, bound=bound, kl=kl, estimator=estimators[-1], backend="numba")
bad = []
for kernel in (kernels.head_kernels(REGISTRY["gaussian-learned"]).head, kernels.bias_activation, kernels.activation_backward, kernels.latent_backward, kernels.sample):
    for sig in kernel.signatures:
        ir = kernel.inspect_llvm(sig)
        assert re.search(r"= f(add|sub|mul|div) (\\w+ )*float", ir), "no float32 arithmetic found: the check would be vacuous"
        bad += [kernel.__name__] * len(re.findall(r"= f(add|sub|mul|div) (\\w+ )*double", ir))
print(bad)
"""


@pytest.mark.slow
def test_float32_kernels_do_no_float64_arithmetic(tmp_path):
    """The compiled float32 kernels contain no double-precision arithmetic: every constant is float32.

    In a fresh process with an empty numba cache, since numba cannot show the IR of cached code.
    """
    pytest.importorskip("numba")
    from pathlib import Path
    import os

    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", _FLOAT32_IR_CHECK, str(Path(__file__).parent)], env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]", f"float64 arithmetic in float32 kernels: {out.stdout}"


def test_training_epoch_on_digits_equals_numpy(tmp_path):
    """One epoch of npvae.training.loop.train (objective + Adam + validation) gives the same parameters on every backend."""
    from npvae.training.config import TrainConfig
    from npvae.store.data import load
    from npvae.training.loop import train

    for dtype in ("float64", "float32"):
        data = load("digits", dtype=dtype)
        for bound in ("elbo", "iwae"):
            kw = dict(bound="iwae", k=3, kl="mc", estimator="dreg") if bound == "iwae" else dict(kl_weight=0.5, free_bits=0.01)
            # Adam's eps 1e-4 (Burda et al.'s), not 1e-8: Adam's step g / (|g| + eps) is most sensitive to g where
            # |g| ~ eps, and with eps 1e-8 the weights of pixels that are on in 2 of the 1297 training digits sit there:
            # one float32 rounding of such a gradient moved a weight by 537 ulp (1.1e-5 relative after one epoch,
            # against 3.7e-7 with eps 1e-4). Each step's objective and update are compared at 1e-5 elsewhere.
            kw["adam_eps"] = 1e-4
            runs = {b: train(TrainConfig(epochs=1, dtype=dtype, backend=b, **kw), data, tmp_path / f"{dtype}-{bound}-{b}",
                             progress=False, log=lambda s: None) for b in RUN}
            for b, state in runs.items():
                for name, got, want in zip(param_names(load_arch(tmp_path / f"{dtype}-{bound}-{b}")), state.params, runs["numpy"].params):
                    _assert_close(got, want, np.dtype(dtype), f"{b} {dtype} {bound} {name}")
                assert state.history["valid_bound"][0] == pytest.approx(runs["numpy"].history["valid_bound"][0], rel=RTOL[np.dtype(dtype)])


def load_arch(run_dir):
    from npvae.training.loop import load_state

    return load_state(run_dir / "last.safetensors")[1]


def test_resolve():
    assert resolve("numpy") == "numpy"
    assert resolve("auto") in ("numba", "numpy")
    assert resolve("auto") == ("numba" if numba_available() else "numpy")
    with pytest.raises(ValueError, match="CUDA backend is not available"):
        resolve("cuda")
    with pytest.raises(ValueError, match="backend must be one of"):
        resolve("gpu")
    arch, params, x, eps = random_problem(np.random.default_rng(0))
    with pytest.raises(ValueError, match="CUDA backend is not available"):
        objective(params, arch, x, eps, backend="cuda")
    from npvae.training.config import TrainConfig

    with pytest.raises(ValueError, match="backend"):
        TrainConfig(backend="fortran")
    assert set(BACKENDS) == {"numpy", "numba", "cuda", "auto"}


def test_importing_npvae_imports_no_numba():
    code = "import sys, npvae, npvae.training.loop, npvae.cli, npvae.training.config, npvae.evaluation.evaluate; print('numba' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_uncacheable_function_compiles_without_cache():
    """Where numba can find no writable cache directory (here: source with no file), jit falls back to no cache."""
    pytest.importorskip("numba")
    from npvae.backends._jit import jit

    namespace = {}
    exec(compile("def f(x):\n    return 2.0 * x\n", "<no file>", "exec"), namespace)
    assert jit(namespace["f"])(1.5) == 3.0


def test_cli_backend_option(tmp_path, capsys):
    from npvae import cli

    b = "numba" if numba_available() else "numpy"
    assert cli.main(["train", "--epochs", "1", "--backend", b, "--out", str(tmp_path / "r"), "--quiet", "--no-pictures"]) == 0
    assert cli.main(["train", "--epochs", "1", "--backend", "cuda", "--out", str(tmp_path / "c"), "--quiet", "--no-pictures"]) == 2
    assert "CUDA backend is not available" in capsys.readouterr().err


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_cpu_elementary_functions_within_ulps(dtype):
    """cpu_math's vectorisable exp, expm1, log1p (and scalar.tanh built on expm1) against long double, with NaN and -inf."""
    pytest.importorskip("numba")
    from npvae.backends import cpu_math  # noqa: F401  (registers the CPU implementations)
    from npvae.backends._jit import jit
    from npvae.backends.kernels import tanh  # scalar.tanh, compiled
    from npvae.maths.scalar import exp_neg, expm1_neg, log1p_unit

    @jit
    def apply(which, a, out):
        for i in range(a.shape[0]):
            v = a[i]
            out[i] = exp_neg(v) if which == 0 else expm1_neg(v) if which == 1 else log1p_unit(v) if which == 2 else tanh(v)

    rng = np.random.default_rng(0)
    tiny = np.finfo(dtype).tiny
    u = np.concatenate([-np.abs(rng.standard_normal(20000)) * 10.0 ** rng.uniform(-8, 2.9, 20000), [0.0, -1e-30, -700.0, -1e4]])
    e = np.concatenate([10.0 ** rng.uniform(-30, 0, 20000), [0.0, 1.0, np.sqrt(2) - 1, 1e-40]])
    a = rng.standard_normal(20000) * 10.0 ** rng.uniform(-8, 1.5, 20000)
    for which, xs, ref in ((0, u, np.exp), (1, u, np.expm1), (2, e, np.log1p), (3, a, np.tanh)):
        x = xs.astype(dtype)
        got = np.empty_like(x)
        apply(which, x, got)
        want = ref(x.astype(np.longdouble))
        normal = np.abs(want) >= tiny
        ulps = np.abs(got[normal] - want[normal]) / np.spacing(np.abs(want[normal]).astype(dtype))
        assert ulps.max() <= 3.0, f"function {which}: {ulps.max():.2f} ulp"
        assert np.all(np.abs(got[~normal] - want[~normal]) <= np.finfo(dtype).smallest_subnormal)
        special = np.array([np.nan, -np.inf], dtype=dtype) if which != 2 else np.array([np.nan], dtype=dtype)
        out = np.empty_like(special)
        apply(which, special, out)
        assert np.isnan(out[0])
        if which != 2:
            assert out[1] == {0: 0.0, 1: -1.0, 3: -1.0}[which]


@pytest.mark.parametrize("backend", [b for b in RUN if b != "numpy"] or ["numpy"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("regime", EXTREMES)
def test_equals_the_numpy_specification_at_the_extremes(backend, dtype, regime):
    """The same comparison as above, every (bound, kl, estimator), where the numbers are extreme; and log_px."""
    for i, case in enumerate(CASES):
        arch, params, x, eps = extreme_problem(regime, dtype, i)
        a = log_weights(params, arch, x, eps)
        if regime == "log-weights~-1000":
            assert -1500 < a.mean() < -700, a.mean()
        elif regime == "log-weights~-100":
            assert -150 < a.mean() < -70, a.mean()
        options = _options(params, arch, x, case)
        v_ref, g_ref = objective(params, arch, x, eps, **options)
        assert np.all(np.isfinite(v_ref)) and all(np.all(np.isfinite(g)) for g in flatten(g_ref))
        # Error model: a log-weight of size |a| carries an absolute rounding error of ~eps |a| in either backend (sums
        # of D terms in another order), and IWAE's weights exp(a_k - max a) inherit it as a relative error. Measured
        # against float64, numpy and numba are both 1e-5..7e-5 off in float32 at |a| ~ 1000, i.e. up to 0.6 eps |a|;
        # two such computations differ by at most ~1.2 eps |a|. In float64 the bound stays under RTOL.
        rtol = max(RTOL[np.dtype(dtype)], 2 * float(np.finfo(dtype).eps) * float(np.max(np.abs(a))))
        v, g = objective(params, arch, x, eps, backend=backend, **options)
        _assert_within(v, v_ref, dtype, rtol, f"{regime} value {case}")
        for name, got, want in zip(param_names(arch), flatten(g), flatten(g_ref)):
            _assert_within(got, want, dtype, rtol, f"{regime} d/d {name} {case}")
    _assert_within(log_weights(params, arch, x, eps, backend=backend), a, dtype, rtol, f"{regime} log_weights")
    _assert_within(log_px(params, arch, x, 300, np.random.default_rng(0), backend=backend),
                   log_px(params, arch, x, 300, np.random.default_rng(0)), dtype, rtol, f"{regime} log_px")


def _assert_within(got, want, dtype, rtol, what):
    assert got.dtype == want.dtype == dtype, f"{what}: dtype {got.dtype}, want {want.dtype}"
    assert rel_err(got, want) <= rtol, f"{what}: relative error {rel_err(got, want):.2e} > {rtol:.1e}"
