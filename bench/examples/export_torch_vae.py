"""Build a PyTorch MLP VAE, compute its bound and gradients with autograd, and write them for `npvae verify`.

    pip install torch
    python bench/examples/export_torch_vae.py torch_vae.npz --bound iwae --kl mc --estimator dreg
    npvae verify torch_vae.npz

Nothing is trained: the point is to check an implementation. The model is what npvae calls an MLP VAE:
encoder D -> hidden... -> 2Z ([mu, log_var]), decoder Z -> reversed(hidden)... -> D logits (Bernoulli),
an activation after every layer but the last, z = mu + exp(log_var / 2) eps. The file's layout is in
docs/verify.md: npvae's parameter names, W as (in, out) (torch's Linear.weight transposed), the gradient
of the batch MEAN of the bound (what is maximised, not the loss).

Estimators (Roeder et al. 2017; Tucker et al. 2018), written with torch's stop-gradient (`detach`):
- reparam: the gradient of the bound itself;
- stl (ELBO, MC KL): log q(z|x) with its parameters detached, z still a function of them;
- dreg (IWAE): the decoder's gradient as IWAE's; the encoder's from sum_k w_k^2 a_k, with the normalised weights
  w detached and log q's parameters detached.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

import numpy as np
import torch

ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu, "softplus": torch.nn.functional.softplus, "identity": lambda a: a}


def mlp(layers, h, activation):
    for i, layer in enumerate(layers):
        h = layer(h)
        if i < len(layers) - 1:
            h = ACTIVATIONS[activation](h)
    return h


def log_normal(z, mu, log_var):
    return -0.5 * (math.log(2 * math.pi) + log_var + (z - mu) ** 2 / log_var.exp()).sum(-1)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out")
    p.add_argument("--arch", default="12-8-8-3", help="D-hidden...-Z")
    p.add_argument("--activation", choices=sorted(ACTIVATIONS), default="tanh")
    p.add_argument("--bound", choices=("elbo", "iwae"), default="iwae")
    p.add_argument("--kl", choices=("analytic", "mc"), default="mc")
    p.add_argument("--estimator", choices=("reparam", "stl", "dreg"), default="dreg")
    p.add_argument("-k", type=int, default=5)
    p.add_argument("-n", type=int, default=7)
    p.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)
    dtype = getattr(torch, args.dtype)
    sizes = [int(s) for s in args.arch.split("-")]
    D, hidden, Z = sizes[0], sizes[1:-1], sizes[-1]
    enc_sizes, dec_sizes = [D, *hidden, 2 * Z], [Z, *reversed(hidden), D]
    encoder = [torch.nn.Linear(a, b, dtype=dtype) for a, b in zip(enc_sizes, enc_sizes[1:])]
    decoder = [torch.nn.Linear(a, b, dtype=dtype) for a, b in zip(dec_sizes, dec_sizes[1:])]
    enc_params = [t for layer in encoder for t in (layer.weight, layer.bias)]
    dec_params = [t for layer in decoder for t in (layer.weight, layer.bias)]

    x = (torch.rand(args.n, D, dtype=dtype) < 0.4).to(dtype)  # binary data for the Bernoulli decoder
    eps = torch.randn(args.k, args.n, Z, dtype=dtype)

    out = mlp(encoder, x, args.activation)
    mu, log_var = out[:, :Z], out[:, Z:]
    z = mu + (0.5 * log_var).exp() * eps  # (K, N, Z)
    logits = mlp(decoder, z, args.activation)  # (K, N, D)
    log_px_z = (x * logits - torch.nn.functional.softplus(logits)).sum(-1)  # Bernoulli on logits, (K, N)
    log_pz = log_normal(z, torch.zeros_like(z), torch.zeros_like(z))
    a = log_px_z + log_pz - log_normal(z, mu, log_var)  # log importance weights, (K, N)
    a_stl = log_px_z + log_pz - log_normal(z, mu.detach(), log_var.detach())  # log q's parameters stopped

    if args.kl == "analytic":  # ELBO = E log p(x|z) - KL(q || N(0, I))
        values = log_px_z.mean(0) - 0.5 * (mu**2 + log_var.exp() - 1 - log_var).sum(-1)
    elif args.bound == "elbo":
        values = a.mean(0)
    else:
        values = torch.logsumexp(a, 0) - math.log(args.k)

    params = enc_params + dec_params
    if args.estimator == "reparam":
        grads = torch.autograd.grad(values.mean(), params)
    elif args.estimator == "stl":
        grads = torch.autograd.grad(a_stl.mean(0).mean(), params)
    else:  # dreg
        w = torch.softmax(a, 0).detach()
        g_enc = torch.autograd.grad((w**2 * a_stl).sum(0).mean(), enc_params, retain_graph=True)
        g_dec = torch.autograd.grad(values.mean(), dec_params)
        grads = (*g_enc, *g_dec)

    arrays = {}
    for part, layers, offset in (("encoder", encoder, 0), ("decoder", decoder, len(enc_params))):
        for i, layer in enumerate(layers):
            arrays[f"{part}.{i}.W"] = layer.weight.detach().numpy().T.copy()  # npvae stores W as (in, out)
            arrays[f"{part}.{i}.b"] = layer.bias.detach().numpy().copy()
            arrays[f"grad.{part}.{i}.W"] = grads[offset + 2 * i].numpy().T.copy()
            arrays[f"grad.{part}.{i}.b"] = grads[offset + 2 * i + 1].numpy().copy()
    options = dict(bound=args.bound, kl=args.kl, estimator=args.estimator, likelihood="bernoulli", activation=args.activation)
    np.savez(args.out, x=x.numpy(), eps=eps.numpy(), values=values.detach().numpy(), options=np.array(json.dumps(options)), **arrays)
    print(f"wrote {args.out}: torch {args.arch} {args.activation} VAE, {args.bound} kl={args.kl} {args.estimator}, "
          f"N={args.n}, K={args.k}, {args.dtype}; now run: npvae verify {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
