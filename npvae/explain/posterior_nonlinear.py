"""Topic `posterior`, nonlinear part: the same questions on an MLP VAE, where log p(x) can only be estimated.

A tanh VAE (784-200-20 on a subset of binarised MNIST; 64-64-4 on the embedded digits in quick mode) is
trained with the ELBO (analytic KL, Kingma & Welling 2014) and measured on held-out points after each
stage of training:
- log p(x) by importance sampling with k samples from q(z|x) (Burda et al. 2016), `npvae.objectives.log_px`;
- the ELBO, and the gap log p(x) - ELBO = KL(q(z|x) || p(z|x)) (estimated: the k-sample estimate is itself
  a lower bound, so the gap is slightly under-estimated);
- E KL(q(z|x) || p(z)) (analytic), which ELBO surgery (Hoffman & Johnson 2016) splits into I_q(x; z) and
  KL(q(z) || p(z)). I_q of the data distribution has no closed form here; M held-out points x_m ~ q(x), one
  z_n ~ q(z|x_n) each, bound it on both sides (Poole et al. 2019, InfoNCE and the leave-one-out
  upper bound; `information_bounds`):
      lower = mean_n log [q(z_n|x_n) / ((1/M) sum_m q(z_n|x_m))]          (InfoNCE with q(z|x) as critic; <= log M)
      upper = mean_n log [q(z_n|x_n) / ((1/(M-1)) sum_{m != n} q(z_n|x_m))]   (leave one out)
  in expectation, and the surgery itself gives I_q <= E KL(q(z|x) || p(z)). The lower bound is also exactly
  (in expectation over z) the I_q of the M-point empirical distribution, the mixture q(z) of those M codes,
  which can never exceed log M: an encoder that tells its points apart sits on that ceiling whatever its
  information about the data distribution. So both bounds are reported, during training with M = 1000 and at
  the end as functions of M, up to every held-out point.
At the end, log p(x) is estimated with K samples from the encoder and with K samples from the prior
(an encoder whose last layer is zero outputs mu = 0, log_var = 0: q(z|x) = p(z)); both are consistent,
but with the prior as proposal almost every sample misses the posterior and the estimate creeps up slowly.
"""

from __future__ import annotations

import math
import os

import numpy as np

from ..store.data import DataNotFoundError, load, subset_indices
from ..evaluation.evaluate import encoder_stats, evaluate
from ..maths.gaussian import kl_std_normal_forward, sample_forward, std
from ..maths.lme import log_mean_exp_core
from ..objectives import log_px
from ..nn.layers import Dense
from ..vae.model import Arch, flatten, init_params, unflatten
from ..objectives import objective
from ..nn.optim import adam_init, adam_update
from . import _common as c

# (data set, arch, training points, epochs at which to measure, held-out points, k for log p(x), Ks for the proposals)
QUICK = ("digits", "64-64-4", 1297, (0, 1, 2, 4, 8), 100, 64, (1, 10, 100))
FULL = ("binarized-mnist", "784-200-20", 10_000, (0, 1, 2, 4, 8, 14, 20), 200, 200, (1, 10, 100, 1000))


def prior_proposal(params):
    """The same VAE with its encoder's last layer zeroed, so q(z|x) = N(0, I) = p(z) for every x."""
    *body, last = params.encoder
    return params._replace(encoder=(*body, Dense(np.zeros_like(last.W), np.zeros_like(last.b))))


def get_mnist(topic: str) -> str:
    """How to get binarised MNIST for `topic`'s full run, as command lines (the data are public; the download is checked)."""
    return (f"to run it on binarised MNIST: npvae explain {topic} --download (about 110 MB of text files into the cache, sha256-checked), "
            f"or npvae explain {topic} --data-dir DIR where DIR holds binarized_mnist.npz; from Python, data_dir=DIR")


def _search_dirs(data_dir) -> list:
    """None -> no directory; one path -> [it]; a list of paths -> the list."""
    if data_dir is None:
        return []
    return [data_dir] if isinstance(data_dir, (str, os.PathLike)) else list(data_dir)


