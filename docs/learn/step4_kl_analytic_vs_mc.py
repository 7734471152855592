# %% [markdown]
# # Step 4: the KL term, analytic or Monte Carlo
#
# The ELBO can be estimated two ways from the same samples $z_k = \mu + e^{v/2}\epsilon_k$ (Kingma & Welling 2014,
# section 2.3, their estimators A and B):
#
# - **Monte Carlo KL** (`kl="mc"`): $\frac1K\sum_k\big[\log p(x|z_k) + \log p(z_k) - \log q(z_k|x)\big]$;
# - **analytic KL** (`kl="analytic"`, the default): $\frac1K\sum_k \log p(x|z_k) - \mathrm{KL}\big(q\,\|\,\mathcal{N}(0, I)\big)$,
#   with $\mathrm{KL} = \frac12\sum_j[\mu_j^2 + e^{v_j} - 1 - v_j]$ (App. B; docs/theory.md, section 3). The $\frac12$
#   comes from the Gaussian's $\frac12$ in its exponent and its $\sqrt{\ }$ in its normaliser.
#
# Both have the same expectation, the ELBO. They differ in **variance**: the analytic form removes the noise of the
# KL term, but the Monte Carlo form's terms can cancel each other's noise: at the true posterior it has *zero*
# variance (every log-weight is $\log p(x)$, step 2) while the analytic one does not. On the linear model both variances have closed
# forms: each estimate is a quadratic $c + g^\top\epsilon + \epsilon^\top A\,\epsilon$ in the noise, whose variance is
# $\|g\|^2 + 2\,\mathrm{tr}(A^2)$.

# %%
import numpy as np

import npvae
from npvae.oracle.linear_vae import linear_vae   # q(z|x) = N(V x + c, diag(exp(log_S))), p(x|z) = N(Wz + b, s2 I)

rng = np.random.default_rng(0)  # change the seed: every assert below holds for every seed
EXACT = 1e-10
N_SE = 5                        # Monte Carlo statements hold to 5 standard errors
n = 20_000                      # one-sample estimates per estimator

D, Z = 5, 2
model = npvae.LinearGaussian.random(rng, D, (Z,), sigma2=0.5)


def closed_form_variances(model, x0, m, log_S):
    """Variances of the one-sample ELBO estimates (analytic KL, MC KL) at x0 (D,), q = N(m, diag(exp(log_S)))."""
    W, b, s2 = model.W, model.b, float(model.sigma2)
    s = np.exp(0.5 * log_S)
    B = W * s                                            # z = m + s eps, so W z = W m + B eps
    r = x0 - b - W @ m
    g_an, A_an = B.T @ r / s2, -B.T @ B / (2 * s2)       # log p(x|z) = c + g.eps + eps^T A eps
    g_mc = g_an - s * m                                  # + log p(z) - log q(z|x), also quadratic in eps
    A_mc = A_an - np.diag(s**2) / 2 + np.eye(len(m)) / 2
    var = [g @ g + 2 * np.trace(A @ A) for g, A in ((g_an, A_an), (g_mc, A_mc))]
    return var[0], var[1]


def one_sample_estimates(params, arch, x0, kl):
    """n independent one-sample ELBO estimates of one point: n copies of x0, each with its own eps."""
    return npvae.bound_value(params, arch, np.repeat(x0[None], n, axis=0), rng.standard_normal((1, n, Z)), kl=kl)


def variance_and_se(f):
    """Sample variance and its standard error, sqrt((m4 - var^2) / n), from the fourth central moment."""
    c = f - f.mean()
    var = np.mean(c**2)
    return var, np.sqrt(max(np.mean(c**4) - var**2, 0.0) / len(f))

# %% [markdown]
# ## Same mean, a spread that depends on where q is
#
# Three diagonal $q$ for one point of a correlated model: the best one; its mean shifted by 0.5 (an encoder
# mid-training); and the best mean with variances 4 times too small. Each is output by an encoder whose bias is $q$.

# %%
x0 = model.sample(1, rng)[0][0]
best_m, best_lv = (a[0] for a in model.best_diagonal_q(x0[None]))
candidates = {"best diagonal q": (best_m, best_lv), "mean shifted by 0.5": (best_m + 0.5, best_lv),
              "variances / 4": (best_m, best_lv - np.log(4))}
