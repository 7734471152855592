# %% [markdown]
# # Step 3: the reparameterisation gradient and its backward pass
#
# To climb the ELBO we need $\nabla_\phi\,\mathbb{E}_{q_\phi(z|x)}[f(z)]$, and the distribution we average over depends
# on $\phi$. Writing the sample as a function of parameter-free noise, $z = \mu + e^{v/2}\odot\epsilon$ with
# $\epsilon \sim \mathcal{N}(0, I)$ (Kingma & Welling 2014, section 2.4), moves the gradient inside: it is the average,
# over $\epsilon$, of the total derivative of the sample estimate with $\epsilon$ held fixed.
#
# For one sample $g = \log p(x, z) - \log q(z|x)$, and $\log q$ written in $\epsilon$ has total derivative $0$ in $\mu_j$ and
# $-\frac12$ in $v_j$. With $\partial z_j/\partial\mu_j = 1$ and $\partial z_j/\partial v_j = (z_j - \mu_j)/2$ the chain
# rule gives (docs/theory.md, section 7)
#
# $$\frac{dg}{d\mu_j} = \frac{\partial \log p(x, z)}{\partial z_j}, \qquad
#   \frac{dg}{dv_j} = \frac{\partial \log p(x, z)}{\partial z_j}\,\frac{z_j - \mu_j}{2} + \frac12,$$
#
# and the encoder's own backward pass carries $(d\mu, dv)$ to its weights. Three checks: this chain by hand on the
# linear VAE; npvae's whole backward pass against finite differences on a tanh VAE; and that the average of the
# gradients is the gradient of the exact ELBO.

# %%
import numpy as np

import npvae
from npvae.oracle.linear_vae import linear_vae   # q(z|x) = N(V x + c, diag(exp(log_S))), p(x|z) = N(Wz + b, s2 I)

rng = np.random.default_rng(0)  # change the seed: every assert below holds for every seed
EXACT = 1e-10
N_SE = 5                        # Monte Carlo statements hold to 5 standard errors (a 1 in 1.7 million chance each)

D, Z = 5, 2
model = npvae.LinearGaussian.random(rng, D, (Z,), sigma2=0.5)
W, b, s2 = model.W, model.b, float(model.sigma2)

# an encoder that is not the best one: a random linear map and variances
arch, params = linear_vae(model, 0.3 * rng.standard_normal((Z, D)), c=0.3 * rng.standard_normal(Z),
                          log_S=rng.uniform(-2, 0, Z))

# %% [markdown]
# ## The chain rule by hand
#
# For the linear model $\partial \log p(x, z)/\partial z = W^\top(x - Wz - b)/\sigma^2 - z$. The objective's gradient is
# that of the batch **mean** of the bound, so each per-point term is divided by $N$; the encoder is one `Dense`
# layer $x \mapsto [\mu, v]$, so its weight gradient is $x^\top[d\mu, dv]/N$.

# %%
N, K = 4, 3
x, _ = model.sample(N, rng)
eps = rng.standard_normal((K, N, Z))
value, grads = npvae.objective(params, arch, x, eps, bound="elbo", kl="mc", estimator="reparam")

enc = params.encoder[0]
out = x @ enc.W + enc.b
mu, v = out[:, :Z], out[:, Z:]
z = mu + np.exp(0.5 * v) * eps                            # (K, N, Z)
r = x - z @ W.T - b                                       # (K, N, D)
dlogp_dz = r @ W / s2 - z                                 # d log p(x, z) / dz
dmu = dlogp_dz.mean(axis=0)                               # the mean over the K samples of each point's bound
dv = (dlogp_dz * (z - mu) / 2).mean(axis=0) + 0.5
d_out = np.concatenate([dmu, dv], axis=1) / N             # d(batch mean) / d[mu, v]
assert np.max(np.abs(grads.encoder[0].W - x.T @ d_out)) < EXACT
assert np.max(np.abs(grads.encoder[0].b - d_out.sum(axis=0))) < EXACT

# the decoder: log p(x|z) = -||x - (z W^T + b)||^2 / (2 sigma2) + const; its Dense layer is (W^T, b)
dWd = np.einsum("knz,knd->zd", z, r) / s2 / (N * K)
dbd = r.sum(axis=(0, 1)) / s2 / (N * K)
assert np.max(np.abs(grads.decoder[0].W - dWd)) < EXACT and np.max(np.abs(grads.decoder[0].b - dbd)) < EXACT
print("encoder and decoder gradients by the chain rule of docs/theory.md, section 7 = npvae.objective's, to",
      f"{max(np.max(np.abs(grads.encoder[0].W - x.T @ d_out)), np.max(np.abs(grads.decoder[0].W - dWd))):.1e}")

