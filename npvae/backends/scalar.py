"""Scalar maths shared by every compiled backend, written once with `math.*` only.

Each function is the element-wise formula of the NumPy specification it names (npvae.stable,
npvae.likelihoods, npvae.layers, npvae.gaussian), for ONE element, in the float type of its
arguments (`like` makes every constant float32 for float32 input). They are compiled with numba's
`jit`, so CPU kernels call them and (later) CUDA kernels can call the very same functions.
NaN in, NaN out: no branch here turns a NaN into a number.
"""

from __future__ import annotations

import math

from ._jit import jit, like

# Activation and likelihood codes used by the kernels (names in npvae.layers.ACTIVATIONS, npvae.likelihoods.LIKELIHOODS).
IDENTITY, RELU, TANH, SOFTPLUS = 0, 1, 2, 3
BERNOULLI, GAUSSIAN, GAUSSIAN_LEARNED = 0, 1, 2


@jit
def softplus_sigmoid(l):
    """(softplus(l), sigmoid(l)) from one exp(-|l|): max(l, 0) + log1p(e) and the branch-stable 1/(1+e^-l) (npvae.stable)."""
    one = like(l, 1.0)
    e = math.exp(-abs(l))
    sp = (l if l > like(l, 0.0) else like(l, 0.0)) + math.log1p(e)
    return sp, (one / (one + e) if l >= like(l, 0.0) else e / (one + e))


@jit
def softplus(l):
    """log(1 + e^l) = max(l, 0) + log1p(exp(-|l|)): no overflow at any |l|."""
    return (l if l > like(l, 0.0) else like(l, 0.0)) + math.log1p(math.exp(-abs(l)))


@jit
def sigmoid(l):
    """1 / (1 + e^-l), both branches exp of a non-positive number."""
    one = like(l, 1.0)
    e = math.exp(-abs(l))
    return one / (one + e) if l >= like(l, 0.0) else e / (one + e)


@jit
def bernoulli(x, l):
    """log Bern(x | sigmoid(l)) = x l - softplus(l), and its derivative x - sigmoid(l): one element."""
    sp, sg = softplus_sigmoid(l)
    return x * l - sp, x - sg


@jit
def gaussian(x, m, sigma2, log_2pi_sigma2):
    """log N(x; m, sigma2) = -1/2 [log 2 pi sigma2 + (x - m)^2 / sigma2], and d/dm = (x - m) / sigma2."""
    r = x - m
    return like(x, -0.5) * (log_2pi_sigma2 + r * r / sigma2), r / sigma2


@jit
def gaussian_learned(x, m, raw, min_log_var, log_2pi):
    """log N(x; m, e^s), s = s_min + softplus(raw - s_min); returns (log p, d/dm, d/draw) (npvae.likelihoods)."""
    sp, sg = softplus_sigmoid(raw - min_log_var)
    s = min_log_var + sp
    es = math.exp(-s)
    r = x - m
    q = r * r * es  # (x - m)^2 / variance
    return like(x, -0.5) * (log_2pi + s + q), r * es, like(x, -0.5) * (like(x, 1.0) - q) * sg


@jit
def activation(code, a):
    """f(a) for f in identity, relu, tanh, softplus (npvae.layers.activation_forward)."""
    if code == RELU:
        return like(a, 0.0) if a <= like(a, 0.0) else a  # a NaN stays NaN, as np.maximum
    if code == TANH:
        return math.tanh(a)
    if code == SOFTPLUS:
        return softplus(a)
    return a


@jit
def activation_grad(code, dy, cache):
    """dy f'(a) from the forward's cache: relu and tanh keep y (y > 0 iff a > 0; tanh' = 1 - y^2), softplus keeps a."""
    if code == RELU:
        return dy * (like(dy, 1.0) if cache > like(dy, 0.0) else like(dy, 0.0))  # a product, so a NaN dy stays NaN
    if code == TANH:
        return dy * (like(dy, 1.0) - cache * cache)
    if code == SOFTPLUS:
        return dy * sigmoid(cache)
    return dy


@jit
def kl_std_normal_dim(mu, log_var):
    """KL(N(mu, e^v) || N(0, 1)) = 1/2 [mu^2 + expm1(v) - v] for one latent dimension (Kingma & Welling 2014, App. B)."""
    return like(mu, 0.5) * (mu * mu + math.expm1(log_var) - log_var)


@jit
def nan_max(a, b):
    """max(a, b) that returns NaN if either is NaN (np.maximum's rule)."""
    return a if (a > b or a != a) else b
