"""Importance-sampled log p(x): exact at the true posterior, a lower bound that tightens with k, chunking-invariant."""

import numpy as np
import pytest

from npvae import log_px
from npvae.oracle.linear_vae import best_linear_vae, linear_arch, linear_vae_params, orthogonal_model
from npvae import LinearGaussian


def test_exact_at_the_true_posterior():
    rng = np.random.default_rng(0)
    model = orthogonal_model(rng, 6, 3, 0.5)
    x, _ = model.sample(5, rng)
    arch, params = best_linear_vae(model)
    np.testing.assert_allclose(log_px(params, arch, x, 37, rng), model.log_marginal(x), rtol=1e-12)


def test_tightens_towards_log_px_with_k():
    """With an imperfect q, k = 5000 is within a few hundredths of a nat of the exact log p(x), and below it."""
    rng = np.random.default_rng(1)
    model = LinearGaussian(rng.standard_normal((5, 2)), rng.standard_normal(5), 0.6)
    x, _ = model.sample(4, rng)
    arch = linear_arch(5, 2, 0.6)
    params = linear_vae_params(model, rng.standard_normal((2, 5)) * 0.2, np.array([-0.5, -0.3]))
    exact = model.log_marginal(x)
    est_small = np.mean([log_px(params, arch, x, 5, rng) for _ in range(200)], axis=0)
    est_big = log_px(params, arch, x, 5000, rng)
    assert np.all(est_small < exact)
    assert np.all(np.abs(est_big - exact) < np.abs(est_small - exact))
    assert np.all(np.abs(est_big - exact) < 0.05)


def test_same_answer_whatever_the_chunk_size():
    rng = np.random.default_rng(2)
    model = LinearGaussian(rng.standard_normal((5, 2)), rng.standard_normal(5), 0.6)
    x, _ = model.sample(3, rng)
    arch = linear_arch(5, 2, 0.6)
    params = linear_vae_params(model, rng.standard_normal((2, 5)) * 0.2, np.array([-0.5, -0.3]))
    ref = log_px(params, arch, x, 1000, np.random.default_rng(9), max_elements=1 << 30)  # one chunk
    for max_elements in (1, 7 * 15, 4000):
        got = log_px(params, arch, x, 1000, np.random.default_rng(9), max_elements=max_elements)
        np.testing.assert_allclose(got, ref, rtol=1e-13)


def test_float32_and_bad_input():
    rng = np.random.default_rng(3)
    model = orthogonal_model(rng, 4, 2, 0.5, dtype=np.float32)
    x, _ = model.sample(3, rng)
    arch, params = best_linear_vae(model)
    assert log_px(params, arch, x, 10, rng).dtype == np.float32
    with pytest.raises(ValueError, match="k must be"):
        log_px(params, arch, x, 0, rng)
    with pytest.raises(ValueError, match="Generator"):
        log_px(params, arch, x, 10, 42)
    with pytest.raises(ValueError, match="convert explicitly"):
        log_px(params, arch, x.astype(np.float64), 10, rng)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_a_point_whose_weights_all_underflow_is_minus_inf_not_nan(backend):
    """float32 Gaussian decoder, x = 1e20: (x - m)^2 overflows, every log-weight is -inf in every chunk; the other point is unaffected."""
    rng = np.random.default_rng(4)
    model = orthogonal_model(rng, 4, 2, 0.5, dtype=np.float32)
    x, _ = model.sample(2, rng)
    x[0] = 1e20
    arch, params = best_linear_vae(model)
    with np.errstate(over="ignore", divide="ignore"):  # the overflow is the point of the test
        got = log_px(params, arch, x, 6, np.random.default_rng(5), max_elements=2 * 2 * 4, backend=backend)  # 3 chunks of 2
    assert got[0] == -np.inf
    np.testing.assert_allclose(got[1], model.log_marginal(x[1:])[0], rtol=1e-5)
