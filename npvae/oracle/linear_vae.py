"""The linear VAE (Lucas et al. 2019): the general VAE code with one identity layer each way IS a linear-Gaussian model.

One layer: encoder q(z|x) = N(V (x - b), diag(S)) as a single dense layer D -> 2Z whose log-variance half ignores
x; decoder p(x|z) = N(W z + b, sigma2 I) as a single dense layer Z -> D with a fixed-variance Gaussian likelihood.
L layers (npvae.vae.ladder): dec_1 is x = W z_1 + b, dec_l gives p(z_{l-1}|z_l) = N(A z_l + c, diag(exp(log_var))) (its
log-variance outputs have zero weights and bias log_var), and the encoders compute a q of the oracle's family
(npvae.oracle.linear_chain.ChainQ): q(z_1|x) = N(m1(x), exp(lv1)) with m1 affine in x, q(z_l|z_{l-1}) = N(B z_{l-1} + d,
exp(lv)). This is what ties `objectives` to the exact oracles in the tests and in npvae check.
"""

from __future__ import annotations

import numpy as np

from ..vae.ladder import LadderArch, LadderParams
from ..nn.layers import Dense
from ..likelihoods import Likelihood
from ..vae.model import Arch, VAEParams
from .linear_chain import ChainQ, LinearChain, LinearGaussian


def linear_arch(D: int, Z: int, sigma2: float) -> Arch:
    """Arch D -> 2Z and Z -> D, identity activation, Gaussian likelihood of fixed variance sigma2."""
    return Arch(D, (), Z, "identity", Likelihood("gaussian", sigma2=float(sigma2)))


def linear_vae_params(model: LinearGaussian, V, log_S, c=None) -> VAEParams:
    """Params with decoder (W, b) from `model` and encoder mean V x + c, V: (Z, D), c: (Z,) (default -V b: the mean
    V (x - b)), constant log-variance log_S: (Z,)."""
    W, b = model.W, model.b
    Z = W.shape[1]
    enc_W = np.concatenate([V.T, np.zeros((W.shape[0], Z), dtype=W.dtype)], axis=1)  # (D, 2Z)
    enc_b = np.concatenate([-(V @ b) if c is None else c, log_S]).astype(W.dtype)
    return VAEParams((Dense(enc_W, enc_b),), (Dense(W.T.copy(), b.copy()),))


def linear_vae(model: LinearGaussian, V, log_S, c=None) -> tuple[Arch, VAEParams]:
    """(arch, params) of the linear VAE q(z|x) = N(V x + c, diag(exp(log_S))), p(x|z) = N(W z + b, sigma2 I) of `model`.

    linear_arch and linear_vae_params together; c defaults to -V b (the mean V (x - b))."""
    return linear_arch(*model.W.shape, model.sigma2), linear_vae_params(model, V, log_S, c=c)


def best_linear_vae(model: LinearGaussian, shift=None, var_factor=None):
    """(arch, params) of the linear VAE whose q is the best diagonal Gaussian: V = M^-1 W^T, S = sigma2 / diag(M).

    docs/theory.md, section 4: with W of orthogonal columns this q IS p(z|x). A q near the best one instead: shift (a
    number or (Z,)) moves its mean, var_factor multiplies its variances; None leaves each as it is.
    """
    W, s2 = model.W, model.sigma2
    M = W.T @ W + s2 * np.eye(W.shape[1], dtype=W.dtype)
    V = np.linalg.solve(M, W.T)
    log_S = np.log(W.dtype.type(s2 if var_factor is None else var_factor * s2) / np.diag(M))
    return linear_vae(model, V, log_S, c=None if shift is None else shift - V @ model.b)


def orthogonal_model(rng: np.random.Generator, D: int, Z: int, sigma2: float, dtype=np.float64) -> LinearGaussian:
    """A LinearGaussian whose W = Q diag(scales) has orthogonal columns, so M is diagonal and p(z|x) is diagonal."""
    Q, _ = np.linalg.qr(rng.standard_normal((D, Z)))
    scales = rng.uniform(0.5, 2.0, size=Z)
    return LinearGaussian((Q * scales).astype(dtype), rng.standard_normal(D).astype(dtype), sigma2)