# %% [markdown]
# ## The whole backward pass against finite differences
#
# On a real network (64-32-4, tanh, Bernoulli) npvae's hand-written backward must match a central difference of the
# bound, with the noise $\epsilon$ held fixed (that *is* the reparameterisation), in a random direction $u$ of all the
# parameters at once. Error model of a central difference with step $h$: truncation $h^2|f'''|/6$ plus rounding
# $\varepsilon|f|/h$, about $10^{-8}$ relative here; the tolerance, $10^{-6}$ relative, is far above that and far below any
# real mistake (a missing factor $\frac12$ is an error of order 1).

# %%
tanh_arch = npvae.Arch(64, (32,), 4)
tanh_params = npvae.init_params(tanh_arch, rng)
xb = (rng.random((10, 64)) < 0.3).astype(float)
eb = rng.standard_normal((2, 10, 4))
flat = npvae.flatten(tanh_params)
u = [rng.standard_normal(p.shape) for p in flat]


def f(t):
    """The batch-mean bound at parameters flat + t u, eps held fixed."""
    moved = npvae.unflatten(tanh_arch, [p + t * d for p, d in zip(flat, u)])
    return npvae.bound_value(moved, tanh_arch, xb, eb, kl="analytic").mean()


h = 1e-5
fd = (f(h) - f(-h)) / (2 * h)
_, g = npvae.objective(tanh_params, tanh_arch, xb, eb, kl="analytic")
analytic = sum(np.sum(gi * di) for gi, di in zip(npvae.flatten(g), u))
print(f"directional derivative: backward {analytic:.10f}, central difference {fd:.10f}, "
      f"relative difference {abs(analytic - fd) / abs(fd):.1e}")
assert abs(analytic - fd) <= 1e-6 * abs(fd)

# %% [markdown]
# ## The average of the gradients is the gradient of the ELBO
#
# For one point, the exact ELBO of $q = \mathcal{N}(m, \mathrm{diag}(S))$ is the closed form of docs/theory.md, section 4;
# its gradient is $W^\top(x - b - Wm)/\sigma^2 - m$ in $m$ and $\frac12 - \frac{S_j}{2}\big(\|W_{:j}\|^2/\sigma^2 + 1\big)$ in
# $\log S_j$. The one-sample reparameterised gradients with respect to the encoder's bias (which is $d\mu$ and $dv$ for one
# point) scatter around it: 40 batches of 500 copies of one point, each copy with its own $\epsilon$, give the mean and
# its standard error.

# %%
x0 = x[:1]
m0 = x0 @ enc.W[:, :Z] + enc.b[:Z]
S0 = np.exp(enc.b[Z:])
exact = np.concatenate([(x0 - b - m0 @ W.T) @ W / s2 - m0, (0.5 - 0.5 * S0 * (np.sum(W**2, axis=0) / s2 + 1))[None]], axis=1)[0]

# the closed form above against a central difference of npvae's closed-form ELBO (model.elbo): an independent check
for j in range(2 * Z):
    step = np.zeros(2 * Z)
    step[j] = 1e-5
    up = model.elbo(x0, m0 + step[:Z], np.log(S0)[None] + step[Z:])[0]
    down = model.elbo(x0, m0 - step[:Z], np.log(S0)[None] - step[Z:])[0]
    assert abs((up - down) / 2e-5 - exact[j]) < 1e-6 * max(1.0, abs(exact[j]))

batch_means = []
for _ in range(40):
    n = 500
    _, g = npvae.objective(params, arch, np.repeat(x0, n, axis=0), rng.standard_normal((1, n, Z)), kl="mc")
    batch_means.append(g.encoder[0].b)                   # the mean of 500 one-sample gradients [dmu, dv]
batch_means = np.array(batch_means)
mc_mean = batch_means.mean(axis=0)
se = batch_means.std(axis=0, ddof=1) / np.sqrt(len(batch_means))
print("exact gradient of the ELBO in (mu, log_var):", np.round(exact, 4))
print("mean of 20,000 reparameterised gradients    :", np.round(mc_mean, 4), "+-", np.round(se, 4))
assert np.all(np.abs(mc_mean - exact) <= N_SE * se)

# %% [markdown]
# What to look for: three agreements, to rounding (the chain rule), to $10^{-6}$ (finite differences), and to a few
# standard errors (unbiasedness). The sample is built with $e^{v/2}$ because $v$ is a log *variance*: read it as a log
# standard deviation, or use the variance where the standard deviation belongs, and the first check fails.
