"""npvae.head.dirgrad.check_flat_gradient: correct VAE gradients pass for every seed, planted bugs fail and are named.

The oracle for "correct" is npvae.objective's hand-written backward pass (itself checked in test_objectives);
the loss is the batch mean of -bound over a flat theta, as a user with their own backward pass would hand it over.
"""

from __future__ import annotations

import numpy as np
import pytest

import npvae
from npvae import Arch, Likelihood
from npvae.checks.gradcheck import kink_preactivations
from npvae.head.dirgrad import ALL, check_flat_gradient

from fake_tensor import FakeTensor


def vae_problem(seed, activation="tanh", hidden=(5, 5), D=6, Z=3, N=4, K=2):
    """(loss, grad, theta, blocks, kinks, N) for a small Bernoulli VAE with nonzero biases, its noise fixed."""
    rng = np.random.default_rng(seed)
    arch = Arch(D, hidden, Z, activation, Likelihood("bernoulli"))
    arrays = [a + 0.1 * rng.standard_normal(a.shape) if a.ndim == 1 else a for a in npvae.flatten(npvae.init_params(arch, rng))]
    x = (rng.random((N, D)) < 0.5).astype(np.float64)
    eps = rng.standard_normal((K, N, Z))
    sizes = [a.size for a in arrays]
    ends = np.cumsum(sizes)
    blocks = {name: slice(e - s, e) for name, s, e in zip(npvae.param_names(arch), sizes, ends)}

    def params(theta):
        return npvae.unflatten(arch, [theta[blocks[n]].reshape(a.shape) for n, a in zip(blocks, arrays)])

    def loss(theta):
        return -float(np.mean(npvae.bound_value(params(theta), arch, x, eps)))

    def grad(theta):
        _, g = npvae.objective(params(theta), arch, x, eps)
        return -np.concatenate([a.ravel() for a in npvae.flatten(g)])

    def kinks(theta):
        p = params(theta)
        return kink_preactivations(p, p, arch, x, eps)

    return loss, grad, np.concatenate([a.ravel() for a in arrays]), blocks, kinks, N


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_correct_gradient_is_ok_for_every_seed(activation):
    for seed in range(30):
        loss, grad, theta, blocks, _, _ = vae_problem(seed, activation, hidden=(4,))
        report = check_flat_gradient(loss, grad, theta, blocks=blocks, rng=np.random.default_rng(seed), n_directions=2)
        assert report.all_ok, report.summary()  # a ReLU network at a point off its kinks is never inconclusive either
        assert max(r.worst for r in report.rows) < 0.1, report.summary()


def test_relu_with_kinks_callback_is_ok():
    for seed in range(5):
        loss, grad, theta, blocks, kinks, _ = vae_problem(seed, "relu")
        report = check_flat_gradient(loss, grad, theta, blocks=blocks, rng=np.random.default_rng(seed), n_directions=2, kinks=kinks)
        assert report.passed and report.all_ok, report.summary()


def test_grad_none_with_a_tuple_and_torch_like_tensors():
    loss, grad, theta, blocks, _, _ = vae_problem(0)
    report = check_flat_gradient(lambda t: (FakeTensor(loss(t)), FakeTensor(grad(t))), None, FakeTensor(theta), blocks=blocks, rng=np.random.default_rng(0))
    assert report.all_ok, report.summary()


def test_a_factor_of_1_plus_1e_4_fails_every_block():
    loss, grad, theta, blocks, _, _ = vae_problem(1)
    report = check_flat_gradient(loss, lambda t: grad(t) * (1 + 1e-4), theta, blocks=blocks, rng=np.random.default_rng(1))
    assert not report.passed
    assert all(r.status == "FAIL" for r in report.rows), report.summary()


def planted(grad, blocks, bug, N):
    """grad with one bug planted."""
    def wrong(theta):
        g = grad(theta).copy()
        if bug == "scale2":
            g[blocks["decoder.1.W"]] *= 2.0
        elif bug == "sign":
            g[blocks["encoder.0.W"]] *= -1.0
        elif bug == "transpose":
            g[blocks["encoder.1.W"]] = g[blocks["encoder.1.W"]].reshape(5, 5).T.ravel()
        elif bug == "missing":
            g[blocks["decoder.0.b"]] = 0.0
        elif bug == "sum":
            g *= N
        return g
    return wrong


@pytest.mark.parametrize("bug, bad, words", [
    ("scale2", ["decoder.1.W"], ["decoder.1.W: your gradient is 2x"]),
    ("sign", ["encoder.0.W"], ["encoder.0.W: -1x: the sign is flipped"]),
    ("transpose", ["encoder.1.W"], ["encoder.1.W: not a constant factor", "transposed"]),
    ("missing", ["decoder.0.b"], ["decoder.0.b: 0x: the gradient is missing"]),
    ("sum", None, ["every disagreeing block is off by the same 4x", "sum instead of a mean"]),
])
def test_planted_bugs_fail_and_are_named(bug, bad, words):
    loss, grad, theta, blocks, _, N = vae_problem(2)
    report = check_flat_gradient(loss, planted(grad, blocks, bug, N), theta, blocks=blocks, rng=np.random.default_rng(2))
    text = report.summary()
    assert not report.passed
    failed = {r.name for r in report.rows if r.status == "FAIL"}
    assert failed == set(blocks if bad is None else bad) | {ALL}, text
    assert all(r.status == "ok" for r in report.rows if r.name not in failed), text
    for w in words:
        assert w in text, text


