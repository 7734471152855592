"""docs/learn/tiny_vae.py, the one-file on-ramp, held to npvae to rounding error so that it can never drift from it.

The oracle is the package: same data, same initialisation, the same per-point ELBO and every gradient
(npvae.objectives.objective, bound_value), the same Adam (npvae.nn.optim.adam_update), and a whole epoch of
`npvae train` (npvae.training.loop.train). The tiny file's own gradient is checked by a central difference, and its
`main()` must raise the ELBO.

Tolerance (`close`): both sides evaluate the same float64 expressions and differ at most in how sums are associated
(npvae reshapes the K = 1 sample axis away, weights by (1/K)/N, adds the KL's gradient in another order), so an entry
can differ by about n * 2^-53 times the size of the terms summed, n <= 128 here: ~1.4e-14 of the array's largest entry.
AGREE_RTOL[float64] = 1e-12, of each entry and of the array's largest, leaves ~100x margin; a real slip (a factor 1/2,
a sign, a dropped term) is a relative error of order one. (Today the two agree bit for bit; the margin is for a
refactoring of either side that reassociates a sum.)
"""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from conftest import AGREE_RTOL, FD_RTOL
from npvae import Arch, adam_init, adam_update, bound_value, flatten, init_params, objective, unflatten
from npvae.likelihoods import Likelihood, output_bias_from_data
from npvae.vae.model import param_shapes

TINY_PATH = Path(__file__).resolve().parents[1] / "docs" / "learn" / "tiny_vae.py"
RTOL = AGREE_RTOL[np.float64]


