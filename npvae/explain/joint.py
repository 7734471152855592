"""Topic `joint`: the ELBO averaged over the data is a KL between two joint distributions over (x, z).

With q(x) the data distribution and q(x, z) = q(x) q(z|x), the integrand log p(x, z) - log q(z|x) of the
ELBO is -(log q(x, z) - log p(x, z)) - (-log q(x)) for every (x, z), so (Kingma & Welling 2019, "An Introduction
to Variational Autoencoders", section 2.8; docs/maths.md, "The joint view")
    E_q(x) ELBO(x) = -KL(q(x) q(z|x) || p(x, z)) - H(q(x)).
H(q(x)) does not depend on the model: maximising the averaged ELBO over encoder AND decoder is minimising
one KL between joints. Factorising both joints over x first splits it into the two jobs of a VAE:
    KL(q(x, z) || p(x, z)) = KL(q(x) || p(x)) + E_q(x) KL(q(z|x) || p(z|x))   (fit the data; infer z).
The encoder only moves the second term, so at best it reaches E_q(x) log p(x) = -H(q(x)) - KL(q(x) || p(x)).
Checked on the linear-Gaussian model p(x, z) (Tipping & Bishop 1999; docs/maths.md, "The linear-Gaussian model")
with q(x) = N(m, C), a Gaussian of our choosing that p does not match, and a linear encoder q(z|x) = N(A x + a, diag(S)): every term is a closed form
(expectations of quadratics under q(x); KL between (D+Z)-dimensional Gaussians), and each is also
estimated by Monte Carlo from pairs (x, z) ~ q(x) q(z|x), the ELBO's integrand coming from npvae.bound_value.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import multivariate_normal

from ..oracle.linear_chain import LinearGaussian
from ..oracle.linear_vae import linear_arch
from ..objectives import bound_value
from . import _common as c


def expected_elbo(model: LinearGaussian, A, a, log_S, m, C) -> float:
    """E_{x ~ N(m, C)} ELBO(x) for q(z|x) = N(A x + a, diag(S)), from the linear-Gaussian model's closed-form ELBO.

    (docs/maths.md, "The linear-Gaussian model")
    ELBO(x) = -D/2 log(2 pi s2) - [||B x - d||^2 + sum_j S_j ||W_:j||^2] / (2 s2) - 1/2 sum_j [S_j + mu_j^2 - 1 - log S_j],
    B = I - W A, d = b + W a, mu = A x + a; E||B x - d||^2 = ||B m - d||^2 + tr(B C B^T), E||mu||^2 = ||A m + a||^2 + tr(A C A^T).
    """
    W, b, s2 = model.W, model.b, float(model.sigma2)
    S = np.exp(log_S)
    B, d = np.eye(model.D) - W @ A, b + W @ a
    e_resid = np.sum((B @ m - d) ** 2) + np.trace(B @ C @ B.T)
    e_mu2 = np.sum((A @ m + a) ** 2) + np.trace(A @ C @ A.T)
    return float(-0.5 * model.D * np.log(2 * np.pi * s2) - (e_resid + S @ np.sum(W * W, axis=0)) / (2 * s2)
                 - 0.5 * (np.sum(S - 1 - log_S) + e_mu2))


def joint_gaussians(model: LinearGaussian, A, a, log_S, m, C):
    """(mean, cov) of q(x, z) = N(m, C) N(A x + a, diag S) and of p(x, z) = N(0, I) N(W z + b, s2 I), in (x, z) order."""
    W, b, s2, Z = model.W, model.b, float(model.sigma2), model.Z
    q_mean = np.concatenate([m, A @ m + a])
    q_cov = np.block([[C, C @ A.T], [A @ C, A @ C @ A.T + np.diag(np.exp(log_S))]])
    p_mean = np.concatenate([b, np.zeros(Z)])
    p_cov = np.block([[W @ W.T + s2 * np.eye(model.D), W], [W.T, np.eye(Z)]])
    return (q_mean, q_cov), (p_mean, p_cov)


def expected_kl_to_posterior(model: LinearGaussian, A, a, log_S, m, C) -> float:
    """E_{x ~ N(m, C)} KL(N(A x + a, diag S) || N(P (x - b), s2 M^-1)), P = M^-1 W^T (docs/maths.md, "The KL between two Gaussians").

    The mean difference e(x) = (A - P) x + a + P b is linear in x, so E e^T L e = e(m)^T L e(m) + tr(L (A-P) C (A-P)^T).
    """
    W, b, s2 = model.W, model.b, float(model.sigma2)
    M = W.T @ W + s2 * np.eye(model.Z)
    P = np.linalg.solve(M, W.T)
    L = M / s2  # inverse posterior covariance
    e, G = (A - P) @ m + a + P @ b, A - P
    quad = e @ L @ e + np.trace(L @ G @ C @ G.T)
    return float(0.5 * (np.sum(np.diag(L) * np.exp(log_S)) + quad - model.Z - np.linalg.slogdet(L)[1] - np.sum(log_S)))


def expected_kl_to_prior(A, a, log_S, m, C) -> float:
    """E_{x ~ N(m, C)} KL(N(A x + a, diag S) || N(0, I)) = 1/2 [sum_j (S_j - 1 - log S_j) + ||A m + a||^2 + tr(A C A^T)]."""
    return float(0.5 * (np.sum(np.exp(log_S) - 1 - log_S) + np.sum((A @ m + a) ** 2) + np.trace(A @ C @ A.T)))


def closed_forms(model, A, a, log_S, m, C) -> dict:
    """Every term of the three views of E_q(x) ELBO(x)."""
    (qm, qc), (pm, pc) = joint_gaussians(model, A, a, log_S, m, C)
    C_p = model.W @ model.W.T + model.sigma2 * np.eye(model.D)
    return {"expected_elbo": expected_elbo(model, A, a, log_S, m, C),
            "kl_joint": c.kl_gauss(qm, qc, pm, pc),
            "entropy_qx": c.entropy_gauss(C),
            "kl_qx_to_px": c.kl_gauss(m, C, model.b, C_p),
            "expected_kl_to_posterior": expected_kl_to_posterior(model, A, a, log_S, m, C),
            "expected_kl_to_prior": expected_kl_to_prior(A, a, log_S, m, C)}


def monte_carlo(model, A, a, log_S, m, C, n: int, rng) -> dict:
    """Per-pair estimates of the ELBO, the joint KL and H(q(x)) from (x, z) ~ q(x) q(z|x): per-pair values (n,) each."""
    Z = model.Z
    x = m + rng.standard_normal((n, model.D)) @ np.linalg.cholesky(C).T  # (n, D) ~ N(m, C)
    params = c.encoder_params(model, A, a, log_S)
    elbo = bound_value(params, linear_arch(model.D, Z, float(model.sigma2)), x, rng.standard_normal((1, n, Z)), bound="elbo", kl="mc")
    log_qx = multivariate_normal(m, C).logpdf(x)
    # log p(x, z) - log q(z|x) = elbo; log q(x, z) - log p(x, z) = log q(x) - elbo; H(q(x)) = E[-log q(x)].
    return {"elbo": elbo, "kl_joint": log_qx - elbo, "entropy_qx": -log_qx}


def finding(nb: dict) -> list[str]:
    """The answer in three lines, with the numbers of this run: the joint view, its split, the best encoder's gap."""
    e, mc, p = nb["closed_form"], nb["monte_carlo"]["elbo"], nb["path"]
    best = int(np.argmax(p["expected_elbo"]))
    log_px = -e["entropy_qx"] - e["kl_qx_to_px"]  # E_q(x) log p(x): no encoder reaches above it
    return [f"E_q(x) ELBO(x) = {e['expected_elbo']:.3f}: -KL(q(x,z) || p(x,z)) = {-e['kl_joint']:.3f} plus "
            f"-H(q(x)) = {-e['entropy_qx']:.3f}; Monte Carlo {mc['mean']:.3f} +- {mc['se']:.3f}.",
            f"The joint KL = fit p(x) + infer z: {e['kl_joint']:.3f} = KL(q(x) || p(x)) {e['kl_qx_to_px']:.3f} "
            f"+ E KL(q(z|x) || p(z|x)) {e['expected_kl_to_posterior']:.3f}.",
            f"The best encoder on the path (t = {p['t'][best]:.2f}) stays {p['expected_kl_to_posterior'][best]:.3f} nats "
            f"below E log p(x) = {log_px:.3f}, a ceiling only the decoder can raise."]


