"""The training configuration: one frozen dataclass; the CLI turns its fields into options.

Every random draw of a run comes from Generators spawned from `seed` (see `streams`), so a config
fully determines a run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from .. import _validate
from ..backends import BACKENDS
from ..likelihoods import LIKELIHOODS, Likelihood
from ..vae import models
from ..vae.model import Arch
from ..vae.inputs import check_free_bits, check_options

LR_SCHEDULES = ("constant", "burda")
OUTPUT_BIASES = ("data", "zero")  # the decoder's output bias at initialisation (likelihoods.output_bias_from_data)
# Fields added after configs were first written, with the value that reproduces runs made before them: a config
# that lacks one was made by a version that always did what this value says.
BEFORE_FIELD = {"output_bias": "zero"}
# Independent random streams of one run, in spawn order (append only: reordering changes every run).
STREAMS = ("init", "shuffle", "eps", "binarize", "valid")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run; defaults train on the embedded digits in seconds."""

    dataset: str = "digits"
    binarize: bool = False  # dynamic binarisation of grey-level data (a fresh draw every epoch)
    arch: str | None = None  # "D-hidden...-Z"; None: "<D>-128-2" for the data set's D
    activation: str = "tanh"
    likelihood: str = "bernoulli"
    sigma2: float = 1.0  # variance of the fixed-variance Gaussian likelihood
    min_log_var: float = -6.0  # soft floor of the learned Gaussian log-variance
    bound: str = "elbo"
    k: int = 1  # importance samples per data point (K)
    kl: str = "analytic"
    estimator: str = "reparam"
    kl_weight: float = 1.0  # final KL weight beta
    warmup_epochs: int = 0  # beta rises linearly from 0 to kl_weight over this many epochs
    free_bits: float = 0.0  # nats per latent dimension (analytic KL only)
    batch_size: int = 100
    epochs: int = 100
    lr: float = 1e-3
    lr_schedule: str = "constant"  # or "burda": lr 10^(-i/7) in stage i of 3^i epochs (Burda et al. 2016, section 5)
    beta1: float = 0.9
    beta2: float = 0.999
    adam_eps: float = 1e-8
    dtype: str = "float64"
    seed: int = 0
    valid_k: int = 0  # importance samples for the per-epoch validation bound; 0: the training bound's own K
    output_bias: str = "data"  # "data": the decoder starts at the training data's marginals (Burda et al.); "zero": at 0
    backend: str = "numpy"  # where the kernels run (npvae.backends): numpy, numba, cuda or auto; the numbers are the same

    def __post_init__(self):
        _validate.choice("likelihood", self.likelihood, LIKELIHOODS)
        _validate.choice("dtype", self.dtype, ("float32", "float64"))
        _validate.choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _validate.choice("backend", self.backend, BACKENDS)
        _validate.choice("output_bias", self.output_bias, OUTPUT_BIASES)
        for name in ("k", "batch_size", "epochs"):
            _validate.positive_int(name, getattr(self, name))
        for name in ("warmup_epochs", "seed", "valid_k"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {v!r}")
        _validate.positive_scalar("lr", self.lr)
        _validate.positive_scalar("adam_eps", self.adam_eps)
        for name in ("beta1", "beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)!r}")
        check_options(self.bound, self.kl, self.estimator, self.kl_weight, self.free_bits)
        if self.warmup_epochs and self.bound == "iwae":
            raise ValueError("KL warm-up applies to the ELBO only")

    def make_arch(self, data_dim: int) -> Arch:
        """The architecture for data of dimension D (npvae.vae.models.parse: one stochastic layer, or two with a ':'); the spec's first number must be D."""
        spec = self.arch or f"{data_dim}-128-2"
        arch = models.parse(spec, activation=self.activation, likelihood=self.likelihood_spec())
        if arch.data_dim != data_dim:
            raise ValueError(f"--arch {spec} starts with D={arch.data_dim} but the data set has D={data_dim}")
        check_free_bits(arch, self.free_bits)
        return arch

    def likelihood_spec(self) -> Likelihood:
        return Likelihood(self.likelihood, sigma2=self.sigma2, min_log_var=self.min_log_var)

    def kl_weight_at(self, epoch: int, step_in_epoch: int, steps_per_epoch: int) -> float:
        """Linear warm-up: beta = kl_weight * min(1, (epoch + step / steps) / warmup_epochs)."""
        if self.warmup_epochs == 0:
            return self.kl_weight
        progress = (epoch + step_in_epoch / steps_per_epoch) / self.warmup_epochs
        return self.kl_weight * min(1.0, progress)

    def lr_at(self, epoch: int) -> float:
        """Learning rate during epoch `epoch` (0-based); "burda": stage i lasts 3^i epochs at lr * 10^(-i/7)."""
        if self.lr_schedule == "constant":
            return self.lr
        i, end = 0, 1
        while epoch >= end:
            i += 1
            end += 3**i
        return self.lr * 10.0 ** (-i / 7)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """Refuse unknown keys: a config from another version must not be half-read; a missing later field means its old behaviour."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown config field(s): {', '.join(sorted(unknown))}")
        return cls(**{**BEFORE_FIELD, **d})

    def streams(self) -> dict[str, np.random.Generator]:
        """One independent Generator per purpose, spawned from `seed`."""
        children = np.random.SeedSequence(self.seed).spawn(len(STREAMS))
        return {name: np.random.default_rng(c) for name, c in zip(STREAMS, children)}
