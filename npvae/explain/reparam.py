"""Topic `reparam`: why the reparameterisation trick? Its gradient variance against the score function's.

The gradient of ELBO(x) = E_q[f(z)], f(z) = log p(x, z) - log q(z|x), with respect to the mean mu of
q(z|x) = N(mu, diag(S)) has two unbiased single-sample estimators:
- reparameterised (Kingma & Welling 2014): z = mu + S^(1/2) eps, g = d f(mu + S^(1/2) eps) / d mu, the
  pathwise derivative; npvae's `objective` (kl="mc": all of f sampled; kl="analytic": the KL term exact).
- score function / REINFORCE (Williams 1992; Paisley et al. 2012): g = (f(z) - c) d log q(z|x) / d mu
  = (f(z) - c) (z - mu) / S, for any constant baseline c (E_q[d log q / d mu] = 0). It needs only values
  of f, no derivative, and is written here in numpy for the comparison (it is not part of npvae).
On the linear-Gaussian model everything is exact: the gradient is W^T (x - b - W mu) / sigma2 - mu
(from the closed-form ELBO, MATHS.md), and the reparameterised estimator's covariance is
(M / sigma2) diag(S) (M / sigma2) with the MC KL, and (W^T W / sigma2) diag(S) (W^T W / sigma2) with the
analytic KL, where M = W^T W + sigma2 I. The score function's variance carries all of f's spread,
which grows with the number of terms in f (dimensions of x and z).
"""

from __future__ import annotations

import numpy as np

from ..maths.gaussian import std
from ..oracle.linear_chain import LinearGaussian
from ..oracle.linear_vae import best_linear_vae
from ..objectives import log_weights, objective
from . import _common as c

ESTIMATORS = ("reparam, analytic KL", "reparam, MC KL", "score function, baseline c = ELBO", "score function, no baseline")


def exact_gradient(model: LinearGaussian, x, mu):
    """d ELBO / d mu = W^T (x - b - W mu) / sigma2 - mu: x (D,), mu (Z,) -> (Z,) (derivative of MATHS.md's closed form)."""
    return model.W.T @ (x - model.b - model.W @ mu) / model.sigma2 - mu


def reparam_covariance(model: LinearGaussian, log_S, kl: str):
    """Covariance (Z, Z) of the one-sample reparameterised gradient w.r.t. mu: B diag(S) B, B = M / sigma2 (MC KL) or W^T W / sigma2."""
    B = model.W.T @ model.W / model.sigma2 + (np.eye(model.Z) if kl == "mc" else 0.0)
    return B @ np.diag(np.exp(log_S)) @ B


def reparam_draws(params, arch, x, n: int, kl: str, rng):
    """n one-sample reparameterised gradients w.r.t. mu from npvae.objective: (n, Z). x: (1, D).

    With one data point, mu = x A^T + a, so d/d mu is the gradient of the encoder's mean bias a.
    """
    Z = arch.latent_dim
    return np.stack([objective(params, arch, x, rng.standard_normal((1, 1, Z)), kl=kl)[1].encoder[0].b[:Z] for _ in range(n)])


def score_draws(params, arch, x, n: int, baseline: float, rng):
    """n one-sample score-function gradients (f(z) - baseline) eps / S^(1/2) w.r.t. mu: (n, Z). x: (1, D).

    f(z) = log p(x, z) - log q(z|x) comes from npvae.log_weights, all n draws in one call; d log q / d mu
    = (z - mu) / S = eps / S^(1/2).
    """
    Z = arch.latent_dim
    log_S = params.encoder[0].b[Z:]
    eps = rng.standard_normal((1, n, Z))
    f = log_weights(params, arch, np.repeat(x, n, axis=0), eps)[0]  # (n,)
    return (f - baseline)[:, None] * eps[0] / std(log_S)