def run(out_dir, *, quick: bool, rng: np.random.Generator, data_dir=None) -> dict:
    n = 20_000 if quick else 400_000
    model = c.correlated_model(rng, D=5, sigma2=0.3, cos=0.5)
    D, Z = model.D, model.Z
    # q(x): not the model's marginal p(x) = N(b, W W^T + s2 I) -- shifted, and with variance in every direction.
    m = model.b + 0.5 * rng.standard_normal(D)
    R = rng.standard_normal((D, D)) / np.sqrt(D)
    C = model.W @ model.W.T + 0.5 * R @ R.T + 0.2 * np.eye(D)
    M = model.W.T @ model.W + model.sigma2 * np.eye(Z)
    A_best, log_S_best = np.linalg.solve(M, model.W.T), np.log(model.sigma2 / np.diag(M))
    A, a, log_S = 0.8 * A_best, -0.8 * A_best @ model.b + 0.2, log_S_best + 0.3  # an encoder that is not the best
    exact = closed_forms(model, A, a, log_S, m, C)
    mc = monte_carlo(model, A, a, log_S, m, C, n, rng)
    mc_summary = {k: c.mean_se(v) for k, v in mc.items()}
    # A path of encoders from q(z|x) = p(z) (t = 0) through the best diagonal one (t = 1) and beyond.
    ts = np.linspace(0.0, 1.6, 33)
    path = {"t": ts, **{k: [] for k in exact}, "mc_t": ts[::4], "mc_elbo": [], "mc_elbo_se": []}
    for t in ts:
        for k, v in closed_forms(model, t * A_best, -t * A_best @ model.b, t * log_S_best, m, C).items():
            path[k].append(v)
    for t in path["mc_t"]:
        e = monte_carlo(model, t * A_best, -t * A_best @ model.b, t * log_S_best, m, C, n // 10, rng)["elbo"]
        mean, se = c.mean_se(e)
        path["mc_elbo"].append(mean)
        path["mc_elbo_se"].append(se)
    running = np.cumsum(mc["elbo"]) / np.arange(1, n + 1)
    at = np.unique(np.geomspace(100, n, 200).astype(int)) - 1  # from 100 pairs on: the first few swing by nats
    numbers = {"model": {"W": model.W, "b": model.b, "sigma2": model.sigma2}, "q_x": {"mean": m, "cov": C},
               "encoder": {"A": A, "a": a, "log_S": log_S}, "closed_form": exact, "n": n,
               "monte_carlo": {k: {"mean": v[0], "se": v[1]} for k, v in mc_summary.items()},
               "running": {"n": at + 1, "mean": running[at], "sd": np.sqrt(np.var(mc["elbo"]) / (at + 1))}, "path": path}
    return {"files": [_plot(numbers, out_dir)], "numbers": numbers, "finding": finding(numbers)}


def _plot(nb: dict, out_dir) -> str:
    """Write `draw`'s figure to out_dir/joint.png; return the file name."""
    return c.save_png(draw(nb), out_dir, "joint.png")


def _waterfall(ax, e: dict) -> None:
    """The three splits of E_q(x) ELBO(x) as rows of bars added up from 0; each value in its legend entry, and
    written on its bar where the bar is long enough to hold it."""
    total = e["expected_elbo"]
    rows = [("ELBO\nview", [("E_q[log p(x|z)]", total + e["expected_kl_to_prior"], c.C_DECODER),
                            ("-E KL(q(z|x) || p(z))", -e["expected_kl_to_prior"], c.C_PRIOR)]),
            ("joint\nview", [("-H(q(x))", -e["entropy_qx"], c.C_DATA), ("-KL(q(x,z) || p(x,z))", -e["kl_joint"], c.C_JOINT)]),
            ("fit p(x) +\ninfer z", [("-H(q(x))", -e["entropy_qx"], c.C_DATA), ("-KL(q(x) || p(x))", -e["kl_qx_to_px"], c.C_FIT),
                                  ("-E KL(q(z|x) || p(z|x))", -e["expected_kl_to_posterior"], c.C_POSTERIOR)])]
    edges = [0.0, total]
    labels, seen = [], set()
    for i, (_, terms) in enumerate(rows):
        left = 0.0
        for label, v, colour in terms:
            # the same -H(q(x)) bar in two rows, in the legend once
            bar = ax.barh(i, v, left=left, color=colour, height=0.6, edgecolor=c.C_EDGE,
                          label=None if label in seen else f"{label} = {v:.3f}")[0]
            seen.add(label)
            labels.append((bar, left + v / 2, i, f"{v:.3f}", colour))
            left += v
            edges.append(left)
    ax.axvline(total, color=c.C_Q, lw=2, label=f"E_q(x) ELBO(x) = {total:.3f}")
    ax.set_yticks(range(len(rows)), [r[0] for r in rows])
    ax.set_ylim(-0.5, len(rows) - 0.5)
    lo, hi = min(edges), max(edges)
    ax.set_xlim(lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))
    renderer = ax.figure.canvas.get_renderer()
    for bar, x, y, text, colour in labels:
        t = ax.text(x, y, text, ha="center", va="center", fontsize=9, color=c.text_colour(colour), weight="bold")
        if t.get_window_extent(renderer).width > 0.9 * bar.get_window_extent(renderer).width:
            t.remove()  # too short a bar to hold its value: the legend gives it