def information_bounds(mu, log_var, eps, block: int = 256) -> dict:
    """Bounds on I(x; z) from M points' encodings mu, log_var: (M, Z) and one z_n = mu_n + sigma_n eps_n each; eps: (M, Z).

    With L[n, m] = log q(z_n | x_m) (Poole et al. 2019: InfoNCE with q(z|x) as the critic, and the leave-one-out bound):
    lower = mean_n [L[n, n] - log (1/M) sum_m exp L[n, m]] <= log M, and
    upper = mean_n [L[n, n] - log (1/(M-1)) sum_{m != n} exp L[n, m]], bounds in expectation when the x_m are
    independent draws from q(x); the lower is also exactly (in expectation over z) I_q of the M-point empirical
    q(x). Returns lower, upper and their standard errors over the M points (the terms share the points, so the
    errors are indicative). L is built `block` rows at a time, (block, M), from the expanded square
    sum_j (z_j^2 - 2 z_j mu_j + mu_j^2) / v_j: two matrix products, rounding error ~1e-16 (|z|^2 + |mu|^2) / v,
    1e-12 nats for codes of a few units at v ~ 0.01.
    """
    M, Z = mu.shape
    z = sample_forward(mu, log_var, eps[None])[0][0]  # (M, Z)
    prec = 1.0 / std(log_var) ** 2  # (M, Z): 1 / sigma^2
    const = -0.5 * (Z * np.log(2 * np.pi) + np.sum(log_var, axis=1) + np.sum(mu * mu * prec, axis=1))  # (M,)
    own, lse_all, lse_others = np.empty(M), np.empty(M), np.empty(M)
    for s in range(0, M, block):
        zb = z[s : s + block]  # (B, Z)
        L = const[None, :] - 0.5 * (zb * zb) @ prec.T + zb @ (mu * prec).T  # (B, M): log q(z_n | x_m)
        rows = np.arange(zb.shape[0])
        own[s : s + block] = L[rows, s + rows]  # from L itself, so that lower <= log M holds to rounding
        lse_all[s : s + block] = log_mean_exp_core(L, axis=1)  # log (1/M) sum_m
        L[rows, s + rows] = -np.inf  # leave z_n's own point out
        lse_others[s : s + block] = log_mean_exp_core(L, axis=1) + np.log(M / (M - 1))  # log (1/(M-1)) sum_{m != n}
    lower, upper = own - lse_all, own - lse_others
    return {"lower": float(lower.mean()), "upper": float(upper.mean()),
            "lower_se": float(lower.std(ddof=1) / np.sqrt(M)), "upper_se": float(upper.std(ddof=1) / np.sqrt(M))}


