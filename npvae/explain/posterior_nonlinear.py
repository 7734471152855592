"""Topic `posterior`, nonlinear part: the same questions on an MLP VAE, where log p(x) can only be estimated.

A tanh VAE (784-200-20 on a subset of binarised MNIST; 64-64-4 on the embedded digits in quick mode) is
trained with the ELBO (analytic KL, Kingma & Welling 2014) and measured on held-out points after each
stage of training:
- log p(x) by importance sampling with k samples from q(z|x) (Burda et al. 2016), `npvae.objectives.log_px`;
- the ELBO, and the gap log p(x) - ELBO = KL(q(z|x) || p(z|x)) (estimated: the k-sample estimate is itself
  a lower bound, so the gap is slightly under-estimated);
- E KL(q(z|x) || p(z)) (analytic) split by ELBO surgery (Hoffman & Johnson 2016) into I_q(x; z), estimated
  by `npvae.evaluation.evaluate.mutual_information` with q(x) the empirical distribution of M = 1000 held-out points
  (so I_q <= log M), and the remainder KL(q(z) || p(z)).
At the end, log p(x) is estimated with K samples from the encoder and with K samples from the prior
(an encoder whose last layer is zero outputs mu = 0, log_var = 0: q(z|x) = p(z)); both are consistent,
but with the prior as proposal almost every sample misses the posterior and the estimate creeps up slowly.
"""

from __future__ import annotations

import math
import os

import numpy as np

from ..store.data import DataNotFoundError, load, subset_indices
from ..evaluation.evaluate import encoder_stats, evaluate, mutual_information
from ..maths.gaussian import kl_std_normal_forward
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


def _search_dirs(data_dir) -> list:
    """None -> no directory; one path -> [it]; a list of paths -> the list."""
    if data_dir is None:
        return []
    return [data_dir] if isinstance(data_dir, (str, os.PathLike)) else list(data_dir)


def _measure(params, arch, x, x_agg, rng, k: int) -> dict:
    """Bound and estimate on x; the surgery terms with q(x) the empirical distribution of x_agg (M points)."""
    m = evaluate(params, arch, x, rng, k=k, elbo_k=10)
    mu, log_var = encoder_stats(params, arch, x_agg)
    kl = float(kl_std_normal_forward(mu, log_var).mean())
    info = mutual_information(mu, log_var, rng, max_points=x_agg.shape[0])
    return {"log_px": -m["nll"], "log_px_se": m["nll_se"], "elbo": m["elbo"], "gap": m["gap_log_px_minus_elbo"],
            "kl_to_prior": kl, "mutual_information": info, "kl_aggregate_to_prior": kl - info, "active_units": m["active_units"]}


def run(out_dir, *, quick: bool, rng: np.random.Generator, data_dir=None) -> dict:
    """Train, measure after each stage, compare proposals; returns the numbers and file names, or a note if skipped."""
    name, spec, n_train, measure_at, n_eval, k, proposal_ks = QUICK if quick else FULL
    try:
        ds = load(name, search_dirs=_search_dirs(data_dir))
    except DataNotFoundError as e:
        note = (f"posterior: the nonlinear part needs {name}, which was not found, so it was skipped "
                f"(pass data_dir=DIR, or --data-dir DIR, where DIR holds binarized_mnist.npz). {str(e).splitlines()[0]}")
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
    n_prop = min(50, n_eval)
    proposals = {"K": list(proposal_ks), "encoder": [], "prior": []}
    for K in proposal_ks:
        for key, p in (("encoder", params), ("prior", prior_proposal(params))):
            proposals[key].append(float(log_px(p, arch, x_eval[:n_prop], K, rng).mean()))
    out = {"dataset": name, "arch": spec, "n_train": X.shape[0], "n_eval": n_eval, "k": k, "history": hist,
           "log_M": math.log(x_agg.shape[0]), "M": x_agg.shape[0], "proposals": proposals, "proposal_points": n_prop}
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
    """Three panels: bound and estimate over training; the KL to the prior by surgery; encoder vs prior proposals."""
    from matplotlib.ticker import MaxNLocator

    h = r["history"]
    ep = np.array(h["epoch"])
    fig = c.figure(15.0, 5.4)
    fig.subplots_adjust(left=0.05, right=0.99, bottom=0.25, top=0.88, wspace=0.25)
    ax = fig.add_subplot(1, 3, 1)
    # From the first measurement after training starts: the untrained model (-550 nats on MNIST against
    # -115 at the end) would flatten the gap to a line; its values go in the title instead.
    t = slice(1, None)
    log_px, elbo = np.array(h["log_px"]), np.array(h["elbo"])
    ax.plot(ep[t], log_px[t], "o-", color=c.C_POSTERIOR, lw=2, label=f"log p(x), importance sampled (k = {r['k']})")
    ax.plot(ep[t], elbo[t], "o-", color=c.C_Q, lw=2, label="ELBO")
    ax.fill_between(ep[t], elbo[t], log_px[t], color=c.C_Q, alpha=0.15,
                    label=f"gap = KL(q(z|x) || p(z|x)); {h['gap'][-1]:.2f} nats at epoch {ep[-1]}")
    ax.set_ylim(*c.data_limits(elbo[t], log_px[t]))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))  # whole epochs
    c.style(ax, f"held-out bound and estimate (epoch {ep[0]}: ELBO {elbo[0]:.1f}, log p(x) {log_px[0]:.1f})", "epoch",
            "nats per data point", legend=False)
    c.legend_below(ax)
    ax = fig.add_subplot(1, 3, 2)
    info, kl_agg = np.array(h["mutual_information"]), np.array(h["kl_aggregate_to_prior"])
    ax.fill_between(ep, 0, info, color=c.C_Q, alpha=0.25, label="I_q(x; z)")
    ax.fill_between(ep, info, info + kl_agg, color=c.C_BEST, alpha=0.35, label="KL(q(z) || p(z)) (the rest)")
    ax.plot(ep, h["kl_to_prior"], "o-", color=c.C_PRIOR, lw=2.5, label="E KL(q(z|x) || p(z))")
    ax.plot(ep, h["gap"], "o-", color=c.C_POSTERIOR, lw=2.5, label="E KL(q(z|x) || p(z|x)) (estimated gap)")
    ax.axhline(r["log_M"], color=c.C_Q, ls=":", lw=1.5, label=f"log M = {r['log_M']:.1f}: I_q's ceiling for M points")
    ax.set_ylim(*c.data_limits([0.0], info + kl_agg, h["kl_to_prior"], h["gap"], [r["log_M"]]))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))
    c.style(ax, "ELBO surgery: KL to the prior = I_q + KL(q(z) || p(z))", "epoch", "nats", legend=False)
    c.legend_below(ax, ncol=2)
    ax = fig.add_subplot(1, 3, 3)
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
