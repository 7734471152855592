"""pyro-ppl/pyro examples/vae/vae.py at its head: softplus hidden layers, z_scale = exp(fc22), fudged probabilities,
and Trace_ELBO's loss with one particle.

    z_loc = self.fc21(hidden); z_scale = torch.exp(self.fc22(hidden))              Encoder: a log-std head
    loc_img = (self.sigmoid(self.fc21(hidden)) + fudge) * (1 - 2*fudge)            Decoder, fudge = 1e-7
    pyro.sample("obs", dist.Bernoulli(loc_img).independent(1), obs=x)
    Trace_ELBO: loss = -sum_n [log p(x|z) + log p(z) - log q(z|x)]   at z = z_loc + z_scale * eps (Normal.rsample)
Bernoulli(probs).log_prob is -binary_cross_entropy_with_logits(log p - log1p(-p), x) (torch.distributions).
"""

from __future__ import annotations

import numpy as np

from . import Head, apply, binary, linear, sigmoid, softplus

OPTIONS = dict(scale_kind="log_std", kl="mc", out_kind="probs")
FUDGE = 1e-7
BUGS = {
    "noise_001": "eps = 0.01 * torch.randn_like(z_loc) in a reparameterisation written by hand",
}


def log_normal(z, loc, log_scale):
    """Normal(loc, exp(log_scale)).log_prob(z) summed over the latent dimensions."""
    return np.sum(-0.5 * np.log(2 * np.pi) - log_scale - 0.5 * ((z - loc) * np.exp(-log_scale)) ** 2, axis=-1)


def head(seed, bug=None, dtype=np.float64, N=16, D=64, H=32, Z=4, std_head=False) -> Head:
    """The guide's and model's head on one batch, Trace_ELBO's loss, and its partial gradients.

    std_head: give the encoder's z_scale itself as the scale (scale_kind="std"), not fc22's output.
    """
    rng = np.random.default_rng(seed)
    e1, e21, e22 = linear(rng, D, H, dtype), linear(rng, H, Z, dtype, 4.0), linear(rng, H, Z, dtype, 2.0)
    d1, d21 = linear(rng, Z, H, dtype), linear(rng, H, D, dtype, 3.0)
    x = binary(rng, (N, D), dtype)
    hidden = softplus(apply(e1, x))
    z_loc, log_scale = apply(e21, hidden), apply(e22, hidden)  # z_scale = exp(log_scale)
    eps = rng.standard_normal((N, Z)).astype(dtype) * dtype(0.01 if bug == "noise_001" else 1.0)
    z = z_loc + np.exp(log_scale) * eps
    loc_img = (sigmoid(apply(d21, softplus(apply(d1, z)))) + dtype(FUDGE)) * dtype(1 - 2 * FUDGE)
    logits = np.log(loc_img) - np.log1p(-loc_img)  # probs_to_logits(is_binary=True)
    log_px = np.sum(x * logits - softplus(logits), axis=-1)
    elbo = np.sum(log_px + log_normal(z, 0, 0) - log_normal(z, z_loc, log_scale))
    r, iv = z - z_loc, np.exp(-2 * log_scale)
    grads = {"out": -(x - loc_img) / (loc_img * (1 - loc_img)),  # of -elbo: -(x - sigmoid(l)) dl/dp
             "z": -(-z + r * iv), "mu": r * iv, "scale": -(1 - r * r * iv)}
    scale = log_scale
    if std_head:
        scale = np.exp(log_scale)
        grads["scale"] = grads["scale"] / scale  # d/dstd = d/dlog_std / std
    return Head(x, z_loc, scale, eps, z, loc_img, np.asarray(-elbo, dtype), {k: g.astype(dtype) for k, g in grads.items()})
