"""Public VAEs re-created in NumPy at their head, each from its own code, for the head check's tests and benchmark.

    pytorch_examples.py  pytorch/examples vae/main.py                      log_var head, sigmoid probs, BCE sum + KLD
    hips_autograd.py     HIPS/autograd examples/variational_autoencoder.py  log_std head, +-1 targets, MC KL, / data_dim
    pyro_vae.py          pyro-ppl/pyro examples/vae/vae.py                 log_std head (exp), fudged probs, Trace_ELBO
    keras_vae.py         keras-team/keras-io examples/generative/vae.py    z_log_var, Keras 3 BCE clipped at 1e-7
    antixk_vanilla.py    AntixK/PyTorch-VAE models/vanilla_vae.py          MSE mean + kld_weight * KLD mean
    tucker_dreg.py       google-research dreg_estimators/model.py          IWAE with STL and DReG surrogates

Each module's `head(seed, bug=None, dtype=np.float64, ...) -> Head` runs the model's forward with random weights
(convolutions and batch norm become dense layers and a batch norm: the head check does not see the network) and
computes the loss as the original code does, reduction and clipping included, with its gradients with respect to
the head written by hand in the partial form (mu, scale, z and out independent inputs, as jax.grad over a head
function gives them). `OPTIONS` is what a user declares to assert_head_matches; `BUGS` names the planted bugs.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from npvae.maths.stable import sigmoid, softplus

MODELS = ("pytorch_examples", "hips_autograd", "pyro_vae", "keras_vae", "antixk_vanilla", "tucker_dreg")


class Head(NamedTuple):
    """x (N, D); mu, scale (N, Z); eps, z (N, Z) or (K, N, Z); out (N, D) or (K, N, D); loss scalar; grads partial."""

    x: np.ndarray
    mu: np.ndarray
    scale: np.ndarray
    eps: np.ndarray
    z: np.ndarray
    out: np.ndarray
    loss: np.ndarray
    grads: dict


def linear(rng, n_in, n_out, dtype, scale=1.0):
    """(W, b) with W (n_in, n_out) at torch's default init size, times `scale`."""
    bound = scale / np.sqrt(n_in)
    return (rng.uniform(-bound, bound, (n_in, n_out)).astype(dtype), rng.uniform(-bound, bound, n_out).astype(dtype))


def apply(layer, h):
    W, b = layer
    return h @ W + b


def relu(a):
    return np.maximum(a, a.dtype.type(0))


def leaky_relu(a, slope=0.01):
    return np.where(a > 0, a, a * a.dtype.type(slope))


def batch_norm(a, eps=1e-5):
    """torch's BatchNorm in training mode (batch statistics, biased variance), weight 1, bias 0."""
    m = a.mean(0, keepdims=True)
    return (a - m) / np.sqrt(a.var(0, keepdims=True) + a.dtype.type(eps))


def binary(rng, shape, dtype, p=0.3):
    return (rng.random(shape) < p).astype(dtype)


__all__ = ["Head", "MODELS", "apply", "batch_norm", "binary", "leaky_relu", "linear", "relu", "sigmoid", "softplus"]
