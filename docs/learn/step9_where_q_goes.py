# %% [markdown]
# # Step 9: what does q(z|x) tend to?
#
# Written as reconstruction minus $\mathrm{KL}(q(z|x)\,\|\,p(z))$ (form (B), docs/theory.md, section 3), the ELBO seems to pull
# $q$ towards the **prior**. Written as $\log p(x) - \mathrm{KL}(q(z|x)\,\|\,p(z|x))$ (form (A), section 2), it says where $q$
# ends: as close to the **posterior** as its family allows, because $\log p(x)$ does not depend on $q$. Both are the same
# number. This is a small version of `npvae explain posterior` (docs/theory.md, section 9.1): an amortised linear
# encoder, started *at the prior*, trained by `npvae.objective` with the decoder held at the true model, and every
# term measured exactly with the oracle.

# %%
import numpy as np

import npvae
from npvae.oracle.linear_vae import cosine_model

rng = np.random.default_rng(0)  # change the seed: every assert below holds for every seed
EXACT = 1e-10
D, Z, s2, N = 5, 2, 0.3, 2000

model = cosine_model(rng, D, 0.8, s2)                      # Z = 2, columns of length 1.5 at cosine 0.8: strongly correlated
W, b = model.W, model.b
x = model.sample(N, rng)[0]
log_px = model.log_marginal(x).mean()
M = W.T @ W + s2 * np.eye(Z)
floor = 0.5 * (np.sum(np.log(np.diag(M))) - np.linalg.slogdet(M)[1])   # the best diagonal q's KL to the posterior
best_mean, best_log_var = model.best_diagonal_q(x)
best_kl_prior = np.mean(0.5 * np.sum(best_mean**2 + np.expm1(best_log_var) - best_log_var, axis=1))

# the encoder: one Dense layer x -> [mu, log_var], all zeros, so q(z|x) = N(0, I) = p(z) for every x
arch = npvae.Arch(D, (), Z, "identity", npvae.Likelihood("gaussian", sigma2=s2))
params = npvae.VAEParams((npvae.Dense(np.zeros((D, 2 * Z)), np.zeros(2 * Z)),), (npvae.Dense(W.T.copy(), b.copy()),))


def measure(params):
    """Exact averages over the data: ELBO, KL(q || p(z|x)), KL(q || p(z)); and q's (mu, log_var)."""
    enc = params.encoder[0]
    out = x @ enc.W + enc.b
    mu, log_var = out[:, :Z], out[:, Z:]
    elbo = model.elbo(x, mu, log_var).mean()
    kl_post = model.kl_to_posterior(x, mu, log_var).mean()
    kl_prior = np.mean(0.5 * np.sum(mu**2 + np.expm1(log_var) - log_var, axis=1))
    return elbo, kl_post, kl_prior, mu, log_var

# %% [markdown]
# ## Training from the prior
#
# Adam on the ELBO (analytic KL, reparameterised, one sample), batches of 100, the step size cut tenfold halfway; only the encoder's arrays are updated,
# and the weights of its log-variance half stay at zero (their gradient is dropped), so $q$'s variances are constants:
# the best diagonal $q$ of this model has constant variances (docs/theory.md, section 4), so nothing is lost.
# At every checkpoint: form (A) holds exactly, and the KL to the posterior never goes below the floor a diagonal $q$
# cannot cross, $\frac12[\sum_j \log M_{jj} - \log|M|]$.

# %%
flat = npvae.flatten(params)
n_enc = 2                                                  # [encoder W, encoder b], then the decoder's, held fixed
state = npvae.adam_init(flat[:n_enc])
history = []
for step in range(1201):
    if step % 100 == 0:
        elbo, kl_post, kl_prior, _, _ = measure(params)
        history.append((step, elbo, kl_post, kl_prior))
        assert abs(log_px - elbo - kl_post) < EXACT        # (A): log p(x) = ELBO + KL(q || p(z|x)), exactly
        assert kl_post >= floor - EXACT
    idx = rng.choice(N, 100, replace=False)
    _, grads = npvae.objective(params, arch, x[idx], rng.standard_normal((1, 100, Z)))
    dW, db = npvae.flatten(grads)[:n_enc]
    dW = np.concatenate([dW[:, :Z], np.zeros((D, Z))], axis=1)   # log_var does not depend on x
    new, state = npvae.adam_update(flat[:n_enc], [-dW, -db], state, lr=0.02 if step < 600 else 0.002)
    flat = new + flat[n_enc:]
    params = npvae.unflatten(arch, flat)