for name, (m, log_S) in candidates.items():
    arch, params = linear_vae(model, np.zeros((Z, D)), log_S, c=m)   # an encoder that outputs this q for every x
    exact_elbo = model.elbo(x0[None], m[None], log_S[None])[0]
    var_an_exact, var_mc_exact = closed_form_variances(model, x0, m, log_S)
    print(f"{name}: exact ELBO {exact_elbo:.4f}; the analytic KL needs {var_an_exact / var_mc_exact:.2f} times the samples "
          "of the MC KL for the same precision")
    for kl, var_exact in (("analytic", var_an_exact), ("mc", var_mc_exact)):
        f = one_sample_estimates(params, arch, x0, kl)
        mean, se_mean = f.mean(), f.std(ddof=1) / np.sqrt(n)
        var, se_var = variance_and_se(f)
        print(f"    kl={kl!r:11}: mean {mean:8.4f} +- {se_mean:.4f}; variance {var:7.4f} +- {se_var:.4f} (closed form {var_exact:.4f})")
        assert abs(mean - exact_elbo) <= N_SE * se_mean
        assert abs(var - var_exact) <= N_SE * se_var

# %% [markdown]
# At $q = p(z)$ the two are the same estimate: $\log p(z) - \log q(z|x) = 0$ for every draw, and the KL is 0.

# %%
arch, params = linear_vae(model, np.zeros((Z, D)), np.zeros(Z), c=np.zeros(Z))
eps = rng.standard_normal((1, 1000, Z))
xs = np.repeat(x0[None], 1000, axis=0)
assert np.max(np.abs(npvae.bound_value(params, arch, xs, eps, kl="mc") - npvae.bound_value(params, arch, xs, eps, kl="analytic"))) < EXACT

# %% [markdown]
# ## At the true posterior the Monte Carlo form is exact for every draw
#
# With orthogonal columns in $W$ the posterior is diagonal, so an encoder can output it exactly. Then
# $\log p(x|z) + \log p(z) - \log q(z|x) = \log p(x)$ for every $\epsilon$, while the analytic form still carries the
# noise of $\log p(x|z)$ alone.

# %%
orth = npvae.LinearGaussian.with_posterior_in_family(rng, D, (Z,), sigma2=0.5)
xo = orth.sample(1, rng)[0][0]
pm, plv = (a[0] for a in orth.best_diagonal_q(xo[None]))
arch_o, params_o = linear_vae(orth, np.zeros((Z, D)), plv, c=pm)
var_an_post, var_mc_post = closed_form_variances(orth, xo, pm, plv)

f_mc = one_sample_estimates(params_o, arch_o, xo, "mc")
f_an = one_sample_estimates(params_o, arch_o, xo, "analytic")
var_an, se_an = variance_and_se(f_an)
print(f"at the posterior: MC-KL estimates span {f_mc.max() - f_mc.min():.1e} around log p(x) = {orth.log_marginal(xo[None])[0]:.6f}; "
      f"analytic-KL variance {var_an:.4f} +- {se_an:.4f} (closed form {var_an_post:.4f})")
assert abs(var_mc_post) < EXACT and np.max(np.abs(f_mc - orth.log_marginal(xo[None])[0])) < EXACT
assert abs(var_an - var_an_post) <= N_SE * se_an and var_an_post > 0

# %% [markdown]
# What to look for: the two means agree with the exact ELBO within their standard errors; the variances agree with
# their closed forms; which estimator is less noisy depends on where $q$ is (near the best $q$ the Monte Carlo form,
# with too narrow a $q$ the analytic one). npvae defaults to the analytic KL; STL
# (step 6) keeps the Monte Carlo form's zero variance at the optimum for the *gradient*. The gradient variances of both
# forms, and of the score function they replace, are `npvae explain reparam` (docs/theory.md, section 9.3).
# Both forms must read `log_var` the same way: a sample built as if it were a log standard deviation, beside a KL that
# reads a log variance, and the two stop estimating the same number (the first check above fails).
