"""keras-team/keras-io examples/generative/vae.py at its head: z_mean, z_log_var, sigmoid probabilities, and
Keras 3's binary_crossentropy, which clips probabilities to [1e-7, 1 - 1e-7] in the model's dtype.

    return z_mean + ops.exp(0.5 * z_log_var) * epsilon                                 Sampling
    reconstruction_loss = ops.mean(ops.sum(keras.losses.binary_crossentropy(data, reconstruction), axis=(1, 2)))
    kl_loss = -0.5 * (1 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var))
    kl_loss = ops.mean(ops.sum(kl_loss, axis=1))
    total_loss = reconstruction_loss + kl_loss
binary_crossentropy(target, output) = mean over the last axis of the backend's (keras/src/backend/jax/nn.py):
    output = clip(output, epsilon(), 1.0 - epsilon()); -(target log(output) + (1 - target) log(1 - output))
Images are (N, 28, 28, 1), here (N, 8, 8, 1); the convolutions are dense relu layers. saturate=a adds a to three
pixels' pre-activations and subtracts it from three others, so that sigmoid passes the clip there.
"""

from __future__ import annotations

import numpy as np

from . import Head, apply, binary, linear, relu, sigmoid

OPTIONS = dict(out_kind="probs", clip=1e-7)
EPSILON = 1e-7  # keras.config.epsilon()
BUGS = {
    "flattened": "data and reconstruction flattened to (N, 784): binary_crossentropy's mean over the last axis "
                 "averages the pixels, and ops.sum over axis=(1, 2) is dropped",
}


def binary_crossentropy(target, output):
    """Keras 3's, elementwise (the mean over a last axis of size 1 changes nothing), and d/doutput."""
    lo, hi = output.dtype.type(EPSILON), output.dtype.type(1.0) - output.dtype.type(EPSILON)
    pc = np.clip(output, lo, hi)
    inside = (output > lo) & (output < hi)  # clip passes no gradient where it clips
    return -(target * np.log(pc) + (1 - target) * np.log(1 - pc)), np.where(inside, -(target / pc - (1 - target) / (1 - pc)), 0)


def head(seed, bug=None, dtype=np.float64, N=16, side=8, H=32, Z=2, saturate=0.0) -> Head:
    """The head of one train_step, total_loss, and its partial gradients (Keras computes in float32 by default: pass dtype)."""
    rng = np.random.default_rng(seed)
    D = side * side
    enc, e_mu, e_lv = linear(rng, D, H, dtype), linear(rng, H, Z, dtype, 6.0), linear(rng, H, Z, dtype, 3.0)
    dec, d_out = linear(rng, Z, H, dtype), linear(rng, H, D, dtype, 3.0)
    data = binary(rng, (N, side, side, 1), dtype)
    h = relu(apply(enc, data.reshape(N, D)))
    z_mean, z_log_var = apply(e_mu, h), apply(e_lv, h)
    epsilon = rng.standard_normal((N, Z)).astype(dtype)
    z = z_mean + np.exp(dtype(0.5) * z_log_var) * epsilon
    a = apply(d_out, relu(apply(dec, z)))  # (N, D)
    a[:, :3] += dtype(saturate)
    a[:, 3:6] -= dtype(saturate)
    reconstruction = sigmoid(a).reshape(N, side, side, 1)
    bce, dp = binary_crossentropy(data, reconstruction)  # (N, side, side, 1) each
    if bug == "flattened":
        reconstruction_loss, dp = np.mean(np.mean(bce.reshape(N, D), axis=-1)), dp / (N * D)
    else:
        reconstruction_loss, dp = np.mean(np.sum(np.mean(bce, axis=-1), axis=(1, 2))), dp / N
    kl_loss = -0.5 * (1 + z_log_var - np.square(z_mean) - np.exp(z_log_var))
    kl_loss = np.mean(np.sum(kl_loss, axis=1))
    total_loss = reconstruction_loss + kl_loss
    grads = {"mu": z_mean / N, "scale": -0.5 * (1 - np.exp(z_log_var)) / N, "z": np.zeros_like(z), "out": dp.reshape(N, D)}
    return Head(data.reshape(N, D), z_mean, z_log_var, epsilon, z, reconstruction.reshape(N, D), np.asarray(total_loss, dtype),
                {k: g.astype(dtype) for k, g in grads.items()})
