"""The training loop: Adam on minus the bound, a validation bound every epoch, safe checkpoints, exact resume.

A run directory holds `config.json`, `last.npz` (end of the latest epoch), `best.npz` (best validation
bound), `history.json`, and, if training diverged, `diverged.json`. A checkpoint holds parameters,
Adam's state, epoch and step, and every Generator's state, so resuming from `last.npz` continues the
run bit for bit: 2 epochs straight and 1 + 1 resumed give identical parameters.

The loop reaches the backend through a stepper: `HostStepper` (numpy, numba) runs the objective and
Adam on host arrays; for backend="cuda", npvae.backends.cuda_train.DeviceTrainer keeps parameters,
Adam's state and the epoch's data on the device, and only eps and a few scalars cross per step.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import __version__
from .checkpoint import check_expected, load_checkpoint, rng_from_state, rng_state, save_checkpoint
from .backends import resolve
from .config import STREAMS, TrainConfig
from .data import Dataset, binarize_dynamic
from .likelihoods import output_bias_from_data
from .model import Arch, flatten, init_params, param_names, param_shapes, unflatten
from .objectives import bound_value, objective
from .optim import AdamState, adam_init, adam_update


class TrainingDiverged(RuntimeError):
    """A non-finite bound, gradient or parameter: training stopped, the last good checkpoint is untouched."""


@dataclass
class TrainState:
    """Everything that changes during training; together with the config it determines the rest of the run."""

    params: list  # flat, in `param_names` order
    adam: AdamState
    rngs: dict  # name -> Generator, see config.STREAMS
    epoch: int = 0  # epochs completed
    step: int = 0  # optimiser steps taken
    best_valid: float = -np.inf
    history: dict = field(default_factory=lambda: {"epoch": [], "train_bound": [], "valid_bound": [], "kl_weight": [], "seconds": []})


def new_state(config: TrainConfig, arch: Arch, x_train) -> TrainState:
    """The state at epoch 0: parameters from the "init" stream, and the output bias from x_train: (N, D) if config says "data"."""
    rngs = config.streams()
    bias = output_bias_from_data(arch.likelihood, x_train.mean(axis=0, dtype=np.float64)) if config.output_bias == "data" else None
    params = flatten(init_params(arch, rngs["init"], np.dtype(config.dtype), output_bias=bias))
    return TrainState(params, adam_init(params), rngs)


def versions() -> dict:
    return {"npvae": __version__, "numpy": np.__version__, "python": platform.python_version()}


def save_state(path: Path, config: TrainConfig, arch: Arch, state: TrainState) -> None:
    """Atomic, pickle-free checkpoint of the whole training state (npvae.checkpoint)."""
    names = param_names(arch)
    arrays = {}
    for prefix, values in (("param", state.params), ("adam_m", state.adam.m), ("adam_v", state.adam.v)):
        arrays.update({f"{prefix}.{n}": a for n, a in zip(names, values)})
    meta = {
        "config": config.to_dict(),
        "arch": arch.spec,
        "epoch": state.epoch,
        "step": state.step,
        "adam_step": state.adam.step,
        "best_valid": state.best_valid if np.isfinite(state.best_valid) else None,
        "rngs": {k: rng_state(g) for k, g in state.rngs.items()},
        "history": state.history,
        "versions": versions(),
    }
    save_checkpoint(path, arrays, meta)


def load_state(path: Path) -> tuple[TrainConfig, Arch, TrainState]:
    """Read a checkpoint, validating every array's shape and dtype against the config it carries."""
    arrays, meta = load_checkpoint(path)
    try:
        config = TrainConfig.from_dict(meta["config"])
        data_dim = int(meta["arch"].split("-")[0])
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ValueError(f"checkpoint {path}: its config is unusable ({e})") from None
    arch = config.make_arch(data_dim)
    names, shapes = param_names(arch), param_shapes(arch)
    expected = {f"{p}.{n}": (s, np.dtype(config.dtype)) for p in ("param", "adam_m", "adam_v") for n, s in zip(names, shapes)}
    check_expected(str(path), arrays, expected)  # refuses any mismatch with the config, listing every one
    try:
        state = TrainState(
            params=[arrays[f"param.{n}"] for n in names],
            adam=AdamState(int(meta["adam_step"]), tuple(arrays[f"adam_m.{n}"] for n in names), tuple(arrays[f"adam_v.{n}"] for n in names)),
            rngs={k: rng_from_state(s) for k, s in meta["rngs"].items()},
            epoch=int(meta["epoch"]),
            step=int(meta["step"]),
            best_valid=-np.inf if meta["best_valid"] is None else float(meta["best_valid"]),
            history=meta["history"],
        )
        if set(state.rngs) != set(STREAMS):
            raise ValueError(f"random streams {sorted(state.rngs)}, expected {sorted(STREAMS)}")
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ValueError(f"checkpoint {path}: its training state is unusable ({type(e).__name__}: {e})") from None
    return config, arch, state


