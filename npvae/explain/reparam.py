"""Topic `reparam`: why the reparameterisation trick? Its gradient variance against the score function's.

The gradient of ELBO(x) = E_q[f(z)], f(z) = log p(x, z) - log q(z|x), with respect to the mean mu of
q(z|x) = N(mu, diag(S)) has several unbiased single-sample estimators:
- reparameterised (Kingma & Welling 2014): z = mu + S^(1/2) eps, g = d f(mu + S^(1/2) eps) / d mu, the
  pathwise derivative; npvae's `objective` (kl="mc": all of f sampled; kl="analytic": the KL term exact).
- sticking the landing (Roeder et al. 2017; DReG with K = 1, Tucker et al. 2018): the same, less the
  zero-mean score term of -log q, so g = d log p(x, z) / dz + (z - mu) / S; `objective(estimator="stl")`.
- score function / REINFORCE (Williams 1992; Paisley et al. 2012): g = (f(z) - c) d log q(z|x) / d mu
  = (f(z) - c) (z - mu) / S, for any constant baseline c (E_q[d log q / d mu] = 0). It needs only values
  of f, no derivative, and is written here in numpy for the comparison (it is not part of npvae).
On the linear-Gaussian model everything is exact: the gradient is W^T (x - b - W mu) / sigma2 - mu
(the derivative of the closed-form ELBO; Tipping & Bishop 1999; docs/maths.md, "The linear-Gaussian model"),
and each reparameterised estimator is linear in eps, g = g_exact + B eps, with covariance B B^T:
B = -(M / sigma2) diag(S^(1/2)) with the MC KL, -(W^T W / sigma2) diag(S^(1/2)) with the analytic KL, and
-(M / sigma2) diag(S^(1/2)) + diag(S^(-1/2)) for STL, where M = W^T W + sigma2 I (docs/maths.md,
"Reparameterisation"). At the best diagonal q, S_j = sigma2 / M_jj, STL's diagonal cancels and only the
posterior's correlation is left. The score function's variance carries all of f's spread, which grows with
the number of terms in f (dimensions of x and z).
"""

from __future__ import annotations

import numpy as np

from ..maths.gaussian import std
from ..oracle.linear_chain import LinearGaussian
from ..oracle.linear_vae import best_linear_vae
from ..objectives import log_weights, objective
from . import _common as c

ESTIMATORS = ("reparam, analytic KL", "reparam, MC KL", "STL, path derivative only", "score function, baseline c = ELBO",
              "score function, no baseline")
COLOURS = dict(zip(ESTIMATORS, (c.C_REPARAM_ANALYTIC, c.C_REPARAM, c.C_STL, c.C_SCORE_BASELINE, c.C_SCORE)))
# estimator -> (kl, npvae estimator) of the reparameterised ones, drawn from npvae.objective
_NPVAE = {ESTIMATORS[0]: ("analytic", "reparam"), ESTIMATORS[1]: ("mc", "reparam"), ESTIMATORS[2]: ("mc", "stl")}


def exact_gradient(model: LinearGaussian, x, mu):
    """d ELBO / d mu = W^T (x - b - W mu) / sigma2 - mu: x (D,), mu (Z,) -> (Z,).

    The derivative in mu of the closed-form ELBO (docs/maths.md, "The linear-Gaussian model").
    """
    return model.W.T @ (x - model.b - model.W @ mu) / model.sigma2 - mu


def reparam_covariance(model: LinearGaussian, log_S, kind: str):
    """Covariance (Z, Z) of a one-sample reparameterised gradient w.r.t. mu, B B^T; kind "mc", "analytic" or "stl".

    g = g_exact + B eps with B = -G diag(S^(1/2)), G = M / sigma2 ("mc") or W^T W / sigma2 ("analytic"); STL adds
    the path derivative of -log q, (z - mu) / S = S^(-1/2) eps: B = -(M / sigma2) diag(S^(1/2)) + diag(S^(-1/2)).
    """
    G = model.W.T @ model.W / model.sigma2 + (0.0 if kind == "analytic" else np.eye(model.Z))
    sd = np.exp(0.5 * log_S)
    B = -G * sd[None, :] + (np.diag(1.0 / sd) if kind == "stl" else 0.0)
    return B @ B.T


