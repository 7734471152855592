# %% [markdown]
# # Step 8: posterior collapse and active units
#
# A latent unit $z_j$ has **collapsed** when $q(z_j|x) = p(z_j)$ for every $x$: it carries nothing about the data and the
# decoder ignores it. The ELBO's KL term is the price of information. Averaged over the data it splits into
# $I_q(x; z) + \mathrm{KL}(q(z)\,\|\,p(z))$ (ELBO surgery, docs/theory.md, section 5), so a unit that carries information
# pays for it; and per unit, $\mathrm{KL}_j = \frac12[\mu_j^2 + e^{v_j} - 1 - v_j] \ge \frac12\mu_j^2$, so
#
# $$\mathbb{E}_x\,\mathrm{KL}_j \;\ge\; \tfrac12\,\mathbb{E}_x[\mu_j^2] \;\ge\; \tfrac12\,\mathrm{Var}_x(\mu_j):$$
#
# a unit whose mean moves with $x$ costs at least half that variance, in nats per point. When the price is raised
# (a KL weight $\beta > 1$), or the decoder can model $x$ without $z$ (a strong, e.g. autoregressive, decoder), the
# optimum switches units off. Burda et al. (2016) count the **active units**, those with
# $\mathrm{Var}_x\big(\mathbb{E}_q[z_j|x]\big) > 0.01$; `npvae eval` reports them with the KL per dimension. The remedies
# change the objective: a KL weight warmed up from 0 (`--kl-weight`, `--warmup-epochs`), or **free bits**
# (Kingma et al. 2016), $\sum_j \max(\lambda, \mathrm{KL}_j)$, which stops charging a unit below $\lambda$ nats
# (`kl_weight=` and `free_bits=` of `npvae.objective`, the same options as `npvae train`). While they act, the value
# trained is not a bound on $\log p(x)$.
#
# Three small VAEs on the embedded 8x8 digits, a few seconds in all: $\beta = 1$; $\beta = 4$; $\beta = 4$ with free bits.

# %%
import numpy as np

import npvae
from npvae.store.data import load   # the embedded digits that `npvae train` uses by default

rng = np.random.default_rng(0)  # change the seed: every assert below holds for every seed
EXACT = 1e-10
N_SE = 5

data = load("digits")                                     # binarised 8x8 digits: train (1297, 64), test (250, 64)
x_train, x_test = data.train, data.test
arch = npvae.Arch(64, (128,), 10)                          # 64-128-10 tanh, Bernoulli likelihood


def train(kl_weight=1.0, free_bits=0.0, epochs=30, batch=100, lr=1e-3):
    """Adam on the objective (value per point, gradient of its batch mean) with the given KL weight and free bits."""
    params = npvae.init_params(arch, rng)
    flat, state = npvae.flatten(params), npvae.adam_init(npvae.flatten(params))
    for _ in range(epochs):
        order = rng.permutation(len(x_train))
        for i in range(0, len(order), batch):
            xb = x_train[order[i:i + batch]]
            eps = rng.standard_normal((1, len(xb), arch.latent_dim))
            _, grads = npvae.objective(params, arch, xb, eps, kl_weight=kl_weight, free_bits=free_bits)
            flat, state = npvae.adam_update(flat, [-g for g in npvae.flatten(grads)], state, lr)   # descend on -objective
            params = npvae.unflatten(arch, flat)
    return params


def encoder(params, x):
    """(mu, log_var) of q(z|x): the encoder MLP by hand, tanh between its Dense layers, [mu, log_var] at the top."""
    h = x
    for i, layer in enumerate(params.encoder):
        h = h @ layer.W + layer.b
        if i < len(params.encoder) - 1:
            h = np.tanh(h)
    return h[:, :arch.latent_dim], h[:, arch.latent_dim:]

# %% [markdown]
# ## Train, then read each unit
#
# For each run: the variance over the training points of each unit's mean (active if above 0.01), each unit's KL
# averaged over the points, and the test ELBO (a true bound, $\beta = 1$, whatever was trained).

# %%
runs = {"beta = 1": {}, "beta = 4": {"kl_weight": 4.0}, "beta = 4, free bits 0.2": {"kl_weight": 4.0, "free_bits": 0.2}}
eps_test = rng.standard_normal((1, len(x_test), arch.latent_dim))   # one noise draw shared by the runs: paired comparisons
result = {}
for name, options in runs.items():
    params = train(**options)
    mu, log_var = encoder(params, x_train)
    assert np.max(np.abs(mu - npvae.models.encoder_mean(params, arch, x_train))) < EXACT
    var_of_mean = mu.var(axis=0)
    kl_per_unit = (0.5 * (mu**2 + np.expm1(log_var) - log_var)).mean(axis=0)
    assert np.all(kl_per_unit >= 0.5 * var_of_mean - EXACT)        # the price of information, exactly
    result[name] = {"active": int(np.sum(var_of_mean > 0.01)), "elbo": npvae.bound_value(params, arch, x_test, eps_test)}
    print(f"{name:24}: active units {result[name]['active']:2d} / 10; test ELBO {result[name]['elbo'].mean():7.2f}")
    print(f"{'':26}Var_x(mu_j) {np.array2string(var_of_mean, precision=3, floatmode='fixed', max_line_width=200)}")
    print(f"{'':26}E_x KL_j    {np.array2string(kl_per_unit, precision=3, floatmode='fixed', max_line_width=200)}")

# %% [markdown]
# ## What changed
#
# Raising the price of information switches units off and costs test ELBO (a paired comparison on the same points and
# noise); free bits, at the same $\beta$, keep units on.

# %%
diff = result["beta = 1"]["elbo"] - result["beta = 4"]["elbo"]
print(f"test ELBO, beta = 1 minus beta = 4: {diff.mean():.2f} +- {diff.std(ddof=1) / np.sqrt(len(diff)):.2f} nats per point")
assert diff.mean() > N_SE * diff.std(ddof=1) / np.sqrt(len(diff))
assert result["beta = 4"]["active"] < result["beta = 1"]["active"]
assert result["beta = 4, free bits 0.2"]["active"] > result["beta = 4"]["active"]

# %% [markdown]
# What to look for: with $\beta = 1$ the units are active, each paying its KL; with $\beta = 4$ most units' $\mathrm{Var}_x(\mu_j)$
# and KL fall to nearly zero (collapsed), and the test ELBO drops; free bits bring units back. The same numbers for a
# run of your own: `npvae train --arch 64-128-10 --kl-weight 4 --epochs 30 --out RUN`, then `npvae eval RUN`, whose
# report has "active units" and whose `metrics.json` has `kl_per_dim` and `var_of_mean_per_dim`.
