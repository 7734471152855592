# %% [markdown]
# # Step 2: the exact model, where every term has a closed form
#
# With a linear decoder and Gaussian noise, $p(x|z) = \mathcal{N}(Wz + b, \sigma^2 I)$ (probabilistic PCA, Tipping &
# Bishop 1999), everything a VAE only estimates is known exactly: $\log p(x)$, the posterior $p(z|x)$, and the ELBO
# of any diagonal Gaussian $q$ (docs/theory.md, section 4; `npvae.LinearGaussian`). Two facts to see here, both
# from the identity (A) of docs/theory.md, section 2:
#
# $$\log p(x) = \mathrm{ELBO}(q) + \mathrm{KL}\big(q(z|x)\,\|\,p(z|x)\big).$$
#
# 1. At the true posterior the ELBO **is** $\log p(x)$: every single log-weight equals $\log p(x)$ (Bayes' rule).
# 2. Anywhere else the gap is exactly the KL to the posterior, and a diagonal $q$ cannot close it when the
#    posterior is correlated.
#
# Finally, a VAE with one linear layer each way *is* this model (Lucas et al. 2019): npvae's general VAE code gives
# the closed-form ELBO exactly.

# %%
import numpy as np
import scipy.stats

import npvae
from npvae.oracle.linear_vae import linear_vae   # (arch, params) of the linear VAE of a LinearGaussian

rng = np.random.default_rng(0)  # change the seed: every assert below holds for every seed
EXACT = 1e-10                   # closed forms agree to float64 rounding (terms of order 10, a few dozen of them)

D, Z = 5, 2
model = npvae.LinearGaussian.random(rng, D, (Z,), sigma2=0.5)   # standard-normal W (D, Z) and b: a correlated posterior
W, b, s2 = model.W, model.b, float(model.sigma2)
x, _ = model.sample(6, rng)                                     # (6, D) data from the model
print(model)

# %% [markdown]
# ## log p(x) and p(z|x), checked against Gaussian algebra done another way
#
# $x = Wz + b + \text{noise}$ is Gaussian with covariance $C = WW^\top + \sigma^2 I$; conditioning the joint Gaussian of
# $(z, x)$ gives $p(z|x) = \mathcal{N}(W^\top C^{-1}(x - b),\ I - W^\top C^{-1} W)$. npvae computes both another way
# (Woodbury and the determinant lemma, never forming $C$).

# %%
C = W @ W.T + s2 * np.eye(D)
assert np.max(np.abs(model.log_marginal(x) - scipy.stats.multivariate_normal(b, C).logpdf(x))) < EXACT

post_mean, post_cov = model.posterior(x)
assert np.max(np.abs(post_mean - (x - b) @ np.linalg.solve(C, W))) < EXACT
assert np.max(np.abs(post_cov - (np.eye(Z) - W.T @ np.linalg.solve(C, W)))) < EXACT
corr = post_cov[0, 1] / np.sqrt(post_cov[0, 0] * post_cov[1, 1])
print("log p(x):", np.round(model.log_marginal(x), 3))
print(f"posterior covariance (the same for every x):\n{np.round(post_cov, 4)}\ncorrelation {corr:.3f}")

# %% [markdown]
# ## Fact 1: at the true posterior, every log-weight is log p(x)
#
# $\log p(x, z) - \log p(z|x) = \log p(x)$ for *every* $z$, so the ELBO of $q = p(z|x)$ is $\log p(x)$ with zero variance.
# Here each density comes from scipy, and the samples from the full-covariance posterior.

# %%
x0 = x[:1]
zs = scipy.stats.multivariate_normal(post_mean[0], post_cov).rvs(size=1000, random_state=rng)   # (1000, Z)
log_joint = (scipy.stats.multivariate_normal(np.zeros(D), s2 * np.eye(D)).logpdf(x0 - zs @ W.T - b)
             + scipy.stats.multivariate_normal(np.zeros(Z), np.eye(Z)).logpdf(zs))
log_post = scipy.stats.multivariate_normal(post_mean[0], post_cov).logpdf(zs)
log_w = log_joint - log_post
assert np.max(np.abs(log_w - model.log_marginal(x0)[0])) < EXACT
print(f"1000 log-weights at the true posterior: min {log_w.min():.12f}, max {log_w.max():.12f}; "
      f"log p(x) = {model.log_marginal(x0)[0]:.12f}")

# %% [markdown]
# ## Fact 2: log p(x) - ELBO = KL(q || p(z|x)), for any q
#
# Three independent computations of one number, for random diagonal $q$: the closed-form ELBO (`model.elbo`), npvae's
# KL to the posterior (`model.kl_to_posterior`), and the textbook KL between two Gaussians from the posterior above,
# $\frac12[\mathrm{tr}(\Sigma^{-1}S) + \delta^\top\Sigma^{-1}\delta - Z + \log|\Sigma| - \log|S|]$.