def _fixed_valid(config: TrainConfig, dataset: Dataset):
    """The validation split the bound is measured on: binarised once, from the seed, for dynamically binarised data."""
    x = dataset.valid
    if dataset.dynamic_binarize:
        x = binarize_dynamic(x, np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(1000,))))
    return x


def validation_bound(params, arch: Arch, config: TrainConfig, x, rng, backend: str = "numpy") -> float:
    """Mean bound on the validation split (training bound, K = valid_k or k), in batches so memory stays bounded."""
    k = config.valid_k or config.k
    bound = "iwae" if k > 1 and config.bound == "iwae" else "elbo"
    kl = "mc" if bound == "iwae" else config.kl
    total = 0.0
    for i in range(0, x.shape[0], config.batch_size):
        xb = x[i : i + config.batch_size]
        eps = rng.standard_normal((k, xb.shape[0], arch.latent_dim), dtype=xb.dtype)
        total += float(bound_value(params, arch, xb, eps, bound=bound, kl=kl, backend=backend).sum())
    return total / x.shape[0]


def _diverged(run_dir: Path, arch: Arch, state: TrainState, what: str, value, grads, params) -> TrainingDiverged:
    """Write diverged.json (what went non-finite, where, and the magnitudes of params) and build the exception."""
    names = param_names(arch)
    info = {
        "what": what,
        "epoch": state.epoch,
        "step": state.step,
        "bound_nonfinite": int(np.size(value) - np.count_nonzero(np.isfinite(value))),
        "grads_nonfinite": {n: int(g.size - np.count_nonzero(np.isfinite(g))) for n, g in zip(names, grads) if not np.all(np.isfinite(g))},
        "param_max_abs": {n: float(np.max(np.abs(p))) for n, p in zip(names, params)},
        "last_good_checkpoint": str(run_dir / "last.npz") if (run_dir / "last.npz").exists() else None,
    }
    (run_dir / "diverged.json").write_text(json.dumps(info, indent=1))
    return TrainingDiverged(
        f"non-finite {what} at epoch {state.epoch + 1}, step {state.step}: training stopped; "
        f"the last good checkpoint is untouched; details in {run_dir / 'diverged.json'} "
        "(try a smaller --lr, or a Gaussian likelihood's larger --min-log-var)"
    )


class HostStepper:
    """Adam steps on host arrays, for backends "numpy" and "numba": objective(...), then the update.

    The trainer's interface to a backend, shared with npvae.backends.cuda_train.DeviceTrainer:
    start_epoch(x, order); step(lo, hi, eps, kl_weight, lr) -> (the mean bound of the batch
    x[order[lo:hi]], None) or (nan, what went non-finite); state() -> (params, AdamState) at the end
    of an epoch; failed_step() -> (value, grads, params) of the step that went non-finite, params
    as they were before it, or after it where the update works in place (numba, cuda).
    """

    def __init__(self, config: TrainConfig, arch: Arch, backend: str, params, adam: AdamState):
        self.arch, self.backend, self.params, self.adam = arch, backend, params, adam
        self.options = dict(bound=config.bound, kl=config.kl, estimator=config.estimator, free_bits=config.free_bits, backend=backend)
        self.betas, self.adam_eps = (config.beta1, config.beta2), config.adam_eps
        self.failed = None

    def start_epoch(self, x, order) -> None:
        self.x, self.order = x, order

    def step(self, lo: int, hi: int, eps, kl_weight: float, lr: float):
        xb = self.x[self.order[lo:hi]]
        value, grads = objective(unflatten(self.arch, self.params), self.arch, xb, eps, kl_weight=kl_weight, **self.options)
        g = flatten(grads)
        self.failed = (value, g, self.params)
        if not (np.all(np.isfinite(value)) and all(np.all(np.isfinite(a)) for a in g)):
            return float("nan"), "bound or gradient"
        if self.backend == "numba":  # in place, on minus the gradient without building it; equal to adam_update bit for bit
            from .backends.numba_cpu import adam_update_

            params, adam = adam_update_(self.params, g, self.adam, lr, self.betas, self.adam_eps, sign=-1.0)
        else:
            params, adam = adam_update(self.params, [-a for a in g], self.adam, lr, self.betas, self.adam_eps)
        if not all(np.all(np.isfinite(a)) for a in params):
            return float("nan"), "parameter after the update"
        self.params, self.adam = params, adam
        return float(value.mean()), None

    def state(self):
        return self.params, self.adam

    def failed_step(self):
        return self.failed


