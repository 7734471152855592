# %% [markdown]
# # Step 1: the model and the ELBO
#
# A VAE is a latent-variable model, $p(x, z) = p(z)\,p(x|z)$, with the prior $p(z) = \mathcal{N}(0, I)$ and a
# decoder network that turns $z$ into the logits of independent Bernoulli pixels. Its evidence
# $\log p(x) = \log \int p(x|z)\,p(z)\,dz$ has no closed form, so an encoder network gives a Gaussian
# $q(z|x) = \mathcal{N}(\mu, \mathrm{diag}(e^{v}))$, with $v$ = `log_var` a log *variance*, and Jensen's inequality gives
#
# $$\log p(x) = \log \mathbb{E}_q\big[p(x, z)/q(z|x)\big] \;\ge\; \mathbb{E}_q\big[\log p(x, z) - \log q(z|x)\big] = \mathrm{ELBO}(x).$$
#
# npvae works with the **log-weights** $a_k = \log p(x, z_k) - \log q(z_k|x)$ of samples $z_k = \mu + e^{v/2}\epsilon_k$;
# the Monte Carlo ELBO is their mean. Splitting $\log p(x, z) = \log p(x|z) + \log p(z)$ gives the form that is
# trained: reconstruction minus $\mathrm{KL}(q(z|x)\,\|\,p(z))$, the KL in closed form (docs/theory.md, sections 1 to 3).
#
# This script writes the whole model by hand in NumPy and checks that `npvae.log_weights` and `npvae.bound_value`
# compute exactly that, to rounding error.

# %%
import numpy as np
import scipy.special
import scipy.stats

import npvae

rng = np.random.default_rng(0)  # change the seed: every assert below holds for every seed
LOG_2PI = np.log(2 * np.pi)
ROUNDING = 1e-10                # float64 rounding of sums of tens of terms of order 1 to 100: far below this

arch = npvae.Arch(data_dim=16, hidden=(12,), latent_dim=3)   # a 16-12-3 tanh VAE, Bernoulli likelihood (the defaults)
params = npvae.init_params(arch, rng)
print(arch.spec, [(name, a.shape) for name, a in zip(npvae.param_names(arch), npvae.flatten(params))][:2], "...")

# %% [markdown]
# ## The generative story, by hand
#
# Draw $z \sim p(z)$, decode it to logits $l$, draw each pixel $x_d \sim \mathrm{Bernoulli}(\sigma(l_d))$. The networks are
# plain `Dense(W, b)` layers, `h @ W + b` with `tanh` between them and nothing after the last.

# %%
def mlp(layers, h):
    """h @ W + b through the layers, tanh after every layer but the last."""
    for i, layer in enumerate(layers):
        h = h @ layer.W + layer.b
        if i < len(layers) - 1:
            h = np.tanh(h)
    return h


N, Z = 8, arch.latent_dim
z_true = rng.standard_normal((N, Z))                                      # z ~ p(z)
logits = mlp(params.decoder, z_true)                                      # (N, D)
x = (rng.random(logits.shape) < scipy.special.expit(logits)).astype(float)  # x ~ p(x|z)
print("x, 8 images of 16 pixels drawn from the model itself:\n", x.astype(int))

# %% [markdown]
# ## The log-weights, by hand
#
# The encoder's last layer outputs $[\mu, v]$; the sample is $z = \mu + e^{v/2}\epsilon$. The Bernoulli likelihood is
# written on logits, $\log p(x|z) = \sum_d [x_d l_d - \mathrm{softplus}(l_d)]$: a **sum** over the pixels, the
# probability of the whole image. And $\log q(z|x)$ written in the noise is $-\frac12\sum_j[\log 2\pi + v_j + \epsilon_j^2]$.

# %%
K = 5
eps = rng.standard_normal((K, N, Z))                      # the noise is an input: (K, N, Z)

out = mlp(params.encoder, x)
mu, log_var = out[:, :Z], out[:, Z:]                      # (N, Z) each
z = mu + np.exp(0.5 * log_var) * eps                      # (K, N, Z), the reparameterised sample
l = mlp(params.decoder, z)                                # (K, N, D) logits
log_px_z = np.sum(x * l - np.logaddexp(0.0, l), axis=-1)  # (K, N)
log_pz = -0.5 * np.sum(LOG_2PI + z**2, axis=-1)
log_qz = -0.5 * np.sum(LOG_2PI + log_var + eps**2, axis=-1)
a = log_px_z + log_pz - log_qz                            # (K, N): the log-weights

# an independent check of the likelihood: scipy's Bernoulli pmf, summed over pixels
by_scipy = scipy.stats.bernoulli.logpmf(x, scipy.special.expit(l)).sum(axis=-1)
assert np.max(np.abs(log_px_z - by_scipy)) < ROUNDING

assert np.max(np.abs(npvae.log_weights(params, arch, x, eps) - a)) < ROUNDING
print("log-weights a (K, N), by hand = npvae.log_weights to", np.max(np.abs(npvae.log_weights(params, arch, x, eps) - a)))

# %% [markdown]
# ## The ELBO, two ways
#
# With a Monte Carlo KL the ELBO estimate is the mean of the log-weights (`kl="mc"`). With the analytic KL
# (Kingma & Welling 2014, App. B), $\mathrm{KL}(q\,\|\,\mathcal{N}(0, I)) = \frac12\sum_j[\mu_j^2 + e^{v_j} - 1 - v_j]$,
# only the reconstruction term is sampled (`kl="analytic"`, npvae's default). Same noise, two estimates of one ELBO.

# %%
elbo_mc = a.mean(axis=0)
kl = 0.5 * np.sum(mu**2 + np.expm1(log_var) - log_var, axis=-1)   # (N,)
elbo_analytic = log_px_z.mean(axis=0) - kl

assert np.max(np.abs(npvae.bound_value(params, arch, x, eps, kl="mc") - elbo_mc)) < ROUNDING
assert np.max(np.abs(npvae.bound_value(params, arch, x, eps, kl="analytic") - elbo_analytic)) < ROUNDING
print("ELBO per point, MC KL      :", np.round(elbo_mc, 3))
print("ELBO per point, analytic KL:", np.round(elbo_analytic, 3))
print("KL(q(z|x) || p(z)) per point:", np.round(kl, 3))

# %% [markdown]
# ## Why it is a lower bound
#
# Jensen's inequality holds for every set of samples, not only in expectation: the mean of the log-weights is at most
# the log of the mean of the weights, $\frac1K\sum_k a_k \le \log\frac1K\sum_k e^{a_k}$ (`npvae.log_mean_exp`). The right
# side averaged over many samples is an estimate of $\log p(x)$ (step 7); the left side is the ELBO.

# %%
many = rng.standard_normal((4000, N, Z))
a_many = npvae.log_weights(params, arch, x, many)
mean_log_w = a_many.mean(axis=0)
log_mean_w = npvae.log_mean_exp(a_many, axis=0)
assert np.all(mean_log_w <= log_mean_w + ROUNDING)        # Jensen, exactly
print("mean of log-weights (the ELBO)   :", np.round(mean_log_w, 2))
print("log of the mean weight (~log p(x)):", np.round(log_mean_w, 2))
print("the gap, >= 0 for every point    :", np.round(log_mean_w - mean_log_w, 2))

# %% [markdown]
# What to look for: the two ELBO estimates differ draw by draw but both are below $\log p(x)$ on average; the printed
# gap is how far $q(z|x)$ is from the true posterior (step 2 makes that exact). npvae maximises the ELBO;
# `loss = -elbo` appears only where an optimiser needs it.
