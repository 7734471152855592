"""The hierarchy of L stochastic layers (Burda et al. 2016, section 5): its architecture, parameters and networks.

Inference   q(z_1|x)       = N(mu_1, diag(exp(lv_1))),  [mu_1, lv_1] = enc_1(x):        D       -> hidden_1 -> 2 Z_1
            q(z_l|z_{l-1}) = N(mu_l, diag(exp(lv_l))),  [mu_l, lv_l] = enc_l(z_{l-1}):  Z_{l-1} -> hidden_l -> 2 Z_l
Generative  p(z_L) = N(0, I),
            p(z_{l-1}|z_l) = N(mp_l, diag(exp(lvp_l))), [mp_l, lvp_l] = dec_l(z_l):     Z_l -> reversed(hidden_l) -> 2 Z_{l-1}
            p(x|z_1) from dec_1(z_1): Z_1 -> reversed(hidden_1) -> D_out (the likelihood's out_dim(D)).
One stochastic layer l is the pair (enc_l, dec_l); L = 1 is Kingma & Welling's VAE (npvae.vae.model.Arch, whose code is
the one-layer fast path, checked equal to this one), L = 2 Burda et al.'s two-layer model:
LadderArch.parse("784-200-200-100:100-100-50") = 784-200-200-100 then 100-100-50, one ':' per layer above the first.
The bounds and their gradients are npvae.vae.ladder_objective's. Parameters: `LadderParams`, the 2L MLPs (tuples of
`Dense`) in PARTS order enc_1, ..., enc_L, dec_L, ..., dec_1. Shapes: x (N, D); mu_1, lv_1 (N, Z_1); for l >= 2
mu_l, lv_l, z_l (K, N, Z_l); z_1 (K, N, Z_1); the noise eps (K, N, Z_1 + ... + Z_L) = [eps_1, ..., eps_L].
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .. import _validate
from ..maths.gaussian import std
from ..nn.layers import Dense
from ..likelihoods import Likelihood
from ..nn.mlp import mlp_forward_rows, mlp_init
from .model import Arch, check_arrays, with_output_bias
from .model import flatten as model_flatten

USAGE = ("an L-layer architecture looks like '784-200-200-100:100-100-50' (D-hidden_1...-Z_1, then hidden_l...-Z_l "
         "for each layer above, after a ':')")


@dataclass(frozen=True)
class LadderArch:
    """Sizes of the L stochastic layers (module docstring): hidden[l - 1] and latents[l - 1] are layer l's."""

    data_dim: int
    hidden: tuple[tuple[int, ...], ...]
    latents: tuple[int, ...]
    activation: str = "tanh"
    likelihood: Likelihood = Likelihood()
    FAMILY: ClassVar[str] = "ladder"  # npvae.vae.models' key

    def __post_init__(self):
        if not isinstance(self.latents, tuple) or not isinstance(self.hidden, tuple) or not self.latents:
            raise ValueError(f"latents and hidden must be tuples, one entry a layer; got {self.latents!r}, {self.hidden!r}")
        if len(self.hidden) != len(self.latents):
            raise ValueError(f"{len(self.latents)} latent sizes need as many hidden tuples, got {len(self.hidden)}")
        for h in self.hidden:
            if not isinstance(h, tuple):
                raise ValueError(f"each layer's hidden sizes must be a tuple, got {h!r}")
            for n in h:
                _validate.positive_int("hidden layer size", n)
        for z in self.latents:
            _validate.positive_int("latent size", z)
        Arch(self.data_dim, self.hidden[0], self.latents[0], self.activation, self.likelihood)  # the remaining checks, once

    @classmethod
    def parse(cls, spec: str, **kw) -> "LadderArch":
        """'784-200-200-100:100-100-50' -> LadderArch(784, ((200, 200), (100, 100)), (100, 50))."""
        if not isinstance(spec, str):
            raise ValueError(f"{USAGE}; got {spec!r}")
        try:
            parts = [[int(s) for s in part.split("-")] for part in spec.split(":")]
        except ValueError:
            raise ValueError(f"{USAGE}; got {spec!r}") from None
        if len(parts[0]) < 2:
            raise ValueError(f"{USAGE}: the first part needs at least D and Z_1; got {spec!r}")
        first, above = parts[0][1:], parts[1:]
        return cls(parts[0][0], tuple(tuple(p[:-1]) for p in (first, *above)), tuple(p[-1] for p in (first, *above)), **kw)

    @property
    def L(self) -> int:
        """The number of stochastic layers."""
        return len(self.latents)

    @property
    def spec(self) -> str:
        """The inverse of `parse`."""
        return ":".join("-".join(map(str, (*((self.data_dim,) if l == 0 else ()), *h, z)))
                        for l, (h, z) in enumerate(zip(self.hidden, self.latents)))

    @property
    def noise_dim(self) -> int:
        """Z_1 + ... + Z_L: the noise is one array eps (K, N, noise_dim) = [eps_1, ..., eps_L] along its last axis."""
        return sum(self.latents)

    def split_noise(self, eps) -> list:
        """eps (K, N, Z_1 + ... + Z_L) -> [eps_1 (K, N, Z_1), ..., eps_L (K, N, Z_L)], views."""
        ends = np.cumsum(self.latents)
        return [eps[..., e - z:e] for z, e in zip(self.latents, ends)]

    def parts(self) -> list[str]:
        """PARTS order: 'enc1', ..., 'encL', 'decL', ..., 'dec1'."""
        return [f"enc{l}" for l in range(1, self.L + 1)] + [f"dec{l}" for l in range(self.L, 0, -1)]

    def sizes(self) -> dict[str, tuple[int, ...]]:
        """Each network's layer sizes, in PARTS order."""
        below = (self.data_dim, *self.latents)  # below[l - 1]: the input of enc_l
        s = {f"enc{l}": (below[l - 1], *self.hidden[l - 1], 2 * self.latents[l - 1]) for l in range(1, self.L + 1)}
        for l in range(self.L, 1, -1):
            s[f"dec{l}"] = (self.latents[l - 1], *reversed(self.hidden[l - 1]), 2 * self.latents[l - 2])
        s["dec1"] = (self.latents[0], *reversed(self.hidden[0]), self.likelihood.out_dim(self.data_dim))
        return s

    def widths(self) -> tuple[list[int], list[int]]:
        """(widths of the layers run once per point, of those run once per sample), for npvae.vae.memory's estimates."""
        s = self.sizes()
        return list(s["enc1"][1:]), [w for part in self.parts()[1:] for w in s[part][1:]]

    def __getattr__(self, name: str):
        """Layer l's sizes by the two-layer model's names: latent1, hidden2, ..."""
        if name.startswith("_") or name in ("latents", "hidden"):  # not yet set (copy, unpickling)
            raise AttributeError(name)
        for field, values in (("latent", "latents"), ("hidden", "hidden")):
            if name.startswith(field) and name[len(field):].isdigit() and 1 <= int(name[len(field):]) <= len(self.latents):
                return getattr(self, values)[int(name[len(field):]) - 1]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


