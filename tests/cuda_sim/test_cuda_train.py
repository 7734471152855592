"""Training on backend="cuda" (npvae.backends.cuda_train) against the NumPy trainer, on numba's CUDA simulator.

The oracle is the NumPy backend's run of the same config: the same Generators draw the same shuffle
and noise, so parameters and Adam's state agree element by element (float64 1e-10, float32 1e-5,
relative to each array's largest element). Tiny data (6 training points of D = 6, batches of 3) keep
each simulated epoch to about a second. Run by tests/test_cuda_sim.py with NUMBA_ENABLE_CUDASIM=1.
"""

import json
import shutil

import numba
import numpy as np
import pytest

from npvae.backends import cuda_available

if not cuda_available():  # the simulator (as tests/test_cuda_sim.py runs this file), or a real GPU
    pytest.skip("needs NUMBA_ENABLE_CUDASIM=1 (run by tests/test_cuda_sim.py) or an NVIDIA GPU", allow_module_level=True)

from numba import cuda
from gemm_paths import gemm_path, pytest_generate_tests  # noqa: F401  (each test with each matrix-product path)

from npvae import cli
from npvae.backends.cuda_train import DeviceTrainer
from npvae.training.config import TrainConfig
from npvae.store.data import Dataset
from npvae.checks.gradcheck import rel_err
from npvae.training.loop import TrainingDiverged, load_state, train

RTOL = {"float64": 1e-10, "float32": 1e-5}
BASE = dict(dataset="tiny", arch="6-5-2", batch_size=3, lr=0.01)
IWAE = dict(bound="iwae", k=2, kl="mc", estimator="dreg")


def tiny(dtype="float64") -> Dataset:
    x = (np.random.default_rng(0).random((12, 6)) < 0.5).astype(dtype)
    return Dataset("tiny", x[:6], x[6:9], x[9:], (2, 3), binary=True)


def quiet_train(config, dataset, run_dir, **kw):
    return train(config, dataset, run_dir, progress=False, log=lambda s: None, **kw)


def arrays(state):
    return state.params + list(state.adam.m) + list(state.adam.v)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """float64 IWAE/DReG, 2 epochs: numpy, cuda straight, and cuda 1 + resume 1 (its 1-epoch run directory kept too)."""
    d = tmp_path_factory.mktemp("runs")
    cfg = TrainConfig(**BASE, **IWAE, epochs=2)
    one = TrainConfig(**{**cfg.to_dict(), "epochs": 1, "backend": "cuda"})
    out = {"numpy": quiet_train(cfg, tiny(), d / "numpy"),
           "cuda": quiet_train(TrainConfig(**{**cfg.to_dict(), "backend": "cuda"}), tiny(), d / "cuda")}
    quiet_train(one, tiny(), d / "resumed")
    shutil.copytree(d / "resumed", d / "one-epoch")
    out["resumed"] = quiet_train(TrainConfig(**{**one.to_dict(), "epochs": 2}), tiny(), d / "resumed", resume=True)
    out["one-epoch"] = d / "one-epoch"
    return out


def _assert_agree(got, want, dtype):
    assert got.adam.step == want.adam.step and got.step == want.step
    for a, b in zip(arrays(got), arrays(want)):
        assert a.dtype == b.dtype == np.dtype(dtype)
        assert rel_err(a, b) <= RTOL[dtype], f"relative error {rel_err(a, b):.2e}"


def test_training_equals_the_numpy_trainer(runs):
    _assert_agree(runs["cuda"], runs["numpy"], "float64")
    np.testing.assert_allclose(runs["cuda"].history["valid_bound"], runs["numpy"].history["valid_bound"], rtol=1e-10)


def test_training_equals_the_numpy_trainer_float32(tmp_path):
    cfg = TrainConfig(**BASE, epochs=1, dtype="float32")
    want = quiet_train(cfg, tiny("float32"), tmp_path / "numpy")
    got = quiet_train(TrainConfig(**{**cfg.to_dict(), "backend": "cuda"}), tiny("float32"), tmp_path / "cuda")
    _assert_agree(got, want, "float32")


def test_resume_is_bit_identical(runs):
    straight, resumed = runs["cuda"], runs["resumed"]
    assert straight.adam.step == resumed.adam.step == 4
    assert all(a.dtype == b.dtype and np.array_equal(a, b) for a, b in zip(arrays(straight), arrays(resumed)))
    assert all(straight.rngs[k].bit_generator.state == resumed.rngs[k].bit_generator.state for k in straight.rngs)
    assert straight.history["valid_bound"] == resumed.history["valid_bound"]


