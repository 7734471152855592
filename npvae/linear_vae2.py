"""The two-stochastic-layer VAE that is exactly a two-layer linear-Gaussian model (npvae.linear_gaussian2), and its best encoders.

Identity activations, no hidden layers, a Gaussian likelihood with the model's sigma2: dec1 is x = W z1 + b,
dec2 gives p(z1|z2) = N(A z2 + c, diag(exp(log_var1))) (its log-variance outputs have zero weights and bias
log_var1), and the encoders compute the oracle's best q in the family: q(z1|x) = N(m1(x), exp(lv1)) with m1
affine in x, q(z2|z1) = N(B z1 + d, exp(lv2)). npvae check's two-layer bound rows and tests build on it.
"""

from __future__ import annotations

import numpy as np

from .layers import Dense
from .likelihoods import Likelihood
from .linear_gaussian2 import TwoLayerLinearGaussian
from .two_layer import TwoLayerArch, TwoLayerParams


def linear_arch2(model: TwoLayerLinearGaussian) -> TwoLayerArch:
    D, Z1, Z2 = model.shape
    return TwoLayerArch(D, (), Z1, (), Z2, "identity", Likelihood("gaussian", sigma2=float(model.sigma2)))


def best_linear_vae2(model: TwoLayerLinearGaussian, shift1=None) -> tuple[TwoLayerArch, TwoLayerParams]:
    """(arch, params): the decoders are `model`, the encoders its best_q (m1 read off at x = 0 and at the unit vectors).

    shift1: (2 Z1,) added to enc1's bias (m1 and lv1 moved away from the best q), or None.
    """
    D, Z1, Z2 = model.shape
    q0, qI = model.best_q(np.zeros((1, D))), model.best_q(np.eye(D))
    b1 = np.concatenate([q0.m1[0], q0.lv1[0]])
    enc1 = Dense(np.concatenate([qI.m1 - q0.m1, np.zeros((D, Z1))], 1), b1 if shift1 is None else b1 + shift1)
    enc2 = Dense(np.concatenate([q0.B.T, np.zeros((Z1, Z2))], 1), np.concatenate([q0.d, q0.lv2]))
    dec2 = Dense(np.concatenate([model.A.T, np.zeros((Z2, Z1))], 1), np.concatenate([model.c, model.log_var1]))
    dec1 = Dense(model.W.T.copy(), model.b.copy())
    return linear_arch2(model), TwoLayerParams((enc1,), (enc2,), (dec2,), (dec1,))


def random_model(rng: np.random.Generator, D: int, Z1: int, Z2: int) -> TwoLayerLinearGaussian:
    """A general model (its posterior is not in the diagonal family, so the best q leaves a gap)."""
    return TwoLayerLinearGaussian(rng.standard_normal((D, Z1)), rng.standard_normal(D), 0.8 * rng.standard_normal((Z1, Z2)),
                                  rng.standard_normal(Z1), rng.uniform(-1, 0.5, Z1), float(rng.uniform(0.3, 1.5)))
