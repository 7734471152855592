"""How frameworks store an MLP VAE, as a verify file declares it, mapped onto npvae's one form and back.

npvae's form (npvae.vae.model): encoder.0, ..., encoder.L, the last giving [mu, log_var] (2 Z columns), W (in, out), b (out,).
What a file may hold instead (docs/verify.md, "The full model: an MLP VAE's weights"):
    separate heads   encoder.mu.W, encoder.mu.b, encoder.scale.W, encoder.scale.b after encoder.0, ..., encoder.(L-1):
                     the columns [:Z] and [Z:] of npvae's last encoder layer (the names say so; nothing is guessed)
    weight_layout    "in_out" (npvae's: y = x W + b) or "out_in" (torch's Linear.weight: y = x W^T + b), every W alike
    biases (1, out)  read as (out,)
    scale            what the encoder's second output s is (npvae.head.scales): log_var = log_var_of(scale, s)
    x_coding         "01", or "pm1": x in {-1, +1} (HIPS autograd's 2x - 1); the encoder reads x, the Bernoulli target
                     is t = (x + 1) / 2, so log p(x|l) = sum_d t l - softplus(l) = -sum_d softplus(-x l)
Gradients go back to the file's names and shapes (`from_params`); `bound_and_grad_at_head` is npvae.objective's maths
with log_var read from s and the likelihood's target t. Nothing here checks its inputs: npvae.verify does.
"""

from __future__ import annotations

import re
from typing import NamedTuple

import numpy as np

from .. import likelihoods as lik
from ..maths.gaussian import sample_forward
from ..head.scales import SCALES, dlog_var_ds, log_var_of  # noqa: F401  (SCALES: the options' vocabulary)
from ..nn.layers import Dense
from ..nn.mlp import mlp_forward
from ..vae.model import Arch, VAEParams, decode
from ..objectives import Forward, encoder_backward, latent_grads

WEIGHT_LAYOUTS = ("in_out", "out_in")
X_CODINGS = ("01", "pm1")
HEADS = ("mu", "scale")  # encoder.mu.*, encoder.scale.*: the two halves of npvae's last encoder layer
NOT_EXPRESSIBLE = ("this model has batch-norm/convolution layers ({names}), which the full-model check cannot express; "
                   "check its head instead: npvae.testing.assert_head_matches (docs/verify.md, 'Checking the head')")
# Name parts that only normalisation and convolution layers have (torch's BatchNorm*, Keras's BatchNormalization, Conv*).
_NORM_CONV = re.compile(r"(^|[._/:])(running_mean|running_var|num_batches_tracked|moving_mean|moving_variance|"
                        r"bn\d*|batch_?norm\w*|\w*norm\d*|conv\w*)($|[._/:])", re.IGNORECASE)


class Slot(NamedTuple):
    """Where one of the file's arrays sits in npvae's parameters: layer `layer` of `part`, its W or b, these columns."""

    name: str
    part: str  # "encoder" or "decoder"
    layer: int
    field: str  # "W" or "b"
    cols: slice


def refuse_unexpressible(weights: dict) -> None:
    """One line pointing to the head check when arrays belong to layers an MLP has not (batch norm, convolutions)."""
    bad = [n for n, a in weights.items() if _NORM_CONV.search(n) or getattr(a, "ndim", 0) >= 3]  # conv kernels: ndim 3-5
    if bad:
        raise ValueError(NOT_EXPRESSIBLE.format(names=", ".join(sorted(bad)[:3]) + (", ..." if len(bad) > 3 else "")))


def has_heads(weights: dict) -> bool:
    """Whether the file names separate mu and scale heads (encoder.mu.*, encoder.scale.*)."""
    return any(f"encoder.{h}.{f}" in weights for h in HEADS for f in "Wb")


def numbered(weights: dict, part: str) -> int:
    """How many layers part.0, part.1, ... the file has, counted by their biases from 0 without a gap."""
    n = 0
    while f"{part}.{n}.b" in weights:
        n += 1
    return n


def width(b) -> int | None:
    """A layer's width from its bias, (out,) or (1, out); None for any other shape."""
    if b.ndim == 1 or (b.ndim == 2 and b.shape[0] == 1):
        return b.shape[-1]
    return None