def _load_tiny():
    spec = importlib.util.spec_from_file_location("tiny_vae", TINY_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tiny = _load_tiny()


def close(actual, desired, what=""):
    """Equal to the module docstring's rounding model: rtol of each entry, and of the array's largest entry."""
    actual, desired = np.asarray(actual), np.asarray(desired)
    assert actual.shape == desired.shape, what
    np.testing.assert_allclose(actual, desired, rtol=RTOL, atol=RTOL * float(np.max(np.abs(desired), initial=0.0)),
                               err_msg=what)


def npvae_arch(D, H, Z):
    return Arch(D, (H,), Z, "tanh", Likelihood("bernoulli"))


def problem(seed, D, H, Z, N):
    """npvae parameters away from their initial values (every bias non-zero), binary x (N, D), eps (N, Z)."""
    rng = np.random.default_rng(seed)
    arch = npvae_arch(D, H, Z)
    arrays = [a + 0.3 * rng.standard_normal(a.shape) for a in flatten(init_params(arch, rng))]
    x = (rng.random((N, D)) < 0.4).astype(np.float64)
    return arch, unflatten(arch, arrays), x, rng.standard_normal((N, Z))


def test_the_digits_are_npvaes_digits():
    """The same 1297 training and 250 test points, in the same order, as npvae.store.data.load("digits", seed)."""
    from npvae.store.data import load

    x = tiny.load_digits()
    assert x.shape == (1797, 64) and set(np.unique(x)) == {0.0, 1.0}
    for seed in (0, 3):
        d = load("digits", seed=seed)
        x_train, x_test = tiny.split(x, np.random.default_rng(seed))
        np.testing.assert_array_equal(x_train, d.train)
        np.testing.assert_array_equal(x_test, d.test)


def test_same_architecture_and_initialisation():
    """Params' layout is npvae's flatten order and shapes, and the same Generator draws the same initial parameters."""
    D, H, Z = 64, 128, 2
    x_mean = np.random.default_rng(1).random(D)
    x_mean[:3] = (0.0, 1.0, 0.5)  # pixels never and always on: the clip of the output-bias rule
    ours = tiny.init_params(np.random.default_rng(7), D, H, Z, x_mean=x_mean)
    arch = npvae_arch(D, H, Z)
    theirs = flatten(init_params(arch, np.random.default_rng(7), output_bias=output_bias_from_data(arch.likelihood, x_mean)))
    assert [a.shape for a in ours] == param_shapes(arch)
    for name, a, b in zip(tiny.Params._fields, ours, theirs):
        close(a, b, name)


@pytest.mark.parametrize("seed, D, H, Z, N", [(0, 6, 5, 3, 4), (1, 64, 128, 2, 100), (2, 9, 7, 1, 1)])
def test_elbo_and_every_gradient_equal_npvaes(seed, D, H, Z, N):
    """Per-point ELBO = npvae's objective and bound_value (analytic KL, K = 1); the gradient of the batch mean, array by array."""
    arch, params, x, eps = problem(seed, D, H, Z, N)
    value, grads = objective(params, arch, x, eps[None])
    elbo, ours = tiny.elbo_and_grad(tiny.Params(*flatten(params)), x, eps)
    close(elbo, value, "ELBO")
    close(elbo, bound_value(params, arch, x, eps[None]), "ELBO vs bound_value")
    for name, a, b in zip(tiny.Params._fields, ours, flatten(grads)):
        close(a, b, f"d ELBO / d {name}")


def test_elbo_and_gradient_on_a_batch_of_digits():
    """The same at the tiny file's starting point on real digits (zero hidden biases, the data's output bias)."""
    x = tiny.load_digits()[:100]
    p = tiny.init_params(np.random.default_rng(4), 64, 128, 2, x_mean=x.mean(axis=0))
    eps = np.random.default_rng(5).standard_normal((100, 2))
    arch = npvae_arch(64, 128, 2)
    value, grads = objective(unflatten(arch, list(p)), arch, x, eps[None])
    elbo, ours = tiny.elbo_and_grad(p, x, eps)
    close(elbo, value, "ELBO")
    for name, a, b in zip(tiny.Params._fields, ours, flatten(grads)):
        close(a, b, f"d ELBO / d {name}")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gradient_matches_a_central_difference(seed):
    """<grad, u> = (f(p + h u) - f(p - h u)) / 2h in a random unit direction u, f the batch-mean ELBO at fixed eps.

    Error model: truncation h^2 |f'''| / 6 ~ 1e-12 at h = 1e-6, rounding ~1e-16 |f| / h ~ 1e-9 (|f| ~ 10 here),
    against a directional derivative of order 0.1 to 1: FD_RTOL[float64] = 1e-6, plus 1e-8 |f| absolute.
    """
    _, params, x, eps = problem(seed, 6, 5, 3, 4)
    p = tiny.Params(*flatten(params))
    rng = np.random.default_rng(100 + seed)
    u = [rng.standard_normal(a.shape) for a in p]
    norm = np.sqrt(sum(float((a * a).sum()) for a in u))
    u = [a / norm for a in u]
    h = 1e-6

    def f(step):
        return tiny.elbo_and_grad(tiny.Params(*(a + step * b for a, b in zip(p, u))), x, eps)[0].mean()

    _, grads = tiny.elbo_and_grad(p, x, eps)
    analytic = sum(float((g * b).sum()) for g, b in zip(grads, u))
    fd = (f(h) - f(-h)) / (2 * h)
    np.testing.assert_allclose(analytic, fd, rtol=FD_RTOL[np.float64], atol=1e-8 * abs(f(0.0)))


def test_adam_equals_npvaes_adam():
    """Five steps on the same sequence of gradients, with non-default settings: the same parameters and moments."""
    _, params, _, _ = problem(3, 6, 5, 3, 4)
    ours, theirs = tiny.Params(*flatten(params)), flatten(params)
    s_ours, s_theirs = tiny.adam_init(ours), adam_init(theirs)
    rng = np.random.default_rng(9)
    for step in range(5):
        g = [rng.standard_normal(a.shape) * 10.0 ** rng.integers(-9, 2, a.shape) for a in theirs]  # |g| near eps too
        ours, s_ours = tiny.adam_step(ours, g, s_ours, lr=3e-2, b1=0.8, b2=0.99, eps=1e-7)
        theirs, s_theirs = adam_update(theirs, g, s_theirs, lr=3e-2, betas=(0.8, 0.99), eps=1e-7)
    assert s_ours[0] == s_theirs.step == 5
    for name, a, b, m1, m2, v1, v2 in zip(tiny.Params._fields, ours, theirs, s_ours[1], s_theirs.m, s_ours[2], s_theirs.v):
        close(a, b, name)
        close(m1, m2, f"m of {name}")
        close(v1, v2, f"v of {name}")


def test_one_epoch_is_npvae_train(tmp_path):
    """tiny main(epochs=1) is `npvae train --epochs 1` on the digits: the same training bound and final parameters.

    13 Adam steps carry the rounding of each step forward; an Adam update is lr * m_hat / (sqrt(v_hat) + eps), whose
    change for a relative change d of g is at most lr * d / 4 in absolute terms, so nothing amplifies it beyond the
    rtol of the module docstring.
    """
    from npvae.store.data import load
    from npvae.training.config import TrainConfig
    from npvae.training.loop import train

    state = train(TrainConfig(epochs=1), load("digits", seed=0, compact=True), tmp_path / "run", progress=False,
                  log=lambda s: None)
    p, history = tiny.main(epochs=1, seed=0, log=None)
    close(history["train_elbo"][0], state.history["train_bound"][0], "training bound of epoch 1")
    for name, a, b in zip(tiny.Params._fields, p, state.params):
        close(a, b, name)


def test_main_raises_the_elbo():
    """Three epochs from the data-marginal start raise the test ELBO (same noise before and after) and the training ELBO."""
    lines = []
    _, history = tiny.main(epochs=3, seed=0, log=lines.append)
    test, train = history["test_elbo"], history["train_elbo"]
    assert len(test) == 4 and len(train) == 3
    # Seeds 0..39 gave test rises of 0.69 to 2.5 nats and training rises of 0.27 nats or more: no margin is asked for.
    assert np.all(np.isfinite(test)) and test[-1] > test[0]
    assert train[-1] > train[0]
    assert lines[-1].startswith("final test ELBO")


def test_main_refuses_grey_data():
    x = tiny.load_digits()[:10]
    with pytest.raises(ValueError, match="zeros and ones"):
        tiny.main(epochs=1, data=(x * 0.5, x), log=None)


def test_stable_primitives_at_extreme_logits():
    """softplus against logaddexp(0, l), sigmoid against 1 / (1 + e^-l); both finite and exact at |l| = 800."""
    l = np.array([-800.0, -40.0, -1.0, 0.0, 1e-3, 2.0, 40.0, 800.0])
    np.testing.assert_allclose(tiny.softplus(l), np.logaddexp(0.0, l), rtol=1e-15, atol=0)
    with np.errstate(over="ignore"):  # the naive form overflows at -800 to 1 / inf = 0, the right limit
        np.testing.assert_allclose(tiny.sigmoid(l), 1.0 / (1.0 + np.exp(-l)), rtol=1e-15, atol=1e-300)
    x = np.array([[1.0, 0.0]])
    logp = tiny.bernoulli_forward(np.array([[800.0, -800.0]]), x)  # both pixels predicted right, with certainty
    assert logp[0] == 0.0