def test_nan_on_the_device_stops_and_keeps_the_last_good_checkpoint(runs, tmp_path, monkeypatch):
    """A NaN written into the device copy of the data before the second batch of epoch 2: stop at step 3, last.safetensors untouched."""
    run_dir = shutil.copytree(runs["one-epoch"], tmp_path / "run")
    before = (run_dir / "last.safetensors").read_bytes()
    real = DeviceTrainer.step

    def poisoned(self, lo, hi, eps, kl_weight, lr):
        if lo > 0:
            self.x[int(self.order.copy_to_host()[lo]), 0] = np.nan  # one point of this batch
        return real(self, lo, hi, eps, kl_weight, lr)

    monkeypatch.setattr(DeviceTrainer, "step", poisoned)
    cfg = TrainConfig(**BASE, **IWAE, epochs=2, backend="cuda")
    with pytest.raises(TrainingDiverged, match="non-finite bound or gradient at epoch 2, step 3"):
        quiet_train(cfg, tiny(), run_dir, resume=True)
    assert (run_dir / "last.safetensors").read_bytes() == before
    diag = json.loads((run_dir / "diverged.json").read_text())
    assert diag["what"] == "bound or gradient" and diag["epoch"] == 1 and diag["step"] == 3
    assert diag["bound_nonfinite"] == 1 and diag["grads_nonfinite"]
    assert all(np.isfinite(list(diag["param_max_abs"].values()))) and diag["last_good_checkpoint"].endswith("last.safetensors")


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning", "ignore:invalid value encountered:RuntimeWarning")
def test_a_non_finite_update_stops_as_on_numpy(tmp_path):
    """lr / (1 - beta1) overflows float32: the first update is non-finite on both backends, reported alike."""
    cfg = TrainConfig(**{**BASE, "lr": 1e39}, epochs=1, dtype="float32")
    report = {}
    for backend in ("numpy", "cuda"):
        with pytest.raises(TrainingDiverged, match="non-finite parameter after the update at epoch 1, step 0"):
            quiet_train(TrainConfig(**{**cfg.to_dict(), "backend": backend}), tiny("float32"), tmp_path / backend)
        report[backend] = json.loads((tmp_path / backend / "diverged.json").read_text())
        assert not (tmp_path / backend / "last.safetensors").exists()
    for key in ("what", "epoch", "step", "bound_nonfinite", "grads_nonfinite"):
        assert report["cuda"][key] == report["numpy"][key], key


@pytest.mark.skipif(not numba.config.ENABLE_CUDASIM, reason="counts the copies of the simulator's device arrays")
def test_parameters_stay_on_the_device_during_an_epoch(tmp_path, monkeypatch):
    """Every host<->device copy of one epoch, explicit or implicit (a host array passed to a kernel), by shape."""
    from numba.cuda.simulator.cudadrv import devicearray as sim

    log = []
    real_to, real_back, real_into = sim.to_device, sim.FakeCUDAArray.copy_to_host, sim.FakeCUDAArray.copy_to_device
    real_step = DeviceTrainer.step

    def to_device(ary, *a, **kw):
        log.append(("in", np.shape(ary)))
        return real_to(ary, *a, **kw)

    def copy_to_host(self, *a, **kw):
        log.append(("out", tuple(self.shape)))
        return real_back(self, *a, **kw)

    def copy_to_device(self, ary, *a, **kw):
        log.append(("in", np.shape(ary)))
        return real_into(self, ary, *a, **kw)

    def step(self, *a):
        log.append("step")
        result = real_step(self, *a)
        log.append("end")
        return result

    for owner, name, f in ((sim, "to_device", to_device), (cuda, "to_device", to_device), (sim.FakeCUDAArray, "copy_to_host", copy_to_host),
                           (sim.FakeCUDAArray, "copy_to_device", copy_to_device), (DeviceTrainer, "step", step)):
        monkeypatch.setattr(owner, name, f)
    quiet_train(TrainConfig(**BASE, **IWAE, epochs=1, backend="cuda"), tiny(), tmp_path)
    monkeypatch.undo()

    P = sum(a.size for a in load_state(tmp_path / "last.safetensors")[2].params)
    first, last = log.index("step"), len(log) - 1 - log[::-1].index("end")
    # Before the first step: parameters, m and v once, then the epoch's data and its shuffle order.
    assert sorted(log[:first]) == sorted([("in", (P,))] * 3 + [("in", (6, 6)), ("in", (6,))])
    # Each step: eps (K n, Z) in; the 4-number summary out, before and after the update. Nothing else.
    steps = log[first : last + 1]
    assert steps == ["step", ("in", (2 * 3, 2)), ("out", (4,)), ("out", (4,)), "end"] * 2
    # After the epoch: parameters, m and v back once for the checkpoint (then validation's own copies).
    assert log[last + 1 : last + 4] == [("out", (P,))] * 3
    assert ("in", (P,)) not in log[last + 1 :]


@pytest.mark.slow
def test_cli_train_and_eval_on_cuda(tmp_path, monkeypatch, capsys):
    import npvae.store.data

    monkeypatch.setattr(npvae.store.data, "load", lambda name, **kw: tiny(kw.get("dtype", "float64")))  # whatever --dataset says
    run = tmp_path / "run"
    assert cli.main(["train", "--dataset", "digits", "--arch", "6-5-2", "--batch-size", "3", "--epochs", "1",
                     "--backend", "cuda", "--out", str(run), "--quiet", "--no-pictures"]) == 0
    assert load_state(run / "last.safetensors")[2].step == 2
    capsys.readouterr()
    metrics = {}
    for backend in ("cuda", "numpy"):
        assert cli.main(["eval", str(run), "--backend", backend, "--k", "4", "--json"]) == 0
        metrics[backend] = json.loads(capsys.readouterr().out)
    assert metrics["cuda"]["n_points"] == 3 and np.isfinite(metrics["cuda"]["nll"])
    assert metrics["cuda"]["nll"] == pytest.approx(metrics["numpy"]["nll"], rel=1e-10)  # the same importance samples
