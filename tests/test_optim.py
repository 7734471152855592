"""Optimisers against closed forms of their first steps (torch.optim semantics) and a quadratic they must solve."""

import numpy as np
import pytest

from npvae import adam_init, adam_update, sgd_init, sgd_update


def test_adam_first_steps_move_by_lr_times_sign():
    """With a constant gradient g, bias correction makes m_hat = g and v_hat = g^2 at every step: p moves lr * g / (|g| + eps)."""
    p = [np.array([1.0, -2.0, 3.0])]
    g = [np.array([0.5, -4.0, 1e-3])]
    state = adam_init(p)
    lr, eps = 0.01, 1e-8
    for step in range(1, 4):
        p_new, state = adam_update(p, g, state, lr=lr, eps=eps)
        np.testing.assert_allclose(p_new[0], p[0] - lr * g[0] / (np.abs(g[0]) + eps), rtol=1e-12)
        p = p_new
    assert state.step == 3


def test_adam_matches_the_formula_by_hand():
    """Two steps with different gradients, written out from Kingma & Ba 2015, Algorithm 1 (torch's eps placement)."""
    b1, b2, lr, eps = 0.9, 0.999, 0.1, 1e-8
    g1, g2 = 0.3, -0.7
    m1, v1 = (1 - b1) * g1, (1 - b2) * g1**2
    m2, v2 = b1 * m1 + (1 - b1) * g2, b2 * v1 + (1 - b2) * g2**2
    p1 = 1.0 - lr / (1 - b1) * m1 / (np.sqrt(v1) / np.sqrt(1 - b2) + eps)
    p2 = p1 - lr / (1 - b1**2) * m2 / (np.sqrt(v2) / np.sqrt(1 - b2**2) + eps)
    p, s = [np.array([1.0])], adam_init([np.array([1.0])])
    p, s = adam_update(p, [np.array([g1])], s, lr=lr)
    p, s = adam_update(p, [np.array([g2])], s, lr=lr)
    assert p[0][0] == pytest.approx(p2, rel=1e-14)


def test_sgd_momentum_closed_form():
    """Constant g: buf_n = g (1 - mu^n) / (1 - mu), so p_n = p_0 - lr g sum_i (1 - mu^i) / (1 - mu)."""
    mu, lr, g = 0.9, 0.1, np.array([2.0])
    p, s = [np.array([0.0])], sgd_init([np.array([0.0])])
    for _ in range(5):
        p, s = sgd_update(p, [g], s, lr=lr, momentum=mu)
    expected = -lr * g * sum((1 - mu**i) / (1 - mu) for i in range(1, 6))
    np.testing.assert_allclose(p[0], expected, rtol=1e-14)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adam_solves_a_quadratic_and_keeps_dtype(dtype):
    A = np.diag([1.0, 10.0, 0.1]).astype(dtype)
    target = np.array([1.0, -2.0, 0.5], dtype=dtype)
    p, s = [np.zeros(3, dtype=dtype)], adam_init([np.zeros(3, dtype=dtype)])
    for i in range(3000):
        p, s = adam_update(p, [A @ (p[0] - target)], s, lr=0.05 * 0.999**i)
    assert p[0].dtype == dtype and s.m[0].dtype == dtype
    np.testing.assert_allclose(p[0], target, atol=1e-3)


@pytest.mark.parametrize("update, init", [(adam_update, adam_init), (lambda p, g, s, lr: sgd_update(p, g, s, lr, 0.9), sgd_init)])
def test_mismatched_gradient_is_refused_not_upcast(update, init):
    params = [np.zeros((2, 3), np.float32)]
    with pytest.raises(ValueError, match="grads\\[0\\] must match parameter 0"):
        update(params, [np.zeros((2, 3), np.float64)], init(params), 0.1)  # would silently upcast to float64
    with pytest.raises(ValueError, match="grads\\[0\\] must match parameter 0"):
        update(params, [np.zeros((3, 2), np.float32)], init(params), 0.1)
    with pytest.raises(ValueError, match="grads has 2 arrays"):
        update(params, params * 2, init(params), 0.1)
