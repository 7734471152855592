"""A run's training state and its checkpoints: what changes during training, saved and restored bit for bit.

`TrainState` (parameters, Adam's state, every Generator, epoch, step, history) with the config determines the
rest of the run; `save_state` writes it atomically and pickle-free (npvae.store.checkpoint), and `load_state` reads
it back refusing anything that contradicts the config it carries or itself (shapes, dtypes, counts, history).
"""

from __future__ import annotations

import math
import platform
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._version import __version__
from ..store import run_dir as rd
from ..store.checkpoint import check_expected, load_checkpoint, rng_from_state, rng_state, save_checkpoint
from .config import STREAMS, TrainConfig
from ..likelihoods import output_bias_from_data
from ..vae.model import Arch
from ..vae.models import flatten, init_params, param_names, param_shapes
from ..nn.optim import AdamState, adam_init


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
    """Atomic, pickle-free checkpoint of the whole training state (npvae.store.checkpoint)."""
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
        "best_epoch": _best_epoch(state.history),
        "rngs": {k: rng_state(g) for k, g in state.rngs.items()},
        "history": state.history,
        "versions": versions(),
    }
    save_checkpoint(path, arrays, meta)


def _best_epoch(history: dict) -> int | None:
    """The epoch (1-based) of the first maximum of the validation bound: the one best holds."""
    v = history["valid_bound"]
    return None if not v else history["epoch"][int(np.argmax(v))]


def read_meta(path) -> dict:
    """A checkpoint's verified metadata (epoch, best_epoch, config, ...)."""
    return load_checkpoint(path)[1]


def load_state(path: Path) -> tuple[TrainConfig, Arch, TrainState]:
    """Read a checkpoint, validating every array's shape and dtype against the config it carries, and its state's sense."""
    path = Path(path)
    if not path.exists() and path.suffix in (rd.SUFFIX, rd.LEGACY_SUFFIX) and path.stem in rd.CHECKPOINTS:
        path = rd.checkpoint_path(path.parent, path.stem)  # best.safetensors asked of a run of npvae 0.1: its best.npz
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
        _check_state_meta(meta)
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"checkpoint {path}: its training state is unusable ({e})") from None
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


HISTORY_KEYS = ("epoch", "train_bound", "valid_bound", "kl_weight", "seconds")


def _check_state_meta(meta: dict) -> None:
    """Refuse a state whose hashes match but whose numbers contradict one another (written by hand, or by a bug)."""
    epoch, step, adam_step = meta["epoch"], meta["step"], meta["adam_step"]
    for name, v in (("epoch", epoch), ("step", step), ("adam_step", adam_step)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {v!r}")
    if adam_step != step:
        raise ValueError(f"Adam has taken {adam_step} steps but the run {step}")
    if (epoch == 0) != (step == 0):
        raise ValueError(f"{step} steps in {epoch} epochs")
    h = meta["history"]
    if not isinstance(h, dict) or set(h) != set(HISTORY_KEYS):
        raise ValueError(f"history must have the keys {', '.join(HISTORY_KEYS)}")
    for key in HISTORY_KEYS:
        col = h[key]
        if not isinstance(col, list) or len(col) != epoch:
            raise ValueError(f"history[{key!r}] must list one value per epoch ({epoch})")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in col):
            raise ValueError(f"history[{key!r}] holds a value that is not a finite number")
    if h["epoch"] != list(range(1, epoch + 1)):
        raise ValueError(f"history['epoch'] must be 1..{epoch}")
    best = meta["best_valid"]
    want = max(h["valid_bound"]) if epoch else None
    if best != want:
        raise ValueError(f"best_valid is {best!r} but the history's best validation bound is {want!r}")
    if "best_epoch" in meta and meta["best_epoch"] != _best_epoch(h):  # absent in checkpoints of npvae 0.1
        raise ValueError(f"best_epoch is {meta['best_epoch']!r} but the history's best is at epoch {_best_epoch(h)!r}")
