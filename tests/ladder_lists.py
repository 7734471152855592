"""The ladder's bounds on a list of per-layer noise arrays [eps_1 (K, N, Z_1), ..., eps_L]: npvae.objectives on their
concatenation along the last axis (the one noise array eps (K, N, Z_1 + ... + Z_L) the public front takes)."""

import numpy as np

from npvae import objectives


def bound_and_grad(params, arch, x, eps, bound="elbo", kl="mc", estimator="reparam", kl_weight=1.0):
    return objectives.objective(params, arch, x, np.concatenate(eps, axis=-1), bound=bound, kl=kl, estimator=estimator,
                                kl_weight=kl_weight)


def log_weights(params, arch, x, eps):
    return objectives.log_weights(params, arch, x, np.concatenate(eps, axis=-1))


def bound_value(params, arch, x, eps, bound="elbo", kl="mc"):
    return objectives.bound_value(params, arch, x, np.concatenate(eps, axis=-1), bound=bound, kl=kl)
