"""Burda et al. 2016's two-stochastic-layer VAE: its architecture, parameters and the four networks' forward passes.

Inference   q(z1|x)  = N(mu1, diag(exp(lv1))),  [mu1, lv1] = enc1(x):   D  -> hidden1 -> 2 Z1
            q(z2|z1) = N(mu2, diag(exp(lv2))),  [mu2, lv2] = enc2(z1):  Z1 -> hidden2 -> 2 Z2 (at the sampled z1)
Generative  p(z2) = N(0, I),  p(z1|z2) = N(mp, diag(exp(lvp))),  [mp, lvp] = dec2(z2):  Z2 -> reversed(hidden2) -> 2 Z1
            p(x|z1) from dec1(z1): Z1 -> reversed(hidden1) -> D_out (the likelihood's out_dim(D)).
(Burda et al. 2016, section 5: 784-200-200-100 and 100-100-50, i.e. TwoLayerArch.parse("784-200-200-100:100-100-50").)
The bounds and their gradients are npvae.two_layer_objective's. Parameters are plain containers
(`TwoLayerParams` of tuples of `Dense`), as in npvae.model. Shapes: x (N, D); mu1, lv1 (N, Z1);
z1, mp, lvp (K, N, Z1); mu2, lv2, z2 (K, N, Z2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import numpy as np

from . import _validate
from .gaussian import std
from .layers import Dense
from .likelihoods import Likelihood
from .mlp import mlp_forward_rows, mlp_init
from .model import Arch, check_arrays, with_output_bias
from .model import flatten as model_flatten

PARTS = ("enc1", "enc2", "dec2", "dec1")  # the order of TwoLayerParams, param_names and flatten


@dataclass(frozen=True)
class TwoLayerArch:
    """The four networks' sizes (module docstring); activation and likelihood as in npvae.model.Arch."""

    data_dim: int
    hidden1: tuple[int, ...]
    latent1: int
    hidden2: tuple[int, ...]
    latent2: int
    activation: str = "tanh"
    likelihood: Likelihood = Likelihood()
    FAMILY: ClassVar[str] = "two-layer"  # npvae.models' key

    def __post_init__(self):
        for name in ("hidden1", "hidden2"):
            if not isinstance(getattr(self, name), tuple):
                raise ValueError(f"{name} must be a tuple of layer sizes, got {getattr(self, name)!r}")
        Arch(self.data_dim, self.hidden1, self.latent1, self.activation, self.likelihood)  # layer 1's checks, once
        _validate.positive_int("latent2", self.latent2)
        for h in self.hidden2:
            _validate.positive_int("hidden layer size", h)

    @classmethod
    def parse(cls, spec: str, **kw) -> "TwoLayerArch":
        """'784-200-200-100:100-100-50' -> TwoLayerArch(784, (200, 200), 100, (100, 100), 50): D-hidden1...-Z1:hidden2...-Z2."""
        usage = "a two-layer architecture looks like '784-200-200-100:100-100-50' (D-hidden1...-Z1:hidden2...-Z2)"
        if not isinstance(spec, str) or spec.count(":") != 1:
            raise ValueError(f"{usage}, with exactly one ':'; got {spec!r}")
        first, second = spec.split(":")
        try:
            s1 = [int(s) for s in first.split("-")]
            s2 = [int(s) for s in second.split("-")]
        except ValueError:
            raise ValueError(f"{usage}; got {spec!r}") from None
        if len(s1) < 2:
            raise ValueError(f"{usage}: the part before ':' needs at least D and Z1; got {spec!r}")
        return cls(s1[0], tuple(s1[1:-1]), s1[-1], tuple(s2[:-1]), s2[-1], **kw)

    @property
    def spec(self) -> str:
        """The inverse of `parse`."""
        return "-".join(map(str, (self.data_dim, *self.hidden1, self.latent1))) + ":" + "-".join(
            map(str, (*self.hidden2, self.latent2))
        )

    @property
    def noise_dim(self) -> int:
        """Z1 + Z2: the model's noise is one array eps (K, N, Z1 + Z2) = [eps1, eps2] along the last axis (`split_noise`)."""
        return self.latent1 + self.latent2

    def split_noise(self, eps):
        """eps (K, N, Z1 + Z2) -> (eps1 (K, N, Z1), eps2 (K, N, Z2)), views."""
        return eps[..., : self.latent1], eps[..., self.latent1 :]

    def widths(self) -> tuple[list[int], list[int]]:
        """(widths of the layers run once per point, of those run once per sample), for npvae.memory's estimates."""
        s = self.sizes()
        return list(s["enc1"][1:]), list(s["enc2"][1:]) + list(s["dec2"][1:]) + list(s["dec1"][1:])

    def sizes(self) -> dict[str, tuple[int, ...]]:
        """Each network's layer sizes, in PARTS order."""
        D, Z1, Z2 = self.data_dim, self.latent1, self.latent2
        return {
            "enc1": (D, *self.hidden1, 2 * Z1),
            "enc2": (Z1, *self.hidden2, 2 * Z2),
            "dec2": (Z2, *reversed(self.hidden2), 2 * Z1),
            "dec1": (Z1, *reversed(self.hidden1), self.likelihood.out_dim(D)),
        }