def cosine_model(rng: np.random.Generator, D: int, cosine: float, sigma2: float, length: float = 1.5) -> LinearGaussian:
    """A LinearGaussian with Z = 2 whose columns of W have length `length` and cosine `cosine`, in a random plane of R^D.

    M = W^T W + sigma2 I has off-diagonal length^2 cosine, so p(z|x) is correlated unless cosine = 0."""
    Q, _ = np.linalg.qr(rng.standard_normal((D, 2)))
    W = length * np.stack([Q[:, 0], cosine * Q[:, 0] + np.sqrt(1 - cosine**2) * Q[:, 1]], axis=1)
    return LinearGaussian(W, rng.standard_normal(D), sigma2)


def linear_ladder_arch(model: LinearChain) -> LadderArch:
    """LadderArch D -> 2 Z_1, Z_{l-1} -> 2 Z_l, no hidden layers, identity activation, Gaussian likelihood of model.sigma2."""
    D, *Zs = model.shape
    return LadderArch(D, ((),) * len(Zs), tuple(Zs), "identity", Likelihood("gaussian", sigma2=float(model.sigma2)))


def best_linear_ladder(model: LinearChain, shift1=None) -> tuple[LadderArch, LadderParams]:
    """(arch, params): the decoders are `model`, the encoders its best_q (m1 read off at x = 0 and at the unit vectors).

    shift1: (2 Z_1,) added to enc1's bias (m1 and lv1 moved away from the best q), or None.
    """
    D, Z1 = model.W.shape
    q0, qI = model.best_q(np.zeros((1, D), dtype=model.dtype)), model.best_q(np.eye(D, dtype=model.dtype))
    b1 = np.concatenate([q0.m1[0], q0.lv1[0]])
    enc = [Dense(np.concatenate([qI.m1 - q0.m1, np.zeros((D, Z1), dtype=model.dtype)], 1), b1 if shift1 is None else b1 + shift1)]
    enc += [Dense(np.concatenate([B.T, np.zeros_like(B.T)], 1), np.concatenate([d, lv])) for B, d, lv in zip(q0.B, q0.d, q0.lv)]
    dec = [Dense(np.concatenate([A.T, np.zeros((A.shape[1], A.shape[0]), dtype=model.dtype)], 1), np.concatenate([c, lv]))
           for A, c, lv in zip(model.A, model.c, model.log_var)]
    parts = [(e,) for e in enc] + [(d,) for d in reversed(dec)] + [(Dense(model.W.T.copy(), model.b.copy()),)]
    return linear_ladder_arch(model), LadderParams(*parts)


def ladder_q(params: LadderParams, arch: LadderArch, x) -> ChainQ:
    """The q of a linear ladder (`best_linear_ladder`'s layout) at x (N, D), read off its encoders' weights.

    Refuses a ladder that is not in that layout (hidden layers, an activation, log-variances of q(z_l|z_{l-1}) that
    depend on z_{l-1}), whose q this would misread."""
    Zs = arch.latents
    if arch.activation != "identity" or any(arch.hidden) or any(len(params.enc(l)) != 1 for l in range(1, arch.L + 1)):
        raise ValueError(f"ladder_q reads linear ladders only (no hidden layers, identity activation); got {arch.spec}, "
                         f"{arch.activation}")
    if any(params.enc(l)[0].W[:, Z:].any() for l, Z in zip(range(2, arch.L + 1), Zs[1:])):
        raise ValueError("ladder_q: a log-variance of q(z_l|z_{l-1}) depends on z_{l-1}, which the oracle's family does not allow")
    h = x @ params.enc1[0].W + params.enc1[0].b
    up = [params.enc(l)[0] for l in range(2, arch.L + 1)]
    return ChainQ(h[:, :Zs[0]], h[:, Zs[0]:], tuple(e.W[:, :Z].T for e, Z in zip(up, Zs[1:])),
                  tuple(e.b[:Z] for e, Z in zip(up, Zs[1:])), tuple(e.b[Z:] for e, Z in zip(up, Zs[1:])))