def information_against_M(mu, log_var, Ms, rng, max_replicates: int = 20) -> dict:
    """information_bounds for each M in Ms, averaged over up to max_replicates disjoint random subsets of the points."""
    out = {"M": [], "lower": [], "upper": [], "lower_se": [], "upper_se": [], "replicates": []}
    order = rng.permutation(mu.shape[0])
    for M in Ms:
        R = min(max_replicates, mu.shape[0] // M)
        reps = [information_bounds(mu[idx], log_var[idx], rng.standard_normal((M, mu.shape[1])))
                for idx in (order[r * M : (r + 1) * M] for r in range(R))]
        out["M"].append(int(M))
        out["replicates"].append(R)
        for key in ("lower", "upper"):
            v = np.array([b[key] for b in reps])
            out[key].append(float(v.mean()))
            # across replicates where there are several; else the one replicate's own (indicative) error
            out[f"{key}_se"].append(float(v.std(ddof=1) / np.sqrt(R)) if R > 1 else reps[0][f"{key}_se"])
    return out


def _measure(params, arch, x, x_agg, rng, k: int) -> dict:
    """Bound and estimate on x; the surgery terms and I_q's bounds from the M points of x_agg."""
    m = evaluate(params, arch, x, rng, k=k, elbo_k=10)
    mu, log_var = encoder_stats(params, arch, x_agg)
    kl = float(kl_std_normal_forward(mu, log_var).mean())
    info = information_bounds(mu, log_var, rng.standard_normal(mu.shape))
    return {"log_px": -m["nll"], "log_px_se": m["nll_se"], "elbo": m["elbo"], "gap": m["gap_log_px_minus_elbo"],
            "kl_to_prior": kl, "mutual_information": info["lower"], "mutual_information_upper": info["upper"],
            "kl_aggregate_to_prior": kl - info["lower"], "active_units": m["active_units"]}


def run(out_dir, *, quick: bool, rng: np.random.Generator, data_dir=None) -> dict:
    """Train, measure after each stage, compare proposals; returns the numbers and file names, or a note if skipped."""
    name, spec, n_train, measure_at, n_eval, k, proposal_ks = QUICK if quick else FULL
    try:
        ds = load(name, search_dirs=_search_dirs(data_dir))
    except DataNotFoundError as e:
        note = (f"posterior: the nonlinear part needs {name}, which was not found, so it was skipped "
                f"({get_mnist('posterior')}). {str(e).splitlines()[0]}")
        return {"files": [], "notes": [note], "skipped": note}
    X = ds.train[rng.permutation(ds.train.shape[0])[:n_train]]
    # Seeded random subsets: the test split of binarised MNIST is ordered by class, so a prefix is not a sample of it.
    x_eval = ds.test[subset_indices(n_eval, ds.test.shape[0], rng)]
    x_agg = ds.test[subset_indices(min(1000, ds.test.shape[0]), ds.test.shape[0], rng)]  # the M points of the aggregate posterior
    arch = Arch.parse(spec, activation="tanh")
    flat = flatten(init_params(arch, rng))
    state = adam_init(flat)
    hist: dict = {"epoch": []}
    batch = 100
    for epoch in range(measure_at[-1] + 1):
        if epoch in measure_at:
            for key, v in _measure(unflatten(arch, flat), arch, x_eval, x_agg, rng, k).items():
                hist.setdefault(key, []).append(v)
            hist["epoch"].append(epoch)
        if epoch == measure_at[-1]:
            break
        order = rng.permutation(X.shape[0])
        for j in range(0, X.shape[0], batch):
            xb = X[order[j : j + batch]]
            eps = rng.standard_normal((1, xb.shape[0], arch.latent_dim))
            _, grads = objective(unflatten(arch, flat), arch, xb, eps)
            flat, state = adam_update(flat, [-g for g in flatten(grads)], state, lr=1e-3)
    params = unflatten(arch, flat)
    mu, log_var = encoder_stats(params, arch, ds.test)
    Ms = np.unique(np.geomspace(10, ds.test.shape[0], 7).round().astype(int))
    info_M = information_against_M(mu, log_var, Ms, rng)
    info_M["kl_to_prior"] = float(kl_std_normal_forward(mu, log_var).mean())  # over every held-out point
    n_prop = min(50, n_eval)
    proposals = {"K": list(proposal_ks), "encoder": [], "prior": []}
    for K in proposal_ks:
        for key, p in (("encoder", params), ("prior", prior_proposal(params))):
            proposals[key].append(float(log_px(p, arch, x_eval[:n_prop], K, rng).mean()))
    out = {"dataset": name, "arch": spec, "n_train": X.shape[0], "n_eval": n_eval, "k": k, "history": hist,
           "log_M": math.log(x_agg.shape[0]), "M": x_agg.shape[0], "information_vs_M": info_M, "proposals": proposals,
           "proposal_points": n_prop}
    out["files"] = [_plot(out, out_dir)]
    out["notes"] = []
    return out


def finding(r: dict) -> str:
    """One line: the trained nonlinear VAE's held-out log p(x), ELBO and KL to the prior; r: `run`'s result (or its note)."""
    if "skipped" in r:
        return "Nonlinear VAE: skipped, its data set was not found (see the notes)."
    h = r["history"]
    return (f"Nonlinear VAE ({r['arch']} on {r['dataset']}): log p(x) {h['log_px'][-1]:.1f}, ELBO {h['elbo'][-1]:.1f} "
            f"(gap {h['gap'][-1]:.2f}), while E KL(q(z|x) || p(z)) is {h['kl_to_prior'][-1]:.2f} nats.")


def _plot(r: dict, out_dir) -> str:
    """Write `draw`'s figure to out_dir/posterior_nonlinear.png; return the file name."""
    return c.save_png(draw(r), out_dir, "posterior_nonlinear.png")


def draw(r: dict):
    """Four panels: bound and estimate over training; the KL to the prior and I_q's bounds over training; I_q's
    bounds against M at the end; encoder vs prior proposals. r: `run`'s result."""
    from matplotlib.ticker import MaxNLocator, NullFormatter

    h = r["history"]
    ep = np.array(h["epoch"])
    whole = MaxNLocator(integer=True, steps=[1, 2, 5, 10])  # whole epochs
    fig = c.figure(14.0, 11.5)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.14, top=0.93, wspace=0.2, hspace=0.55)
    ax = fig.add_subplot(2, 2, 1)
    # From the first measurement after training starts: the untrained model (-550 nats on MNIST against
    # -115 at the end) would flatten the gap to a line; its values go in the title instead.
    t = slice(1, None)
    log_px, elbo = np.array(h["log_px"]), np.array(h["elbo"])
    ax.plot(ep[t], log_px[t], "o-", color=c.C_POSTERIOR, lw=2, label=f"log p(x), importance sampled (k = {r['k']})")
    ax.plot(ep[t], elbo[t], "o-", color=c.C_Q, lw=2, label="ELBO")
    ax.fill_between(ep[t], elbo[t], log_px[t], color=c.C_Q, alpha=0.15,
                    label=f"gap = KL(q(z|x) || p(z|x)); {h['gap'][-1]:.2f} nats at epoch {ep[-1]}")
    ax.set_ylim(*c.data_limits(elbo[t], log_px[t]))
    ax.xaxis.set_major_locator(whole)
    c.style(ax, f"held-out bound and estimate (epoch {ep[0]}: ELBO {elbo[0]:.1f}, log p(x) {log_px[0]:.1f})", "epoch",
            "nats per data point", legend=False)
    c.legend_below(ax)
    ax = fig.add_subplot(2, 2, 2)
    kl = np.array(h["kl_to_prior"])
    lower, upper = np.array(h["mutual_information"]), np.array(h["mutual_information_upper"])
    ax.fill_between(ep, lower, np.minimum(upper, kl), color=c.C_Q, alpha=0.2, label="I_q(x; z) lies in here")
    ax.plot(ep, lower, "o-", color=c.C_Q, lw=2, label=f"I_q's lower bound (InfoNCE, M = {r['M']})")
    ax.plot(ep, upper, "o--", color=c.C_Q, lw=1.5, label=f"I_q's upper bound (leave one out, M = {r['M']})")
    ax.axhline(r["log_M"], color=c.C_GUIDE, ls=":", lw=1.5, label=f"log M = {r['log_M']:.2f}, the lower bound's ceiling")
    ax.plot(ep, kl, "o-", color=c.C_PRIOR, lw=2.5, label="E KL(q(z|x) || p(z)) = I_q + KL(q(z) || p(z))")
    ax.plot(ep, h["gap"], "o-", color=c.C_POSTERIOR, lw=2, label="E KL(q(z|x) || p(z|x)) (estimated gap)")
    ax.set_ylim(*c.data_limits([0.0], lower, upper, kl, h["gap"], [r["log_M"]]))
    ax.xaxis.set_major_locator(whole)
    c.style(ax, "ELBO surgery: the KL to the prior and I_q's bounds", "epoch", "nats", legend=False)
    c.legend_below(ax, ncol=2)
    ax = fig.add_subplot(2, 2, 3)
    im = r["information_vs_M"]
    M = np.array(im["M"], dtype=float)
    lo, hi = np.array(im["lower"]), np.array(im["upper"])
    ax.fill_between(M, lo, np.minimum(hi, im["kl_to_prior"]), color=c.C_Q, alpha=0.2, label="I_q(x; z) lies in here")
    ax.errorbar(M, lo, yerr=2 * np.array(im["lower_se"]), fmt="o-", color=c.C_Q, lw=2, ms=4, capsize=2,
                label=f"lower bound (InfoNCE): {lo[-1]:.3g} at M = {im['M'][-1]} (log M = {np.log(M[-1]):.3g})")
    ax.errorbar(M, hi, yerr=2 * np.array(im["upper_se"]), fmt="s--", color=c.C_Q, lw=1.5, ms=4, capsize=2,
                label=f"upper bound (leave one out): {hi[-1]:.3g} at M = {im['M'][-1]}")
    ax.plot(M, np.log(M), ":", color=c.C_GUIDE, lw=2, zorder=3, label="log M, the lower bound's ceiling")
    ax.axhline(im["kl_to_prior"], color=c.C_PRIOR, lw=2.5, label=f"E KL(q(z|x) || p(z)) = {im['kl_to_prior']:.2f}, >= I_q")
    ax.set_xscale("log")
    ax.set_yscale("log")  # the bounds are positive and an order of magnitude apart at small M
    y0, y1 = c.data_limits(lo - 2 * np.array(im["lower_se"]), hi + 2 * np.array(im["upper_se"]), np.log(M),
                           [im["kl_to_prior"]], log=True)
    ax.set_ylim(y0, y1)
    ticks = [v * 10.0**e for e in range(-1, 4) for v in (1, 2, 5) if y0 <= v * 10.0**e <= y1]
    ax.set_yticks(ticks, [f"{v:g}" for v in ticks])
    ax.yaxis.set_minor_formatter(NullFormatter())
    c.style(ax, "the trained encoder: I_q's bounds from M held-out points (+- 2 SE)", "M points", "nats (log scale)",
            legend=False)
    c.legend_below(ax, ncol=2)
    ax = fig.add_subplot(2, 2, 4)
    prop = r["proposals"]
    K_last = prop["K"][-1]
    # Each curve's last value goes in its own legend entry: two labels beside two end points a few pixels
    # apart would sit beside the wrong curve as often as not.
    ax.plot(prop["K"], prop["encoder"], "o-", color=c.C_Q, lw=2,
            label=f"z ~ q(z|x), the encoder: {prop['encoder'][-1]:.1f} at K = {K_last}")
    ax.plot(prop["K"], prop["prior"], "s-", color=c.C_PRIOR, lw=2,
            label=f"z ~ p(z), the prior: {prop['prior'][-1]:.1f} at K = {K_last}")
    ax.set_xscale("log")
    ax.set_ylim(*c.data_limits(prop["encoder"], prop["prior"]))
    c.style(ax, f"estimating log p(x) of the trained model ({r['proposal_points']} points)",
            "K samples per point", "log (1/K) sum_k p(x, z_k) / proposal(z_k)", legend=False)
    c.legend_below(ax)
    fig.suptitle(f"A nonlinear VAE ({r['arch']} on {r['dataset']}): q is far from the prior and close to the posterior",
                 fontsize=12)
    return fig
