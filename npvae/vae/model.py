"""The VAE's architecture and parameters: an MLP encoder x -> (mu, log_var) and an MLP decoder z -> likelihood parameters.

Parameters are plain containers (`VAEParams` of tuples of `Dense`), so optimisers, checkpoints and
gradient checks see a flat list of named arrays. Shapes: x (N, D), mu/log_var (N, Z), z (K, N, Z).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import numpy as np

from .. import _validate
from ..nn.layers import ACTIVATIONS, Dense
from .. import likelihoods as lik
from ..likelihoods import Likelihood
from ..nn.mlp import mlp_forward, mlp_forward_rows, mlp_init


@dataclass(frozen=True)
class Arch:
    """What the networks look like: D -> hidden... -> 2Z (encoder) and Z -> reversed(hidden)... -> D_out (decoder)."""

    data_dim: int
    hidden: tuple[int, ...]
    latent_dim: int
    activation: str = "tanh"
    likelihood: Likelihood = Likelihood()
    FAMILY: ClassVar[str] = "one-layer"  # npvae.vae.models' key

    def __post_init__(self):
        _validate.positive_int("data_dim", self.data_dim)
        _validate.positive_int("latent_dim", self.latent_dim)
        for h in self.hidden:
            _validate.positive_int("hidden layer size", h)
        _validate.choice("activation", self.activation, ACTIVATIONS)
        lik.check(self.likelihood)  # the likelihood's own checks (npvae.likelihoods)

    @classmethod
    def parse(cls, spec: str, **kw) -> "Arch":
        """'784-200-200-50' -> Arch(784, (200, 200), 50)."""
        try:
            sizes = [int(s) for s in spec.split("-")]
        except ValueError:
            raise ValueError(f"architecture must look like '784-200-50' (D-hidden...-Z), got {spec!r}") from None
        if len(sizes) < 2:
            raise ValueError(f"architecture needs at least D and Z, e.g. '64-2', got {spec!r}")
        return cls(sizes[0], tuple(sizes[1:-1]), sizes[-1], **kw)

    @property
    def spec(self) -> str:
        """The inverse of `parse`."""
        return "-".join(str(s) for s in (self.data_dim, *self.hidden, self.latent_dim))

    @property
    def noise_dim(self) -> int:
        """The last axis of the noise eps (K, N, Z): Z."""
        return self.latent_dim

    def widths(self) -> tuple[list[int], list[int]]:
        """(widths of the layers run once per point, of those run once per sample), for npvae.vae.memory's estimates."""
        return list(self.encoder_sizes()[1:]), list(self.decoder_sizes()[1:])

    def encoder_sizes(self) -> tuple[int, ...]:
        return (self.data_dim, *self.hidden, 2 * self.latent_dim)

    def decoder_sizes(self) -> tuple[int, ...]:
        return (self.latent_dim, *reversed(self.hidden), self.likelihood.out_dim(self.data_dim))


class VAEParams(NamedTuple):
    """Encoder and decoder layers; gradients use the same container."""

    encoder: tuple[Dense, ...]
    decoder: tuple[Dense, ...]


def init_params(arch: Arch, rng: np.random.Generator, dtype=np.float64, output_bias=None) -> VAEParams:
    """Fresh parameters from a passed-in Generator (He for ReLU layers, Glorot otherwise).

    Biases start at 0, except the decoder's output bias where `output_bias`: (D_out,) is given
    (see likelihoods.output_bias_from_data); it draws nothing, so the weights are the same either way.
    """
    _validate.generator("rng", rng)
    dtype = np.dtype(dtype)
    if dtype not in _validate.FLOAT_DTYPES:
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    enc = mlp_init(rng, arch.encoder_sizes(), arch.activation, dtype)
    dec = mlp_init(rng, arch.decoder_sizes(), arch.activation, dtype)
    if output_bias is not None:
        dec = with_output_bias(dec, output_bias, dtype)
    return VAEParams(enc, dec)


