"""The linear VAE (Lucas et al. 2019): the general VAE code with one identity layer each way IS a LinearGaussian.

Encoder q(z|x) = N(V (x - b), diag(S)) as a single dense layer D -> 2Z whose log-variance half ignores
x; decoder p(x|z) = N(W z + b, sigma2 I) as a single dense layer Z -> D with a fixed-variance
Gaussian likelihood. This is what ties `objectives` to the exact oracle in the tests.
"""

from __future__ import annotations

import numpy as np

from .layers import Dense
from .likelihoods import Likelihood
from .linear_gaussian import LinearGaussian
from .model import Arch, VAEParams


def linear_arch(D: int, Z: int, sigma2: float) -> Arch:
    """Arch D -> 2Z and Z -> D, identity activation, Gaussian likelihood of fixed variance sigma2."""
    return Arch(D, (), Z, "identity", Likelihood("gaussian", sigma2=float(sigma2)))


def linear_vae_params(model: LinearGaussian, V, log_S) -> VAEParams:
    """Params with decoder (W, b) from `model` and encoder mean V (x - b), V: (Z, D), constant log-variance log_S: (Z,)."""
    W, b = model.W, model.b
    Z = W.shape[1]
    enc_W = np.concatenate([V.T, np.zeros((W.shape[0], Z), dtype=W.dtype)], axis=1)  # (D, 2Z)
    enc_b = np.concatenate([-(V @ b), log_S]).astype(W.dtype)
    return VAEParams((Dense(enc_W, enc_b),), (Dense(W.T.copy(), b.copy()),))


def best_linear_vae(model: LinearGaussian):
    """(arch, params) of the linear VAE whose q is the best diagonal Gaussian: V = M^-1 W^T, S = sigma2 / diag(M).

    MATHS.md, "The linear-Gaussian model": with W of orthogonal columns this q IS p(z|x).
    """
    W, s2 = model.W, model.sigma2
    M = W.T @ W + s2 * np.eye(W.shape[1], dtype=W.dtype)
    V = np.linalg.solve(M, W.T)
    log_S = np.log(W.dtype.type(s2) / np.diag(M))
    return linear_arch(W.shape[0], W.shape[1], s2), linear_vae_params(model, V, log_S)


def orthogonal_model(rng: np.random.Generator, D: int, Z: int, sigma2: float, dtype=np.float64) -> LinearGaussian:
    """A LinearGaussian whose W = Q diag(scales) has orthogonal columns, so M is diagonal and p(z|x) is diagonal."""
    Q, _ = np.linalg.qr(rng.standard_normal((D, Z)))
    scales = rng.uniform(0.5, 2.0, size=Z)
    return LinearGaussian((Q * scales).astype(dtype), rng.standard_normal(D).astype(dtype), sigma2)
