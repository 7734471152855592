"""Input checks at the public boundary: parameters against the architecture, data, noise and the bound's options.

Every public function that takes (params, x, eps) or (bound, kl, estimator) calls these once; the
private cores and the backends check nothing. The valid (bound, kl, estimator) combinations come
from npvae.maths.estimators' registry.
"""

from __future__ import annotations

import numpy as np

from .. import _validate
from ..maths.estimators import BOUNDS, ESTIMATORS, KL_MODES, VALID
from ..likelihoods import check_data
from .model import Arch, VAEParams
from .models import check_params


def _x_rows(arch: Arch, x) -> None:
    _validate.shape("x", x, (None, arch.data_dim))
    if x.shape[0] == 0:
        raise ValueError("x is empty: need at least one data point")


def _x_array(arch: Arch, x, dtype) -> None:
    _validate.float_array("x", x, 2)
    _x_rows(arch, x)
    _validate.same_dtype(dtype, x=x)


def check_x_data(arch: Arch, x, dtype) -> None:
    """x: (N, D) float, finite, of the parameters' dtype, N >= 1, and data the likelihood has a meaning for."""
    _x_array(arch, x, dtype)
    check_data(arch.likelihood, x)


def check_x_storage(arch: Arch, x, dtype) -> None:
    """check_x_data, or, for a compact binary split (uint8, npvae.store.data), (N, D) with every value 0 or 1 (N >= 1): data
    every likelihood has a meaning for, used as `dtype` batch by batch."""
    if not (isinstance(x, np.ndarray) and x.dtype == np.uint8):
        check_x_data(arch, x, dtype)
        return
    _x_rows(arch, x)
    if x.max() > 1:
        raise ValueError("x is uint8 but not binary: a compact split holds 0 and 1 only")


def check_x(params: VAEParams, arch: Arch, x) -> np.dtype:
    """Validate params against arch and x: (N, D) float, finite, of the parameters' dtype, N >= 1; return the dtype.

    The likelihood's own check (binary data for a Bernoulli) is `check_batch`'s.
    """
    dtype = check_params(arch, params)
    _x_array(arch, x, dtype)
    return dtype


def check_eps(arch: Arch, x, eps, dtype) -> None:
    """eps: (K, N, arch.noise_dim) float, finite, of the parameters' dtype, K >= 1 (noise_dim: Z, or Z_1 + ... + Z_L for a ladder)."""
    _validate.float_array("eps", eps, 3)
    _validate.shape("eps", eps, (None, x.shape[0], arch.noise_dim))
    _validate.same_dtype(dtype, eps=eps)
    if eps.shape[0] == 0:
        raise ValueError("eps has K = 0 samples: need at least one")


def check_batch(params: VAEParams, arch: Arch, x, eps=None) -> np.dtype:
    """Validate params, x: (N, D) for the likelihood, and eps: (K, N, noise_dim) at the boundary; return the common dtype."""
    dtype = check_params(arch, params)
    check_x_data(arch, x, dtype)
    if eps is not None:
        check_eps(arch, x, eps, dtype)
    return dtype


def check_options(bound: str, kl: str, estimator: str, kl_weight: float, free_bits: float = 0.0) -> None:
    """Refuse unknown names and combinations that have no meaning, with the table of valid ones."""
    _validate.choice("bound", bound, BOUNDS)
    _validate.choice("kl", kl, KL_MODES)
    _validate.choice("estimator", estimator, tuple(ESTIMATORS))
    if bound == "iwae" and kl != "mc":
        raise ValueError("the IWAE bound has no analytic-KL form: use kl='mc'")
    if estimator not in VALID[(bound, kl)]:
        table = "; ".join(f"{b}/{k}: {', '.join(e)}" for (b, k), e in VALID.items())
        raise ValueError(f"estimator {estimator!r} is not defined for bound={bound!r}, kl={kl!r} (valid: {table})")
    kw = float(kl_weight)
    if not np.isfinite(kw) or kw < 0:
        raise ValueError(f"kl_weight must be a finite number >= 0, got {kl_weight!r}")
    if bound == "iwae" and kw != 1.0:
        raise ValueError("kl_weight must be 1 for the IWAE bound (a weighted IWAE is not a bound on log p(x))")
    fb = float(free_bits)
    if not np.isfinite(fb) or fb < 0:
        raise ValueError(f"free_bits must be a finite number >= 0 (nats per latent dimension), got {free_bits!r}")
    if fb > 0 and kl != "analytic":
        raise ValueError("free bits need the analytic KL (kl='analytic'): they floor each dimension's KL")


def check_free_bits(arch, free_bits: float) -> None:
    """Free bits floor each dimension of the one analytic KL: a one-stochastic-layer model's only."""
    if float(free_bits) > 0 and arch.FAMILY != "one-layer":
        raise ValueError(f"free bits are implemented for the one-layer model only (npvae.vae.model.Arch, an --arch without "
                         f"':'); {arch.spec} is a ladder of {arch.L} (use free_bits=0)")
