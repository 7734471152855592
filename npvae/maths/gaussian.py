"""The diagonal Gaussian q(z|x) = N(mu, diag(exp(log_var))): the package's one Gaussian parameterisation.

`log_var` is a log VARIANCE everywhere. This is the only module that turns it into a standard
deviation (`exp(0.5 * log_var)`); a test pins the meaning by checking the sample variance.
Shapes: mu, log_var (N, Z); eps, z (K, N, Z). Private cores: no input checking (see _validate).
"""

from __future__ import annotations

import numpy as np


def _c(x: np.ndarray, value: float):
    """A constant in x's dtype, so float32 maths never silently promotes to float64."""
    return x.dtype.type(value)


def std(log_var: np.ndarray) -> np.ndarray:
    """Standard deviation exp(log_var / 2)."""
    return np.exp(_c(log_var, 0.5) * log_var)


def sample_forward(mu, log_var, eps):
    """z = mu + exp(log_var/2) * eps, eps ~ N(0, I): (N, Z), (N, Z), (K, N, Z) -> (K, N, Z). Kingma & Welling 2014, eq. 10."""
    sd = std(log_var)
    z = mu + sd * eps
    return z, (sd, eps)


def sample_backward(dz, cache):
    """Pull dz: (K, N, Z) back to (dmu, dlog_var): (N, Z); dz/dmu = 1, dz/dlog_var = exp(log_var/2) eps / 2."""
    sd, eps = cache
    dmu = dz.sum(axis=0)
    dlog_var = _c(dz, 0.5) * (dz * sd * eps).sum(axis=0)
    return dmu, dlog_var


def log_prob_eps(log_var, eps):
    """log q(z|x) at z = mu + exp(log_var/2) eps, written in eps: -1/2 sum_j [log 2pi + log_var_j + eps_j^2] -> (K, N).

    Its total derivative along the reparameterisation is 0 w.r.t. mu and -1/2 w.r.t. each log_var_j
    (docs/theory.md, sections 1 and 7), which the objectives use directly.
    """
    log2pi = _c(eps, np.log(2.0 * np.pi))
    return _c(eps, -0.5) * (log2pi + log_var + eps * eps).sum(axis=-1)


def log_prob_path_backward(c, log_var, eps):
    """Path derivative of sum_k c_k log q(z_k|x), parameters held fixed, pulled back to (dmu, dlog_var): (N, Z) each.

    d log q / dz = -(z - mu) exp(-log_var) = -eps exp(-log_var/2); times dz/dmu = 1 and
    dz/dlog_var = exp(log_var/2) eps / 2 this is (-eps exp(-log_var/2), -eps^2 / 2). The log_var part is
    written without sigma, so it stays finite when sigma underflows. This is the term "sticking the
    landing" keeps (Roeder et al. 2017); c: (K, N) weights.
    """
    c = c[..., None]
    return -(c * eps).sum(axis=0) / std(log_var), _c(eps, -0.5) * (c * eps * eps).sum(axis=0)


def log_std_normal(z):
    """log N(z; 0, I) = -1/2 sum_j [log 2pi + z_j^2]: (..., Z) -> (...)."""
    return _c(z, -0.5) * (_c(z, np.log(2.0 * np.pi)) + z * z).sum(axis=-1)


def log_std_normal_grad(z):
    """d log N(z; 0, I) / dz = -z."""
    return -z


def kl_std_normal_per_dim(mu, log_var):
    """KL per latent dimension, 1/2 [mu_j^2 + expm1(log_var_j) - log_var_j]: (N, Z) -> (N, Z).

    Kingma & Welling 2014, App. B; expm1 keeps precision as log_var -> 0.
    """
    return _c(mu, 0.5) * (mu * mu + np.expm1(log_var) - log_var)


def kl_std_normal_forward(mu, log_var):
    """KL(N(mu, diag(exp(log_var))) || N(0, I)), the sum over j of `kl_std_normal_per_dim`: (N, Z) -> (N,)."""
    return kl_std_normal_per_dim(mu, log_var).sum(axis=-1)


def kl_std_normal_backward(dkl, mu, log_var):
    """(dmu, dlog_var) = dkl * (mu, expm1(log_var) / 2); dkl: (N,) per KL, or (N, Z) per dimension's KL."""
    d = dkl[:, None] if dkl.ndim == 1 else dkl
    return d * mu, d * _c(log_var, 0.5) * np.expm1(log_var)


def log_prob(z, mu, log_var):
    """log N(z; mu, diag(exp(log_var))) for z: (..., N, Z) -> (..., N); for tests and evaluation, not for gradients."""
    r = (z - mu) / std(log_var)
    return _c(z, -0.5) * (_c(z, np.log(2.0 * np.pi)) + log_var + r * r).sum(axis=-1)
