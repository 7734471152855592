"""Topic `generation`: what the decoder does alone, what the encoder adds, and why a good ELBO can give poor samples.

Two tanh VAEs, Z = 2 (so the latent plane can be drawn) and `posterior_nonlinear`'s (Z = 20; Z = 4 on the digits),
are trained with the ELBO on its data as it trains its VAE (20 epochs on MNIST; 50, or 150 in a full run, on the
embedded digits, used in quick mode and, with a note, when MNIST is not found). Generation uses the decoder alone:
z ~ p(z) = N(0, I), then the decoder's mean E[x|z], or pixels x ~ p(x|z); a reconstruction uses the encoder too.
The ELBO trains the decoder only at z ~ q(z|x) for training x, i.e. on the aggregate posterior
q(z) = (1/M) sum_m q(z|x_m), and E_x ELBO = E_x E_q log p(x|z) - I_q(x; z) - KL(q(z) || p(z)) (Hoffman & Johnson
2016): the last term may stay large, and a prior sample in a region q(z) barely covers (a "hole", Rosca,
Lakshminarayanan & Mohamed 2018) reaches a decoder that was never trained there. Measured here (the estimators are
npvae.explain.generation_estimators):
- KL(q_M || p) by Monte Carlo over z ~ q_M, with q_M the mixture over M training encodings. KL is convex, so
  E KL(q_M || p) >= KL(q || p): an over-estimate, badly so once I_q(x; z) nears log M, the most M points can hold
  (KL(q_M || p) >= E KL(q(z|x) || p) - log M). A lower bound: KL(N(m, C) || p), m and C q's moments (p is Gaussian, so the
  cross-entropy depends on the moments only, and the Gaussian has the largest entropy for a covariance).
- holes: log q_M(z) at prior samples against at z ~ q(z|x) for held-out training x (neither among the M);
  the fraction of prior samples below q's 5% quantile is 0.05 where p = q.
- decoder quality at z: the entropy H[p(x|z)] = -E_{x~p(x|z)} log p(x|z) (nats of pixel noise: a blur) and the
  round trip |E_q[z | x = E[x|z]] - z| (how far re-encoding the decoded image moves z).
"""

from __future__ import annotations

import numpy as np

from .. import likelihoods as lik
from ..evaluation.evaluate import encoder_stats, evaluate
from ..maths.gaussian import kl_std_normal_forward, sample_forward
from ..maths.stable import sigmoid
from ..store.data import DataNotFoundError, load, subset_indices
from ..vae.model import Arch, decode, encode
from . import _common as c
from . import posterior_nonlinear as pn
from ._training import train_vae
from .generation_estimators import (HOLE_QUANTILE, hole_fraction, kl_aggregate, log_aggregate, moment_bound,
                                    pixel_entropy, round_trip)

# The estimators' names are exported here too, where they were defined before generation_estimators was split off.
__all__ = ["FULL", "HOLE_QUANTILE", "QUICK", "SHOW", "draw", "finding", "hole_fraction", "kl_aggregate", "log_aggregate",
           "moment_bound", "pixel_entropy", "round_trip", "run", "tile"]

# held-out training points probing q (as many prior samples), k for log p(x), the latent plane's grid side
QUICK = {"probe": 300, "k": 64, "grid": 60}
FULL = {"probe": 2000, "k": 200, "grid": 120}
SHOW = {"samples": 25, "pairs": 15, "steps": 10}


# ---- the experiment ----

def _images(params, arch, z):
    """(decoder means (N, D), the logits) at z (N, Z)."""
    out = decode(params, arch, z)[0]
    return lik.mean(arch.likelihood, out), out


