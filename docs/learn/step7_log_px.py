# %% [markdown]
# # Step 7: evaluating log p(x)
#
# A trained VAE is reported by its test log-likelihood, estimated by importance sampling with the encoder as the
# proposal: $\log \hat p_k(x) = \log\frac1k\sum_{i=1}^k p(x, z_i)/q(z_i|x)$, $z_i \sim q(z|x)$. It is the IWAE bound's estimate
# with a large $k$ (Burda et al. 2016 use $k = 5000$): unbiased for $p(x)$, biased low for $\log p(x)$ by about
# $\chi^2/(2k)$, with a spread of about $\sqrt{\chi^2/k}$ per point, where $\chi^2 = \mathrm{Var}_q[w]/p(x)^2$
# (docs/theory.md, section 8). `npvae.log_px` does it in chunks with a Generator you pass; `npvae eval RUN --k 5000`
# runs it over a whole split and reports the mean with its standard error over the points.
#
# On the linear model the answer is known, so the estimator itself can be graded.

# %%
import numpy as np

import npvae
from npvae.oracle.linear_vae import best_linear_vae, cosine_model, linear_vae

rng = np.random.default_rng(0)  # change the seed: every assert below holds for every seed
EXACT = 1e-10
N_SE = 5                        # Monte Carlo statements hold to 5 standard errors
D, Z, s2, N = 5, 2, 0.5, 200


def weight_chi2(post_mean, post_cov, q_mean, q_var):
    """E_q[(p(z|x) / q(z|x))^2] - 1 = Var_q[w] / p(x)^2, Gaussian p(z|x) and diagonal q (finite iff 2 P - Q > 0)."""
    P, Q = np.linalg.inv(post_cov), np.diag(1 / q_var)
    A = 2 * P - Q
    h = 2 * P @ post_mean - Q @ q_mean
    c = 2 * post_mean @ P @ post_mean - q_mean @ Q @ q_mean
    log_m2 = (-np.linalg.slogdet(post_cov)[1] + 0.5 * np.sum(np.log(q_var)) - 0.5 * np.linalg.slogdet(A)[1]
              + 0.5 * h @ np.linalg.solve(A, h) - 0.5 * c)
    return np.expm1(log_m2)


model = cosine_model(rng, D, 0.5, s2)                                     # Z = 2, columns at cosine 0.5: correlated
W, b = model.W, model.b
M = W.T @ W + s2 * np.eye(Z)
arch, params = best_linear_vae(model)                  # the best diagonal encoder: V = M^-1 W^T, variances s2 / M_jj
x = model.sample(N, rng)[0]                                               # a "test split" of 200 points
exact = model.log_marginal(x)
post_mean, post_cov = model.posterior(x)
chi2 = weight_chi2(post_mean[0], post_cov, post_mean[0], s2 / np.diag(M))   # the same for every x here
print(f"exact mean log p(x) over the {N} points: {exact.mean():.4f}; chi^2 = Var[w]/p^2 = {chi2:.3f}")

# %% [markdown]
# ## The estimate against the truth, as k grows
#
# For each $k$: the mean error over the points (biased low, never significantly above zero), the predicted bias
# $-\chi^2/(2k)$, and the spread of the error over points against $\sqrt{\chi^2/k}$ (for $k \ge 100$, where the
# delta method behind it holds; its standard error uses the sample's kurtosis).

# %%
for k in (1, 10, 100, 1000, 5000):
    err = npvae.log_px(params, arch, x, k, rng) - exact                   # (N,)
    se = err.std(ddof=1) / np.sqrt(N)
    sd, sd_pred = err.std(ddof=1), np.sqrt(chi2 / k)
    kurt = np.mean((err - err.mean())**4) / err.var()**2
    se_sd = sd * np.sqrt((kurt - 1) / (4 * N))
    print(f"k = {k:5d}: mean error {err.mean():+.5f} +- {se:.5f} (predicted bias {-chi2 / (2 * k):+.5f}); "
          f"spread {sd:.5f} +- {se_sd:.5f} (predicted {sd_pred:.5f})")
    assert err.mean() <= N_SE * se                                        # E log p_hat <= log p(x): Jensen
    if k >= 100:
        assert abs(sd - sd_pred) <= N_SE * se_sd

# %% [markdown]
# ## The proposal matters
#
# $p(x) = \mathbb{E}_{p(z)}\,p(x|z)$ too, so the prior is a valid proposal, but few of its samples land where the
# posterior is. Its $\chi^2$ has the same closed form (with the means unequal), larger at every point here, so it needs
# $\chi^2_{\mathrm{prior}}/\chi^2_q$ times the samples for the same precision. An encoder that outputs $\mu = 0$,
# $\log\sigma^2 = 0$ for every $x$ is the prior; its errors are heavy-tailed (points far out in $z$ carry most of them).

# %%
chi2_prior = np.array([weight_chi2(m, post_cov, np.zeros(Z), np.ones(Z)) for m in post_mean])
assert np.all(chi2_prior > chi2)
prior_arch, prior_params = linear_vae(model, np.zeros((Z, D)), np.zeros(Z), c=np.zeros(Z))
err_p = npvae.log_px(prior_params, prior_arch, x, 100, rng) - exact
err_q = npvae.log_px(params, arch, x, 100, rng) - exact
print(f"chi^2 of the prior: median {np.median(chi2_prior):.2f}, max {chi2_prior.max():.1f} (the encoder's: {chi2:.3f}); "
      f"the prior needs a median {np.median(chi2_prior) / chi2:.0f} times more samples")
print(f"k = 100: mean error with the encoder {err_q.mean():+.5f}, with the prior {err_p.mean():+.5f}")
assert err_p.mean() <= N_SE * err_p.std(ddof=1) / np.sqrt(N)             # Jensen holds for any proposal

# %% [markdown]
# ## Reproducible, and how precise a reported number is
#
# `npvae.log_px` draws its noise in one order whatever the chunk size, so a Generator in the same state gives the same
# estimate whatever memory it is allowed. And the standard error a paper should print is the spread of $\log p(x)$ over
# the test points divided by $\sqrt{N}$: here it is far larger than the estimator's own error at $k = 5000$, which is
# why a whole split (not a prefix of it: `npvae eval --n` draws a stratified subset) is what gets evaluated.

# %%
err_5000 = npvae.log_px(params, arch, x, 5000, rng) - exact
a = npvae.log_px(params, arch, x, 1000, np.random.default_rng(7))
c = npvae.log_px(params, arch, x, 1000, np.random.default_rng(7), max_elements=4096)
assert np.max(np.abs(a - c)) < EXACT
print(f"mean log p(x) estimate {a.mean():.4f} +- {a.std(ddof=1) / np.sqrt(N):.4f} (over points); "
      f"the estimator's own error at k = 5000: {abs(err_5000.mean()):.5f}")

# %% [markdown]
# What to look for: the mean error shrinks like $1/k$ and stays at or below zero; the spread follows $\sqrt{\chi^2/k}$;
# the prior needs far more samples than the encoder for the same precision (`npvae explain iwae` measures how many,
# docs/theory.md, section 9.2). $\chi^2$ is finite only if $q$ is not too narrow ($2\Sigma_p^{-1} - \Sigma_q^{-1}$ positive
# definite): a very correlated posterior makes the best diagonal $q$ a poor proposal.
