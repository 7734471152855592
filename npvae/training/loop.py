"""The training loop: Adam on minus the bound, a validation bound every epoch, safe checkpoints, exact resume.

A run directory (npvae.store.run_dir) holds `config.json`, `last.safetensors` (end of the latest epoch),
`best.safetensors` (best validation bound), `history.json`, `data.json`, and, if training diverged,
`diverged.json`. A checkpoint holds parameters, Adam's state, epoch and step, and every Generator's
state, so resuming from `last` continues the run bit for bit: 2 epochs straight and 1 + 1 resumed give
identical parameters. One process at a time writes a run (an exclusive lock); a kill at any instant
leaves the files consistent (see npvae.store.run_dir), and Ctrl-C stops with TrainingInterrupted.

The loop reaches the backend through its stepper (npvae.backends.get(name).stepper): for numpy and
numba, npvae.backends.host_stepper.HostStepper runs the backend's bound and Adam on host arrays; for
cuda, npvae.backends.cuda_train.DeviceTrainer keeps parameters, Adam's state and the epoch's data on
the device, and only eps and a few scalars cross per step. The data is checked once per epoch.

Where stderr is a terminal, one tqdm bar counts the run's batches (npvae.training.progress), with the last validation bound.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np

from ..store import run_dir as rd
from ..store.atomic import write_json
from ..vae.memory import check_fits, eval_chunk_bytes, step_bytes
from ..backends import get as get_backend
from ..backends import resolve_training
from .config import TrainConfig
from .progress import above, bar_text, run_bar
from ..store.data import Dataset, as_float, binarize_dynamic
from ..vae.model import Arch
from ..vae.inputs import check_x_storage
from ..vae.models import check_params, param_names, unflatten
from .state import TrainState, load_state, new_state, read_meta, save_state  # noqa: F401  (read_meta: this module's name too)


class TrainingDiverged(RuntimeError):
    """A non-finite bound, gradient or parameter: training stopped; checkpoints on disk are from the last completed epoch."""


class AbsurdBoundWarning(RuntimeWarning):
    """The bound is finite but absurdly low: training is blowing up (too large a learning rate, most often)."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (or a KeyboardInterrupt with a `signum`: SIGTERM, SIGHUP, see npvae.cli) during training: the epoch in
    progress was abandoned; the message says what is on disk and how to resume; `signum` which signal stopped it."""

    def __init__(self, message: str, signum: int = 2):
        super().__init__(message)
        self.signum = signum


def _fixed_valid(config: TrainConfig, dataset: Dataset):
    """The validation split the bound is measured on: binarised once, from the seed, for dynamically binarised data."""
    x = dataset.valid
    if dataset.dynamic_binarize:
        x = binarize_dynamic(x, np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(1000,))))
    return x


def validation_bound(params, arch: Arch, config: TrainConfig, x, rng, backend: str = "numpy") -> float:
    """Mean bound on the validation split (training bound, K = valid_k or k), in batches so memory stays bounded.

    x: float of the parameters' dtype, or a compact binary split (uint8, npvae.store.data), cast batch by batch. Checked
    once here; the batches go to the backend's core. The noise is drawn batch by batch, (K, batch, noise_dim) each.
    """
    dtype = check_params(arch, params)
    check_x_storage(arch, x, dtype)
    k = config.valid_k or config.k
    bound = "iwae" if k > 1 and config.bound == "iwae" else "elbo"
    kl = "mc" if bound == "iwae" else config.kl
    core = get_backend(backend).bound_value
    total = 0.0
    for i in range(0, x.shape[0], config.batch_size):
        xb = as_float(x[i : i + config.batch_size], dtype)
        eps = rng.standard_normal((k, xb.shape[0], arch.noise_dim), dtype=dtype)
        total += float(core(params, arch, xb, eps, bound, kl).sum())
    return total / x.shape[0]


def _diverged(run_dir: Path, arch: Arch, state: TrainState, what: str, value, grads, params) -> TrainingDiverged:
    """Write diverged.json (what went non-finite, where, and the magnitudes of params) and build the exception."""
    names = param_names(arch)
    last = rd.checkpoint_path(run_dir, "last")
    with np.errstate(all="ignore"):
        info = {
            "what": what,
            "epoch": state.epoch,
            "step": state.step,
            "bound_nonfinite": int(np.size(value) - np.count_nonzero(np.isfinite(value))),
            "grads_nonfinite": {n: int(g.size - np.count_nonzero(np.isfinite(g))) for n, g in zip(names, grads) if not np.all(np.isfinite(g))},
            # numba and cuda update in place: after a non-finite gradient their parameters hold it too
            "params_nonfinite": {n: int(p.size - np.count_nonzero(np.isfinite(p))) for n, p in zip(names, params) if not np.all(np.isfinite(p))},
            "param_max_abs": {n: float(np.max(np.abs(p[np.isfinite(p)]), initial=0.0)) for n, p in zip(names, params)},  # finite entries
            "last_good_checkpoint": str(last) if last.exists() else None,
        }
    write_json(run_dir / "diverged.json", info)
    kept = (f"the checkpoint of epoch {state.epoch} ({last}) is untouched" if last.exists()
            else "no epoch was completed, so there is no checkpoint")
    return TrainingDiverged(
        f"non-finite {what} at epoch {state.epoch + 1}, step {state.step}: training stopped; {kept}; "
        f"details in {run_dir / 'diverged.json'} (try a smaller --lr, or a Gaussian likelihood's larger --min-log-var)"
    )


def _stepper(config: TrainConfig, arch: Arch, backend: str, state: TrainState):
    """The backend's stepper (npvae.backends.protocol), starting from state's parameters and Adam state."""
    b = get_backend(backend)
    return b.stepper(b, arch, state.params, state.adam, batch_size=config.batch_size, bound=config.bound,
                     kl=config.kl, estimator=config.estimator, free_bits=config.free_bits,
                     betas=(config.beta1, config.beta2), adam_eps=config.adam_eps)


# A per-point bound below -ABSURD_NATS_PER_DIM * D means logits of about that size confidently wrong in every dimension:
# not a model being fitted (a random initialisation starts near -0.7 nats per binary pixel) but one blowing up.
ABSURD_NATS_PER_DIM = 1e3


def _check_data(config: TrainConfig, dataset: Dataset) -> None:
    """What the data must satisfy for this config: dtype, non-empty splits, binary values for a Bernoulli likelihood."""
    if dataset.dtype != np.dtype(config.dtype):
        raise ValueError(f"data set is {dataset.dtype} but the config asks for {config.dtype}")
    for split in ("train", "valid"):
        if dataset.split(split).shape[0] == 0:
            raise ValueError(f"{dataset.name}: the {split} split is empty; training needs at least one {split} point")
    if config.likelihood == "bernoulli" and not (dataset.binary or dataset.dynamic_binarize):
        x = dataset.train
        if np.all((x >= 0) & (x <= 1)):
            raise ValueError(f"the Bernoulli likelihood needs binary data; {dataset.name} is grey-level: add --binarize")
        raise ValueError(f"the Bernoulli likelihood needs binary data, and {dataset.name}'s values are not in [0, 1]: "
                         "use --likelihood gaussian or gaussian-learned")


def preflight(config: TrainConfig, dataset: Dataset) -> Arch:
    """Everything a run is checked for before its directory is touched: the data, the architecture, the memory; returns the Arch."""
    _check_data(config, dataset)
    arch = config.make_arch(dataset.train.shape[1])
    resolve_training(config.backend, arch)  # refuses a backend that cannot train this model
    check_memory(config, arch)
    return arch


def check_memory(config: TrainConfig, arch: Arch, available: int | None = None) -> None:
    """Refuse (memory.MemoryRequestError) a training step or validation batch larger than the available memory."""
    itemsize = np.dtype(config.dtype).itemsize
    check_fits(f"a training step ({arch.spec}, batch {config.batch_size}, K={config.k})",
               step_bytes(arch, config.batch_size, config.k, itemsize), "lower -k, --batch-size or the --arch sizes", available)
    vk = config.valid_k or config.k
    check_fits(f"a validation batch (batch {config.batch_size}, K={vk})",
               eval_chunk_bytes(arch, config.batch_size, vk, itemsize), "lower --valid-k, -k or --batch-size", available)


def train(config: TrainConfig, dataset: Dataset, run_dir, *, resume: bool = False, progress: bool = True, log=print,
          data_source: dict | None = None, epoch_lines: bool = True, on_epoch=None, on_start=None) -> TrainState:
    """Train (or continue) a run in `run_dir` until `config.epochs` epochs are done; returns the final state.

    Everything is checked before run_dir is touched: the data, the architecture, the memory a step needs.
    A new run needs run_dir absent, empty, or made by npvae with no completed epoch (run_dir.claim_new).
    data_source: recorded in data.json, so that eval, sample and --resume find the data again.
    progress: a bar on stderr over all the batches of the run (progress.run_bar), where stderr is a terminal.
    epoch_lines: log one line per epoch (False: only the progress bar, which shows the last validation bound too).
    on_start: called as on_start() once run_dir is claimed and locked, before training writes into it (the CLI's header).
    on_epoch: called as on_epoch(state, seconds) after each epoch is saved, seconds its wall time, saving included (the
        CLI's time estimate).
    Raises TrainingDiverged on a non-finite step and TrainingInterrupted on Ctrl-C.
    """
    run_dir = Path(run_dir)
    if resume:
        last = rd.checkpoint_path(run_dir, "last")
        saved_config, arch, _ = load_state(last)
        # The backend changes where the kernels run, not the run (results agree to rounding; bit for bit only on the same one).
        if {**saved_config.to_dict(), "epochs": config.epochs, "backend": config.backend} != config.to_dict():
            raise ValueError("resume: the run's config differs from the one given (only --epochs may change, and --backend)")
        done = read_meta(last)["epoch"]
        if config.epochs < done:  # config.json would say fewer epochs than the checkpoints hold
            raise ValueError(f"resume: {run_dir} has trained {done} epochs, more than the {config.epochs} asked for; "
                             f"give --epochs {done} or more (the run is left as it is)")
    arch = preflight(config, dataset)
    if not resume:
        rd.claim_new(run_dir)
    with rd.RunLock(run_dir):
        if on_start is not None:
            on_start()
        rd.clean_temporaries(run_dir)
        if resume:
            _convert_legacy(run_dir, log)
            last = rd.checkpoint_path(run_dir, "last")
            note = rd.repair(run_dir, read_meta)
            if note:
                log(f"note: {note}")
            _, _, state = load_state(last)  # after the lock: another writer may have moved it on
        else:
            state = new_state(config, arch, dataset.train)
        (run_dir / "diverged.json").unlink(missing_ok=True)  # a report from an earlier attempt no longer describes this run
        write_json(run_dir / "config.json", config.to_dict())
        write_json(run_dir / "history.json", state.history)  # from the checkpoint: it may have run one epoch ahead
        if data_source is not None:
            rd.write_data_source(run_dir, data_source)
        try:
            with np.errstate(all="ignore"):  # divergence is detected from the values, and reported once, below
                _epochs(config, dataset, run_dir, arch, state, progress, log if epoch_lines else None, on_epoch)
        except KeyboardInterrupt as e:
            rd.clean_temporaries(run_dir)  # still holding the lock: nothing half-written is left for the next writer
            raise _interrupted(run_dir, state, getattr(e, "signum", 2)) from None
    return state


def _convert_legacy(run_dir: Path, log) -> None:
    """Rewrite a run of npvae 0.1 (last.npz, best.npz) as safetensors checkpoints, then remove the .npz files."""
    olds = [w for w in ("best", "last") if (run_dir / (w + rd.LEGACY_SUFFIX)).exists()]
    for w in olds:  # best first: until last.safetensors exists, readers still use the .npz pair
        config, arch, st = load_state(run_dir / (w + rd.LEGACY_SUFFIX))
        save_state(run_dir / (w + rd.SUFFIX), config, arch, st)
    for w in olds:
        (run_dir / (w + rd.LEGACY_SUFFIX)).unlink()
    if olds:
        log(f"note: converted {', '.join(w + rd.LEGACY_SUFFIX for w in olds)} (npvae 0.1) to safetensors checkpoints")


def _interrupted(run_dir: Path, state: TrainState, signum: int) -> TrainingInterrupted:
    """The message after Ctrl-C (or SIGTERM, SIGHUP): what is on disk (read back: the signal may land after an epoch ends
    and before its checkpoint is written), and the command that continues."""
    import signal

    how = "interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"
    last = rd.checkpoint_path(run_dir, "last")
    if not last.exists():
        return TrainingInterrupted(f"{how} during epoch 1: no epoch was saved; "
                                   f"start again (the same command, with --out {run_dir})", signum)
    held = read_meta(last)["epoch"]
    return TrainingInterrupted(f"{how} during epoch {held + 1}; {last} holds epoch {held}; "
                               f"continue with: npvae train --resume {run_dir}", signum)


def _epochs(config: TrainConfig, dataset: Dataset, run_dir: Path, arch: Arch, state: TrainState, progress: bool, log,
            on_epoch=None) -> None:
    """The loop over epochs; every epoch ends with history.json, then last, then best (the order run_dir relies on)."""
    if state.epoch >= config.epochs:
        return
    N = dataset.train.shape[0]
    steps_per_epoch = -(-N // config.batch_size)
    with run_bar(config, state, steps_per_epoch, progress) as bar:
        _epochs_in(config, dataset, run_dir, arch, state, bar, log, on_epoch, N, steps_per_epoch)


def _epochs_in(config: TrainConfig, dataset: Dataset, run_dir: Path, arch: Arch, state: TrainState, bar, log, on_epoch,
               N: int, steps_per_epoch: int) -> None:
    """_epochs' body, with its bar open: its count moves with each batch, its text with each epoch."""
    x_valid = _fixed_valid(config, dataset)
    dtype = np.dtype(config.dtype)
    backend = resolve_training(config.backend, arch)
    stepper = _stepper(config, arch, backend, state)
    rngs = state.rngs
    warned = False
    while state.epoch < config.epochs:
        t0 = time.perf_counter()
        x_epoch = binarize_dynamic(dataset.train, rngs["binarize"]) if dataset.dynamic_binarize else dataset.train
        order = rngs["shuffle"].permutation(N)
        stepper.start_epoch(x_epoch, order)
        bar.set_description_str(bar_text(state.epoch + 1, config.epochs, state.history["valid_bound"]), refresh=False)
        running = 0.0
        for i in range(steps_per_epoch):
            lo, hi = i * config.batch_size, min(N, (i + 1) * config.batch_size)
            eps = rngs["eps"].standard_normal((config.k, hi - lo, arch.noise_dim), dtype=dtype)
            beta = config.kl_weight_at(state.epoch, i, steps_per_epoch)
            bound, nonfinite = stepper.step(lo, hi, eps, beta, config.lr_at(state.epoch))
            if nonfinite:  # training stops; the checkpoints on disk are from the last completed epoch
                raise _diverged(run_dir, arch, state, nonfinite, *stepper.failed_step())
            state.step += 1
            running += (bound - running) / (i + 1)
            bar.set_postfix_str(f"train {running:.3f}", refresh=False)
            bar.update(1)  # redraws at most every mininterval (0.1 s): cheap however short the steps
            if not warned and bound < -ABSURD_NATS_PER_DIM * arch.data_dim:
                warned = True
                with above(bar):
                    warnings.warn(f"the bound reached {bound:.4g} nats per point at epoch {state.epoch + 1}, step {state.step} "
                                  f"(below -{ABSURD_NATS_PER_DIM:g} nats per data dimension): training is blowing up; "
                                  "try a smaller --lr", AbsurdBoundWarning, stacklevel=4)
        state.params, state.adam = stepper.state()
        valid = validation_bound(unflatten(arch, state.params), arch, config, x_valid, rngs["valid"], backend)
        if not np.isfinite(valid):
            raise _diverged(run_dir, arch, state, "validation bound", np.array([valid]), [], state.params)
        state.epoch += 1
        h = state.history
        for key, v in (("epoch", state.epoch), ("train_bound", running), ("valid_bound", valid), ("kl_weight", beta), ("seconds", time.perf_counter() - t0)):
            h[key].append(v)
        improved = valid > state.best_valid
        if improved:
            state.best_valid = valid
        write_json(run_dir / "history.json", h)
        ext = rd.SUFFIX
        save_state(run_dir / ("last" + ext), config, arch, state)
        if improved:
            save_state(run_dir / ("best" + ext), config, arch, state)
        bar.set_description_str(bar_text(state.epoch, config.epochs, h["valid_bound"]), refresh=False)
        with above(bar):  # drawn again when it ends, whatever the time since the last draw: the count and bound move here
            if log is not None:  # None: no line per epoch (the bar shows the last validation bound)
                log(f"epoch {state.epoch:>4}  train {running:10.4f}  valid {valid:10.4f}{'  *best' if improved else ''}  ({h['seconds'][-1]:.1f} s)")
            if on_epoch is not None:  # the wall time the user waits for: the checkpoints' writes too
                on_epoch(state, time.perf_counter() - t0)
