"""Scalar maths shared by every compiled backend, written once with `math.*` only.

Each function is the element-wise formula of the NumPy specification it names (npvae.stable,
npvae.likelihoods, npvae.layers, npvae.gaussian), for ONE element, in the float type of its
arguments (`like` makes every constant float32 for float32 input). They are compiled with numba's
`jit`, so CPU kernels call them and (later) CUDA kernels can call the very same functions; the
three elementary functions below are the only per-target pieces.
NaN in, NaN out: no branch here turns a NaN into a number.
"""

from __future__ import annotations

import math

from ._jit import jit, like


# The elementary functions each target implements: these pure-Python definitions say what they
# compute; npvae.backends.cpu_math registers the numba CPU versions (vectorisable arithmetic), and a
# CUDA backend would register its own. The formulas below call only these and `math.*`.
def exp_neg(u):
    """e^u for u <= 0 (or NaN)."""
    return math.exp(u)


def expm1_neg(u):
    """e^u - 1 for u <= 0 (or NaN), accurate as u -> 0."""
    return math.expm1(u)


def log1p_unit(e):
    """log(1 + e) for e in [0, 1] (or NaN), accurate as e -> 0."""
    return math.log1p(e)


# Activation and likelihood codes used by the kernels (names in npvae.layers.ACTIVATIONS, npvae.likelihoods.LIKELIHOODS).
IDENTITY, RELU, TANH, SOFTPLUS = 0, 1, 2, 3
BERNOULLI, GAUSSIAN, GAUSSIAN_LEARNED = 0, 1, 2


@jit
def softplus_sigmoid(l):
    """(softplus(l), sigmoid(l)) from one exp(-|l|): max(l, 0) + log1p(e) and the branch-stable 1/(1+e^-l) (npvae.stable)."""
    one = like(l, 1.0)
    e = exp_neg(-abs(l))
    sp = (l if l > like(l, 0.0) else like(l, 0.0)) + log1p_unit(e)
    return sp, (one / (one + e) if l >= like(l, 0.0) else e / (one + e))


@jit
def softplus(l):
    """log(1 + e^l) = max(l, 0) + log1p(exp(-|l|)): no overflow at any |l|."""
    return (l if l > like(l, 0.0) else like(l, 0.0)) + log1p_unit(exp_neg(-abs(l)))


@jit
def sigmoid(l):
    """1 / (1 + e^-l), both branches exp of a non-positive number."""
    one = like(l, 1.0)
    e = exp_neg(-abs(l))
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
    es = math.exp(-s)  # s >= s_min may be negative: not exp_neg's range
    r = x - m
    q = r * r * es  # (x - m)^2 / variance
    return like(x, -0.5) * (log_2pi + s + q), r * es, like(x, -0.5) * (like(x, 1.0) - q) * sg


@jit
def tanh(a):
    """tanh(a) = sign(a) (1 - e^-2|a|) / (1 + e^-2|a|), written with expm1 so small |a| keeps its precision."""
    t = expm1_neg(like(a, -2.0) * abs(a))
    th = -t / (like(a, 2.0) + t)
    return th if a >= like(a, 0.0) else -th


# Activations f (npvae.layers) and their backward dy f'(a) from the forward's cache: relu and tanh
# keep y (y > 0 iff a > 0; tanh' = 1 - y^2), softplus keeps a.
@jit
def relu(a):
    return like(a, 0.0) if a <= like(a, 0.0) else a  # a NaN stays NaN, as np.maximum


@jit
def relu_grad(dy, y):
    return dy * (like(dy, 1.0) if y > like(dy, 0.0) else like(dy, 0.0))  # a product, so a NaN dy stays NaN


@jit
def tanh_grad(dy, y):
    return dy * (like(dy, 1.0) - y * y)


@jit
def softplus_grad(dy, a):
    return dy * sigmoid(a)


@jit
def kl_std_normal_dim(mu, log_var):
    """KL(N(mu, e^v) || N(0, 1)) = 1/2 [mu^2 + expm1(v) - v] for one latent dimension (Kingma & Welling 2014, App. B)."""
    return like(mu, 0.5) * (mu * mu + math.expm1(log_var) - log_var)


@jit
def nan_max(a, b):
    """max(a, b) that returns NaN if either is NaN (np.maximum's rule)."""
    return a if (a > b or a != a) else b
