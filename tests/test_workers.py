"""--threads N for evaluation: N workers compute the chunks of log p(x), folded in order: the serial result bit for bit."""

import threading

import numpy as np
import pytest

from npvae import Likelihood, log_px, models
import npvae.backends.numba_cpu as nc
from npvae.backends import workers
from npvae.store.data import load


@pytest.fixture
def threads():
    yield workers.set_threads
    workers.set_threads(1).restore_original_limits()


def test_log_px_on_two_workers_equals_one_bit_for_bit(threads, monkeypatch):
    x = load("digits", dtype=np.float64).test[:50]
    arch = models.parse("64-32-3", activation="tanh", likelihood=Likelihood("bernoulli"))
    params = models.init_params(arch, np.random.default_rng(0), np.float64)
    ref = log_px(params, arch, x, 1000, np.random.default_rng(5), backend="numba")  # 1000 samples: 7 chunks of 163
    seen = set()
    real = nc.ordered_map

    def spy(fn, items):  # the chunks really run outside the main thread
        return real(lambda e: (seen.add(threading.current_thread().name), fn(e))[1], items)

    threads(2)
    monkeypatch.setattr(nc, "ordered_map", spy)
    got = log_px(params, arch, x, 1000, np.random.default_rng(5), backend="numba")
    assert np.array_equal(got, ref)
    assert seen and all(name.startswith("npvae-eval") for name in seen)
    # and the NumPy specification, on the same draws, to rounding
    np.testing.assert_allclose(got, log_px(params, arch, x, 1000, np.random.default_rng(5)), rtol=1e-12)


def test_ordered_map_keeps_order_and_raises_what_a_worker_raised(threads):
    threads(2)

    def f(i):
        if i == 7:
            raise ZeroDivisionError("chunk 7")
        return i * i

    assert list(workers.ordered_map(f, range(7))) == [i * i for i in range(7)]
    with pytest.raises(ZeroDivisionError, match="chunk 7"):
        list(workers.ordered_map(f, range(20)))
    assert list(workers.ordered_map(f, iter([]))) == []


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_set_threads_refuses_what_is_not_a_positive_integer(bad):
    with pytest.raises(ValueError, match="threads must be an integer >= 1"):
        workers.set_threads(bad)