class LadderParams(tuple):
    """The 2L MLPs' layers in PARTS order (enc1, ..., encL, decL, ..., dec1), each a tuple of Dense; gradients alike.

    params.enc1, params.dec2, ... name the parts, as the two-layer model's NamedTuple did.
    """

    def __new__(cls, *parts):
        if len(parts) < 2 or len(parts) % 2:
            raise ValueError(f"LadderParams needs 2 L parts (enc1..encL, decL..dec1), got {len(parts)}")
        return super().__new__(cls, parts)

    def __getnewargs__(self):
        return tuple(self)

    @property
    def L(self) -> int:
        return len(self) // 2

    def enc(self, l: int):
        """enc_l's layers, l = 1..L."""
        return self[l - 1]

    def dec(self, l: int):
        """dec_l's layers, l = 1..L."""
        return self[2 * self.L - l]

    @property
    def _fields(self) -> tuple[str, ...]:
        """The parts' names in PARTS order, as a NamedTuple's (the two-layer model's were one)."""
        return tuple(f"enc{l}" for l in range(1, self.L + 1)) + tuple(f"dec{l}" for l in range(self.L, 0, -1))

    def _replace(self, **parts) -> "LadderParams":
        """A copy with the named parts replaced, as a NamedTuple's _replace."""
        unknown = set(parts) - set(self._fields)
        if unknown:
            raise ValueError(f"LadderParams has no part {sorted(unknown)}; its parts are {', '.join(self._fields)}")
        return LadderParams(*(parts.get(name, part) for name, part in zip(self._fields, self)))

    def __getattr__(self, name: str):
        for kind in ("enc", "dec"):
            if name.startswith(kind) and name[3:].isdigit() and 1 <= int(name[3:]) <= self.L:
                return getattr(self, kind)(int(name[3:]))
        raise AttributeError(f"'LadderParams' object has no attribute {name!r}")

    def __repr__(self):
        return f"LadderParams(L={self.L}, {', '.join(f'{len(p)} Dense' for p in self)})"


def init_params(arch: LadderArch, rng: np.random.Generator, dtype=np.float64, output_bias=None) -> LadderParams:
    """Fresh parameters from a passed-in Generator, drawn in PARTS order (npvae.nn.mlp.mlp_init: He for ReLU, else Glorot).

    Biases start at 0, except dec1's output bias where `output_bias`: (D_out,) is given (as npvae.vae.model.init_params).
    """
    _validate.generator("rng", rng)
    dtype = np.dtype(dtype)
    if dtype not in _validate.FLOAT_DTYPES:
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    parts = [mlp_init(rng, sizes, arch.activation, dtype) for sizes in arch.sizes().values()]
    if output_bias is not None:
        parts[-1] = with_output_bias(parts[-1], output_bias, dtype)
    return LadderParams(*parts)


def param_names(arch: LadderArch) -> list[str]:
    """Names in `flatten` order: 'enc1.0.W', 'enc1.0.b', ..., 'dec1.M.b' (the two-layer model's, for L = 2)."""
    return [f"{part}.{i}.{a}" for part, s in arch.sizes().items() for i in range(len(s) - 1) for a in ("W", "b")]


