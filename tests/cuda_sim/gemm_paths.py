"""Both matrix-product paths of backend="cuda": the tiled Numba kernel always, CuPy's cuBLAS where CuPy runs (a real GPU).

Imported by each test module here (`from gemm_paths import gemm_path, pytest_generate_tests`): the hook and the
autouse fixture then apply to that module's tests.
"""

import pytest


def _cupy_usable() -> bool:
    """CuPy imported by npvae.backends.cuda_gpu and a real GPU (the simulator has no cuBLAS)."""
    import numba

    from npvae.backends import cuda_available

    if numba.config.ENABLE_CUDASIM or not cuda_available():
        return False
    from npvae.backends import cuda_gpu

    return cuda_gpu._cp is not None


def pytest_generate_tests(metafunc):
    if "gemm_path" in metafunc.fixturenames:
        metafunc.parametrize("gemm_path", ["tiled"] + (["cupy"] if _cupy_usable() else []), indirect=True)


@pytest.fixture(autouse=True)
def gemm_path(request, monkeypatch):
    """Every test here runs with the tiled GEMM kernel, and again with cuBLAS through CuPy where that can run."""
    path = getattr(request, "param", "tiled")
    if path == "tiled":
        from npvae.backends import cuda_available

        if cuda_available():
            from npvae.backends import cuda_gpu

            monkeypatch.setattr(cuda_gpu, "_cp", None)
    return path