def _measure(params, arch, X_mix, X_probe, x_eval, x_test, cfg, rng) -> dict:
    """Every number of one trained model (module docstring); x_eval: the test points evaluated, x_test: the split."""
    n, Z = X_probe.shape[0], arch.latent_dim
    m = evaluate(params, arch, x_eval, rng, k=cfg["k"], elbo_k=10)
    mu, lv = encoder_stats(params, arch, X_mix)  # the M components of q_M
    kl, kl_se = kl_aggregate(mu, lv, rng, n)
    mu_p, lv_p = encoder_stats(params, arch, X_probe)
    z_q = sample_forward(mu_p, lv_p, rng.standard_normal((1, n, Z)))[0][0]  # aggregate-posterior samples
    z_p = rng.standard_normal((n, Z))  # prior samples
    lq_q, lq_p = log_aggregate(z_q, mu, lv), log_aggregate(z_p, mu, lv)
    frac, thr = hole_fraction(lq_p, lq_q)
    hole = lq_p < thr
    ent_q, ent_p = pixel_entropy(_images(params, arch, z_q)[1]), pixel_entropy(_images(params, arch, z_p)[1])
    rt_q, rt_p = round_trip(params, arch, z_q), round_trip(params, arch, z_p)
    quality = {"q": (ent_q, rt_q), "prior": (ent_p, rt_p), "prior_in_holes": (ent_p[hole], rt_p[hole]),
               "prior_on_support": (ent_p[~hole], rt_p[~hole])}
    # The pictures: prior samples (means and pixels, the same z), reconstructions, an interpolation.
    k = SHOW["samples"]
    means, logits = _images(params, arch, z_p[:k])
    pixels = (rng.random(logits.shape) < sigmoid(logits)).astype(np.int8)  # x ~ p(x|z), Bernoulli(sigmoid(l))
    pick = x_test[subset_indices(SHOW["pairs"], x_test.shape[0], rng)]
    x_cand = x_test[subset_indices(20, x_test.shape[0], rng)]
    cand = encode(params, arch, x_cand)[0]
    d = np.linalg.norm(cand[:, None] - cand[None], axis=-1)
    a, b = np.unravel_index(np.argmax(d), d.shape)  # the two of 20 encoded test digits furthest apart
    t = np.linspace(0.0, 1.0, SHOW["steps"])
    path = (1 - t[:, None]) * cand[a] + t[:, None] * cand[b]  # (steps, Z)
    out = {
        "arch": arch.spec, "latent_dim": Z, "M": X_mix.shape[0], "n_samples": n, "log_M": float(np.log(X_mix.shape[0])),
        "test": {"elbo": m["elbo"], "log_px": -m["nll"], "log_px_se": m["nll_se"], "recon": m["recon"], "kl": m["kl"],
                 "active_units": m["active_units"], "n_points": m["n_points"], "k": cfg["k"]},
        "aggregate": {"kl": kl, "kl_se": kl_se, "kl_moment_bound": moment_bound(mu, lv),
                      "kl_per_point": float(kl_std_normal_forward(mu, lv).mean())},
        "holes": {"quantile": HOLE_QUANTILE, "threshold": thr, "fraction_of_prior": frac,
                  "log_q_at_q": lq_q, "log_q_at_prior": lq_p},
        "quality": {key: {"entropy": float(e.mean()), "round_trip": float(r.mean()), "count": int(e.size)}
                    for key, (e, r) in quality.items()},
        "images": {"prior_means": np.round(means, 2), "pixel_samples": pixels, "originals": pick.astype(np.int8),
                   "reconstructions": np.round(_images(params, arch, encode(params, arch, pick)[0])[0], 2),
                   "interpolation": np.round(_images(params, arch, path)[0], 2),
                   "interpolation_ends": x_cand[[a, b]].astype(np.int8)},
        "interpolation": {"t": t, "z": path, "log_q": log_aggregate(path, mu, lv),
                          "entropy": pixel_entropy(_images(params, arch, path)[1])},
    }
    if Z == 2:
        out["plane"] = _plane(mu, lv, z_q, z_p, hole, cfg["grid"])
    return out


def _plane(mu, lv, z_q, z_p, hole, n_grid: int) -> dict:
    """What the latent-plane panel draws: q's and the prior's samples, and log q_M on a grid covering both."""
    lim = float(np.quantile(np.abs(np.concatenate([z_q, z_p])), 0.995)) * 1.1
    g = np.linspace(-lim, lim, n_grid)
    gx, gy = np.meshgrid(g, g)
    log_q = log_aggregate(np.stack([gx.ravel(), gy.ravel()], axis=1), mu, lv).reshape(n_grid, n_grid)
    return {"q_samples": z_q[:1500], "prior_samples": z_p[:300], "prior_in_hole": hole[:300], "grid": g,
            "log_q": np.round(log_q, 3)}  # 3 decimals: the contour drawn from it moves by far less than a pixel


