"""Shared test helpers: dtype-keyed tolerances and small random problems.

Tolerances are keyed by dtype (jax's public_test_util habit) and are far tighter than any factor of
two: a gradient off by 1 + 1e-4 fails every gradient test here.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

# rtol for float64 finite-difference checks (central differences, fixed step 1e-6) and for
# float32-vs-float64 agreement of the same computation.
FD_RTOL = {np.float64: 1e-6}
AGREE_RTOL = {np.float32: 2e-5, np.float64: 1e-12}  # float32: worst seen ~5e-7; a 1 + 1e-4 error fails

REPO = Path(__file__).resolve().parents[1]
# The one place the tests look for local copies of public data (binarized_mnist.npz): $NPVAE_DATA_DIR, else the
# data folder beside the checkout that CI provides. Tests that need it skip with their reason without it.
SHARED_DATA = Path(os.environ["NPVAE_DATA_DIR"]) if os.environ.get("NPVAE_DATA_DIR") else REPO.parent / "shared" / "data"


def random_problem(rng, likelihood="bernoulli", activation="tanh", D=6, hidden=(5,), Z=3, N=4, K=3, dtype=np.float64):
    """(arch, params, x, eps) for a small VAE with data suited to its likelihood."""
    from npvae import Arch, Likelihood, init_params

    arch = Arch(D, hidden, Z, activation, Likelihood(likelihood, sigma2=0.7, min_log_var=-3.0))
    params = init_params(arch, rng, dtype)
    if likelihood == "bernoulli":
        x = (rng.random((N, D)) < 0.5).astype(dtype)
    else:
        x = rng.standard_normal((N, D)).astype(dtype)
    eps = rng.standard_normal((K, N, Z)).astype(dtype)
    return arch, params, x, eps


# Regimes of the cross-backend tests at the extremes: name -> (D, K).
EXTREMES = {"logits+-100": (8, 4), "log-weights~-100": (40, 4), "log-weights~-1000": (500, 4), "K=512": (8, 512)}


def extreme_problem(regime: str, dtype, seed: int):
    """Where trained models live: saturated float32 logits, log-weights of -100 and -1000, many importance samples."""
    rng = np.random.default_rng(seed)
    D, K = EXTREMES[regime]
    arch, params, x, eps = random_problem(rng, "bernoulli", "tanh", D=D, hidden=(6, 5), N=5, K=K, dtype=dtype)
    last = params.decoder[-1]
    if regime == "logits+-100":  # logits of +-(90..110), on the right side for half the pixels and the wrong side for the rest
        b = (rng.choice([-1.0, 1.0], D) * rng.uniform(90, 110, D)).astype(dtype)
        last = last._replace(W=last.W * dtype(3.0), b=b)
    elif regime.startswith("log-weights"):  # confident and often wrong: about -2.5 nats a pixel
        last = last._replace(W=last.W * dtype(4.0), b=(rng.choice([-1.0, 1.0], D) * 4.0).astype(dtype))
    params = params._replace(decoder=(*params.decoder[:-1], last))
    return arch, params, x, eps


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def assert_fd_close(analytic, fd, f_scale: float, rtol: float = FD_RTOL[np.float64]):
    """Element-wise analytic vs central-difference gradient.

    A central difference with step h = 1e-6 carries an absolute rounding error of about
    1e-16 * |f| / h = 1e-10 |f|; the absolute term is 100x that, so only elements that rounding
    alone could blur get it, and every element larger than ~1e-2 |f| is held to rtol.
    """
    np.testing.assert_allclose(analytic, fd, rtol=rtol, atol=1e-8 * max(1.0, abs(f_scale)))


@pytest.fixture(autouse=True, scope="session")
def _one_blas_thread():
    """One BLAS thread: on a shared 2-core machine OpenBLAS's thread pool makes small products ~30x slower."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


@pytest.fixture(autouse=True, scope="session")
def _short_switch_interval_on_the_simulator():
    """Under numba's CUDA simulator (tests/cuda_sim) every GPU thread is a Python thread that waits for the GIL:
    a 0.1 ms switch interval instead of 5 ms makes a kernel launch ~10x faster there."""
    import os
    import sys

    if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
        yield
        return
    from sim_shared_lock import install

    install()  # the simulator's shared arrays under a lock: without it, a short switch interval makes its race likely
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)
    yield
    sys.setswitchinterval(before)


# The quick suite and the full one. `python -m pytest -q` (the README's command) leaves out the tests marked slow (the
# full explain runs the docs quote, Dask clusters, the CUDA simulator's larger cases, the 22 extra seeds of the
# checker); `--full` (or any -m, e.g. -m "slow or not slow") runs them too, as .ci/run does.
def pytest_addoption(parser):
    parser.addoption("--full", action="store_true", default=False,
                     help="the full suite: also the tests marked slow (the same as -m 'slow or not slow')")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--full") or config.option.markexpr:
        return
    slow = [item for item in items if item.get_closest_marker("slow")]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if not item.get_closest_marker("slow")]
        config._npvae_slow_left_out = len(slow)


def pytest_terminal_summary(terminalreporter, config):
    n = getattr(config, "_npvae_slow_left_out", 0)
    if n:
        terminalreporter.write_line(f"quick suite: {n} slow tests left out; `python -m pytest -q --full` runs them too")
