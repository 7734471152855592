# %% [markdown]
# # Step 6: STL and DReG, gradients that vanish where they should
#
# The reparameterised gradient of $-\log q_\phi(z|x)$ has two parts: the **path** part, through the sample $z$, and the
# **score** part, through $\phi$ at fixed $z$, whose expectation is zero. *Sticking the landing* (STL, Roeder et al. 2017)
# drops the score part: it differentiates $\log q$ with $q$'s parameters held fixed (a stop-gradient on $\mu$, $\log\sigma^2$
# inside $\log q$ only),
#
# $$\hat g_{\mathrm{STL}} = \Big(\partial_z \log p(x, z) - \partial_z \log q_\phi(z|x)\big|_{\phi\ \text{fixed}}\Big)\,\frac{\partial z}{\partial\phi}.$$
#
# Same expectation; and when $q = p(z|x)$ the bracket is $\partial_z \log p(x) = 0$ for every $\epsilon$: zero variance at the
# optimum. For IWAE, the doubly reparameterised estimator (DReG, Tucker et al. 2018, eq. 7) rewrites the score part by a
# second reparameterisation, $\hat g_{\mathrm{DReG}} = \sum_k \tilde w_k^2\,\frac{\partial a_k}{\partial z_k}\frac{\partial z_k}{\partial\phi}$, with the
# normalised weights $\tilde w_k$ squared; with $K = 1$ it is STL. It gives the encoder back the signal that step 5 saw
# IWAE take away (docs/theory.md, sections 7 and 8; `estimator="stl"`, `estimator="dreg"`).

# %%
import numpy as np

import npvae
from npvae.oracle.linear_vae import best_linear_vae, linear_vae

rng = np.random.default_rng(0)  # change the seed: every assert below holds for every seed
EXACT = 1e-10
N_SE = 5                        # Monte Carlo statements hold to 5 standard errors
D, Z, s2 = 5, 2, 0.5


def encoder_grads(g):
    return np.concatenate([g.encoder[0].W.ravel(), g.encoder[0].b])

# %% [markdown]
# ## At the true posterior: STL and DReG are exactly zero for every draw
#
# A model whose posterior is diagonal, and the encoder that outputs it. The ordinary reparameterised gradient is zero
# only on average; draw by draw it is not.

# %%
orth = npvae.LinearGaussian.with_posterior_in_family(rng, D, (Z,), sigma2=s2)
arch, params = best_linear_vae(orth)              # the encoder that outputs p(z|x)
xb = orth.sample(16, rng)[0]
worst = {}
for bound, estimator, K in (("elbo", "reparam", 1), ("elbo", "stl", 1), ("iwae", "reparam", 16), ("iwae", "dreg", 16)):
    draws = [encoder_grads(npvae.objective(params, arch, xb, rng.standard_normal((K, 16, Z)), bound=bound, kl="mc",
                                           estimator=estimator)[1]) for _ in range(50)]
    worst[(bound, estimator)] = np.max(np.abs(draws))
    print(f"{bound}, {estimator:7}: largest |encoder gradient| over 50 draws {worst[(bound, estimator)]:.1e}")
assert worst[("elbo", "stl")] < EXACT and worst[("iwae", "dreg")] < EXACT
assert worst[("elbo", "reparam")] > 1e-3 and worst[("iwae", "reparam")] > 1e-3

# %% [markdown]
# ## Only the encoder's gradient changes
#
# With the same noise, every estimator gives the same bound and the same decoder gradient; DReG with $K = 1$ is STL.

# %%
model = npvae.LinearGaussian.random(rng, D, (Z,), sigma2=s2)      # a correlated posterior this time
arch, params = linear_vae(model, 0.3 * rng.standard_normal((Z, D)), c=0.3 * rng.standard_normal(Z),
                          log_S=rng.uniform(-2, 0, Z))
x = model.sample(8, rng)[0]
for bound, K, names in (("elbo", 4, ("reparam", "stl")), ("iwae", 4, ("reparam", "dreg"))):
    eps = rng.standard_normal((K, 8, Z))
    (v0, g0), (v1, g1) = (npvae.objective(params, arch, x, eps, bound=bound, kl="mc", estimator=e) for e in names)
    assert np.max(np.abs(v0 - v1)) < EXACT
    assert all(np.max(np.abs(a - c)) < EXACT for a, c in zip(npvae.flatten(g0.decoder), npvae.flatten(g1.decoder)))
    print(f"{bound}: {names[0]} and {names[1]} share the value and the decoder gradient; encoder gradients differ by "
          f"{np.max(np.abs(encoder_grads(g0) - encoder_grads(g1))):.2f}")
eps = rng.standard_normal((1, 8, Z))
_, g_stl = npvae.objective(params, arch, x, eps, bound="elbo", kl="mc", estimator="stl")
_, g_dreg = npvae.objective(params, arch, x, eps, bound="iwae", kl="mc", estimator="dreg")
assert all(np.max(np.abs(a - c)) < EXACT for a, c in zip(npvae.flatten(g_stl), npvae.flatten(g_dreg)))
print("DReG with K = 1 is STL, every parameter")