def compare(model: LinearGaussian, x, shift: float, n: int, rng) -> dict:
    """All four estimators at q = best diagonal q with its mean shifted by `shift` in every dimension; x: (1, D)."""
    arch, params = best_linear_vae(model)
    Z = model.Z
    enc = params.encoder[0]
    b = enc.b.copy()
    b[:Z] += shift
    params = params._replace(encoder=(enc._replace(b=b),))
    mu, log_S = (x @ enc.W[:, :Z] + b[:Z])[0], b[Z:]
    elbo = float(model.elbo(x, mu[None], log_S[None])[0])
    draws = {ESTIMATORS[0]: reparam_draws(params, arch, x, n, "analytic", rng),
             ESTIMATORS[1]: reparam_draws(params, arch, x, n, "mc", rng),
             ESTIMATORS[2]: score_draws(params, arch, x, n, elbo, rng),
             ESTIMATORS[3]: score_draws(params, arch, x, n, 0.0, rng)}
    return {"exact": exact_gradient(model, x[0], mu), "elbo": elbo, "q_mean": mu, "q_log_var": log_S,
            "closed_form_variance": {ESTIMATORS[0]: np.diag(reparam_covariance(model, log_S, "analytic")),
                                     ESTIMATORS[1]: np.diag(reparam_covariance(model, log_S, "mc"))},
            "mean": {k: v.mean(axis=0) for k, v in draws.items()},
            "se": {k: v.std(axis=0, ddof=1) / np.sqrt(n) for k, v in draws.items()},
            "variance": {k: v.var(axis=0, ddof=1) for k, v in draws.items()},
            "running_mean_dim0": {k: np.cumsum(v[:, 0]) / np.arange(1, n + 1) for k, v in draws.items()}}


def _equal_columns_model(rng, D: int, Z: int) -> LinearGaussian:
    """W = 1.5 Q with Q (D, Z) orthonormal: the posterior is diagonal and every latent dimension alike, whatever Z."""
    Q, _ = np.linalg.qr(rng.standard_normal((D, Z)))
    return LinearGaussian(1.5 * Q, rng.standard_normal(D), 0.3)


def finding(nb: dict) -> list[str]:
    """The answer in three lines, with the numbers of this run: the variances of d ELBO / d mu_1, and as Z grows."""
    v = {k: nb["main"]["variance"][k][0] for k in ESTIMATORS}
    r_mc, r_sf, r_sf0 = v[ESTIMATORS[1]], v[ESTIMATORS[2]], v[ESTIMATORS[3]]
    s, Z = nb["sweep_over_Z"]["variance_dim0"], nb["sweep_over_Z"]["Z"]
    trend = lambda k, f: f"{s[k][0]:{f}} -> {s[k][-1]:{f}}"  # noqa: E731
    return [f"Variance of one draw of d ELBO / d mu_1 (= {nb['main']['exact'][0]:.3f}): reparam {v[ESTIMATORS[0]]:.1f} "
            f"(analytic KL), {r_mc:.1f} (MC KL); score function {r_sf:.0f} (baseline), {r_sf0:.0f} (none).",
            f"So the score function needs {r_sf / r_mc:.0f} to {r_sf0 / r_mc:.0f} times more draws than the reparameterised "
            "gradient (MC KL) for the same precision.",
            f"As Z grows {Z[0]} -> {Z[-1]}: reparameterised {trend(ESTIMATORS[1], '.1f')}; score function "
            f"{trend(ESTIMATORS[2], '.0f')} (baseline), {trend(ESTIMATORS[3], '.0f')} (none)."]


