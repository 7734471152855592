# %% [markdown]
# # Step 5: IWAE, why the bound tightens, and what it costs the encoder
#
# Put $K$ samples inside the logarithm before applying Jensen (Burda et al. 2016):
#
# $$\mathcal{L}_K(x) = \mathbb{E}\Big[\log \frac1K\sum_{k=1}^K w_k\Big], \qquad w_k = \frac{p(x, z_k)}{q(z_k|x)},\ z_k \sim q(z|x).$$
#
# $\frac1K\sum_k w_k$ is an unbiased estimate of $p(x)$; its log is biased low, and less so the more samples it averages.
# Averaging over subsets proves $\mathrm{ELBO} = \mathcal{L}_1 \le \mathcal{L}_K \le \mathcal{L}_{K+1} \le \log p(x)$ (Burda et al. 2016,
# Thm 1), and for large $K$ the gap is about $\mathrm{Var}_q[w]/(2Kp(x)^2)$ (docs/theory.md, section 8). In npvae it is
# `bound="iwae"` with `kl="mc"`, the log-mean-exp of the log-weights (`npvae.log_mean_exp`).
#
# The price: the reparameterised gradient of $\mathcal{L}_K$ for the **encoder** gets noisier relative to its mean as $K$
# grows (signal-to-noise ratio $O(1/\sqrt{K})$), while the decoder's improves (Rainforth et al. 2018). Both are measured here
# on the linear model, where $\log p(x)$ is exact.

# %%
import numpy as np

import npvae
from npvae.oracle.linear_vae import best_linear_vae, cosine_model

rng = np.random.default_rng(0)  # change the seed: every assert below holds for every seed
N_SE = 5                        # Monte Carlo statements hold to 5 standard errors
D, Z, s2 = 5, 2, 0.5


def weight_chi2(post_mean, post_cov, q_mean, q_var):
    """E_q[(p(z|x) / q(z|x))^2] - 1 = Var_q[w] / p(x)^2, Gaussian p(z|x) and diagonal q (finite iff 2 P - Q > 0)."""
    P, Q = np.linalg.inv(post_cov), np.diag(1 / q_var)
    A = 2 * P - Q
    h = 2 * P @ post_mean - Q @ q_mean
    c = 2 * post_mean @ P @ post_mean - q_mean @ Q @ q_mean
    log_m2 = (-np.linalg.slogdet(post_cov)[1] + 0.5 * np.sum(np.log(q_var)) - 0.5 * np.linalg.slogdet(A)[1]
              + 0.5 * h @ np.linalg.solve(A, h) - 0.5 * c)
    return np.expm1(log_m2)

# %% [markdown]
# ## The bound rises with K towards log p(x)
#
# One point, the best diagonal encoder of a model with columns at cosine 0.5. For each $K$, 4096 independent estimates
# of $\mathcal{L}_K$ (4096 copies of the point, each with its own $K$ samples) give the mean and its standard error.

# %%
model = cosine_model(rng, D, 0.5, s2)             # Z = 2, columns of length 1.5 at cosine 0.5: a correlated posterior
arch, params = best_linear_vae(model)            # q = the best diagonal Gaussian, V = M^-1 W^T, S = s2 / diag(M)
x0 = model.sample(1, rng)[0]
log_px = model.log_marginal(x0)[0]
elbo = model.elbo(x0, *model.best_diagonal_q(x0))[0]
post_mean, post_cov = model.posterior(x0)
q_mean, q_log_var = model.best_diagonal_q(x0)
chi2 = weight_chi2(post_mean[0], post_cov, q_mean[0], np.exp(q_log_var[0]))

R = 4096
Ks = [1, 4, 16, 64, 256]
means, ses = [], []
print(f"log p(x) = {log_px:.4f}, closed-form ELBO = {elbo:.4f}, Var[w]/p(x)^2 = {chi2:.3f}")
for K in Ks:
    est = npvae.bound_value(params, arch, np.repeat(x0, R, axis=0), rng.standard_normal((K, R, Z)), bound="iwae", kl="mc")
    means.append(est.mean())
    ses.append(est.std(ddof=1) / np.sqrt(R))
    print(f"K = {K:3d}: L_K = {means[-1]:.4f} +- {ses[-1]:.4f}; gap x K = {K * (log_px - means[-1]):.3f} +- {K * ses[-1]:.3f} "
          f"(large-K prediction Var[w] / 2p^2 = {chi2 / 2:.3f})")