def reparam_draws(params, arch, x, n: int, kl: str, rng, estimator: str = "reparam"):
    """n one-sample reparameterised gradients w.r.t. mu from npvae.objective: (n, Z). x: (1, D).

    With one data point, mu = x A^T + a, so d/d mu is the gradient of the encoder's mean bias a.
    """
    Z = arch.latent_dim
    return np.stack([objective(params, arch, x, rng.standard_normal((1, 1, Z)), kl=kl, estimator=estimator)[1].encoder[0].b[:Z]
                     for _ in range(n)])


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


def block_rms(draws, exact: float, ns) -> list[float]:
    """Root-mean-square error of the average of n draws, for each n in ns, from the len(draws) // n disjoint blocks of n.

    draws: (R,) one-sample estimates of a gradient whose exact value is `exact`; for an unbiased estimator of
    variance v the expected square error of an average of n is v / n.
    """
    out = []
    for n in ns:
        blocks = draws[: len(draws) // n * n].reshape(-1, n).mean(axis=1)
        out.append(float(np.sqrt(np.mean((blocks - exact) ** 2))))
    return out


def compare(model: LinearGaussian, x, shift: float, n: int, rng, estimators=ESTIMATORS) -> dict:
    """The estimators named at q = best diagonal q with its mean shifted by `shift` in every dimension; x: (1, D)."""
    arch, params = best_linear_vae(model)
    Z = model.Z
    enc = params.encoder[0]
    b = enc.b.copy()
    b[:Z] += shift
    params = params._replace(encoder=(enc._replace(b=b),))
    mu, log_S = (x @ enc.W[:, :Z] + b[:Z])[0], b[Z:]
    elbo = float(model.elbo(x, mu[None], log_S[None])[0])
    draws = {k: reparam_draws(params, arch, x, n, kl, rng, est) for k, (kl, est) in _NPVAE.items() if k in estimators}
    for k, baseline in ((ESTIMATORS[3], elbo), (ESTIMATORS[4], 0.0)):
        if k in estimators:
            draws[k] = score_draws(params, arch, x, n, baseline, rng)
    exact = exact_gradient(model, x[0], mu)
    ns = np.unique(np.geomspace(1, n // 20, 25).astype(int))  # at least 20 blocks for the largest n
    return {"exact": exact, "elbo": elbo, "q_mean": mu, "q_log_var": log_S,
            "closed_form_variance": {k: np.diag(reparam_covariance(model, log_S, kind))
                                     for k, kind in zip(ESTIMATORS, ("analytic", "mc", "stl"))},
            "mean": {k: v.mean(axis=0) for k, v in draws.items()},
            "se": {k: v.std(axis=0, ddof=1) / np.sqrt(n) for k, v in draws.items()},
            "variance": {k: v.var(axis=0, ddof=1) for k, v in draws.items()},
            "rms_error_dim0": {"n": ns, **{k: block_rms(v[:, 0], exact[0], ns) for k, v in draws.items()}}}


def _equal_columns_model(rng, D: int, Z: int) -> LinearGaussian:
    """W = 1.5 Q with Q (D, Z) orthonormal: the posterior is diagonal and every latent dimension alike, whatever Z."""
    Q, _ = np.linalg.qr(rng.standard_normal((D, Z)))
    return LinearGaussian(1.5 * Q, rng.standard_normal(D), 0.3)


def _times(r: float) -> str:
    """A variance ratio r = var(other) / var(reference) in words: 'N times more' or 'N times fewer' draws."""
    return f"{r:.0f} times more" if r >= 1 else f"{1 / r:.0f} times fewer"


def finding(nb: dict) -> list[str]:
    """The answer in three lines, with the numbers of this run: the variances of d ELBO / d mu_1, and as Z grows."""
    v = {k: nb["main"]["variance"][k][0] for k in ESTIMATORS}
    r_mc, r_sf, r_sf0 = v[ESTIMATORS[1]], v[ESTIMATORS[3]], v[ESTIMATORS[4]]
    s, Z = nb["sweep_over_Z"]["variance_dim0"], nb["sweep_over_Z"]["Z"]
    trend = lambda k, f: f"{s[k][0]:{f}} -> {s[k][-1]:{f}}"  # noqa: E731
    ratios = (f"{r_sf / r_mc:.0f} to {r_sf0 / r_mc:.0f} times more" if min(r_sf, r_sf0) >= r_mc
              else f"{_times(r_sf / r_mc)} (baseline) and {_times(r_sf0 / r_mc)} (none)")
    return [f"Variance of one draw of d ELBO / d mu_1 (= {nb['main']['exact'][0]:.3f}): reparameterised {v[ESTIMATORS[0]]:.1f} "
            f"(analytic KL), {r_mc:.1f} (MC KL), {v[ESTIMATORS[2]]:.2f} (STL).",
            f"Score function {r_sf:.0f} (baseline c = ELBO), {r_sf0:.0f} (none): {ratios} draws than the reparameterised "
            "(MC KL) for the same precision.",
            f"As Z grows {Z[0]} -> {Z[-1]}: reparameterised {trend(ESTIMATORS[1], '.1f')}; score function "
            f"{trend(ESTIMATORS[3], '.0f')} (baseline), {trend(ESTIMATORS[4], '.0f')} (none)."]


def run(out_dir, *, quick: bool, rng: np.random.Generator, data_dir=None) -> dict:
    n = 2000 if quick else 20000
    model = c.correlated_model(rng, D=5, sigma2=0.3, cos=0.5)
    x, _ = model.sample(1, rng)
    main = compare(model, x, 0.5, n, rng)
    # As Z grows: STL is left out of the draws, as its covariance is 0 there (W = 1.5 Q: q's covariance is the
    # posterior's), and its closed form, 0 to rounding, is recorded instead.
    in_sweep = [k for k in ESTIMATORS if k != ESTIMATORS[2]]
    sweep = {"Z": [1, 2, 4, 8, 16] if quick else [1, 2, 4, 8, 16, 32, 64], "variance_dim0": {k: [] for k in in_sweep},
             "stl_closed_form_variance_dim0": []}
    for Z in sweep["Z"]:
        m = _equal_columns_model(rng, 2 * Z + 4, Z)
        r = compare(m, m.sample(1, rng)[0], 0.5, n // 4, rng, in_sweep)
        for k in in_sweep:
            sweep["variance_dim0"][k].append(float(r["variance"][k][0]))
        sweep["stl_closed_form_variance_dim0"].append(float(r["closed_form_variance"][ESTIMATORS[2]][0]))
    numbers = {"model": {"W": model.W, "b": model.b, "sigma2": model.sigma2}, "x": x[0], "n": n, "main": main,
               "sweep_over_Z": sweep}
    return {"files": [_plot(numbers, out_dir)], "numbers": numbers, "finding": finding(numbers)}


def _plot(nb: dict, out_dir) -> str:
    """Write `draw`'s figure to out_dir/reparam.png; return the file name."""
    return c.save_png(draw(nb), out_dir, "reparam.png")


def draw(nb: dict):
    """Three panels on log axes: variance per estimator, with its ratio to the reparameterised one's; the error of an
    average of n draws against n; variance against Z. nb: `run`'s numbers."""
    m = nb["main"]
    ref = ESTIMATORS[1]  # every ratio is to the reparameterised gradient with all of f sampled
    fig = c.figure(16.5, 5.8)
    fig.subplots_adjust(left=0.05, right=0.99, bottom=0.27, top=0.88, wspace=0.22)
    ax = fig.add_subplot(1, 3, 1)
    Z = len(m["exact"])
    width = 0.84 / len(ESTIMATORS)
    lo, hi = c.data_limits(*(m["variance"][k] for k in ESTIMATORS), log=True)
    for i, k in enumerate(ESTIMATORS):
        pos = np.arange(Z) + (i - (len(ESTIMATORS) - 1) / 2) * width
        var = np.asarray(m["variance"][k])
        ax.bar(pos, var - lo, width, bottom=lo, color=COLOURS[k], label=k)  # from the panel's floor: log axes have no 0
        if k in m["closed_form_variance"]:
            ax.plot(pos, m["closed_form_variance"][k], "_", color=c.C_POSTERIOR, ms=14, mew=2)  # exact values
        for p, v, r in zip(pos, var, var / np.asarray(m["variance"][ref])):
            ax.text(p, v * 1.15, "1x" if k == ref else (f"{r:.0f}x" if r >= 9.5 else f"{r:.2g}x"), ha="center", va="bottom",
                    fontsize=7, rotation=90)
    ax.plot([], [], "_", color=c.C_POSTERIOR, ms=12, mew=2, label="closed-form variance (reparameterised, STL)")
    ax.set_yscale("log")
    ax.set_ylim(lo, hi * 30)  # room above the bars for their ratios
    ax.set_xticks(np.arange(Z), [f"d ELBO / d mu_{j + 1}" for j in range(Z)])
    c.style(ax, f"variance of one draw ({nb['n']} draws); above: ratio to reparam, MC KL", None, "variance (log scale)",
            legend=False)
    c.legend_below(ax, ncol=2)
    ax = fig.add_subplot(1, 3, 2)
    rms = m["rms_error_dim0"]
    ns = np.asarray(rms["n"], dtype=float)
    for k in ESTIMATORS:
        ax.plot(ns, rms[k], "o", color=COLOURS[k], ms=3.5, label=k)
        ax.plot(ns, np.sqrt(m["variance"][k][0] / ns), "-", color=COLOURS[k], lw=1.2)
    ax.plot([], [], "-", color=c.C_GUIDE, lw=1.2, label="sqrt(variance / n), the variance of panel 1")
    ax.set_xscale("log")
    ax.set_yscale("log")
    lo, hi = c.data_limits(*(rms[k] for k in ESTIMATORS), *(np.sqrt(m["variance"][k][0] / ns) for k in ESTIMATORS), log=True)
    ax.set_ylim(lo, hi)
    # The same error costs var(score) / var(reparam) times the draws: a horizontal arrow from the reparameterised
    # line to a score function's (the larger ratio that the panel's range of n holds), labelled in a free corner.
    err = np.sqrt(m["variance"][ref][0] / ns[0])  # the reparameterised line's error at the smallest n
    for sf in (ESTIMATORS[4], ESTIMATORS[3]):
        ratio = m["variance"][sf][0] / m["variance"][ref][0]
        if 1 < ratio and ns[0] * ratio <= ns[-1]:
            ax.annotate("", (ns[0] * ratio, err), (ns[0], err), arrowprops={"arrowstyle": "->", "color": c.C_GUIDE, "lw": 1.2})
            which = "no baseline" if sf == ESTIMATORS[4] else "baseline"
            ax.text(0.03, 0.04, f"arrow: the same error takes {ratio:.0f}x the draws\n(score function, {which})",
                    transform=ax.transAxes, ha="left", va="bottom", fontsize=8)
            break
    c.style(ax, "error of the average of n draws of d ELBO / d mu_1 (RMS over blocks)", "n draws averaged",
            "RMS error (log scale)", legend=False)
    c.legend_below(ax, ncol=2)
    ax = fig.add_subplot(1, 3, 3)
    s = nb["sweep_over_Z"]
    shown = list(s["variance_dim0"])
    for k in shown:
        ax.plot(s["Z"], s["variance_dim0"][k], "o-", color=COLOURS[k], lw=2, label=k)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_ylim(*c.data_limits(*(s["variance_dim0"][k] for k in shown), log=True))
    # Here q's covariance is the posterior's (W = 1.5 Q has orthogonal columns), so STL's variance is 0: nothing to draw.
    stl = max(abs(v) for v in s["stl_closed_form_variance_dim0"])
    ax.plot([], [], " ", label=f"STL: variance 0 (closed form {stl:.0e}): q's covariance is exact here")
    c.style(ax, "variance of d ELBO / d mu_1 as Z grows (W = 1.5 Q, D = 2Z + 4)", "latent dimensions Z", "variance (log scale)",
            legend=False)
    c.legend_below(ax)
    fig.suptitle("The reparameterisation trick: the same gradient, orders of magnitude less noise than the score function",
                 fontsize=12)
    return fig
