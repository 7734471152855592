"""The benchmark's VAE in JAX (jit-compiled autograd and a hand-written Adam), for bench_train.py's side-by-side runs.

Same model, initial parameters, batches and noise as npvae's: the parameters are npvae's own arrays
(W as (in, out)), the bound is written as in npvae.objectives (Bernoulli on logits, analytic or MC KL,
IWAE's logsumexp), Adam is torch's formula (npvae.nn.optim.adam_update). JAX is never a dependency of
npvae; this file is imported only when the benchmark is asked for the `jax` backend. XLA's CPU
thread pool is pinned to one thread by bench_train.py (XLA_FLAGS, set before jax is imported).
"""

from __future__ import annotations

import numpy as np

from npvae import flatten


def _forward_fn(jax, arch):
    """forward(params, x (N, D), eps (K, N, Z)) -> (log p(x|z) (K, N), mu, log_var, log-weights (K, N))."""
    jnp = jax.numpy
    Z = arch.latent_dim
    n_enc = 2 * (len(arch.hidden) + 1)
    act = jnp.tanh if arch.activation == "tanh" else jax.nn.relu

    def mlp(ps, h):
        L = len(ps) // 2
        for i in range(L):
            h = h @ ps[2 * i] + ps[2 * i + 1]
            if i < L - 1:
                h = act(h)
        return h

    def forward(ps, x, eps):
        h = mlp(ps[:n_enc], x)
        mu, log_var = h[:, :Z], h[:, Z:]
        z = mu + jnp.exp(0.5 * log_var) * eps  # (K, N, Z)
        logits = mlp(ps[n_enc:], z)
        log_px_z = jnp.sum(x * logits - jax.nn.softplus(logits), axis=-1)  # (K, N)
        a = log_px_z - 0.5 * jnp.sum(z * z, axis=-1) + 0.5 * jnp.sum(log_var + eps * eps, axis=-1)  # log 2pi cancels
        return log_px_z, mu, log_var, a

    return forward


def _bound_fn(jax, arch, bound: str, kl: str):
    """bound(params, x (N, D), eps (K, N, Z)) -> (N,), params as npvae.flatten's list."""
    jnp = jax.numpy
    forward = _forward_fn(jax, arch)

    def value(ps, x, eps):
        log_px_z, mu, log_var, a = forward(ps, x, eps)
        if kl == "analytic":
            return log_px_z.mean(0) - 0.5 * jnp.sum(mu * mu + jnp.expm1(log_var) - log_var, axis=-1)
        return a.mean(0) if bound == "elbo" else jax.scipy.special.logsumexp(a, axis=0) - jnp.log(a.shape[0])

    return value


def adam(jnp, ps, m, v, t, g, lr, betas, adam_eps):
    """One Adam step on lists of arrays (torch's formula, npvae.nn.optim.adam_update), t the steps taken before it."""
    b1, b2 = betas
    t = t + 1
    m = [b1 * mi + (1 - b1) * gi for mi, gi in zip(m, g)]
    v = [b2 * vi + (1 - b2) * gi * gi for vi, gi in zip(v, g)]
    bc1, bc2 = 1 - b1**t, 1 - b2**t
    ps = [p - lr / bc1 * mi / (jnp.sqrt(vi) / jnp.sqrt(bc2) + adam_eps) for p, mi, vi in zip(ps, m, v)]
    return ps, m, v, t


def jax_steps(jax, arch, params, batches, eps, options, lr=1e-3, betas=(0.9, 0.999), adam_eps=1e-8):
    """run(i0, i1) as bench_train.npvae_steps: training steps i0..i1-1, one jit-compiled step each."""
    jnp = jax.numpy
    value = _bound_fn(jax, arch, options["bound"], options["kl"])

    @jax.jit
    def step(ps, m, v, t, x, e):
        g = jax.grad(lambda q: -value(q, x, e).mean())(ps)
        return adam(jnp, ps, m, v, t, g, lr, betas, adam_eps)

    state = {"p": [jnp.asarray(a) for a in flatten(params)]}
    state["m"] = [jnp.zeros_like(a) for a in state["p"]]
    state["v"] = [jnp.zeros_like(a) for a in state["p"]]
    state["t"] = jnp.asarray(0.0, dtype=jnp.float32)
    xs, es = [jnp.asarray(x) for x in batches], [jnp.asarray(e) for e in eps]

    def run(i0, i1):
        p, m, v, t = state["p"], state["m"], state["v"], state["t"]
        for x, e in zip(xs[i0:i1], es[i0:i1]):
            p, m, v, t = step(p, m, v, t, x, e)
        jax.block_until_ready(p)
        state.update(p=p, m=m, v=v, t=t)

    return run


def jax_bound(jax, arch, params, x, eps, bound, kl) -> np.ndarray:
    """The bound per point for npvae's parameters, for the benchmark's check that the models are the same."""
    value = _bound_fn(jax, arch, bound, kl)
    return np.asarray(value([jax.numpy.asarray(a) for a in flatten(params)], x, eps))


def jax_log_px(jax, arch, params, x, k, batch, chunk_of):
    """Importance-sampled log p(x) as bench_train._torch_log_px: same noise (numpy's Generator, same chunks), jit per chunk shape."""
    jnp = jax.numpy
    forward = _forward_fn(jax, arch)
    log_weights = jax.jit(lambda ps, xb, e: forward(ps, xb, e)[3])  # (kc, N); the encoder's cost is small beside k decoder rows
    ps = [jnp.asarray(a) for a in flatten(params)]
    out = []
    for i in range(0, x.shape[0], batch):
        xb = jnp.asarray(x[i:i + batch])
        g = np.random.default_rng((0, i))
        chunk = chunk_of(xb.shape[0])
        parts, done = [], 0
        while done < k:
            kc = min(chunk, k - done)
            parts.append(log_weights(ps, xb, g.standard_normal((kc, xb.shape[0], arch.latent_dim), dtype=np.float32)))
            done += kc
        out.append(np.asarray(jax.scipy.special.logsumexp(jnp.concatenate(parts), axis=0) - jnp.log(k)))
    return np.concatenate(out)