def test_a_kink_at_the_point_is_inconclusive_not_fail():
    def loss(t):
        return float(abs(t[0]) + np.sum(np.sin(t[1:])))

    def grad(t):
        return np.concatenate([[1.0], np.cos(t[1:])])  # one of the one-sided derivatives of |t0| at 0

    theta = np.array([0.0, 0.4, -1.3])
    report = check_flat_gradient(loss, grad, theta, blocks={"abs": [0], "smooth": slice(1, 3)}, rng=np.random.default_rng(0))
    status = {r.name: r.status for r in report.rows}
    assert status == {"abs": "inconclusive", "smooth": "ok", ALL: "inconclusive"}, report.summary()
    assert report.passed and not report.all_ok
    assert "abs: inconclusive" in report.summary()


@pytest.mark.parametrize("jump", [False, True])
def test_a_kink_anywhere_near_the_point_never_fails(jump):
    theta, w = np.array([0.3, -0.7, 1.1]), np.array([0.5, -1.0, 2.0])
    rng, seen = np.random.default_rng(0), set()
    for size in (1.0, 1e-3, 1e-7):
        for c in np.concatenate([-np.logspace(-11, -2, 40), np.logspace(-11, -2, 40)]):
            def loss(t, c=c, size=size):
                s = w @ (t - theta) - c
                return float(np.sum(np.sin(t)) + size * ((s > 0) if jump else max(s, 0.0)))

            def grad(t, c=c, size=size):
                return np.cos(t) + (0.0 if jump or w @ (t - theta) <= c else size * w)

            row = check_flat_gradient(loss, grad, theta, rng=rng, n_directions=2).rows[0]
            assert row.status != "FAIL", (size, c, row)
            seen.add(row.status)
    assert seen == {"ok", "inconclusive"}  # kinks within the smallest stencil are seen; those farther are stepped around


def test_kinks_callback_at_zero_makes_its_block_inconclusive():
    theta = np.array([0.0, 0.4, -1.3])
    report = check_flat_gradient(lambda t: float(np.sum(t**2)), lambda t: 2 * t, theta, blocks={"a": [0], "b": [1, 2]},
                                 rng=np.random.default_rng(0), kinks=lambda t: t[:1])  # a pre-activation exactly 0
    assert [r.status for r in report.rows] == ["inconclusive", "ok", "inconclusive"], report.summary()


@pytest.mark.parametrize("k", [1.0, 1e2, 1e4])
def test_steep_smooth_functions_are_ok(k):
    theta = np.array([0.3, 0.1, -0.4])
    report = check_flat_gradient(lambda t: float(np.sum(np.sin(k * t))), lambda t: k * np.cos(k * t), theta, rng=np.random.default_rng(0))
    assert report.all_ok, report.summary()


def _quad(t):
    return float(t @ t)


def _grad(t):
    return 2 * t


GOOD = np.array([0.5, -1.0, 2.0])
BAD_INPUTS = {
    "theta 2-D": dict(theta=GOOD.reshape(1, 3)),
    "theta integer": dict(theta=np.array([1, 2, 3])),
    "theta float32": dict(theta=GOOD.astype(np.float32)),
    "theta nan": dict(theta=np.array([0.5, np.nan, 2.0])),
    "grad shape": dict(grad=lambda t: np.zeros(2)),
    "grad float32": dict(grad=lambda t: (2 * t).astype(np.float32)),
    "loss array": dict(loss=lambda t: 2 * t),
    "loss nan": dict(loss=lambda t: float("nan")),
    "loss float32": dict(loss=lambda t: np.float32(_quad(t))),
    "loss tuple with grad": dict(loss=lambda t: (_quad(t), _grad(t))),
    "grad None without tuple": dict(grad=None),
    "blocks overlap": dict(blocks={"a": slice(0, 2), "b": [1]}),
    "blocks out of range": dict(blocks={"a": [0, 3]}),
    "blocks slice out of range": dict(blocks={"a": slice(1, 5)}),
    "blocks empty": dict(blocks={"a": slice(2, 2)}),
    "n_directions 0": dict(n_directions=0),
    "rng not a Generator": dict(rng=np.random.RandomState(0)),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_inputs_give_one_line_errors(case):
    kw = dict(loss=_quad, grad=_grad, theta=GOOD, rng=np.random.default_rng(0)) | BAD_INPUTS[case]
    with pytest.raises(ValueError) as e:
        check_flat_gradient(kw.pop("loss"), kw.pop("grad"), kw.pop("theta"), **kw)
    assert "\n" not in str(e.value)


def test_a_gradient_for_an_unused_parameter_and_a_part_outside_every_block_are_named():
    theta = np.array([0.5, -1.0, 2.0, 0.3])

    def loss(t):
        return float(np.sum(np.sin(t[:2])))  # t[2] and t[3] are unused

    report = check_flat_gradient(loss, lambda t: np.concatenate([np.cos(t[:2]), [1.0, 1.0]]), theta,
                                 blocks={"used": [0, 1], "unused": [2]}, rng=np.random.default_rng(0))
    text = report.summary()
    assert [r.status for r in report.rows] == ["ok", "FAIL", "FAIL"], text
    assert "unused: the loss does not change along this block" in text and f"{ALL}: disagrees through the blocks above" in text
    report = check_flat_gradient(loss, lambda t: np.concatenate([np.cos(t[:2]), [0.0, 1.0]]), theta,
                                 blocks={"used": [0, 1], "unused": [2]}, rng=np.random.default_rng(0))
    assert [r.status for r in report.rows] == ["ok", "ok", "FAIL"] and f"{ALL}: outside every block" in report.summary()
