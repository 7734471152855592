"""The one-layer VAE's bounds on log p(x) and their gradients by hand: decoder -> reparameterisation -> encoder.

For a batch x: (N, D) and noise eps: (K, N, Z) (K samples per point, passed in), `bound_and_grad` returns
the bound per data point, value: (N,), and the gradient of the batch MEAN of the objective,
d/dtheta (1/N) sum_n value_n, for every encoder and decoder parameter (a `VAEParams`). The objective
is maximised; a loss is its negative and appears only in the trainer.

This module is the NumPy specification of the forward and the backward for npvae.vae.model's Arch (the ladder
at L = 1, npvae.vae.ladder_objective, written out for speed and free bits); the bounds and the estimators it runs
are npvae.maths.estimators' (which lists them, with their papers). It imports no backend: npvae.objectives, the
public front, validates and then runs the backend asked for. Log-weights: a_k = log p(x|z_k) + log p(z_k) - log q(z_k|x).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .. import likelihoods as lik
from ..maths.estimators import BOUND, ESTIMATORS
from ..maths.gaussian import (
    kl_std_normal_backward,
    kl_std_normal_forward,
    kl_std_normal_per_dim,
    log_prob_eps,
    log_std_normal,
    sample_backward,
    sample_forward,
)
from ..nn.mlp import mlp_backward
from .model import Arch, VAEParams, decode, encode

ESTIMATOR_NAMES = tuple(ESTIMATORS)


class Forward(NamedTuple):
    """Everything one forward pass computes; the backward reuses it and recomputes nothing."""

    mu: np.ndarray  # (N, Z)
    log_var: np.ndarray  # (N, Z)
    z: np.ndarray  # (K, N, Z)
    log_px_z: np.ndarray  # (K, N)  log p(x|z_k)
    eps: np.ndarray  # (K, N, Z)
    enc_cache: list
    sample_cache: tuple  # (sd, eps)
    dec_cache: list
    lik_cache: tuple


def forward(params: VAEParams, arch: Arch, x, eps) -> Forward:
    """Encoder, reparameterised sample, decoder and likelihood; no checking."""
    mu, log_var, enc_cache = encode(params, arch, x)
    z, sample_cache = sample_forward(mu, log_var, eps)
    out, dec_cache = decode(params, arch, z)  # (K, N, D_out)
    log_px_z, lik_cache = lik.forward(arch.likelihood, out, x)
    return Forward(mu, log_var, z, log_px_z, eps, enc_cache, sample_cache, dec_cache, lik_cache)


def log_weights_of(f: Forward, kl_weight: float = 1.0):
    """a_k = log p(x|z_k) + beta [log p(z_k) - log q(z_k|x)]: (K, N); beta = 1 is the true log-weight."""
    t = f.eps.dtype.type
    return f.log_px_z + t(kl_weight) * (log_std_normal(f.z) - log_prob_eps(f.log_var, f.eps))


def decoder_backward(arch: Arch, f: Forward, wn):
    """Backprop sample weights wn: (K, N) on log p(x|z_k) through the likelihood and decoder -> (grads, dz (K, N, Z))."""
    dout = lik.backward(arch.likelihood, wn, f.lik_cache)  # (K, N, D_out)
    K, N = wn.shape
    grads, dz = mlp_backward(dout.reshape(K * N, -1), f.dec_cache)
    return grads, dz.reshape(K, N, -1)


def encoder_backward(f: Forward, dmu, dlog_var):
    """Backprop (dmu, dlog_var): (N, Z) through the encoder MLP; the data x needs no gradient."""
    grads, _ = mlp_backward(np.concatenate([dmu, dlog_var], axis=1), f.enc_cache, need_dx=False)
    return grads


def free_bits_kl(mu, log_var, free_bits: float):
    """sum_j max(lambda, KL_j) per point, and the mask of dimensions above lambda (Kingma et al. 2016, eq. 13, per point)."""
    kl_j = kl_std_normal_per_dim(mu, log_var)  # (N, Z)
    above = kl_j > mu.dtype.type(free_bits)
    return np.where(above, kl_j, mu.dtype.type(free_bits)).sum(axis=-1), above


def latent_grads(f: Forward, arch: Arch, bound, kl, estimator, kl_weight, free_bits=0.0):
    """From one forward pass: (value (N,), dmu, dlog_var (N, Z), decoder grads) of the batch-mean bound; no checking.

    Everything of the backward but the encoder's MLP, so that an encoder whose outputs reach (mu, log_var) some
    other way (npvae.checks.verify_layouts: a log-std or std head) shares this maths.
    """
    N = f.mu.shape[0]
    t = f.mu.dtype.type
    beta = t(kl_weight)
    if kl == "analytic":
        kl_value, above = free_bits_kl(f.mu, f.log_var, free_bits)
        value, w = BOUND[(bound, kl)](f.log_px_z)
        wn = w / t(N)  # d(batch mean) / d log p(x|z_k)
        dec_grads, dz = decoder_backward(arch, f, wn)
        dmu, dlog_var = sample_backward(dz, f.sample_cache)
        # A dimension held at its floor lambda passes no gradient to its KL.
        kmu, klv = kl_std_normal_backward(np.where(above, -beta / t(N), t(0)), f.mu, f.log_var)
        return value - beta * kl_value, dmu + kmu, dlog_var + klv, dec_grads
    value, w = BOUND[(bound, kl)](log_weights_of(f, kl_weight))
    wn = w / t(N)  # (K, N): d(batch mean of the bound) / d a_k
    dec_grads, dz = decoder_backward(arch, f, wn)  # dz = wn * d log p(x|z_k) / dz_k
    dz = dz - beta * wn[..., None] * f.z  # + wn * beta * d log p(z_k)/dz_k, with d log N(z; 0, I)/dz = -z
    dmu, dlog_var = ESTIMATORS[estimator].latent_backward(dz, f.sample_cache, f.log_var, w, wn, beta)
    return value, dmu, dlog_var, dec_grads


def bound_and_grad(params, arch, x, eps, bound, kl, estimator, kl_weight, free_bits=0.0):
    """The value (N,) and the gradient of its batch mean; no checking (see `objective`)."""
    f = forward(params, arch, x, eps)
    value, dmu, dlog_var, dec_grads = latent_grads(f, arch, bound, kl, estimator, kl_weight, free_bits)
    return value, VAEParams(encoder_backward(f, dmu, dlog_var), dec_grads)


def bound_value_core(params, arch, x, eps, bound, kl):
    """The bound per point (N,) without gradients; no checking."""
    f = forward(params, arch, x, eps)
    if kl == "analytic":
        return f.log_px_z.mean(axis=0) - kl_std_normal_forward(f.mu, f.log_var)
    return BOUND[(bound, kl)](log_weights_of(f))[0]