# %%
q_mean = post_mean + rng.standard_normal(post_mean.shape)      # a q that is wrong on purpose
q_log_var = rng.uniform(-2, 1, post_mean.shape)

gap = model.log_marginal(x) - model.elbo(x, q_mean, q_log_var)
P = np.linalg.inv(post_cov)
delta = post_mean - q_mean
textbook = 0.5 * (np.exp(q_log_var) @ np.diag(P) + np.einsum("ni,ij,nj->n", delta, P, delta) - Z
                  + np.linalg.slogdet(post_cov)[1] - q_log_var.sum(axis=1))
assert np.max(np.abs(gap - model.kl_to_posterior(x, q_mean, q_log_var))) < EXACT
assert np.max(np.abs(gap - textbook)) < EXACT
assert np.all(gap > 0)
print("log p(x) - ELBO      :", np.round(gap, 4))
print("KL(q || p(z|x)), text:", np.round(textbook, 4))

# %% [markdown]
# ## The best diagonal q, and what it cannot remove
#
# With $M = W^\top W + \sigma^2 I$, the best diagonal $q$ has the posterior's mean and variances $\sigma^2/M_{jj}$; its gap
# is the posterior's correlation, $\frac12[\sum_j \log M_{jj} - \log|M|]$, zero only if $W$ has orthogonal columns.

# %%
M = W.T @ W + s2 * np.eye(Z)
best_mean, best_log_var = model.best_diagonal_q(x)
floor = 0.5 * (np.sum(np.log(np.diag(M))) - np.linalg.slogdet(M)[1])
best_gap = model.log_marginal(x) - model.elbo(x, best_mean, best_log_var)
assert np.max(np.abs(best_gap - floor)) < EXACT
for _ in range(20):                                            # every other diagonal q is worse
    m2 = best_mean + 0.1 * rng.standard_normal(best_mean.shape)
    v2 = best_log_var + 0.1 * rng.standard_normal(best_log_var.shape)
    assert np.all(model.elbo(x, m2, v2) < model.elbo(x, best_mean, best_log_var))
print(f"gap of the best diagonal q: {best_gap[0]:.6f} for every x = the correlation term {floor:.6f}")

orth = npvae.LinearGaussian.with_posterior_in_family(rng, D, (Z,), sigma2=0.5)   # W with orthogonal columns
xo, _ = orth.sample(6, rng)
assert np.max(np.abs(orth.elbo(xo, *orth.best_diagonal_q(xo)) - orth.log_marginal(xo))) < EXACT
print("with orthogonal columns the best diagonal q is the posterior: ELBO = log p(x) exactly")

# %% [markdown]
# ## The same numbers from npvae's general VAE code
#
# A VAE with no hidden layer, the identity activation and a Gaussian likelihood is this model: the decoder is
# `Dense(W.T, b)`, the encoder `Dense` maps $x$ to $[V(x - b),\ \log S]$ (its log-variance half ignores $x$). The ELBO
# is a quadratic in $\epsilon$, so averaging the sample estimate over the $2Z$ "sigma points" $\epsilon = \pm\sqrt{Z}e_j$
# gives its expectation exactly: `npvae.bound_value` must then equal `model.elbo` to rounding.

# %%
V = np.linalg.solve(M, W.T)                                 # the posterior mean is M^-1 W^T (x - b), linear in x
arch, params = linear_vae(model, V, np.log(s2 / np.diag(M)))   # q(z|x) = N(V (x - b), diag(S)), p(x|z) = N(Wz + b, s2 I)
assert np.max(np.abs(npvae.models.encoder_mean(params, arch, x) - best_mean)) < EXACT

sigma_points = np.concatenate([np.eye(Z), -np.eye(Z)])[:, None, :] * np.sqrt(Z)   # (2Z, 1, Z)
eps = np.broadcast_to(sigma_points, (2 * Z, len(x), Z))
for kl in ("analytic", "mc"):
    err = np.max(np.abs(npvae.bound_value(params, arch, x, eps, kl=kl) - model.elbo(x, best_mean, best_log_var)))
    assert err < EXACT
    print(f"npvae.bound_value (kl={kl!r}) at the sigma points = the closed-form ELBO, to {err:.1e}")

# %% [markdown]
# What to look for: the 1000 log-weights at the true posterior agree to twelve digits; the gap of a wrong $q$ is the
# KL computed three ways; the best diagonal $q$ stops at the correlation term. This model is the oracle the next
# steps measure everything against.