def param_shapes(arch: LadderArch) -> list[tuple[int, ...]]:
    """Shapes in `flatten` order."""
    return [shape for s in arch.sizes().values() for i in range(len(s) - 1) for shape in ((s[i], s[i + 1]), (s[i + 1],))]


flatten = model_flatten  # [W, b, W, b, ...] in PARTS order (the order of `param_names`)


def unflatten(arch: LadderArch, arrays) -> LadderParams:
    """Inverse of `flatten`."""
    arrays = list(arrays)
    parts, i = [], 0
    for sizes in arch.sizes().values():
        n = len(sizes) - 1
        parts.append(tuple(Dense(arrays[i + 2 * j], arrays[i + 2 * j + 1]) for j in range(n)))
        i += 2 * n
    return LadderParams(*parts)


def check_params(arch: LadderArch, params: LadderParams) -> np.dtype:
    """Validate parameter shapes, dtype (one for all) and finiteness against `arch`; return the dtype."""
    return check_arrays(params, LadderParams, arch.spec, param_names(arch), param_shapes(arch))


# ---- the networks' forward passes (their backward is mlp_backward on the cache) ----

def gaussian_head(layers, h, activation: str, mlp=mlp_forward_rows):
    """An MLP whose output is [mean, log_var] of a diagonal Gaussian: (..., H_in) -> ((..., Z), (..., Z), cache).

    mlp(layers, h, activation) -> (out (..., 2 Z), cache): NumPy's by default, a backend's in ladder_objective.forward."""
    out, cache = mlp(layers, h, activation)
    Z = out.shape[-1] // 2
    return out[..., :Z], out[..., Z:], cache


def encoder_means(params: LadderParams, arch: LadderArch, x) -> list:
    """Each layer's encoder mean along the mean path, mu_1(x), mu_2(mu_1), ...: x (N, D) -> [(N, Z_l)] (active units)."""
    means, h = [], x
    for l in range(1, arch.L + 1):
        h = gaussian_head(params.enc(l), h, arch.activation)[0]
        means.append(h)
    return means


# ---- what pictures and evaluation read, the same for every family (npvae.vae.models) ----

def decode_x(params: LadderParams, arch: LadderArch, z1):
    """The likelihood's parameters from z1: (..., Z_1) -> (..., D_out)."""
    return mlp_forward_rows(params.dec(1), z1, arch.activation)[0]


def encoder_mean(params: LadderParams, arch: LadderArch, x):
    """The mean of q(z_1|x), the latent that x's decoder reads: x (N, D) -> (N, Z_1)."""
    return gaussian_head(params.enc(1), x, arch.activation)[0]


def prior_latent(params: LadderParams, arch: LadderArch, rng: np.random.Generator, n: int, dtype):
    """n draws of z_1 from the model, z_L ~ N(0, I) then down the chain, (n, Z_1); and how, in words."""
    z = rng.standard_normal((n, arch.latents[-1]), dtype=dtype)
    for l in range(arch.L, 1, -1):
        mp, lvp, _ = gaussian_head(params.dec(l), z, arch.activation)
        z = mp + std(lvp) * rng.standard_normal(mp.shape, dtype=dtype)
    how = " ".join(f"z{l} ~ p(z{l}|z{l + 1})," for l in range(arch.L - 1, 0, -1))
    return z, f"z{arch.L} ~ N(0, I), {how}".rstrip(", ") if arch.L > 1 else "z1 ~ N(0, I)"


# ---- the two-layer names of npvae 0.2, deprecated: they go in the next version ----

class TwoLayerArch(LadderArch):
    """Deprecated: LadderArch(data_dim, (hidden1, hidden2), (latent1, latent2), ...), which this returns."""

    def __new__(cls, data_dim, hidden1, latent1, hidden2, latent2, activation="tanh", likelihood=Likelihood()):
        warnings.warn("TwoLayerArch is deprecated: use LadderArch (L stochastic layers); it goes in the next version",
                      DeprecationWarning, stacklevel=2)
        return LadderArch(data_dim, (hidden1, hidden2), (latent1, latent2), activation, likelihood)

    @staticmethod
    def parse(spec: str, **kw) -> LadderArch:
        warnings.warn("TwoLayerArch.parse is deprecated: use LadderArch.parse", DeprecationWarning, stacklevel=2)
        arch = LadderArch.parse(spec, **kw)
        if arch.L != 2:
            raise ValueError(f"a two-layer architecture has exactly one ':'; got {spec!r}")
        return arch


def TwoLayerParams(enc1, enc2, dec2, dec1) -> LadderParams:
    """Deprecated: LadderParams(enc1, enc2, dec2, dec1), which this returns."""
    warnings.warn("TwoLayerParams is deprecated: use LadderParams; it goes in the next version", DeprecationWarning, stacklevel=2)
    return LadderParams(enc1, enc2, dec2, dec1)