def _stepper(config: TrainConfig, arch: Arch, backend: str, state: TrainState):
    """The backend's stepper, starting from state's parameters and Adam state."""
    if backend == "cuda":
        from .backends.cuda_train import DeviceTrainer

        return DeviceTrainer(arch, state.params, state.adam, batch_size=config.batch_size, bound=config.bound, kl=config.kl,
                             estimator=config.estimator, free_bits=config.free_bits, betas=(config.beta1, config.beta2), adam_eps=config.adam_eps)
    return HostStepper(config, arch, backend, state.params, state.adam)


def train(config: TrainConfig, dataset: Dataset, run_dir, *, resume: bool = False, progress: bool = True, log=print) -> TrainState:
    """Train (or continue) a run in `run_dir` until `config.epochs` epochs are done; returns the final state."""
    run_dir = Path(run_dir)
    if dataset.train.dtype != np.dtype(config.dtype):
        raise ValueError(f"data set is {dataset.train.dtype} but the config asks for {config.dtype}")
    if config.likelihood == "bernoulli" and not (dataset.binary or dataset.dynamic_binarize):
        x = dataset.train
        if np.all((x >= 0) & (x <= 1)):
            raise ValueError(f"the Bernoulli likelihood needs binary data; {dataset.name} is grey-level: add --binarize")
        raise ValueError(f"the Bernoulli likelihood needs binary data, and {dataset.name}'s values are not in [0, 1]: "
                         "use --likelihood gaussian or gaussian-learned")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "diverged.json").unlink(missing_ok=True)  # a report from an earlier attempt no longer describes this run
    if resume:
        saved_config, arch, state = load_state(run_dir / "last.npz")
        # The backend changes where the kernels run, not the run (results agree to rounding; bit for bit only on the same one).
        if {**saved_config.to_dict(), "epochs": config.epochs, "backend": config.backend} != config.to_dict():
            raise ValueError("resume: the run's config differs from the one given (only --epochs may change, and --backend)")
    else:
        arch = config.make_arch(dataset.train.shape[1])
        state = new_state(config, arch, dataset.train)
    (run_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=1))

    x_valid = _fixed_valid(config, dataset)
    N = dataset.train.shape[0]
    steps_per_epoch = -(-N // config.batch_size)
    dtype = np.dtype(config.dtype)
    backend = resolve(config.backend)
    stepper = _stepper(config, arch, backend, state)
    rngs = state.rngs
    while state.epoch < config.epochs:
        t0 = time.perf_counter()
        x_epoch = binarize_dynamic(dataset.train, rngs["binarize"]) if dataset.dynamic_binarize else dataset.train
        order = rngs["shuffle"].permutation(N)
        stepper.start_epoch(x_epoch, order)
        bar = _progress(steps_per_epoch, f"epoch {state.epoch + 1}/{config.epochs}", progress)
        running = 0.0
        for i in range(steps_per_epoch):
            lo, hi = i * config.batch_size, min(N, (i + 1) * config.batch_size)
            eps = rngs["eps"].standard_normal((config.k, hi - lo, arch.latent_dim), dtype=dtype)
            beta = config.kl_weight_at(state.epoch, i, steps_per_epoch)
            bound, nonfinite = stepper.step(lo, hi, eps, beta, config.lr_at(state.epoch))
            if nonfinite:  # training stops; the checkpoints on disk are from the last completed epoch
                raise _diverged(run_dir, arch, state, nonfinite, *stepper.failed_step())
            state.step += 1
            running += (bound - running) / (i + 1)
            bar.update(1)
            bar.set_postfix_str(f"bound {running:.3f}", refresh=False)
        bar.close()
        state.params, state.adam = stepper.state()
        valid = validation_bound(unflatten(arch, state.params), arch, config, x_valid, rngs["valid"], backend)
        state.epoch += 1
        h = state.history
        for key, v in (("epoch", state.epoch), ("train_bound", running), ("valid_bound", valid), ("kl_weight", beta), ("seconds", time.perf_counter() - t0)):
            h[key].append(v)
        improved = valid > state.best_valid
        if improved:
            state.best_valid = valid
        save_state(run_dir / "last.npz", config, arch, state)
        if improved:
            save_state(run_dir / "best.npz", config, arch, state)
        _write_json(run_dir / "history.json", h)
        log(f"epoch {state.epoch:>4}  train {running:10.4f}  valid {valid:10.4f}{'  *best' if improved else ''}  ({h['seconds'][-1]:.1f} s)")
    return state


def _write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def _progress(total: int, desc: str, enabled: bool):
    """A tqdm bar on stderr, or a silent stand-in."""
    from tqdm.auto import tqdm

    # disable=None: tqdm switches itself off when stderr is not a terminal (logs, CI).
    return tqdm(total=total, desc=desc, leave=False, disable=None if enabled else True, dynamic_ncols=True)
