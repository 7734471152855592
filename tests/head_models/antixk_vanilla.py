"""AntixK/PyTorch-VAE models/vanilla_vae.py at its head: fc_mu, fc_var (a log-variance), a tanh decoder, and

    recons_loss = F.mse_loss(recons, input)                                  the mean over all N C H W elements
    kld_loss = torch.mean(-0.5 * torch.sum(1 + log_var - mu ** 2 - log_var.exp(), dim = 1), dim = 0)
    loss = recons_loss + kld_weight * kld_loss                kld_weight = M_N: 0.00025 in training (configs/vae.yaml),
                                                              1.0 in validation_step (experiment.py)
What ELBO is that? With D = C H W, the Gaussian ELBO per point at variance sigma2 and KL weight beta is
    b = -SSE / (2 sigma2) - D/2 log(2 pi sigma2) - beta KL,
and -sum_n b_n / (N D) = MSE + 1/2 log(2 pi sigma2) + beta / D mean_n KL. So the loss is -mean/D of the bound exactly
when sigma2 = 1/2 and beta = kld_weight D, up to the constant 1/2 log(pi) that it leaves out. Images (N, 3, 64, 64)
are (N, 3, 4, 4) here; conv + batch norm + leaky relu blocks are dense + batch norm + leaky relu.
"""

from __future__ import annotations

import numpy as np

from . import Head, apply, batch_norm, leaky_relu, linear

KLD_WEIGHT = {"train": 0.00025, "val": 1.0}
CONSTANT = 0.5 * np.log(np.pi)  # 1/2 log(2 pi sigma2) at sigma2 = 1/2: what the loss leaves out


def options(kld_weight: float, D: int) -> dict:
    """The declaration under which the loss is a scaling of a bound (module docstring)."""
    return dict(likelihood="gaussian", sigma2=0.5, kl_weight=kld_weight * D)


def head(seed, phase="train", dtype=np.float64, N=16, C=3, side=4, H=32, Z=4) -> Head:
    """The head of one training (or validation) step, loss_function's 'loss', and its partial gradients."""
    rng = np.random.default_rng(seed)
    D = C * side * side
    w = KLD_WEIGHT[phase]
    enc, fc_mu, fc_var = linear(rng, D, H, dtype), linear(rng, H, Z, dtype, 4.0), linear(rng, H, Z, dtype, 3.0)
    dec_in, final = linear(rng, Z, H, dtype), linear(rng, H, D, dtype, 3.0)
    x = rng.random((N, C, side, side)).astype(dtype)  # an image batch in [0, 1]
    result = leaky_relu(batch_norm(apply(enc, x.reshape(N, D))))
    mu, log_var = apply(fc_mu, result), apply(fc_var, result)
    eps = rng.standard_normal((N, Z)).astype(dtype)
    z = eps * np.exp(0.5 * log_var) + mu
    recons = np.tanh(apply(final, leaky_relu(batch_norm(apply(dec_in, z)))))  # (N, D)
    recons_loss = np.mean((recons - x.reshape(N, D)) ** 2)
    kld_loss = np.mean(-0.5 * np.sum(1 + log_var - mu**2 - np.exp(log_var), axis=1), axis=0)
    loss = recons_loss + w * kld_loss
    grads = {"out": 2 * (recons - x.reshape(N, D)) / (N * D), "z": np.zeros_like(z),
             "mu": w * mu / N, "scale": w * -0.5 * (1 - np.exp(log_var)) / N}
    return Head(x.reshape(N, D), mu, log_var, eps, z, recons, np.asarray(loss, dtype), {k: g.astype(dtype) for k, g in grads.items()})
