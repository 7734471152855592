"""The model families in one place: what the trainer, checkpoints, evaluation and the CLI call for any architecture.

Two families, keyed by the architecture's FAMILY:
- "ladder": npvae.vae.ladder's LadderArch and LadderParams, L stochastic layers (Burda et al. 2016, section 5), spec
  '784-200-200-100:100-100-50' (each part after a ':' is one more stochastic layer: its hidden sizes and Z_l);
- "one-layer": npvae.vae.model's Arch and VAEParams (Kingma & Welling 2014), spec '784-200-200-50': the ladder at L = 1,
  with code of its own as the fast path (free bits, the fused numba and CUDA kernels, the device trainer).
Every architecture has data_dim, activation, likelihood, spec, noise_dim (the last axis of the noise
eps (K, N, noise_dim) that the objectives take) and widths() (for npvae.vae.memory). Parameters of either
family flatten to [W, b, W, b, ...] in `param_names` order, which is what optimisers and checkpoints see.
"""

from __future__ import annotations

from . import ladder, model

FAMILIES = {model.Arch.FAMILY: model, ladder.LadderArch.FAMILY: ladder}
ARCH_TYPES = (model.Arch, ladder.LadderArch)


def parse(spec: str, **kw):
    """An architecture from its spec: 1 + (the number of ':') stochastic layers (LadderArch.parse), one without (Arch.parse)."""
    if not isinstance(spec, str):
        raise ValueError(f"an architecture spec is a string like '784-200-50' or '784-200-100:100-50', got {spec!r}")
    return (ladder.LadderArch if ":" in spec else model.Arch).parse(spec, **kw)


def family(arch):
    """The module that defines arch's parameters (npvae.vae.model or npvae.vae.ladder)."""
    if not isinstance(arch, ARCH_TYPES):
        raise ValueError(f"arch must be an Arch or a LadderArch, got {type(arch).__name__}")
    return FAMILIES[arch.FAMILY]


def init_params(arch, rng, dtype=None, output_bias=None):
    """Fresh parameters (the family's init_params; dtype float64 unless given)."""
    return family(arch).init_params(arch, rng, "float64" if dtype is None else dtype, output_bias=output_bias)


def param_names(arch) -> list[str]:
    return family(arch).param_names(arch)


def param_shapes(arch) -> list[tuple[int, ...]]:
    return family(arch).param_shapes(arch)


flatten = model.flatten  # [W, b, ...] in `param_names` order: both families' containers are tuples of tuples of Dense


def unflatten(arch, arrays):
    return family(arch).unflatten(arch, arrays)


def check_params(arch, params):
    """Validate params against arch (shapes, one float dtype, finite); return the dtype."""
    return family(arch).check_params(arch, params)


def decode_x(params, arch, z):
    """The likelihood's parameters from the latent that x's decoder reads (z, or z1 for a ladder): (..., Z) -> (..., D_out)."""
    return family(arch).decode_x(params, arch, z)


def encoder_mean(params, arch, x):
    """The encoder's mean of that latent: x (N, D) -> (N, Z)."""
    return family(arch).encoder_mean(params, arch, x)


def prior_latent(params, arch, rng, n: int, dtype):
    """n draws of that latent from the generative model, (n, Z), and how they were drawn, in words."""
    return family(arch).prior_latent(params, arch, rng, n, dtype)
