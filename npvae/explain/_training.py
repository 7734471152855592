"""The VAE training the explain topics share: Adam on minus the ELBO (analytic KL, one sample) of a fresh tanh VAE.

npvae.explain.posterior_nonlinear trains its VAE this way too, measuring between epochs (its loop is written out there);
gaps and generation train theirs with `train_vae`, the same draws in the same order: the initial parameters, then per
epoch a permutation of X and one eps per batch.
"""

from __future__ import annotations

import numpy as np

from ..nn.optim import adam_init, adam_update
from ..objectives import objective
from ..vae.model import Arch, flatten, init_params, unflatten


def train_vae(arch: Arch, X, epochs: int, rng: np.random.Generator, batch: int = 100, lr: float = 1e-3):
    """Adam (lr, batches of `batch`) on minus the ELBO of a fresh VAE over X (N, D), analytic KL, one sample; -> params."""
    flat = flatten(init_params(arch, rng))
    state = adam_init(flat)
    for _ in range(epochs):
        order = rng.permutation(X.shape[0])
        for j in range(0, X.shape[0], batch):
            xb = X[order[j : j + batch]]
            _, grads = objective(unflatten(arch, flat), arch, xb, rng.standard_normal((1, xb.shape[0], arch.latent_dim)))
            flat, state = adam_update(flat, [-g for g in flatten(grads)], state, lr=lr)
    return unflatten(arch, flat)