# %% [markdown]
# ## Same expectation
#
# Away from the optimum all of them are unbiased for the gradient of their bound. For the ELBO of one point the exact
# gradient in $(\mu, \log\sigma^2)$ is the closed form of step 3; for $\mathcal{L}_K$ there is none, so DReG is compared with the
# reparameterised IWAE gradient. 40 batches of 500 copies of the point give means and standard errors.

# %%
x0 = x[:1]
enc = params.encoder[0]
m0, S0 = x0 @ enc.W[:, :Z] + enc.b[:Z], np.exp(enc.b[Z:])
W, b = model.W, model.b
exact = np.concatenate([((x0 - b - m0 @ W.T) @ W / s2 - m0)[0], 0.5 - 0.5 * S0 * (np.sum(W**2, axis=0) / s2 + 1)])


def mean_gradient(bound, estimator, K):
    """Mean and standard error of the encoder-bias gradient (d/d mu, d/d log_var of one point) over 20,000 draws."""
    batch = [npvae.objective(params, arch, np.repeat(x0, 500, axis=0), rng.standard_normal((K, 500, Z)), bound=bound,
                             kl="mc", estimator=estimator)[1].encoder[0].b for _ in range(40)]
    return np.mean(batch, axis=0), np.std(batch, axis=0, ddof=1) / np.sqrt(40)


for estimator in ("reparam", "stl"):
    mean, se = mean_gradient("elbo", estimator, 1)
    print(f"ELBO, {estimator:7}: {np.round(mean, 3)} +- {np.round(se, 3)}   (exact {np.round(exact, 3)})")
    assert np.all(np.abs(mean - exact) <= N_SE * se)
(m_r, se_r), (m_d, se_d) = mean_gradient("iwae", "reparam", 8), mean_gradient("iwae", "dreg", 8)
print(f"IWAE K=8, reparam: {np.round(m_r, 3)} +- {np.round(se_r, 3)}\nIWAE K=8, dreg   : {np.round(m_d, 3)} +- {np.round(se_d, 3)}")
assert np.all(np.abs(m_r - m_d) <= N_SE * np.hypot(se_r, se_d))

# %% [markdown]
# ## DReG's encoder signal grows with K
#
# Step 5's measurement again (the diagonal-posterior model, the encoder's mean 0.3 off and its variances 35% too large,
# batches of 16 points, SNR of the mean-bias gradient with its delta-method standard error), now with DReG beside the
# reparameterised IWAE gradient on the same noise.

# %%
def snr_and_se(g):
    """SNR |mean| / sd of each column of g (n, P) and its delta-method standard error."""
    n = len(g)
    m, s = g.mean(axis=0), g.std(axis=0, ddof=1)
    c = (g - m) / s
    skew, kurt = np.mean(c**3, axis=0), np.mean(c**4, axis=0)
    snr = np.abs(m) / s
    return snr, np.sqrt(np.maximum(1 - snr * np.sign(m) * skew + snr**2 * (kurt - 1) / 4, 0) / n)


arch_o, params_o = best_linear_vae(orth, shift=-0.3, var_factor=1.35)
snr = {}
for K in (1, 16, 256):
    draws = {"reparam": [], "dreg": []}
    for _ in range(300):
        eps = rng.standard_normal((K, 16, Z))
        for estimator in draws:
            _, g = npvae.objective(params_o, arch_o, xb, eps, bound="iwae", kl="mc", estimator=estimator)
            draws[estimator].append(g.encoder[0].b[:Z])
    for estimator, g in draws.items():
        s, se = snr_and_se(np.array(g))
        snr[(estimator, K)] = (s.mean(), se.mean())
    print(f"K = {K:3d}: encoder SNR, reparam {snr[('reparam', K)][0]:6.3f} +- {snr[('reparam', K)][1]:.3f};"
          f"  dreg {snr[('dreg', K)][0]:6.2f} +- {snr[('dreg', K)][1]:.2f}")
assert snr[("dreg", 256)][0] - snr[("dreg", 1)][0] > N_SE * (snr[("dreg", 256)][1] + snr[("dreg", 1)][1])
assert snr[("dreg", 256)][0] - snr[("reparam", 256)][0] > N_SE * (snr[("dreg", 256)][1] + snr[("reparam", 256)][1])

# %% [markdown]
# What to look for: STL and DReG print zeros (to rounding) at the posterior where the reparameterised gradient does
# not; every estimator agrees on the value, the decoder and the mean; and DReG's encoder SNR rises with $K$ while the
# reparameterised one falls. The stop-gradient is the whole difference: put it on the wrong tensor (on $z$, or on $\mu$
# everywhere instead of inside $\log q$ only) and the first or the third check fails.
