"""The public front of the bounds: validate once, then run the backend asked for.

`objective` returns the bound per data point, value: (N,), and the gradient of the batch MEAN of the
objective for every parameter (the params' container), for either model family (npvae.vae.models); `log_weights`,
`bound_value` and the importance-sampled `log_px` likewise. The maths is the NumPy specification's
(npvae.vae.one_layer_objective for one stochastic layer, npvae.vae.ladder_objective for L, npvae.vae.importance), which the
other backends implement again (npvae.backends); this module is above both, so that neither imports the other back.
The names of npvae.vae.one_layer_objective are this module's too, as they were before the split.
"""

from __future__ import annotations

import numpy as np

from . import _validate
from .backends import get as get_backend
from .maths.estimators import BOUNDS, ESTIMATORS, KL_MODES, VALID  # noqa: F401  (this module's names too)
from .vae.importance import _chunk_size
from .vae.inputs import check_batch, check_free_bits, check_options, check_x  # noqa: F401  (check_x: this module's name too)
from .vae.memory import check_fits, eval_chunk_bytes
from .vae.model import Arch, VAEParams
from .vae.one_layer_objective import (  # noqa: F401  (the specification's names, importable from here as before)
    ESTIMATOR_NAMES,
    Forward,
    bound_and_grad,
    bound_value_core,
    decoder_backward,
    encoder_backward,
    forward,
    free_bits_kl,
    latent_grads,
    log_weights_of,
)


def objective(
    params: VAEParams, arch: Arch, x, eps, *, bound="elbo", kl="analytic", estimator="reparam", kl_weight=1.0, free_bits=0.0,
    backend="numpy",
):
    """Bound per point (N,) and the gradient of its batch mean (params' type); x: (N, D), eps: (K, N, arch.noise_dim).

    Either model family (npvae.vae.models): an Arch with VAEParams, or a LadderArch with LadderParams and
    eps = [eps_1, ..., eps_L] along the last axis (npvae.vae.ladder_objective, Burda et al. 2016).

    kl_weight (beta) scales the KL term of the ELBO, or log p(z) - log q(z|x) in its MC form, for
    warm-up; free_bits (lambda, analytic KL only) replaces each dimension's KL_j by max(lambda, KL_j).
    The value is then the objective trained, a bound on log p(x) only at beta = 1, lambda = 0.
    backend: one of npvae.backends.BACKENDS ("numpy", this module, is the specification).
    """
    check_options(bound, kl, estimator, kl_weight, free_bits)
    check_free_bits(arch, free_bits)
    check_batch(params, arch, x, eps)
    return get_backend(backend).bound_and_grad(params, arch, x, eps, bound, kl, estimator, kl_weight, free_bits)


def log_weights(params: VAEParams, arch: Arch, x, eps, *, backend="numpy"):
    """Log importance weights a_k = log p(x, z_k) - log q(z_k|x): (K, N), z_k = mu + sigma eps_k."""
    check_batch(params, arch, x, eps)
    return get_backend(backend).log_weights(params, arch, x, eps)


def bound_value(params: VAEParams, arch: Arch, x, eps, *, bound="elbo", kl="analytic", backend="numpy"):
    """The bound per point (N,) without gradients (for evaluation)."""
    check_options(bound, kl, VALID[(bound, kl)][0] if (bound, kl) in VALID else "reparam", 1.0)
    check_batch(params, arch, x, eps)
    return get_backend(backend).bound_value(params, arch, x, eps, bound, kl)


def log_px(params: VAEParams, arch: Arch, x, k: int, rng: np.random.Generator, *, max_elements: int = 1 << 22,
           backend="numpy", progress=None):
    """Estimate of log p(x) per point, (N,), from k importance samples drawn with `rng`; x: (N, D).

    Draws eps chunk by chunk in the model's dtype; the same Generator state gives the same estimate
    whatever `max_elements` is, because the draws are made in one (k, N, Z) order (Z: arch.noise_dim).
    backend: one of npvae.backends.BACKENDS; every backend draws the same noise in the same order.
    progress: called with the number of (sample, point) pairs done after each chunk, so k = 10^9 shows it is moving.
    A chunk's memory is estimated first (npvae.vae.memory) and refused if above what the machine has available.
    """
    dtype = check_batch(params, arch, x)
    _validate.positive_int("k", k)
    _validate.generator("rng", rng)
    _validate.positive_int("max_elements", max_elements)
    N = x.shape[0]
    chunk = min(k, _chunk_size(arch, N, max_elements))
    check_fits(f"importance sampling ({arch.spec}, {N} points, {chunk} of the k={k} samples at a time)",
               eval_chunk_bytes(arch, N, chunk, dtype.itemsize), "lower the layer sizes of the model, or the points per batch")
    return get_backend(backend).log_px(params, arch, x, k, rng, chunk, progress)