def draw(nb: dict):
    """Three panels: the three splits as waterfalls; the Monte Carlo check; the encoder path. nb: `run`'s numbers."""
    e = nb["closed_form"]
    fig = c.figure(17.0, 5.6)
    fig.subplots_adjust(left=0.065, right=0.99, bottom=0.27, top=0.88, wspace=0.22)
    ax = fig.add_subplot(1, 3, 1)
    _waterfall(ax, e)
    c.style(ax, "one number, three splits (closed forms)", "nats (bars add up from 0)", legend=False)
    c.legend_below(ax, ncol=2)
    ax = fig.add_subplot(1, 3, 2)
    r = nb["running"]
    mean, sd = np.asarray(r["mean"]), np.asarray(r["sd"])
    exact = -e["kl_joint"] - e["entropy_qx"]
    ax.fill_between(r["n"], mean - 2 * sd, mean + 2 * sd, color=c.C_Q, alpha=0.2, label="+- 2 SE")
    ax.plot(r["n"], mean, color=c.C_Q, lw=2, label="running mean of log p(x,z) - log q(z|x)")
    ax.axhline(exact, color=c.C_JOINT, ls="--", lw=2, label=f"-KL(q(x,z) || p(x,z)) - H(q(x)) = {exact:.3f} (closed forms)")
    ax.set_xscale("log")
    ax.set_ylim(*c.data_limits(mean - 2 * sd, mean + 2 * sd, [exact]))
    c.style(ax, "mean of log p(x,z) - log q(z|x) over n pairs (x, z) ~ q(x) q(z|x)", "pairs drawn n", "nats", legend=False)
    c.legend_below(ax)
    ax = fig.add_subplot(1, 3, 3)
    p = nb["path"]
    t = np.array(p["t"])
    ax.plot(t, p["expected_elbo"], color=c.C_Q, lw=3, label="E_q(x) ELBO(x)")
    ax.plot(t, -np.array(p["kl_joint"]) - np.array(p["entropy_qx"]), color=c.C_JOINT, ls="--", lw=1.5,
            label="-KL(q(x,z) || p(x,z)) - H(q(x))")
    ax.errorbar(p["mc_t"], p["mc_elbo"], yerr=2 * np.array(p["mc_elbo_se"]), fmt="o", color=c.C_Q, ms=4,
                label="E_q(x) ELBO(x), Monte Carlo (+- 2 SE)")
    ceiling = -np.array(p["entropy_qx"]) - np.array(p["kl_qx_to_px"])
    ax.plot(t, ceiling, color=c.C_POSTERIOR, lw=1.5, label="E_q(x) log p(x) = -H(q(x)) - KL(q(x) || p(x))")
    best = int(np.argmax(p["expected_elbo"]))
    ax.annotate(f"gap left at t = {t[best]:.2f}:\nE KL(q(z|x) || p(z|x)) = {p['expected_kl_to_posterior'][best]:.3f}\n"
                "(a diagonal q, a correlated posterior)", (t[best], p["expected_elbo"][best]),
                xytext=(0.45, 0.08), textcoords="axes fraction", fontsize=8, arrowprops={"arrowstyle": "->", "color": c.C_GUIDE})
    mc, mc_se = np.array(p["mc_elbo"]), np.array(p["mc_elbo_se"])
    ax.set_ylim(*c.data_limits(p["expected_elbo"], mc - 2 * mc_se, mc + 2 * mc_se, ceiling))
    c.style(ax, "encoders q_t: t = 0 is the prior, t = 1 the best diagonal", "t", "nats", legend=False)
    c.legend_below(ax)
    fig.suptitle("The joint view: E_q(x) ELBO(x) = -KL(q(x) q(z|x) || p(x, z)) - H(q(x))", fontsize=12)
    return fig
