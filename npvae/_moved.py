"""Old import paths of modules that moved into subpackages (the paths of npvae 0.1; modules written since never had
one): importing one gives the module at its new path, with a DeprecationWarning; they go in the next version."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

MOVED = {f"npvae.{old}": f"npvae.{new}" for old, new in {
    "stable": "maths.stable", "gaussian": "maths.gaussian", "lme": "maths.lme", "estimators": "maths.estimators",
    "backends.scalar": "maths.scalar", "backends.codes": "maths.codes",
    "layers": "nn.layers", "mlp": "nn.mlp", "optim": "nn.optim",
    "data": "store.data", "data_files": "store.data_files", "_download": "store._download", "checkpoint": "store.checkpoint",
    "safe_npz": "store.safe_npz", "run_dir": "store.run_dir",
    "model": "vae.model", "models": "vae.models", "inputs": "vae.inputs", "memory": "vae.memory",
    "importance": "vae.importance",
    "linear_vae": "oracle.linear_vae", "linear_gaussian": "oracle.linear_chain",
    "config": "training.config", "train_state": "training.state", "train": "training.loop",
    "evaluate": "evaluation.evaluate", "eval_chunks": "evaluation.chunks", "cluster": "evaluation.cluster",
    "gradcheck": "checks.gradcheck", "check": "checks.check", "check_values": "checks.values",
    "verify_layouts": "checks.verify_layouts", "_canvas": "pictures.canvas", "plots": "pictures.plots",
    "sweep_spec": "sweeps.spec", "sweep_tasks": "sweeps.tasks", "sweep_progress": "sweeps.progress",
    "sweep_report": "sweeps.report", "sweep": "sweeps.driver",
    "cli_args": "cli.args", "cli_check": "cli.check", "cli_sweep": "cli.sweep",
}.items()}


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old path and loads it as the module at the new one (the same object: patching either patches both)."""

    def find_spec(self, name, path=None, target=None):
        return importlib.util.spec_from_loader(name, self) if name in MOVED else None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        name = module.__spec__.name
        warnings.warn(f"{name} moved to {MOVED[name]}; the old path goes in the next version", DeprecationWarning, stacklevel=2)
        sys.modules[name] = importlib.import_module(MOVED[name])


def install() -> None:
    if not any(isinstance(f, _Alias) for f in sys.meta_path):
        sys.meta_path.append(_Alias())