def slots(arch: Arch, heads: bool) -> list[Slot]:
    """The file's parameter names in order, each with its place in npvae's VAEParams."""
    out = []
    Z = arch.latent_dim
    for part, n in (("encoder", len(arch.encoder_sizes()) - 1), ("decoder", len(arch.decoder_sizes()) - 1)):
        for i in range(n):
            if heads and part == "encoder" and i == n - 1:
                pieces = (("encoder.mu", slice(0, Z)), ("encoder.scale", slice(Z, 2 * Z)))  # mu's columns, then scale's
            else:
                pieces = ((f"{part}.{i}", slice(None)),)
            for prefix, cols in pieces:
                out += [Slot(f"{prefix}.W", part, i, "W", cols), Slot(f"{prefix}.b", part, i, "b", cols)]
    return out


def expected_shape(arch: Arch, s: Slot, weight_layout: str) -> tuple[int, ...]:
    """The shape the slot's array has in the declared layout (a bias's (1, out) is accepted besides)."""
    sizes = arch.encoder_sizes() if s.part == "encoder" else arch.decoder_sizes()
    n_in, n_out = sizes[s.layer], len(range(sizes[s.layer + 1])[s.cols])
    if s.field == "b":
        return (n_out,)
    return (n_in, n_out) if weight_layout == "in_out" else (n_out, n_in)


def to_params(weights: dict, arch: Arch, heads: bool, weight_layout: str) -> VAEParams:
    """npvae's parameters, float64: W as (in, out), b as (out,), the heads side by side as one last encoder layer."""
    pieces: dict[tuple, list] = {}
    for s in slots(arch, heads):
        a = np.asarray(weights[s.name], dtype=np.float64)
        a = (a.T if weight_layout == "out_in" else a) if s.field == "W" else a.reshape(-1)  # (in, out) or (out,)
        pieces.setdefault((s.part, s.layer, s.field), []).append(a)
    layers = {part: tuple(Dense(np.ascontiguousarray(np.concatenate(pieces[(part, i, "W")], axis=1)),
                                np.concatenate(pieces[(part, i, "b")])) for i in range(len(sizes) - 1))
              for part, sizes in (("encoder", arch.encoder_sizes()), ("decoder", arch.decoder_sizes()))}
    return VAEParams(layers["encoder"], layers["decoder"])


def from_params(grads: VAEParams, arch: Arch, heads: bool, weight_layout: str, shapes: dict) -> dict:
    """The inverse of `to_params` for gradients: name -> array in the file's layout and shapes (`shapes`: name -> shape)."""
    out = {}
    for s in slots(arch, heads):
        a = getattr(getattr(grads, s.part)[s.layer], s.field)
        if s.field == "W":
            a = a[:, s.cols]
            out[s.name] = a.T if weight_layout == "out_in" else a
        else:
            out[s.name] = a[s.cols].reshape(shapes[s.name])
    return out


def scale_output(params: VAEParams, arch: Arch, x) -> np.ndarray:
    """The encoder's raw scale output s: (N, Z), for the boundary's check that it means something (a std > 0)."""
    return mlp_forward(params.encoder, x, arch.activation)[0][:, arch.latent_dim:]


def bound_and_grad_at_head(params: VAEParams, arch: Arch, x, t, eps, scale: str, bound, kl, estimator, kl_weight, free_bits):
    """The bound per point (N,) and the gradient of its batch mean, the encoder's second output read as `scale`; no checking.

    x: (N, D) what the encoder reads, t: (N, D) the likelihood's target. log_var = log_var_of(scale, s); from there on
    it is npvae.objective's maths (`objectives.latent_grads`), and d/dlog_var reaches s as d/dlog_var * dlog_var/ds. With
    scale "log_var" and t = x it is npvae.objective itself (tests/test_verify_layouts.py pins the two to 1e-14).
    """
    h, enc_cache = mlp_forward(params.encoder, x, arch.activation)  # (N, 2Z): [mu, s]
    Z = arch.latent_dim
    mu, s = h[:, :Z], h[:, Z:]
    log_var = log_var_of(scale, s)
    z, sample_cache = sample_forward(mu, log_var, eps)
    out, dec_cache = decode(params, arch, z)  # (K, N, D_out)
    log_px_z, lik_cache = lik.forward(arch.likelihood, out, t)
    f = Forward(mu, log_var, z, log_px_z, eps, enc_cache, sample_cache, dec_cache, lik_cache)
    value, dmu, dlog_var, dec_grads = latent_grads(f, arch, bound, kl, estimator, kl_weight, free_bits)
    return value, VAEParams(encoder_backward(f, dmu, dlog_var * dlog_var_ds(scale, s)), dec_grads)


