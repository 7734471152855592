"""HIPS/autograd examples/variational_autoencoder.py at its head: a log-std head, +-1 targets, a Monte Carlo KL.

    q_means, q_log_stds = nn_predict_gaussian(rec_params, data)       the last layer's output split in two
    latents = rs.randn(*mean.shape) * np.exp(log_std) + mean           sample_diag_gaussian
    bernoulli_log_density: np.sum(-np.logaddexp(0, -unnormalized_logprobs * targets), axis=-1)   targets -1 or +1
    vae_lower_bound = np.mean(p_latents + likelihood - q_latents)      one sample: log p(z) + log p(x|z) - log q(z|x)
    objective = -vae_lower_bound(...) / data_dim
Its nets apply batch_normalize ((a - mean) / (std + 1)) and relu to every layer but the last; one hidden layer here.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import norm

from . import Head, apply, linear, relu, sigmoid

OPTIONS = dict(scale_kind="log_std", kl="mc", x_coding="pm1")
BUGS = {
    "targets_01": "images left 0/1 (not binarise()d to -1/+1) in the density written for +-1 targets",
    "declared_log_var": "the check told scale_kind='log_var' (the default) for this log-std head",
    "noise_001": "rs.randn(*mean.shape) * 0.01 as the noise",
}


def batch_normalize(a):
    """The example's own: (a - batch mean) / (batch std + 1)."""
    return (a - a.mean(0, keepdims=True)) / (a.std(0, keepdims=True) + 1)


def net(params, inputs):
    """neural_net_predict: batch_normalize then relu on every layer but the last."""
    for layer in params[:-1]:
        inputs = relu(batch_normalize(apply(layer, inputs)))
    return apply(params[-1], inputs)


def head(seed, bug=None, dtype=np.float64, N=16, D=64, H=32, Z=4) -> Head:
    """The head of vae_lower_bound on one batch, the objective, and its partial gradients."""
    rng = np.random.default_rng(seed)
    rec = [linear(rng, D, H, dtype), linear(rng, H, 2 * Z, dtype, 2.0)]
    gen = [linear(rng, Z, H, dtype), linear(rng, H, D, dtype, 3.0)]
    on = rng.random((N, D)) < 0.3
    x = np.where(on, 1.0, 0.0 if bug == "targets_01" else -1.0).astype(dtype)  # binarise(): -1 off, +1 on
    out = net(rec, x)
    mu, log_std = out[:, :Z], out[:, Z:]
    eps = rng.standard_normal((N, Z)).astype(dtype) * dtype(0.01 if bug == "noise_001" else 1.0)
    z = eps * np.exp(log_std) + mu
    logits = net(gen, z)
    q_latents = norm.logpdf(z, mu, np.exp(log_std)).sum(-1)
    p_latents = norm.logpdf(z, 0, 1).sum(-1)
    likelihood = np.sum(-np.logaddexp(0, -logits * x), axis=-1)
    objective = -np.mean(p_latents + likelihood - q_latents) / D
    # Partials of the objective; c = -1 / (N D) times those of the summed bound.
    c = -1.0 / (N * D)
    r, iv = z - mu, np.exp(-2 * log_std)
    grads = {"out": c * x * sigmoid(-logits * x),  # d/dl of -logaddexp(0, -l t) = t sigmoid(-l t)
             "z": c * (-z + r * iv),  # d log p(z)/dz - d log q/dz
             "mu": c * -(r * iv),  # -d log q/dmu
             "scale": c * (1 - r * r * iv)}  # -d log q/dlog_std
    return Head(x, mu, log_std, eps, z, logits, np.asarray(objective, dtype), {k: g.astype(dtype) for k, g in grads.items()})
