"""Dense layers, activations and the MLP: backward passes against element-wise central differences."""

import numpy as np
import pytest
from scipy.special import expit

from conftest import AGREE_RTOL, FD_RTOL, assert_fd_close
from npvae.checks.gradcheck import elementwise
from npvae.nn.layers import ACTIVATIONS, Dense, activation_backward, activation_forward, dense_backward, dense_forward, dense_init
from npvae.nn.mlp import mlp_backward, mlp_forward, mlp_init


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_backward(rng, name):
    a = rng.standard_normal((3, 4))
    a[np.abs(a) < 1e-3] = 0.5  # ReLU has no derivative at 0
    dy = rng.standard_normal((3, 4))
    _, cache = activation_forward(name, a)
    fd = elementwise(lambda t: float(np.sum(dy * activation_forward(name, t[0])[0])), [a], 0, 1e-6)
    np.testing.assert_allclose(activation_backward(name, dy, cache), fd, rtol=FD_RTOL[np.float64] / 10, atol=1e-10)  # one layer: 10x tighter than a whole objective


# Independent float64 oracles for f(a) and f'(a), written from the definitions (scipy's expit for sigmoid).
ORACLE = {
    "identity": (lambda a: a, lambda a: np.ones_like(a)),
    "relu": (lambda a: np.where(a > 0, a, 0.0), lambda a: (a > 0).astype(np.float64)),
    "tanh": (np.tanh, lambda a: 1.0 / np.cosh(a) ** 2),
    "softplus": (lambda a: np.logaddexp(0.0, a), expit),
}


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_float32_preserved_and_agrees_with_float64(rng, name):
    """float32 in, float32 out for forward and backward (no silent upcast), and the float64 oracle to AGREE_RTOL."""
    a = (rng.standard_normal((5, 7)) * 4).astype(np.float32)
    a[np.abs(a) < 1e-3] = 0.5
    a[0, :3] = [-30.0, 30.0, 12.0]  # softplus/sigmoid tails
    dy = rng.standard_normal((5, 7)).astype(np.float32)
    y, cache = activation_forward(name, a)
    da = activation_backward(name, dy, cache)
    assert y.dtype == np.float32 and da.dtype == np.float32, (y.dtype, da.dtype)
    f, df = ORACLE[name]
    a64, dy64 = a.astype(np.float64), dy.astype(np.float64)
    tol = AGREE_RTOL[np.float32]
    np.testing.assert_allclose(y, f(a64), rtol=tol, atol=tol * 1e-3)
    # tanh' = 1 - y^2 from the cached output loses its relative precision where y^2 rounds to 1 (|a| > ~9 in
    # float32); its absolute error stays ~eps32 |dy|, so small derivatives get an absolute term in |dy|.
    np.testing.assert_allclose(da, dy64 * df(a64), rtol=tol, atol=tol * np.abs(dy64).max())


def test_dense_float32_preserved_and_agrees_with_float64(rng):
    p = Dense(*(rng.standard_normal(s).astype(np.float32) for s in ((4, 3), (3,))))
    x, dy = rng.standard_normal((6, 4)).astype(np.float32), rng.standard_normal((6, 3)).astype(np.float32)
    y, cache = dense_forward(p, x)
    grads, dx = dense_backward(dy, cache, p)
    assert all(t.dtype == np.float32 for t in (y, grads.W, grads.b, dx))
    W, b, x64, dy64 = (t.astype(np.float64) for t in (p.W, p.b, x, dy))
    tol = AGREE_RTOL[np.float32]
    for got, ref in ((y, x64 @ W + b), (grads.W, x64.T @ dy64), (grads.b, dy64.sum(0)), (dx, dy64 @ W.T)):
        np.testing.assert_allclose(got, ref, rtol=tol, atol=tol * np.abs(ref).max())


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
