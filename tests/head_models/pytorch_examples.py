"""pytorch/examples vae/main.py at its head: fc21 -> mu, fc22 -> logvar, sigmoid probabilities, BCE summed + KLD.

    std = torch.exp(0.5*logvar); eps = torch.randn_like(std); return mu + eps*std             reparameterize
    BCE = F.binary_cross_entropy(recon_x, x.view(-1, 784), reduction='sum')   each log clamped at -100 (aten Loss.cpp)
    KLD = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return BCE + KLD
The network, 784-400-20-400-784 with relu, is D-H-Z-H-D here. saturate=True adds 40 to three output pixels'
pre-activations: sigmoid is exactly 1 there in float64, and torch's clamp of log(1 - p) at -100 is what the loss holds.
"""

from __future__ import annotations

import numpy as np

from . import Head, apply, binary, linear, relu, sigmoid

OPTIONS = dict(out_kind="probs")
BUGS = {
    "kl_no_half": "KLD = -torch.sum(1 + logvar - mu.pow(2) - logvar.exp()): the 0.5 dropped",
    "kl_sign": "return BCE - KLD",
    "sample_logvar_as_logstd": "std = torch.exp(logvar) in reparameterize: the log-variance used as a log-std",
    "kl_logvar_as_logstd": "KLD = -0.5 * torch.sum(1 + 2*logvar - mu.pow(2) - (2*logvar).exp()): logvar read as a log-std",
    "bce_mean": "F.binary_cross_entropy(recon_x, x) with its default reduction='mean', KLD summed",
    "noise_001": "eps = 0.01 * torch.randn_like(std)",
}
TORCH_LOG_FLOOR = -100.0
TORCH_GRAD_EPS = float(np.float32(1e-12))  # the backward's floor is a float constant, 9.99999996e-13 in float64 too (torch 2.13)


def bce_sum(p, x):
    """F.binary_cross_entropy(p, x, reduction='sum'), and its backward (p - x) / max(p (1 - p), EPSILON) as torch computes it."""
    with np.errstate(divide="ignore"):
        per = -(x * np.maximum(np.log(p), TORCH_LOG_FLOOR) + (1 - x) * np.maximum(np.log1p(-p), TORCH_LOG_FLOOR))
    return per.sum(), (p - x) / np.maximum(p * (1 - p), p.dtype.type(TORCH_GRAD_EPS))


def kld(mu, logvar, bug=None):
    """KLD as loss_function writes it (or a planted variant), and its partials (d/dmu, d/dlogvar)."""
    if bug == "kl_logvar_as_logstd":
        return -0.5 * np.sum(1 + 2 * logvar - mu**2 - np.exp(2 * logvar)), mu, -(1 - np.exp(2 * logvar))
    c = {"kl_no_half": 2.0, "kl_sign": -1.0}.get(bug, 1.0)
    return c * -0.5 * np.sum(1 + logvar - mu**2 - np.exp(logvar)), c * mu, c * -0.5 * (1 - np.exp(logvar))


def head(seed, bug=None, dtype=np.float64, N=16, D=64, H=32, Z=4, saturate=False) -> Head:
    """The head of one training step, the loss loss_function returns, and its partial gradients."""
    rng = np.random.default_rng(seed)
    fc1, fc3, fc4 = linear(rng, D, H, dtype), linear(rng, Z, H, dtype), linear(rng, H, D, dtype, 3.0)
    fc21, fc22 = linear(rng, H, Z, dtype, 6.0), linear(rng, H, Z, dtype, 3.0)  # wide enough that the KL is no rounding error
    x = binary(rng, (N, D), dtype)
    h1 = relu(apply(fc1, x))
    mu, logvar = apply(fc21, h1), apply(fc22, h1)  # (N, Z)
    eps = rng.standard_normal((N, Z)).astype(dtype) * dtype(0.01 if bug == "noise_001" else 1.0)
    std = np.exp(logvar if bug == "sample_logvar_as_logstd" else dtype(0.5) * logvar)
    z = mu + eps * std
    a = apply(fc4, relu(apply(fc3, z)))  # (N, D)
    if saturate:
        a[:, :3] += dtype(40.0)
    p = sigmoid(a)
    bce, dp = bce_sum(p, x)
    kl, dmu, dlv = kld(mu, logvar, bug)
    if bug == "bce_mean":
        bce, dp = bce / (N * D), dp / (N * D)
    loss = bce + kl
    grads = {"mu": dmu, "scale": dlv, "z": np.zeros_like(z), "out": dp}
    return Head(x, mu, logvar, eps, z, p, np.asarray(loss, dtype), {k: g.astype(dtype) for k, g in grads.items()})
