"""Dense layers, activations and the MLP: backward passes against element-wise central differences."""

import numpy as np
import pytest

from conftest import assert_fd_close
from npvae.gradcheck import elementwise
from npvae.layers import ACTIVATIONS, Dense, activation_backward, activation_forward, dense_backward, dense_forward, dense_init
from npvae.mlp import mlp_backward, mlp_forward, mlp_init


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_backward(rng, name):
    a = rng.standard_normal((3, 4))
    a[np.abs(a) < 1e-3] = 0.5  # ReLU has no derivative at 0
    dy = rng.standard_normal((3, 4))
    _, cache = activation_forward(name, a)
    fd = elementwise(lambda t: float(np.sum(dy * activation_forward(name, t[0])[0])), [a], 0, 1e-6)
    np.testing.assert_allclose(activation_backward(name, dy, cache), fd, rtol=1e-7, atol=1e-10)


def test_dense_backward(rng):
    p = Dense(rng.standard_normal((3, 2)), rng.standard_normal(2))
    x, dy = rng.standard_normal((5, 3)), rng.standard_normal((5, 2))
    y, cache = dense_forward(p, x)
    np.testing.assert_allclose(y, x @ p.W + p.b)
    grads, dx = dense_backward(dy, cache, p)
    f = lambda t: float(np.sum(dy * dense_forward(Dense(t[1], t[2]), t[0])[0]))
    arrays = [x, p.W, p.b]
    for i, analytic in enumerate((dx, grads.W, grads.b)):
        assert_fd_close(analytic, elementwise(f, arrays, i, 1e-6), f(arrays))


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_mlp_backward(rng, activation):
    layers = mlp_init(rng, (4, 5, 3, 2), activation, np.float64)
    x, dout = rng.standard_normal((6, 4)), rng.standard_normal((6, 2))
    _, cache = mlp_forward(layers, x, activation)
    grads, dx = mlp_backward(dout, cache)
    flat = [x] + [a for l in layers for a in l]

    def f(t):
        ls = tuple(Dense(t[1 + 2 * i], t[2 + 2 * i]) for i in range(len(layers)))
        return float(np.sum(dout * mlp_forward(ls, t[0], activation)[0]))

    analytic = [dx] + [a for gl in grads for a in gl]
    for i, an in enumerate(analytic):
        assert_fd_close(an, elementwise(f, flat, i, 1e-6), f(flat))
    assert mlp_backward(dout, cache, need_dx=False)[1] is None


def test_init_scales(rng):
    """He-normal: Var W = 2 / n_in; Glorot-uniform: Var W = 2 / (n_in + n_out); biases zero; dtype kept."""
    he = dense_init(rng, 400, 300, "relu", np.float32)
    gl = dense_init(rng, 400, 300, "tanh", np.float64)
    assert he.W.dtype == np.float32 and gl.W.dtype == np.float64
    # 120k draws: the sample variance is within ~1.3% (3 SE of sqrt(2/n)) of the truth.
    assert he.W.var() == pytest.approx(2 / 400, rel=0.015)
    assert gl.W.var() == pytest.approx(2 / 700, rel=0.015)
    assert not he.b.any() and not gl.b.any()