def run(out_dir, *, quick: bool, rng: np.random.Generator, data_dir=None) -> dict:
    n = 2000 if quick else 20000
    model = c.correlated_model(rng, D=5, sigma2=0.3, cos=0.5)
    x, _ = model.sample(1, rng)
    main = compare(model, x, 0.5, n, rng)
    sweep = {"Z": [1, 2, 4, 8, 16] if quick else [1, 2, 4, 8, 16, 32, 64], "variance_dim0": {k: [] for k in ESTIMATORS}}
    for Z in sweep["Z"]:
        m = _equal_columns_model(rng, 2 * Z + 4, Z)
        r = compare(m, m.sample(1, rng)[0], 0.5, n // 4, rng)
        for k in ESTIMATORS:
            sweep["variance_dim0"][k].append(float(r["variance"][k][0]))
    at = np.unique(np.geomspace(1, n, 200).astype(int)) - 1  # the running means are stored at 200 values of n
    main["running_n"] = at + 1
    main["running_mean_dim0"] = {k: v[at] for k, v in main["running_mean_dim0"].items()}
    numbers = {"model": {"W": model.W, "b": model.b, "sigma2": model.sigma2}, "x": x[0], "n": n, "main": main,
               "sweep_over_Z": sweep}
    return {"files": [_plot(numbers, out_dir)], "numbers": numbers, "finding": finding(numbers)}


def _plot(nb: dict, out_dir) -> str:
    """Write `draw`'s figure to out_dir/reparam.png; return the file name."""
    return c.save_png(draw(nb), out_dir, "reparam.png")


def draw(nb: dict):
    """Three panels: variance per estimator; the running means' error; variance against Z. nb: `run`'s numbers."""
    colours = dict(zip(ESTIMATORS, (c.C_REPARAM, c.C_STL, c.C_DREG, c.C_SCORE)))
    m = nb["main"]
    fig = c.figure(16.5, 5.6)
    fig.subplots_adjust(left=0.05, right=0.99, bottom=0.24, top=0.88, wspace=0.25)
    ax = fig.add_subplot(1, 3, 1)
    Z = len(m["exact"])
    width = 0.8 / len(ESTIMATORS)
    for i, k in enumerate(ESTIMATORS):
        pos = np.arange(Z) + (i - 1.5) * width
        ax.bar(pos, m["variance"][k], width, color=colours[k], label=k)
        if k in m["closed_form_variance"]:
            ax.plot(pos, m["closed_form_variance"][k], "k_", ms=18, mew=2)
    ax.plot([], [], "k_", ms=12, mew=2, label="closed-form variance (reparam)")
    ax.set_yscale("log")
    ax.set_xticks(np.arange(Z), [f"d ELBO / d mu_{j + 1}" for j in range(Z)])
    c.style(ax, f"variance of one-sample gradient estimates ({nb['n']} draws)", None, "variance", legend=False)
    c.legend_below(ax, ncol=2)
    ax = fig.add_subplot(1, 3, 2)
    nn = m["running_n"]
    exact = m["exact"][0]
    # The error, not the estimate, on a symlog axis: linear within +-1 where the reparameterised averages
    # settle, logarithmic beyond, so that the score function's first draws (tens of units off) stay on the panel.
    errors = {k: np.asarray(v) - exact for k, v in m["running_mean_dim0"].items()}
    for k in ESTIMATORS:
        ax.plot(nn, errors[k], color=colours[k], lw=1.5, label=k)
    ax.axhline(0.0, color=c.C_POSTERIOR, ls="--", lw=1.5, label=f"0: the exact gradient {exact:.3f}")
    ax.set_xscale("log")
    ax.set_yscale("symlog", linthresh=1.0)
    ax.set_ylim(*c.data_limits(*errors.values(), [0.0]))
    c.style(ax, "average of n draws of d ELBO / d mu_1, minus the exact value", "n draws",
            "error (symlog: linear in [-1, 1])", legend=False)
    c.legend_below(ax, ncol=2)
    ax = fig.add_subplot(1, 3, 3)
    s = nb["sweep_over_Z"]
    for k in ESTIMATORS:
        ax.plot(s["Z"], s["variance_dim0"][k], "o-", color=colours[k], lw=2, label=k)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_ylim(*c.data_limits(*s["variance_dim0"].values(), log=True))
    c.style(ax, "variance of d ELBO / d mu_1 as Z grows (W = 1.5 Q, D = 2Z + 4)", "latent dimensions Z", "variance",
            legend=False)
    c.legend_below(ax, ncol=2)
    fig.suptitle("The reparameterisation trick: the same gradient, orders of magnitude less noise than the score function",
                 fontsize=12)
    return fig
