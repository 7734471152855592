"""Topic `gaps`: how much of log p(x) - ELBO is the Gaussian family's fault, and how much the encoder's?

Cremer, Li & Duvenaud 2018 split the gap of an amortised q(z|x) (the encoder's output, q_enc) at the best q of its family:
    log p(x) - ELBO(q_enc) = [log p(x) - ELBO(q*)] + [ELBO(q*) - ELBO(q_enc)],   q*(x) = argmax_{q in family} ELBO(x, q),
the approximation gap (= KL(q* || p(z|x)): the family cannot do better) and the amortisation gap (the one encoder
shared by all x does not give each x its own best q). Both are >= 0; the family is N(m, diag(exp(v))).

1. Linear-Gaussian model (docs/theory.md, section 4), every term exact (npvae.explain.gaps_linear, whose docstring
   derives them): q* in closed form, the approximation gap 1/2 [sum_j log M_jj - log|M|] at every x, and the
   amortisation gaps of three encoders: trained briefly, trained long, and the best of rank 1.
2. A tanh VAE trained on binarised MNIST (the embedded 8x8 digits in quick mode, or when the file is not found): q* by
   Adam on each point's reparameterised ELBO, started at the encoder's output, through the package's decoder forward and
   backward (`latent_grads`: the backward without the encoder); log p(x) by importance sampling with k samples from q*;
   each ELBO from n samples (analytic KL) with its standard error (npvae.explain.gaps_estimators). The same estimators
   run on the linear model first, where the exact values check them. There the weights p(x, z) / q*(z) have infinite
   variance (q* is narrower than p(z|x) across its correlation: 2 Lam - diag(Lam) is not positive definite, see
   npvae.explain.iwae), so log p^ sits slightly below log p(x), by more than its delta-method standard error: the
   approximation gap comes out a little low.
The public names of gaps_linear and gaps_estimators are exported here too, where they were defined before the split.
Shapes: x (N, D), mu/log_var (N, Z), eps (S, N, Z).
"""

from __future__ import annotations

import numpy as np

from ..store.data import DataNotFoundError, load, subset_indices
from ..vae.model import Arch, encode
from . import _common as c
from . import posterior_nonlinear as pn
from ._training import train_vae
from .gaps_estimators import (LR, ROWS, elbo_grad_q, elbo_q, estimate_gaps, log_px_q, log_weights_q, optimise_q,
                              summarise)
from .gaps_linear import (LINEAR, amortisation_gap_exact, best_rank_r_encoder, diagonal_q_star, linear_part,
                          posterior_precision)
from .posterior_nonlinear import _search_dirs

__all__ = ["LINEAR", "LR", "NONLINEAR", "ROWS", "amortisation_gap_exact", "best_rank_r_encoder", "diagonal_q_star",
           "draw", "elbo_grad_q", "elbo_q", "estimate_gaps", "finding", "log_px_q", "log_weights_q", "optimise_q",
           "posterior_precision", "run", "summarise"]

# The VAE: arch, training points, epochs, test points, per-point Adam steps and samples per step, k for log p(x), n per ELBO.
NONLINEAR = {"quick": dict(arch="64-64-4", n_train=1297, epochs=8, n_points=50, steps=200, samples=8, k=1000, n_elbo=500),
             "digits": dict(arch="64-64-4", n_train=1297, epochs=40, n_points=250, steps=500, samples=8, k=5000, n_elbo=2000),
             "binarized-mnist": dict(arch="784-200-20", n_train=10_000, epochs=20, n_points=100, steps=500, samples=8, k=5000,
                                     n_elbo=1000)}


# ---- the trained VAE ----

def _nonlinear(quick: bool, rng: np.random.Generator, data_dir) -> tuple[dict, list]:
    """Train the VAE, optimise q per test point from the encoder's output, estimate both gaps; returns (numbers, notes)."""
    notes, name = [], "digits" if quick else "binarized-mnist"
    try:
        ds = load(name, search_dirs=_search_dirs(data_dir))
    except DataNotFoundError as e:
        notes.append(f"gaps: {name} was not found, so the VAE was trained on the embedded 8x8 digits instead "
                     f"({pn.get_mnist('gaps')}). {str(e).splitlines()[0]}")
        name, ds = "digits", load("digits")
    cfg = NONLINEAR["quick" if quick else name]
    arch = Arch.parse(cfg["arch"], activation="tanh")
    X = ds.train[rng.permutation(ds.train.shape[0])[: cfg["n_train"]]]
    x = ds.test[subset_indices(cfg["n_points"], ds.test.shape[0], rng)]  # a seeded subset: MNIST's test split is sorted by class
    params = train_vae(arch, X, cfg["epochs"], rng)
    q_enc = encode(params, arch, x)[:2]
    mu_o, lv_o, trace, _ = optimise_q(params, arch, x, *q_enc, rng, steps=cfg["steps"], samples=cfg["samples"])
    est = estimate_gaps(params, arch, x, q_enc, (mu_o, lv_o), rng, k=cfg["k"], n_elbo=cfg["n_elbo"])
    return {"dataset": name, **cfg, "lr": LR, "summary": summarise(est), "per_point": est, "trace": trace}, notes


