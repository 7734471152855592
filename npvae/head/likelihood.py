"""log p(x | decoder output) in the parameterisation the user's decoder gives, and its gradient with respect to it.

The decoder's output `out` (K, N, D) is one of (x: (N, D), the targets t = x for 0/1 data, (x + 1) / 2 for +-1 data):
    bernoulli, logits   sum_d t l - softplus(l)                               d/dl = t - sigmoid(l)
    bernoulli, probs    sum_d t log p + (1 - t) log(1 - p)  (0 log 0 = 0)     d/dp = t / p - (1 - t) / (1 - p)
    gaussian, mean      -1/2 sum_d [(x - m)^2 / sigma2 + log 2 pi sigma2]     d/dm = (x - m) / sigma2
    gaussian-learned    -1/2 sum_d [(x - m)^2 e^-v + v + log 2 pi],           d/dm = (x - m) e^-v, d/dv = ((x - m)^2 e^-v - 1) / 2
                        v = log_var_of(out_scale_kind, s) from the decoder's second output s (npvae.head.scales)
Probabilities are what frameworks clip. `clip` reproduces two conventions exactly, value and gradient:
    a float c  p clipped to [c, 1 - c] before the logs, no gradient where clipped (Keras: c = 1e-7)
    "torch"    each log clamped at -100 (torch.nn.functional.binary_cross_entropy), its backward
               (t - p) / max(p (1 - p), 1e-12) as torch computes it
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.special import xlogy

from ..maths.stable import sigmoid, softplus
from .scales import dlog_var_ds, log_var_of

HEAD_LIKELIHOODS = {"bernoulli": ("logits", "probs"), "gaussian": ("mean",), "gaussian-learned": ("mean",)}  # the first: the default
LOG2PI = float(np.log(2.0 * np.pi))
TORCH_LOG_FLOOR = -100.0  # torch/aten/src/ATen/native/Loss.cpp: binary_cross_entropy
TORCH_GRAD_EPS = float(np.float32(1e-12))  # its backward's floor, stored as a float32 (seen: torch 2.13 float64 gives 1/1.0000000040e-12)
KERAS_EPSILON = 1e-7  # keras.config.epsilon()


class HeadLikelihood(NamedTuple):
    """Which likelihood, in which parameterisation, with which clipping and constant."""

    name: str = "bernoulli"
    out_kind: str = "logits"
    sigma2: float = 1.0
    out_scale_kind: str = "log_var"  # gaussian-learned: the decoder's scale output
    clip: object = None  # None, a float c in (0, 1/2), or "torch"
    clip_dtype: str = "float64"  # the dtype the framework clipped in: float32's 1 - 1e-7 is 1 - 1.19e-7

    def targets(self, x, pm1: bool):
        """The Bernoulli targets t in {0, 1}: x itself, or (x + 1) / 2 for data coded +-1."""
        return (x + 1.0) / 2.0 if pm1 else x


def head_likelihood(name, out_kind=None, sigma2=1.0, out_scale_kind="log_var", clip=None, clip_dtype="float64") -> HeadLikelihood:
    """The declared likelihood, its output kind defaulting to the first of HEAD_LIKELIHOODS[name]; an unknown name is refused."""
    if name not in HEAD_LIKELIHOODS:
        raise ValueError(f"likelihood must be one of {', '.join(HEAD_LIKELIHOODS)}, got {name!r}")
    return HeadLikelihood(name, out_kind or HEAD_LIKELIHOODS[name][0], sigma2, out_scale_kind, clip, clip_dtype)


def log_px(lik: HeadLikelihood, out, out_scale, t):
    """log p(x|out) per sample, (K, N), and its gradients (d/dout, d/dout_scale or None): (K, N, D) each."""
    if lik.name == "bernoulli" and lik.out_kind == "logits":
        return (t * out - softplus(out)).sum(-1), t - sigmoid(out), None
    if lik.name == "bernoulli":
        return _probs(out, t, lik.clip, np.dtype(lik.clip_dtype))
    if lik.name == "gaussian":
        r = t - out
        return -0.5 * (r * r / lik.sigma2 + np.log(lik.sigma2) + LOG2PI).sum(-1), r / lik.sigma2, None
    v = log_var_of(lik.out_scale_kind, out_scale)
    r = t - out
    q = r * r * np.exp(-v)
    return -0.5 * (q + v + LOG2PI).sum(-1), r * np.exp(-v), 0.5 * (q - 1.0) * dlog_var_ds(lik.out_scale_kind, out_scale)


def _probs(p, t, clip, dtype=np.dtype(np.float64)):
    """The Bernoulli log-likelihood on probabilities, under one of the clipping conventions (module docstring)."""
    if clip is None:
        with np.errstate(divide="ignore", invalid="ignore"):
            lp = xlogy(t, p) + xlogy(1.0 - t, 1.0 - p)
            g = np.where(t > 0, t / p, 0.0) - np.where(t < 1, (1.0 - t) / (1.0 - p), 0.0)
        return lp.sum(-1), g, None
    if clip == "torch":
        with np.errstate(divide="ignore"):
            lp = t * np.maximum(np.log(p), TORCH_LOG_FLOOR) + (1.0 - t) * np.maximum(np.log1p(-p), TORCH_LOG_FLOOR)
        return lp.sum(-1), (t - p) / np.maximum(p * (1.0 - p), TORCH_GRAD_EPS), None
    c, hi = float(dtype.type(clip)), float(dtype.type(1) - dtype.type(clip))  # the bounds as the framework's dtype has them
    pc = np.clip(p, c, hi)
    inside = (p > c) & (p < hi)
    return (t * np.log(pc) + (1.0 - t) * np.log1p(-pc)).sum(-1), np.where(inside, t / pc - (1.0 - t) / (1.0 - pc), 0.0), None


def check(lik: HeadLikelihood, out, out_scale, t) -> None:
    """One-line errors for outputs the declared likelihood gives no meaning (probabilities outside [0, 1], ...)."""
    if lik.name not in HEAD_LIKELIHOODS:
        raise ValueError(f"likelihood must be one of {', '.join(HEAD_LIKELIHOODS)}, got {lik.name!r}")
    if lik.out_kind not in HEAD_LIKELIHOODS[lik.name]:
        raise ValueError(f"a {lik.name} decoder's output is one of {', '.join(HEAD_LIKELIHOODS[lik.name])}, got out_kind={lik.out_kind!r}")
    if lik.name == "bernoulli" and not np.all((t == 0) | (t == 1)):
        raise ValueError("a Bernoulli likelihood needs binary targets: x in {0, 1} (or {-1, +1} with x_coding='pm1')")
    if lik.clip is not None and (lik.name != "bernoulli" or lik.out_kind != "probs"):
        raise ValueError("clip applies to Bernoulli probabilities only (out_kind='probs'); logits need no clipping")
    if isinstance(lik.clip, str) and lik.clip != "torch" or (not isinstance(lik.clip, (str, type(None))) and not 0 < float(lik.clip) < 0.5):
        raise ValueError(f"clip must be None, 'torch' or a float in (0, 0.5) such as 1e-7 (Keras), got {lik.clip!r}")
    if lik.out_kind == "probs" and np.any((out < 0) | (out > 1)):
        raise ValueError("out is declared Bernoulli probabilities but holds values outside [0, 1]: are they logits? (out_kind='logits')")
    if lik.name == "gaussian" and not lik.sigma2 > 0:
        raise ValueError(f"sigma2 must be positive, got {lik.sigma2}")
    if lik.name == "gaussian-learned" and out_scale is None:
        raise ValueError("a gaussian-learned decoder needs out_scale, its scale output (K, N, D), in out_scale_kind")
