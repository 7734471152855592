"""Compact data (uint8 splits cast batch by batch) and the trainer's fused checks: same results as the float path.

Compact splits must change nothing but memory: training, validation and evaluation on them give the float
path's numbers bit for bit. The numba stepper's divergence check (one test in the Adam kernel, npvae.backends.
kernels.adam) must name the same failure the NumPy stepper finds by scanning every gradient and parameter.
"""

import dataclasses
import json

import numpy as np
import pytest

from npvae import Likelihood, models
from npvae.backends import get as get_backend
from npvae.training.config import TrainConfig
from npvae.store.data import Dataset, as_float, load
from npvae.evaluation.evaluate import evaluate
from npvae.nn.optim import adam_init
from npvae.training.loop import TrainingDiverged, train


@pytest.fixture(scope="module")
def digits():
    return load("digits", dtype=np.float64), load("digits", dtype=np.float64, compact=True)


def test_compact_digits_hold_the_same_points(digits):
    full, compact = digits
    assert compact.compact and not full.compact
    assert compact.dtype == full.dtype == np.float64
    for s in ("train", "valid", "test"):
        a, b = full.split(s), compact.split(s)
        assert b.dtype == np.uint8 and b.flags["C_CONTIGUOUS"] and np.array_equal(a, b)
        assert np.array_equal(as_float(b, np.float64), a) and as_float(b, np.float32).dtype == np.float32
    assert as_float(full.train, np.float64) is full.train  # a float split of the right dtype is not copied


def test_compact_dataset_checks_its_fields():
    x = np.zeros((3, 4), np.uint8)
    with pytest.raises(ValueError, match="must be binary"):
        Dataset("t", x, x, x, image_shape=(2, 2), binary=False, float_dtype=np.float32)
    with pytest.raises(ValueError, match="float_dtype float32 or float64"):
        Dataset("t", x, x, x, image_shape=(2, 2), binary=True)
    with pytest.raises(ValueError, match="valid is marked binary"):
        Dataset("t", x, x + 2, x, image_shape=(2, 2), binary=True, float_dtype=np.float32)
    with pytest.raises(ValueError, match="test must be a 2-d uint8"):
        Dataset("t", x, x, x.astype(np.float32), image_shape=(2, 2), binary=True, float_dtype=np.float32)
    with pytest.raises(ValueError, match="float_dtype float32 but the splits are float64"):
        Dataset("t", x + 0.0, x + 0.0, x + 0.0, image_shape=(2, 2), binary=True, float_dtype=np.float32)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_training_on_compact_data_equals_training_on_floats_bit_for_bit(tmp_path, digits, backend):
    full, compact = digits
    cfg = TrainConfig(epochs=2, bound="iwae", k=3, kl="mc", batch_size=100, backend=backend)
    a = train(cfg, full, tmp_path / "a", progress=False, log=lambda s: None)
    b = train(cfg, compact, tmp_path / "b", progress=False, log=lambda s: None)
    for p, q in zip(a.params + list(a.adam.m) + list(a.adam.v), b.params + list(b.adam.m) + list(b.adam.v)):
        assert p.dtype == q.dtype and np.array_equal(p, q)
    assert a.history["valid_bound"] == b.history["valid_bound"] and a.history["train_bound"] == b.history["train_bound"]


def test_evaluate_on_compact_data_equals_evaluate_on_floats(digits):
    full, compact = digits
    arch = models.parse("64-32-2", activation="tanh", likelihood=Likelihood("bernoulli"))
    params = models.init_params(arch, np.random.default_rng(0), np.float64)
    a = evaluate(params, arch, full.test, np.random.default_rng(1), k=20, x_active=full.train)
    b = evaluate(params, arch, compact.test, np.random.default_rng(1), k=20, x_active=compact.train)
    assert a == b


def test_a_uint8_split_that_is_not_binary_is_refused_by_the_stepper():
    arch = models.parse("4-3-2", activation="tanh", likelihood=Likelihood("gaussian"))
    flat = models.flatten(models.init_params(arch, np.random.default_rng(0), np.float64))
    b = get_backend("numba")
    s = b.stepper(b, arch, flat, adam_init(flat), batch_size=2, bound="elbo", kl="analytic", estimator="reparam",
                  free_bits=0.0, betas=(0.9, 0.999), adam_eps=1e-8)
    with pytest.raises(ValueError, match="uint8 but not binary"):
        s.start_epoch(np.array([[0, 1, 2, 0]], np.uint8), np.arange(1))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gather_casts_rows_of_any_split(dtype):
    rng = np.random.default_rng(3)
    x = (rng.random((50, 7)) < 0.3).astype(np.uint8)
    idx = rng.permutation(50)[:11]
    for src in (x, x.astype(dtype)):
        out = get_backend("numba").gather(src, idx, np.empty((11, 7), dtype))
        assert out.dtype == dtype and np.array_equal(out, x[idx])


