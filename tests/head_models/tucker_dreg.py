"""google-research dreg_estimators/model.py (Tucker et al. 2018, the DReG paper's code) at its head: IWAE with K
samples, a softplus scale, Bernoulli logits, and the inference network's surrogates of its estimators.

    sigma = tf.nn.softplus(sigma + self.raw_sigma_bias)            ConditionalNormal, raw_sigma_bias = 0.25
    log_weights = log_p_z + log_p_x_given_z - log_q_z               (K, N)
    log_avg_weight = reduce_logsumexp(log_weights, axis=0) - log(num_samples)
    normalized_weights = tf.stop_gradient(tf.nn.softmax(log_weights, axis=0))
    stopped_log_weights: log q_z from q_z(..., stop_gradient=True), mu and sigma held
    "iwae": inference objective log_avg_weight;  "stl": sum_k w_k stopped_log_weights_k;  "dreg": sum_k w_k^2 ...
    model_loss = -reduce_mean(log_avg_weight); inference_loss = -reduce_mean(inference objective)   main_loop.py
The head's scale is the softplus's argument (the net's raw output + 0.25): scale_kind="softplus". Its MLPs are tanh
with [200, 200] hidden units, one layer of H here; the encoder sees x - mean(x), the decoder's logits add bias_init.
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp, softmax

from . import Head, apply, binary, linear, sigmoid, softplus

RAW_SIGMA_BIAS = 0.25
BUGS = {
    "no_log_k": "log_avg_weight = reduce_logsumexp(log_weights, axis=0): the - log(num_samples) left out",
    "mean_log_w": "log_avg_weight = reduce_mean(log_weights, axis=0): the mean of the log-weights",
    "no_stop": "stopped_proposal = q_z(observations, contexts, stop_gradient=False): mu and sigma not held in log q",
    "dreg_w": "estimators['dreg'] with normalized_weights where sq_normalized_weights belongs",
}


def options(estimator: str) -> dict:
    """What a user declares for the inference network's gradient of an estimator of this file.

    npvae has STL for the ELBO only (Roeder et al. 2017): this file's "stl" with num_samples = 1, where w = 1.
    """
    return dict(scale_kind="softplus", bound="elbo" if estimator == "stl" else "iwae", kl="mc",
                estimator="reparam" if estimator == "iwae" else estimator)


def head(seed, estimator="dreg", bug=None, dtype=np.float64, N=8, K=5, D=32, H=16, Z=3, grads_of="inference") -> Head:
    """The head of model.iwae, the model loss's value, and the partial gradients of the inference loss (or the model loss)."""
    rng = np.random.default_rng(seed)
    enc, enc_out = linear(rng, D, H, dtype), linear(rng, H, 2 * Z, dtype, 3.0)
    dec, dec_out = linear(rng, Z, H, dtype), linear(rng, H, D, dtype, 3.0)
    x = binary(rng, (N, D), dtype)
    bias_init = np.log(np.clip(x.mean(0), 1e-3, 1 - 1e-3) / (1 - np.clip(x.mean(0), 1e-3, 1 - 1e-3)))
    outs = apply(enc_out, np.tanh(apply(enc, x - x.mean(0))))
    mu, s = outs[:, :Z], outs[:, Z:] + dtype(RAW_SIGMA_BIAS)  # (N, Z); sigma = softplus(s)
    sigma = softplus(s)
    eps = rng.standard_normal((K, N, Z)).astype(dtype)
    z = mu + sigma * eps  # (K, N, Z)
    logits = apply(dec_out, np.tanh(apply(dec, z))) + bias_init  # (K, N, D)
    log_p_x_given_z = np.sum(x * logits - softplus(logits), axis=-1)
    log_p_z = np.sum(-0.5 * (np.log(2 * np.pi) + z * z), axis=-1)
    log_q_z = np.sum(-0.5 * np.log(2 * np.pi) - np.log(sigma) - 0.5 * ((z - mu) / sigma) ** 2, axis=-1)
    log_weights = log_p_z + log_p_x_given_z - log_q_z  # (K, N)
    log_avg_weight = {"no_log_k": logsumexp(log_weights, axis=0), "mean_log_w": log_weights.mean(0)}.get(
        bug, logsumexp(log_weights, axis=0) - np.log(K))
    w = softmax(log_weights, axis=0)
    if grads_of == "model" or estimator == "iwae":
        c, held = w, False  # d log_avg_weight / d log_weights_k = w_k; nothing stopped
    else:
        c = w * w if estimator == "dreg" and bug != "dreg_w" else w
        held = bug != "no_stop"
    # Partials of -mean_n sum_k c_k a_k, a_k = log_weights_k with c held fixed (tf.stop_gradient).
    c3, r, iv = c[..., None] / N, z - mu, sigma**-2.0
    grads = {"out": -c3 * (x - sigmoid(logits))}
    if grads_of == "inference":
        grads["z"] = -c3 * (-z + r * iv)  # d log p(z)/dz - d log q/dz
        grads["mu"] = np.zeros_like(mu) if held else (c3 * r * iv).sum(0)  # d a/dmu = -(z - mu) / sigma^2
        dv = np.zeros_like(s) if held else -(c3 * 0.5 * (1 - r * r * iv)).sum(0)  # d/dlog sigma^2
        grads["scale"] = dv * 2 * sigmoid(s) / sigma  # dlog sigma^2/ds
    return Head(x, mu, s, eps, z, logits, np.asarray(-np.mean(log_avg_weight), dtype), {k: g.astype(dtype) for k, g in grads.items()})