class TwoLayerParams(NamedTuple):
    """The four MLPs' layers; gradients use the same container."""

    enc1: tuple[Dense, ...]
    enc2: tuple[Dense, ...]
    dec2: tuple[Dense, ...]
    dec1: tuple[Dense, ...]


def init_params(arch: TwoLayerArch, rng: np.random.Generator, dtype=np.float64, output_bias=None) -> TwoLayerParams:
    """Fresh parameters from a passed-in Generator, drawn in PARTS order (npvae.mlp.mlp_init: He for ReLU, else Glorot).

    Biases start at 0, except dec1's output bias where `output_bias`: (D_out,) is given (as npvae.model.init_params).
    """
    _validate.generator("rng", rng)
    dtype = np.dtype(dtype)
    if dtype not in _validate.FLOAT_DTYPES:
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    enc1, enc2, dec2, dec1 = (mlp_init(rng, sizes, arch.activation, dtype) for sizes in arch.sizes().values())
    if output_bias is not None:
        dec1 = with_output_bias(dec1, output_bias, dtype)
    return TwoLayerParams(enc1, enc2, dec2, dec1)


def param_names(arch: TwoLayerArch) -> list[str]:
    """Names in `flatten` order: 'enc1.0.W', 'enc1.0.b', ..., 'dec1.L.b'."""
    return [f"{part}.{i}.{a}" for part, s in arch.sizes().items() for i in range(len(s) - 1) for a in ("W", "b")]


def param_shapes(arch: TwoLayerArch) -> list[tuple[int, ...]]:
    """Shapes in `flatten` order."""
    return [shape for s in arch.sizes().values() for i in range(len(s) - 1) for shape in ((s[i], s[i + 1]), (s[i + 1],))]


flatten = model_flatten  # [W, b, W, b, ...] in PARTS order (the order of `param_names`): the same loop over parts and layers


def unflatten(arch: TwoLayerArch, arrays) -> TwoLayerParams:
    """Inverse of `flatten`."""
    arrays = list(arrays)
    parts, i = [], 0
    for sizes in arch.sizes().values():
        n = len(sizes) - 1
        parts.append(tuple(Dense(arrays[i + 2 * j], arrays[i + 2 * j + 1]) for j in range(n)))
        i += 2 * n
    return TwoLayerParams(*parts)


def check_params(arch: TwoLayerArch, params: TwoLayerParams) -> np.dtype:
    """Validate parameter shapes, dtype (one for all) and finiteness against `arch`; return the dtype."""
    return check_arrays(params, TwoLayerParams, arch.spec, param_names(arch), param_shapes(arch))


# ---- the networks' forward passes (their backward is mlp_backward on the cache) ----

def gaussian_head(layers, h, activation: str):
    """An MLP whose output is [mean, log_var] of a diagonal Gaussian: (..., H_in) -> ((..., Z), (..., Z), cache)."""
    out, cache = mlp_forward_rows(layers, h, activation)  # (..., 2Z)
    Z = out.shape[-1] // 2
    return out[..., :Z], out[..., Z:], cache


def decode1(params: TwoLayerParams, arch: TwoLayerArch, z1):
    """The likelihood's parameters (logits or Gaussian parameters): z1 (K, N, Z1) -> ((K, N, D_out), cache)."""
    return mlp_forward_rows(params.dec1, z1, arch.activation)


# ---- what pictures and evaluation read, the same for every family (npvae.models) ----

def decode_x(params: TwoLayerParams, arch: TwoLayerArch, z1):
    """The likelihood's parameters from z1: (..., Z1) -> (..., D_out)."""
    return decode1(params, arch, z1)[0]


def encoder_mean(params: TwoLayerParams, arch: TwoLayerArch, x):
    """The mean of q(z1|x), the latent that x's decoder reads: x (N, D) -> (N, Z1)."""
    return gaussian_head(params.enc1, x, arch.activation)[0]


def prior_latent(params: TwoLayerParams, arch: TwoLayerArch, rng: np.random.Generator, n: int, dtype):
    """n draws of z1 from the model: z2 ~ N(0, I), then z1 ~ p(z1|z2), (n, Z1); and how, in words."""
    z2 = rng.standard_normal((n, arch.latent2), dtype=dtype)
    mp, lvp, _ = gaussian_head(params.dec2, z2, arch.activation)
    return mp + std(lvp) * rng.standard_normal(mp.shape, dtype=dtype), "z2 ~ N(0, I), z1 ~ p(z1|z2)"