# ---- the answer ----

def finding(nb: dict) -> list[str]:
    """The answer in three lines, with the numbers of this run; nb: `run`'s numbers."""
    lin, nl = nb["linear"], nb["nonlinear"]
    full = [v for k, v in lin["amortisation_gap"].items() if k.startswith("full rank")]
    s = nl["summary"]
    ap, am = s["approximation"], s["amortisation"]
    mc = max(ap["mc_se"], am["mc_se"])
    return [f"Linear (exact): approximation gap {lin['approximation_gap']:.3f} nats at every x; amortisation gap "
            f"{lin['amortisation_gap']['best rank-1 encoder']:.3f} (rank-1 encoder), {full[0]:.3f} -> {full[1]:.4f} (full rank).",
            f"{nl['arch']} on {nl['dataset']} ({nl['n_points']} test points): gap {s['total']:.2f} = approximation "
            f"{ap['mean']:.2f} +- {ap['se']:.2f} + amortisation {am['mean']:.2f} +- {am['se']:.2f} nats.",
            f"Amortisation is {am['mean'] / s['total']:.0%} of the gap (MC SEs <= {mc:.3f}); per-point Adam ends "
            f"{lin['optimiser']['shortfall']['mean'][-1]:.1e} nats below the linear q*."]


def run(out_dir, *, quick: bool, rng: np.random.Generator, data_dir=None) -> dict:
    """The linear-Gaussian model, then the trained VAE; returns the numbers plotted, and writes gaps.png."""
    linear = linear_part(LINEAR["quick" if quick else "full"], rng)
    nonlinear, notes = _nonlinear(quick, rng, data_dir)
    numbers = {"linear": linear, "nonlinear": nonlinear}
    return {"files": [c.save_png(draw(numbers), out_dir, "gaps.png")], "numbers": numbers, "notes": notes,
            "finding": finding(numbers)}


# ---- the picture ----

def _stacked(ax, names, approx, amort, approx_err, amort_err):
    """One bar per setting: the approximation gap (bottom) and the amortisation gap on top, each labelled with its value.

    *_err: (len(names),) standard errors, drawn as +- 2 SE where > 0 (0 for an exact value).
    """
    pos = np.arange(len(names))
    approx, amort, top = np.asarray(approx), np.asarray(amort), np.add(approx, amort)
    ax.bar(pos, approx, color=c.C_BEST, alpha=0.8, width=0.6, label="approximation gap: log p(x) - ELBO(q*)")
    ax.bar(pos, amort, bottom=approx, color=c.C_Q, alpha=0.8, width=0.6, label="amortisation gap: ELBO(q*) - ELBO(q_enc)")
    for shift, y, err in ((-0.12, approx, approx_err), (0.12, top, amort_err)):
        ok = np.asarray(err) > 0
        if ok.any():
            ax.errorbar(pos[ok] + shift, y[ok], yerr=2 * np.asarray(err)[ok], fmt="none", ecolor="k", capsize=3, lw=1)
    span = top.max()
    for p, lo, hi in zip(pos, approx, amort):
        ax.text(p, lo / 2, f"{lo:#.3g}", ha="center", va="center", fontsize=8)
        if hi > 0.08 * span:  # room inside the bar
            ax.text(p, lo + hi / 2, f"{hi:#.3g}", ha="center", va="center", fontsize=8, color="white")
        else:
            ax.text(p, lo + hi + 0.02 * span, f"+ {hi:.2g}", ha="center", va="bottom", fontsize=8, color=c.C_Q)
    ax.set_xticks(pos)
    ax.set_xticklabels(names, fontsize=8)
    ax.set_ylim(0, 1.25 * span)


def _binned(trace, n_bins: int = 30):
    """Means of trace (steps,) over log-spaced bins of steps 1..steps: (bin centres, means), for a readable noisy curve."""
    edges = np.unique(np.geomspace(1, len(trace) + 1, n_bins + 1).astype(int))
    return np.sqrt(edges[:-1] * edges[1:]), np.array([trace[a - 1 : b - 1].mean() for a, b in zip(edges[:-1], edges[1:])])