# ---- the divergence check fused into numba's Adam -------------------------------------------------

def _poisoned(case, dtype):
    """(params, grads) whose Adam step goes wrong as `case` says; shapes of a small model, 2 arrays poisoned at most."""
    rng = np.random.default_rng(0)
    params = [rng.standard_normal((5, 4)).astype(dtype), rng.standard_normal(4).astype(dtype)]
    grads = [rng.standard_normal((5, 4)).astype(dtype), rng.standard_normal(4).astype(dtype)]
    if case == "nan gradient":
        grads[1][2] = np.nan
    elif case == "inf gradient":
        grads[0][3, 1] = -np.inf
    elif case == "parameter overflows":  # every gradient finite, but a step of about lr upwards overflows the largest float
        params[0][0, 0], grads[0][0, 0] = np.finfo(dtype).max, 1.0  # Adam descends on -g: the step is +lr
    return params, grads


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case, what", [("finite", None), ("nan gradient", "bound or gradient"),
                                        ("inf gradient", "bound or gradient"), ("parameter overflows", "parameter after the update")])
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # planted infinities and overflows: NumPy's RuntimeWarnings are the point
def test_fused_check_names_what_the_scans_find(case, what, dtype):
    lr = float(np.finfo(dtype).max) / 2 if case == "parameter overflows" else 1e-3
    params, grads = _poisoned(case, dtype)
    # The specification: scan the gradient, update (numpy's adam_update), scan the parameters.
    ref_p, _ = get_backend("numpy").adam_step([p.copy() for p in params], grads, adam_init(params), lr, (0.9, 0.999), 1e-8, -1.0)
    scanned = ("bound or gradient" if not all(np.all(np.isfinite(g)) for g in grads)
               else "parameter after the update" if not all(np.all(np.isfinite(p)) for p in ref_p) else None)
    assert scanned == what
    got_p, _, got = get_backend("numba").adam_step_checked([p.copy() for p in params], grads, adam_init(params), lr,
                                                           (0.9, 0.999), 1e-8, -1.0)
    assert got == what
    if what is None:
        for p, q in zip(ref_p, got_p):
            assert np.array_equal(p, q)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_nan_gradient_stops_training_on_either_stepper(tmp_path, digits, monkeypatch, backend):
    import npvae.training.loop as T

    real_get, calls = T.get_backend, {"n": 0}

    def poisoned_backend(name):
        b = real_get(name)

        def bound_and_grad(*a, **kw):
            value, grads = b.bound_and_grad(*a, **kw)
            calls["n"] += 1
            if calls["n"] == 3:
                grads.encoder[0].b[1] = np.inf
            return value, grads

        return b._replace(bound_and_grad=bound_and_grad)

    monkeypatch.setattr(T, "get_backend", poisoned_backend)
    with pytest.raises(TrainingDiverged, match="non-finite bound or gradient at epoch 1, step 2"):
        train(TrainConfig(epochs=1, backend=backend), digits[1], tmp_path, progress=False, log=lambda s: None)
    text = (tmp_path / "diverged.json").read_text()
    diag = json.loads(text, parse_constant=lambda c: pytest.fail(f"diverged.json holds {c}: not JSON"))
    assert diag["grads_nonfinite"] == {"encoder.0.b": 1}
    # the NumPy stepper never applies the step; numba's Adam already has, in place, and says so
    assert diag["params_nonfinite"] == ({} if backend == "numpy" else {"encoder.0.b": 1})
    assert all(np.isfinite(v) for v in diag["param_max_abs"].values())


def test_compact_needs_a_binary_set():
    synthetic = load("synthetic", compact=True)  # Gaussian data: compact changes nothing
    assert not synthetic.compact and synthetic.train.dtype == np.float64
    assert dataclasses.replace(synthetic).dtype == np.float64