def run(out_dir, *, quick: bool, rng: np.random.Generator, data_dir=None) -> dict:
    """Train the Z = 2 and the larger VAE, measure both, draw generation.png; returns the numbers and file names."""
    name, spec, n_train, measure_at, n_eval, *_ = pn.QUICK if quick else pn.FULL
    cfg, notes = QUICK if quick else FULL, []
    try:
        ds = load(name, search_dirs=pn._search_dirs(data_dir))
    except DataNotFoundError as e:
        notes.append(f"generation: {name} was not found, so the embedded 8x8 digits were used instead ("
                     f"{pn.get_mnist('generation')}). {str(e).splitlines()[0]}")
        name, spec, n_train, _, n_eval, *_ = pn.QUICK  # digits' sizes; the full run's epochs
        ds = load(name)
    epochs = {"digits": 50 if quick else 150}.get(ds.name, measure_at[-1])  # 13 steps a digits epoch, 100 on MNIST
    X = ds.train[rng.permutation(ds.train.shape[0])[:n_train]]
    probe = min(cfg["probe"], X.shape[0] // 4)
    X_mix, X_probe = X[:-probe], X[-probe:]  # q_M's components; held-out training points whose z ~ q(z|x) probe it
    x_eval = ds.test[subset_indices(n_eval, ds.test.shape[0], rng)]  # a seeded subset: the test split is ordered by class
    out = {"dataset": ds.name, "image_shape": ds.image_shape, "n_train": X.shape[0], "epochs": epochs}
    for key, s in (("two_d", spec.rsplit("-", 1)[0] + "-2"), ("high_d", spec)):
        arch = Arch.parse(s, activation="tanh")
        out[key] = _measure(train_vae(arch, X, epochs, rng), arch, X_mix, X_probe, x_eval, ds.test, cfg, rng)
    return {"finding": finding(out), "files": [c.save_png(draw(out), out_dir, "generation.png")], "numbers": out,
            "notes": notes}


def finding(r: dict) -> list[str]:
    """Three lines with this run's numbers: ELBO against sample quality, the holes, quality in and out of them."""
    a, b = r["two_d"], r["high_d"]
    qa, qb, Zb = a["quality"], b["quality"], b["latent_dim"]
    k = lambda s: f"[{s['aggregate']['kl_moment_bound']:.2f}, {s['aggregate']['kl']:.2f}]"  # noqa: E731
    return [
        f"Z = {Zb}: test ELBO {b['test']['elbo']:.1f} against {a['test']['elbo']:.1f} at Z = 2; H[p(x|z)] "
        f"{qb['prior']['entropy']:.1f} nats at prior samples, {qb['q']['entropy']:.1f} at z ~ q(z) "
        f"(Z = 2: {qa['prior']['entropy']:.1f}, {qa['q']['entropy']:.1f}).",
        f"Holes: {100 * b['holes']['fraction_of_prior']:.1f}% (Z = {Zb}), {100 * a['holes']['fraction_of_prior']:.1f}% (Z = 2) "
        f"of prior samples fall below q(z)'s 5% quantile; KL(q(z) || p(z)) in {k(b)}, {k(a)} nats.",
        f"In holes vs on q's support: H[p(x|z)] {_in_out(qa, 'entropy', '.1f')} nats, round trip "
        f"{_in_out(qa, 'round_trip', '.2f')} (Z = 2); {_in_out(qb, 'entropy', '.1f')}, {_in_out(qb, 'round_trip', '.2f')} (Z = {Zb}).",
    ]


def _in_out(q: dict, what: str, fmt: str) -> str:
    """'<at prior samples in holes> vs <at prior samples on q's support>' of one quality measure."""
    return f"{q['prior_in_holes'][what]:{fmt}} vs {q['prior_on_support'][what]:{fmt}}"


# ---- the picture ----

def tile(images, image_shape, ncols: int, scale: int = 1, row_groups: int = 1):
    """(M, D) -> one array of tiles, each pixel scale x scale, NaN gutters 1 px wide (3 after every row_groups rows)."""
    h, w = image_shape[0] * scale, image_shape[1] * scale
    nrows = -(-len(images) // ncols)
    gaps = [0] + [3 if row_groups > 1 and i % row_groups == 0 else 1 for i in range(1, nrows)]
    top = np.cumsum([g + (h if i else 0) for i, g in enumerate(gaps)])  # each tile row's first pixel row
    out = np.full((top[-1] + h, ncols * (w + 1) - 1), np.nan)
    for i, im in enumerate(images):
        r, col = divmod(i, ncols)
        big = np.kron(np.reshape(im, image_shape), np.ones((scale, scale)))
        out[top[r] : top[r] + h, col * (w + 1) : col * (w + 1) + w] = big
    return out


def _show(ax, images, image_shape, ncols: int, title: str, row_groups: int = 1):
    """Images on the fixed grey scale, 0 white and 1 black, gutters in a blue-grey that is neither."""
    import matplotlib

    cmap = matplotlib.colormaps["gray_r"].with_extremes(bad="#c2d0dd")
    scale = max(1, 24 // image_shape[0])  # 8x8 digits drawn 3 px a pixel, so that 1-px gutters stay thin
    ax.imshow(tile(np.asarray(images, dtype=np.float64), image_shape, ncols, scale, row_groups), cmap=cmap, vmin=0.0,
              vmax=1.0, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)


def draw(r: dict):
    """Each model's row: prior means, pixel samples, reconstructions, interpolation; the latent plane; holes; quality."""
    shape = tuple(r["image_shape"])
    fig = c.figure(20.0, 11.0)
    left = fig.add_gridspec(4, 3, height_ratios=[5, 1.2, 5, 1.2], left=0.015, right=0.53, bottom=0.03, top=0.9,
                            wspace=0.06, hspace=0.35)
    right = fig.add_gridspec(2, 2, width_ratios=[1.3, 1], left=0.58, right=0.99, bottom=0.17, top=0.92, wspace=0.28,
                             hspace=0.62)
    for row, key in ((0, "two_d"), (2, "high_d")):
        s, im = r[key], r[key]["images"]
        q = s["quality"]
        _show(fig.add_subplot(left[row, 0]), im["prior_means"], shape, 5,
              f"Z = {s['latent_dim']}: z ~ p(z), decoder means E[x|z]\n"
              f"H[p(x|z)] {q['prior']['entropy']:.0f} nats (at z ~ q(z): {q['q']['entropy']:.0f})")
        _show(fig.add_subplot(left[row, 1]), im["pixel_samples"], shape, 5,
              "the same z, pixels x ~ p(x|z): independent\npixel noise, which is why means are plotted")
        pairs = np.stack([np.asarray(im["originals"], float), np.asarray(im["reconstructions"])])  # (2, P, D)
        pairs = pairs.reshape(2, -1, 5, pairs.shape[-1]).transpose(1, 0, 2, 3).reshape(-1, pairs.shape[-1])
        _show(fig.add_subplot(left[row, 2]), pairs, shape, 5, "test digits, each over its reconstruction\n"
              f"E[x | z = mu(x)] (encoder, then decoder); test ELBO {s['test']['elbo']:.1f}", row_groups=2)
        path = np.concatenate([im["interpolation_ends"][:1], im["interpolation"], im["interpolation_ends"][1:]])
        _show(fig.add_subplot(left[row + 1, :]), path, shape, len(path),
              "E[x|z] along z = (1 - t) mu(x_a) + t mu(x_b), t = 0 ... 1: the two test digits x_a, x_b at the ends")
    _draw_plane(fig.add_subplot(right[0, 0]), r["two_d"])
    _draw_holes(fig.add_subplot(right[1, 0]), r["high_d"])
    _draw_quality(fig.add_subplot(right[0, 1]), r, "entropy", "H[p(x|z)], nats per image", "decoder blur: entropy of p(x|z)")
    _draw_quality(fig.add_subplot(right[1, 1]), r, "round_trip", "|mu(E[x|z]) - z|", "round trip: how far re-encoding moves z")
    fig.suptitle(f"What the decoder does alone ({r['dataset']}): prior samples land in holes of q(z) = mean_x q(z|x), "
                 "where the ELBO never trained the decoder", fontsize=12)
    return fig


def _draw_plane(ax, s):
    """q(z)'s samples over the prior's contours, q's 5% level, the prior samples in and out of the holes, the path."""
    p = s["plane"]
    g = np.asarray(p["grid"])
    ax.scatter(*np.asarray(p["q_samples"]).T, s=5, color=c.C_Q, alpha=0.5, lw=0, label="z ~ q(z|x), training x")
    t = np.linspace(0.0, 2.0 * np.pi, 200)
    for k in (1, 2, 3):
        ax.plot(k * np.cos(t), k * np.sin(t), color=c.C_PRIOR, lw=1, ls="--", label="p(z): 1, 2, 3 sd" if k == 1 else None)
    ax.contour(g, g, np.asarray(p["log_q"]), levels=[s["holes"]["threshold"]], colors=[c.C_Q], linewidths=1.2,
               linestyles="solid")
    ax.plot([], [], color=c.C_Q, lw=1.2, label="q(z)'s 5% quantile: the holes' edge")
    zp, hole = np.asarray(p["prior_samples"]), np.asarray(p["prior_in_hole"], bool)
    ax.scatter(*zp[~hole].T, s=12, facecolors="none", edgecolors=c.C_PRIOR, lw=0.7, label="z ~ p(z) on q's support")
    ax.scatter(*zp[hole].T, s=22, marker="x", color=c.C_POSTERIOR, lw=1.1, label="z ~ p(z) in a hole")
    z = np.asarray(s["interpolation"]["z"])
    ax.plot(*z.T, "-o", color=c.C_DECODER, ms=3, lw=1.5, label="the interpolation's path")
    ax.set_xlim(g[0], g[-1])
    ax.set_ylim(g[0], g[-1])
    ax.set_aspect("equal")
    c.style(ax, f"Z = 2: {100 * s['holes']['fraction_of_prior']:.0f}% of prior samples in holes; "
            f"KL(q(z) || p(z)) {s['aggregate']['kl']:.2f}", "z1", "z2", legend=False)
    c.legend_below(ax, ncol=2)


def _draw_holes(ax, s):
    """Histograms of log q_M(z) at q's held-out samples and at prior samples, with the 5% threshold."""
    a, b = np.asarray(s["holes"]["log_q_at_q"]), np.asarray(s["holes"]["log_q_at_prior"])
    lo, hi = c.data_limits(np.quantile(np.concatenate([a, b]), [0.005, 1.0]))
    bins = np.linspace(lo, hi, 50)
    ax.hist(np.clip(a, lo, hi), bins, color=c.C_Q, alpha=0.45, label="z ~ q(z|x), held-out training x")
    ax.hist(np.clip(b, lo, hi), bins, histtype="step", color=c.C_PRIOR, lw=2, label="z ~ p(z)")
    ax.axvline(s["holes"]["threshold"], color=c.C_Q, ls=":", lw=1.5, label="q's 5% quantile")
    c.style(ax, f"Z = {s['latent_dim']}: {100 * s['holes']['fraction_of_prior']:.0f}% of prior samples below q's 5% quantile",
            f"log q(z), q = mixture of M = {s['M']} encodings (clipped at the left)", "samples", legend=False)
    c.legend_below(ax)


def _draw_quality(ax, r, what: str, ylabel: str, title: str):
    """Grouped bars per model: the decoder at z ~ q(z), at prior samples on q's support, at prior samples in holes."""
    groups = (("q", "z ~ q(z|x), training x", c.C_Q, None), ("prior_on_support", "z ~ p(z), on q's support", c.C_PRIOR, None),
              ("prior_in_holes", "z ~ p(z), in a hole", c.C_PRIOR, "///"))
    keys = ("two_d", "high_d")
    for j, (g, label, colour, hatch) in enumerate(groups):
        v = [r[k]["quality"][g][what] for k in keys]
        ax.bar(np.arange(2) + (j - 1) * 0.27, v, 0.25, color=colour, hatch=hatch, edgecolor="white" if hatch else None,
               label=label)
    ax.set_xticks(np.arange(2), [f"Z = {r[k]['latent_dim']}" for k in keys])
    c.style(ax, title, None, ylabel, legend=False)
    c.legend_below(ax)