def draw(nb: dict):
    """Two rows (linear model, exact; trained VAE, estimated): the split in bars, where the gap comes from, the optimiser."""
    lin, nl = nb["linear"], nb["nonlinear"]
    fig = c.figure(17.0, 10.0)
    fig.subplots_adjust(left=0.05, right=0.99, bottom=0.14, top=0.91, wspace=0.24, hspace=0.75)
    ax = fig.add_subplot(2, 3, 1)
    names = list(lin["amortisation_gap"])
    e = lin["estimated"]["summary"]
    n_opt = lin["optimiser"]["n_points"]
    labels = [n.replace(", ", ",\n").replace("best rank-1", "best rank-1\n") for n in names]
    _stacked(ax, labels + [f"rank-1, estimated\non {n_opt} points"],
             [lin["approximation_gap"]] * len(names) + [e["approximation"]["mean"]],
             list(lin["amortisation_gap"].values()) + [e["amortisation"]["mean"]],
             [0] * len(names) + [e["approximation"]["mc_se"]], [0] * len(names) + [e["amortisation"]["mc_se"]])
    exact = [lin["approximation_gap"], lin["approximation_gap"] + lin["estimated"]["exact_amortisation"]]
    ax.hlines(exact, len(names) - 0.35, len(names) + 0.35, colors=c.C_POSTERIOR, lw=2, label="exact on the same points")
    c.style(ax, "linear model: exact gaps of three encoders; the estimators", None, "nats (average over the points)", legend=False)
    c.legend_below(ax)
    ax = fig.add_subplot(2, 3, 2)
    cur = lin["training_curve"]
    step = np.maximum(np.array(cur["step"], dtype=float), 0.5)
    ax.plot(step, cur["amortisation"], color=c.C_Q, lw=2, label="amortisation gap, full-rank encoder (Adam on the ELBO)")
    ax.axhline(lin["amortisation_gap"]["best rank-1 encoder"], color=c.C_Q, ls="--", lw=1.5,
               label="amortisation gap of the best rank-1 encoder")
    ax.axhline(lin["approximation_gap"], color=c.C_BEST, lw=1.5, label="approximation gap (any encoder)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    c.style(ax, "training closes the amortisation gap; low rank cannot", "Adam step (encoder training)", "nats", legend=False)
    c.legend_below(ax)
    ax = fig.add_subplot(2, 3, 3)
    o = lin["optimiser"]
    ax.plot(np.maximum(o["shortfall"]["step"], 0.5), o["shortfall"]["mean"], "o-", ms=3, color=c.C_BEST, lw=2,
            label=f"ELBO(q*) - ELBO(q), exact, mean of {o['n_points']} points")
    ax.set_xscale("log")
    ax.set_yscale("log")
    c.style(ax, "per-point Adam from the rank-1 encoder reaches q*", "Adam step (per-point optimiser)", "nats", legend=False)
    c.legend_below(ax)
    s, est = nl["summary"], nl["per_point"]
    ax = fig.add_subplot(2, 3, 4)
    _stacked(ax, [f"{nl['arch']}\non {nl['dataset']}"], [s["approximation"]["mean"]], [s["amortisation"]["mean"]],
             [s["approximation"]["se"]], [s["amortisation"]["se"]])
    ax.set_xlim(-1.2, 1.2)
    c.style(ax, f"trained VAE: estimated gaps ({nl['n_points']} test points, +- 2 SE)", None, "nats (average over the points)",
            legend=False)
    c.legend_below(ax)
    ax = fig.add_subplot(2, 3, 5)
    lo, hi = c.data_limits(est["approximation"], est["amortisation"], [0.0])
    bins = np.linspace(lo, hi, 31)
    ax.hist(est["approximation"], bins=bins, color=c.C_BEST, alpha=0.55, label="approximation gap per point")
    ax.hist(est["amortisation"], bins=bins, color=c.C_Q, alpha=0.55, label="amortisation gap per point")
    ax.axvline(s["approximation"]["mean"], color=c.C_BEST, ls="--", lw=2, label=f"mean {s['approximation']['mean']:.2f}")
    ax.axvline(s["amortisation"]["mean"], color=c.C_Q, ls="--", lw=2, label=f"mean {s['amortisation']['mean']:.2f}")
    c.style(ax, "the two gaps point by point", "nats", "test points", legend=False)
    c.legend_below(ax, ncol=2)
    ax = fig.add_subplot(2, 3, 6)
    centres, means = _binned(np.asarray(nl["trace"]))
    ax.plot(centres, means, "o-", ms=3, color=c.C_Q, lw=1.5,
            label=f"{nl['samples']}-sample ELBO of q during its optimisation (bin means)")
    ax.axhline(s["log_px"], color=c.C_POSTERIOR, lw=2, label=f"log p(x), importance sampled (k = {nl['k']}): {s['log_px']:.2f}")
    ax.axhline(s["elbo_opt"], color=c.C_BEST, ls="--", lw=2, label=f"ELBO(q*) ({nl['n_elbo']} samples): {s['elbo_opt']:.2f}")
    ax.axhline(s["elbo_enc"], color=c.C_Q, ls="--", lw=2, label=f"ELBO(q_enc), the encoder's: {s['elbo_enc']:.2f}")
    ax.set_xscale("log")
    ax.set_ylim(*c.data_limits(means, [s["log_px"], s["elbo_enc"]]))
    c.style(ax, "per-point Adam from the encoder's q (mean of the points)", "Adam step (per-point optimiser)", "nats",
            legend=False)
    c.legend_below(ax)
    fig.suptitle("log p(x) - ELBO = approximation gap (the diagonal Gaussian family) + amortisation gap (one encoder for all x)"
                 " (Cremer et al. 2018)", fontsize=12)
    return fig
