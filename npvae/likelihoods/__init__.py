"""Decoder likelihoods log p(x|z): one file per likelihood, and this registry.

Each likelihood module (bernoulli.py, gaussian.py, gaussian_learned.py) is the whole likelihood:
NAME; out_dim(D), the decoder's output width; forward(lik, out, x) -> ((K, N) log-probs, cache) and
backward(dlogp (K, N), cache) -> dout (K, N, D_out), side by side; mean(out) for pictures;
output_bias(lik, m) for initialisation; check_constants(lik) and check_data(lik, x) for the public boundary; and, for the
compiled backends, constants(lik, t) and elem(x, row, d, D, c1, c2, grad), the scalar kernel of one
element. A new likelihood is one such file and its name in FILES.
Shapes: out (K, N, D_out), x (N, D). Formulas: docs/maths.md, "Decoder likelihoods".
"""

from __future__ import annotations

import importlib
from typing import NamedTuple

import numpy as np

from .. import _validate

FILES = ("bernoulli", "gaussian", "gaussian_learned")  # the registry: one module of this package per likelihood
REGISTRY = {m.NAME: m for m in (importlib.import_module(f"{__name__}.{f}") for f in FILES)}
LIKELIHOODS = tuple(REGISTRY)
bernoulli, gaussian, gaussian_learned = REGISTRY["bernoulli"], REGISTRY["gaussian"], REGISTRY["gaussian-learned"]
MARGINAL_CLIP = bernoulli.MARGINAL_CLIP


class Likelihood(NamedTuple):
    """Which likelihood, and its constant: `sigma2` for "gaussian", the soft floor `min_log_var` for "gaussian-learned"."""

    name: str = "bernoulli"
    sigma2: float = 1.0
    min_log_var: float = -6.0

    @property
    def kind(self):
        """The likelihood's module in REGISTRY."""
        return REGISTRY[self.name]

    def out_dim(self, D: int) -> int:
        """Width of the decoder's output: D logits or means, or 2 D (means then raw log-variances)."""
        return self.kind.out_dim(D)


def check(lik: Likelihood) -> None:
    """Refuse an unknown likelihood, or one whose constant is out of range (each likelihood's check_constants says which)."""
    _validate.choice("likelihood", lik.name, LIKELIHOODS)
    lik.kind.check_constants(lik)


def forward(lik: Likelihood, out, x):
    """The likelihood's forward: (K, N, D_out), (N, D) -> ((K, N), cache)."""
    return lik.kind.forward(lik, out, x)


def backward(lik: Likelihood, dlogp, cache):
    """The likelihood's backward: (K, N) -> (K, N, D_out)."""
    return lik.kind.backward(dlogp, cache)


def mean(lik: Likelihood, out):
    """The decoder's mean of x: sigmoid(logits) for Bernoulli, m for the Gaussians (for pictures and samples)."""
    return lik.kind.mean(out)


def check_data(lik: Likelihood, x) -> None:
    """Refuse data the likelihood has no meaning for (e.g. grey levels under a Bernoulli), at the public boundary."""
    lik.kind.check_data(lik, x)


def output_bias_from_data(lik: Likelihood, x_mean) -> np.ndarray:
    """The decoder output bias that makes p(x | z) match the data's per-pixel marginals before training: (D,) -> (D_out,), float64.

    Bernoulli: logit(clip(mean, 1e-3, 1 - 1e-3)) (Burda et al. 2016, their code); Gaussian: the data mean;
    learned Gaussian: the data mean, and raw log-variances 0.
    """
    return lik.kind.output_bias(lik, np.asarray(x_mean, dtype=np.float64))



# The per-likelihood functions under their long names.
def bernoulli_forward(logits, x):
    return bernoulli.forward(Likelihood("bernoulli"), logits, x)


def gaussian_forward(mean, x, sigma2: float):
    return gaussian.forward(Likelihood("gaussian", sigma2=sigma2), mean, x)


def gaussian_learned_forward(out, x, min_log_var: float):
    return gaussian_learned.forward(Likelihood("gaussian-learned", min_log_var=min_log_var), out, x)


bernoulli_backward, gaussian_backward, gaussian_learned_backward = bernoulli.backward, gaussian.backward, gaussian_learned.backward
