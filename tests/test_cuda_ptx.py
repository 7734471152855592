"""The float32 CUDA kernels compute in float32: compiled to PTX here (no GPU needed), they hold no float64 instruction.

The simulator runs kernels as Python, so it cannot see type promotion (a float64 literal or math.log of an
integer turns a float32 kernel's arithmetic into double, ~64x slower on most GPUs). numba-cuda's
compile_ptx compiles a kernel for a named compute capability without a device; it needs NVRTC and NVVM
(pip install nvidia-cuda-nvrtc-cu12 nvidia-cuda-nvcc-cu12, or a CUDA toolkit), and the test skips without them.
"""

import math
import re

import pytest

cuda = pytest.importorskip("numba.cuda", reason="numba-cuda is not installed (pip install numba-cuda)")

import numba  # noqa: E402
from numba import boolean, float32, float64, int64  # noqa: E402

if numba.config.ENABLE_CUDASIM:
    pytest.skip("compiles for the real CUDA target, not the simulator", allow_module_level=True)

A2, A1 = float32[:, :], float32[:]  # any layout: the backend passes views (mu = h[:, :Z])
F, I, B = float32, int64, boolean

# kernel name -> float32 signature, in cuda_kernels' argument order
SIGNATURES = {
    "bias_activation": (A2, A1, I, A2),
    "activation_backward": (A2, A2, I),
    "column_sum": (A2, A1),
    "std_kernel": (A2, A2),
    "sample": (A2, A2, A2, A2, A2, A2, B),
    **{f"row_log_lik[{name}]": (A2, A2, A2, F, F, I, F, B, A2) for name in ("bernoulli", "gaussian", "gaussian-learned")},
    "weights": (A2, A1, I, F, F, F, F, B, A2, A1, A2, A2),
    "kl_free_bits": (A2, A2, F, A1, boolean[:, :]),
    "latent_backward": (A2, A2, A2, A2, A2, A2, A2, A2, boolean[:, :], F, F, I, I, A2),
    "lme_update": (A2, A1, A1),
    "lme_finish": (A1, A1, F, A1),
    "log_mean_exp": (A2, F, A1),
    "adam": (A1, A1, A1, A1, F, F, F, F, F, F, F, F),
    "gather_rows": (A2, int64[:], I, A2),
    "total": (A1, float64[:], I),  # writes its float32 sum into the float64 summary: one conversion, at the store
    "count_nonfinite": (A1, int64[:]),
    # the L-layer model's latent kernels (cuda_latent_kernels), in their argument order
    "latent.sample": (A2,) * 7,
    "latent.kl_rows": (A2, A2, A1),
    "latent.prior": (A2,) * 6,
    "latent.prior_backward": (A2,) * 5,
    "latent.layer_backward": (A2, A2, A2, I, A2, A2, A2, A2, A2, A2, A2, F, B, B, B, B, A2, A2),
    "latent.first_backward": (A2, A2, A2, I, A2, A2, A2, A2, A2, A2, A2, F, B, B, B, B, A2),
}
# Where float64 may appear at all: converting the result for the store into a float64 array, the store, and
# the float64 zero stored when the sum is empty.
STORE_ONLY = {"total"}
F64 = re.compile(r"^\s*([a-z][\w.]*\.f64)\b.*$", re.M)


@pytest.fixture(autouse=True)
def _no_device_needed(monkeypatch):
    """Device functions (scalar.py's, called by the kernels) compile for the current device's compute capability;
    with no device, name the one compile_ptx targets."""
    import types

    import numba.cuda.dispatcher as dispatcher

    monkeypatch.setattr(dispatcher, "get_current_device", lambda: types.SimpleNamespace(compute_capability=(8, 0)))


def _ptx(py_func, signature):
    try:
        ptx, _ = cuda.compile_ptx(py_func, signature, cc=(8, 0))
    except Exception as e:  # no NVRTC/NVVM here: nothing can be compiled
        if "nvrtc" in str(e).lower() or "nvvm" in str(e).lower() or "DynamicLibNotFound" in type(e).__name__:
            pytest.skip(f"cannot compile CUDA here ({type(e).__name__}): needs NVRTC and NVVM")
        raise
    return ptx


def _f64_instructions(ptx: str) -> list[str]:
    return [m.group(0).strip() for m in F64.finditer(ptx)]


@pytest.mark.parametrize("name", sorted(SIGNATURES))
def test_float32_kernel_has_no_float64_arithmetic(name):
    from npvae.backends import cuda_kernels as ck
    from npvae.backends import cuda_train_kernels as tk
    from npvae.likelihoods import REGISTRY

    if name.startswith("row_log_lik["):
        kernel = ck.row_log_lik(REGISTRY[name[12:-1]])
    elif name.startswith("latent."):
        from npvae.backends import cuda_latent_kernels as clk

        kernel = getattr(clk, name[len("latent."):])
    else:
        kernel = getattr(ck, name, None) or getattr(tk, name)
    found = _f64_instructions(_ptx(kernel.py_func, SIGNATURES[name]))
    if name in STORE_ONLY:
        found = [i for i in found if not i.startswith(("cvt.f64.f32", "st.global.f64", "st.f64", "mov.f64"))]
    assert not found, f"{name}: float64 instructions in the float32 kernel: {found[:5]}"


def test_tiled_gemm_float32_has_no_float64_arithmetic():
    from npvae.backends import cuda_kernels as ck

    kernel = ck._make_gemm(numba.float32, ck.TILE)
    assert not _f64_instructions(_ptx(kernel.py_func, (A2, A2, A2, B, B)))


def test_the_check_sees_a_float64_literal():
    """The oracle works: float32 kernels with a bare 0.1 (a float64 in numba), or math.log of an integer, show double arithmetic."""
    def scale(a):
        i = cuda.grid(1)
        if i < a.shape[0]:
            a[i] = a[i] * 0.1

    def minus_log_n(a):
        i = cuda.grid(1)
        if i < a.shape[0]:
            a[i] = a[i] - math.log(a.shape[0])

    assert any(i.startswith(("mul", "fma")) for i in _f64_instructions(_ptx(scale, (A1,))))
    assert _f64_instructions(_ptx(minus_log_n, (A1,)))