def with_output_bias(layers: tuple[Dense, ...], output_bias, dtype) -> tuple[Dense, ...]:
    """The decoder's layers with its last bias replaced by output_bias (D_out,), checked: finite and of the right shape."""
    b = np.asarray(output_bias)
    _validate.shape("output_bias", b, layers[-1].b.shape)
    if not np.all(np.isfinite(b)):
        raise ValueError("output_bias must be finite")
    return (*layers[:-1], layers[-1]._replace(b=b.astype(dtype)))


def param_names(arch: Arch) -> list[str]:
    """Names in `flatten` order: 'encoder.0.W', 'encoder.0.b', ..., 'decoder.L.b'."""
    names = []
    for part, sizes in (("encoder", arch.encoder_sizes()), ("decoder", arch.decoder_sizes())):
        for i in range(len(sizes) - 1):
            names += [f"{part}.{i}.W", f"{part}.{i}.b"]
    return names


def param_shapes(arch: Arch) -> list[tuple[int, ...]]:
    """Shapes in `flatten` order."""
    shapes = []
    for sizes in (arch.encoder_sizes(), arch.decoder_sizes()):
        for i in range(len(sizes) - 1):
            shapes += [(sizes[i], sizes[i + 1]), (sizes[i + 1],)]
    return shapes


def flatten(params: VAEParams) -> list[np.ndarray]:
    """[W, b, W, b, ...] encoder first, then decoder (the order of `param_names`)."""
    return [a for part in params for layer in part for a in layer]


def unflatten(arch: Arch, arrays) -> VAEParams:
    """Inverse of `flatten`."""
    arrays = list(arrays)
    n_enc = len(arch.encoder_sizes()) - 1
    layers = [Dense(arrays[2 * i], arrays[2 * i + 1]) for i in range(len(arrays) // 2)]
    return VAEParams(tuple(layers[:n_enc]), tuple(layers[n_enc:]))


def check_params(arch: Arch, params: VAEParams) -> np.dtype:
    """Validate parameter shapes, dtype (one for all) and finiteness against `arch`; return the dtype."""
    return check_arrays(params, VAEParams, arch.spec, param_names(arch), param_shapes(arch))


def check_arrays(params, container: type, spec: str, names, shapes) -> np.dtype:
    """`check_params` for any family: params of type `container`, whose flattened arrays have these names and shapes."""
    if not isinstance(params, container):
        raise ValueError(f"params must be a {container.__name__}, got {type(params).__name__}")
    arrays = flatten(params)
    if len(arrays) != len(names):
        raise ValueError(f"params have {len(arrays)} arrays but architecture {spec} needs {len(names)}")
    dtype = arrays[0].dtype if isinstance(arrays[0], np.ndarray) else None
    for name, shape, a in zip(names, shapes, arrays):
        _validate.float_array(name, a)
        _validate.shape(name, a, shape)
        _validate.same_dtype(dtype, **{name: a})
    return dtype


def encode(params: VAEParams, arch: Arch, x):
    """q(z|x) parameters: x (N, D) -> (mu (N, Z), log_var (N, Z), cache)."""
    h, cache = mlp_forward(params.encoder, x, arch.activation)
    Z = arch.latent_dim
    return h[:, :Z], h[:, Z:], cache


def decode(params: VAEParams, arch: Arch, z):
    """Decoder output (logits or Gaussian parameters): z (..., Z) -> (..., D_out), cache."""
    return mlp_forward_rows(params.decoder, z, arch.activation)


# ---- what pictures and evaluation read, the same for every family (npvae.vae.models) ----

def decode_x(params: VAEParams, arch: Arch, z):
    """The likelihood's parameters from the latent that x's decoder reads: z (..., Z) -> (..., D_out)."""
    return decode(params, arch, z)[0]


def encoder_mean(params: VAEParams, arch: Arch, x):
    """The mean of q(z|x) of the latent that x's decoder reads: x (N, D) -> (N, Z)."""
    return encode(params, arch, x)[0]


def prior_latent(params: VAEParams, arch: Arch, rng: np.random.Generator, n: int, dtype):
    """n draws of the latent that x's decoder reads, from the prior: z ~ N(0, I), (n, Z); and how, in words."""
    return rng.standard_normal((n, arch.latent_dim), dtype=dtype), "z ~ N(0, I)"