print(f"log p(x) = {log_px:.4f} (mean over the data); floor of KL(q || p(z|x)) = {floor:.4f}; "
      f"the best diagonal q has KL(q || p(z)) = {best_kl_prior:.4f}")
print(" step    ELBO    KL(q||p(z|x))  KL(q||p(z))")
for step, elbo, kl_post, kl_prior in history[::2]:
    print(f"{step:5d} {elbo:9.4f} {kl_post:12.4f} {kl_prior:12.4f}")

start, end = history[0], history[-1]
assert abs(start[3]) < EXACT                              # it starts exactly at the prior
assert end[2] - floor < 0.05 * (start[2] - floor)          # and closes 95% of the closable gap to the posterior
assert end[3] > 0.9 * best_kl_prior                        # while its KL to the prior grows to the best q's

# %% [markdown]
# ## Where q stopped
#
# The trained mean is the posterior mean; the variances are the best diagonal ones, $\sigma^2/M_{jj} = 1/\Lambda_{jj}$ with
# $\Lambda$ the posterior precision, **smaller** than the posterior's marginal variances $\Sigma_{jj}$ (always: $1/\Lambda_{jj} \le \Sigma_{jj}$
# for any covariance), because a diagonal $q$ that must sit inside a tilted ellipse has to be narrow. Not the prior's 1.

# %%
_, _, _, mu, log_var = measure(params)
post_mean, post_cov = model.posterior(x)
inv_prec = s2 / np.diag(M)
assert np.all(inv_prec <= np.diag(post_cov) + EXACT)
print("q's variances (mean over x):", np.round(np.exp(log_var).mean(axis=0), 4))
print("best diagonal sigma2 / M_jj:", np.round(inv_prec, 4), "   posterior marginals:", np.round(np.diag(post_cov), 4))
print(f"largest distance of q's mean from the posterior mean: {np.max(np.abs(mu - post_mean)):.3f}")

# %% [markdown]
# ## Why the KL to the prior stays large: it is mostly information
#
# ELBO surgery (Hoffman & Johnson 2016; docs/theory.md, section 5), averaged over the model's own $p(x) = \mathcal{N}(b, C)$
# (not the 2000 samples, hence a slightly different mean KL) with the
# linear encoder $\mu = Ax + a$, constant $S$: $\mathbb{E}_x\mathrm{KL}(q(z|x)\,\|\,p(z)) = I_q(x; z) + \mathrm{KL}(q(z)\,\|\,p(z))$ with the
# aggregate $q(z) = \mathcal{N}(Ab + a,\ ACA^\top + \mathrm{diag}(S))$, all in closed form.

# %%
enc = params.encoder[0]
A, a, S = enc.W[:, :Z].T, enc.b[:Z], np.exp(enc.b[Z:])     # mu = A x + a; the log-variance half ignores x
assert np.all(enc.W[:, Z:] == 0)
C = W @ W.T + s2 * np.eye(D)
agg_mean, agg_cov = A @ b + a, A @ C @ A.T + np.diag(S)
mean_kl_prior = 0.5 * (np.trace(A @ C @ A.T) + agg_mean @ agg_mean + S.sum() - Z - np.log(S).sum())
info = 0.5 * np.linalg.slogdet(agg_cov)[1] - 0.5 * np.log(S).sum()
kl_aggregate = 0.5 * (np.trace(agg_cov) + agg_mean @ agg_mean - Z - np.linalg.slogdet(agg_cov)[1])
assert abs(mean_kl_prior - (info + kl_aggregate)) < EXACT
print(f"E KL(q(z|x) || p(z)) = {mean_kl_prior:.4f} = I_q(x; z) {info:.4f} + KL(q(z) || p(z)) {kl_aggregate:.4f}")

# %% [markdown]
# What to look for: the KL to the posterior falls to the floor and stops there; the KL to the prior *rises* from 0; at
# the end almost all of it is information about $x$. The answer: towards the posterior. Two questions follow, each an
# experiment of its own: how much of the gap is the family's and how much the encoder's amortisation
# (`npvae explain gaps`), and what a trained decoder's samples say about inference (`npvae explain generation`).
