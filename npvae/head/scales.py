"""The parameterisations users give their Gaussians in, each mapped to npvae's one form, a log-variance.

An encoder's scale output s (N, Z), or a learned Gaussian decoder's, is one of
    log_var   log sigma^2 = s                        d log_var / ds = 1
    log_std   log sigma   = s                        d log_var / ds = 2
    std       sigma       = s        (s > 0)         d log_var / ds = 2 / s
    var       sigma^2     = s        (s > 0)         d log_var / ds = 1 / s
    softplus  sigma       = softplus(s)              d log_var / ds = 2 sigmoid(s) / softplus(s)
npvae's maths (npvae.maths.gaussian) runs on log_var; a gradient with respect to log_var is carried to s by the chain rule,
d/ds = (d/dlog_var) (dlog_var/ds). Pyro's and HIPS autograd's examples use log_std, pytorch/examples and Keras
log_var, torch.distributions.Normal std. `std_of` gives sigma itself for the noise checks.
"""

from __future__ import annotations

import numpy as np

from ..maths.stable import sigmoid, softplus

SCALES = ("log_var", "log_std", "std", "var", "softplus")
POSITIVE = ("std", "var")  # the raw output must be > 0


def log_var_of(scale: str, s: np.ndarray) -> np.ndarray:
    """log sigma^2 from the raw scale output s in parameterisation `scale`: (N, Z) -> (N, Z)."""
    if scale == "log_var":
        return s
    if scale == "log_std":
        return 2.0 * s
    if scale == "std":
        return 2.0 * np.log(s)
    if scale == "var":
        return np.log(s)
    if scale == "softplus":
        return 2.0 * np.log(softplus(s))
    raise ValueError(f"unknown scale parameterisation {scale!r}; one of {', '.join(SCALES)}")


def dlog_var_ds(scale: str, s: np.ndarray) -> np.ndarray:
    """d log_var / ds, elementwise (the table above): (N, Z) -> (N, Z)."""
    if scale == "log_var":
        return np.ones_like(s)
    if scale == "log_std":
        return np.full_like(s, 2.0)
    if scale == "std":
        return 2.0 / s
    if scale == "var":
        return 1.0 / s
    if scale == "softplus":
        return 2.0 * sigmoid(s) / softplus(s)
    raise ValueError(f"unknown scale parameterisation {scale!r}; one of {', '.join(SCALES)}")


def std_of(scale: str, s: np.ndarray) -> np.ndarray:
    """sigma = exp(log_var / 2) from s."""
    return np.exp(0.5 * log_var_of(scale, s))


def check_raw(name: str, scale: str, s: np.ndarray) -> None:
    """Refuse a raw output that its parameterisation gives no meaning (a std or variance <= 0)."""
    if scale not in SCALES:
        raise ValueError(f"{name}: unknown scale parameterisation {scale!r}; one of {', '.join(SCALES)}")
    if scale in POSITIVE and np.any(s <= 0):
        raise ValueError(f"{name} is declared a {scale} but holds values <= 0 (min {float(np.min(s)):.3g}): "
                         f"a {scale} must be positive; is it a log_var or log_std?")