means, ses = np.array(means), np.array(ses)
assert abs(means[0] - elbo) <= N_SE * ses[0]                             # L_1 is the ELBO
assert np.all(np.diff(means) >= -N_SE * np.hypot(ses[1:], ses[:-1]))     # never falls (Burda et al., Thm 1)
assert means[-1] - means[0] > N_SE * np.hypot(ses[0], ses[-1])           # and does rise
assert np.all(means <= log_px + N_SE * ses)                              # and stays below log p(x)

# %% [markdown]
# ## What it costs: the encoder's gradient signal
#
# The signal-to-noise ratio of a gradient component is $|\mathbb{E}\,g| / \mathrm{sd}(g)$. It is measured from 400 draws of the
# batch gradient (16 points) at each $K$, on a model whose posterior is diagonal (so the ELBO and every $\mathcal{L}_K$ want
# the same mean), with an encoder whose mean is 0.3 below the posterior mean in every dimension and whose variances are
# 35% too large. Averaged over the encoder's mean bias (the gradient that points back to the posterior mean for
# every $K$) and over the decoder's bias. The standard
# error of an estimated SNR comes from the delta method, $\mathrm{Var}\,\widehat{\mathrm{SNR}} \approx
# [1 - \mathrm{SNR}\,\gamma + \mathrm{SNR}^2(\kappa - 1)/4]/n$ with the sample's skewness $\gamma$ and kurtosis $\kappa$.

# %%
def snr_and_se(g):
    """SNR |mean| / sd of each column of g (n, P) and its delta-method standard error."""
    n = len(g)
    m, s = g.mean(axis=0), g.std(axis=0, ddof=1)
    c = (g - m) / s
    skew, kurt = np.mean(c**3, axis=0), np.mean(c**4, axis=0)
    snr = np.abs(m) / s
    return snr, np.sqrt(np.maximum(1 - snr * np.sign(m) * skew + snr**2 * (kurt - 1) / 4, 0) / n)


orth = npvae.LinearGaussian.with_posterior_in_family(rng, D, (Z,), sigma2=s2)
arch_o, params_o = best_linear_vae(orth, shift=-0.3, var_factor=1.35)   # q's mean 0.3 low, its variances 35% high
xb = orth.sample(16, rng)[0]
snr = {}
for K in (1, 16, 256):
    enc_g, dec_g = [], []
    for _ in range(400):
        _, g = npvae.objective(params_o, arch_o, xb, rng.standard_normal((K, 16, Z)), bound="iwae", kl="mc", estimator="reparam")
        enc_g.append(g.encoder[0].b[:Z])                 # d/d(mean bias); [Z:] is the log-variance bias
        dec_g.append(g.decoder[0].b)
    (se_, ee_), (sd_, ed_) = snr_and_se(np.array(enc_g)), snr_and_se(np.array(dec_g))
    snr[K] = (se_.mean(), ee_.mean(), sd_.mean(), ed_.mean())   # the mean of SEs bounds the SE of the mean
    print(f"K = {K:3d}: encoder SNR {snr[K][0]:6.3f} +- {snr[K][1]:.3f}    decoder SNR {snr[K][2]:6.2f} +- {snr[K][3]:.2f}")

assert snr[1][0] - snr[256][0] > N_SE * (snr[1][1] + snr[256][1])      # the encoder's signal falls
assert snr[256][2] - snr[1][2] > N_SE * (snr[1][3] + snr[256][3])      # the decoder's rises

# %% [markdown]
# What to look for: $\mathcal{L}_K$ climbs from the ELBO towards $\log p(x)$ and never passes it; the gap times $K$
# moves towards the large-$K$ prediction (within its standard error, which grows with $K$); the encoder's SNR falls
# roughly like $1/\sqrt{K}$ while the decoder's grows. Step 6 repairs the encoder's gradient. The full experiment, with the prior as a proposal too, is `npvae explain iwae`
# (docs/theory.md, section 9.2).
