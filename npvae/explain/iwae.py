"""Topic `iwae`: what K importance samples buy, why they come from the encoder, and what they cost the encoder.

1. The bound. IWAE_K = E[log (1/K) sum_k w_k], w_k = p(x, z_k) / q(z_k|x), z_k ~ q(z|x) (Burda et al. 2016):
   by Jensen IWAE_1 = ELBO <= IWAE_K <= IWAE_{K+1} <= log p(x), and IWAE_K -> log p(x). The average
   (1/K) sum_k w_k is an unbiased estimate of p(x); its log is not, and that bias is the gap. For large K
   (Domke & Sheldon 2018, Thm 3; Rainforth et al. 2018)
       log p(x) - IWAE_K ~ Var_q[w] / (2 K p(x)^2) = (E_q[(p(z|x) / q(z))^2] - 1) / (2K),
   where for Gaussians E_q[(p/q)^2] = int p(z|x)^2 / q(z) dz has a closed form (`weight_second_moment`),
   finite only when 2 Cov_p^-1 - Cov_q^-1 is positive definite.
2. The proposal. p(x) = E_p(z) p(x|z) too, so the prior could be the proposal (an encoder that outputs
   mu = 0, log_var = 0); the bound with prior samples is far looser for the same K, because the posterior
   is much narrower than the prior. That is why z is sampled from q(z|x) even at test time.
3. The gradient. Rainforth et al. 2018: as K grows the reparameterised IWAE gradient's signal-to-noise
   ratio |E g| / std g falls like 1/sqrt(K) for the encoder while it grows like sqrt(K) for the decoder;
   the doubly reparameterised estimator DReG (Tucker et al. 2018) restores a growing encoder SNR. STL
   (Roeder et al. 2017) is DReG's K = 1 case; npvae allows it for the ELBO, where K samples are averaged.
Everything runs on a linear-Gaussian model with the general VAE code (`npvae.log_weights`, `npvae.objective`).
"""

from __future__ import annotations

import numpy as np

from ..oracle.linear_vae import best_linear_vae
from ..maths.lme import log_mean_exp_core
from ..vae.model import flatten
from ..objectives import log_weights, objective
from . import _common as c

QUICK = {"Ks": (1, 4, 16, 64), "budget": 1 << 17, "snr_Ks": (1, 4, 16, 64), "snr_R": 300, "snr_N": 32}
FULL = {"Ks": tuple(2**i for i in range(13)), "budget": 1 << 19, "snr_Ks": tuple(4**i for i in range(5)), "snr_R": 1000, "snr_N": 64}
ESTIMATORS = (("iwae", "reparam"), ("iwae", "dreg"), ("elbo", "stl"))


def weight_second_moment(post_mean, post_cov, q_mean, q_cov) -> float:
    """E_q[(p(z|x) / q(z))^2] = int N(z; m1, S1)^2 / N(z; m0, S0) dz; inf unless P = 2 S1^-1 - S0^-1 is positive definite.

    = |S0|^(1/2) |S1|^-1 |P|^(-1/2) exp((h^T P^-1 h - c) / 2), h = 2 S1^-1 m1 - S0^-1 m0,
    c = 2 m1^T S1^-1 m1 - m0^T S0^-1 m0 (completing the square in z).
    """
    A1, A0 = np.linalg.inv(post_cov), np.linalg.inv(q_cov)
    P = 2 * A1 - A0
    if np.linalg.eigvalsh(P).min() <= 0:
        return float("inf")
    h = 2 * A1 @ post_mean - A0 @ q_mean
    cc = 2 * post_mean @ A1 @ post_mean - q_mean @ A0 @ q_mean
    ld_q, ld_p, ld_P = (np.linalg.slogdet(S)[1] for S in (q_cov, post_cov, P))
    return float(np.exp(0.5 * ld_q - ld_p - 0.5 * ld_P + 0.5 * (h @ np.linalg.solve(P, h) - cc)))


def iwae_curve(params, arch, x, Ks, budget: int, rng) -> dict:
    """E IWAE_K per point (N,) and its standard error for each K, from R = budget // K independent replicates (R >= 256)."""
    means, ses = [], []
    for K in Ks:
        R = max(256, budget // K)
        a = log_weights(params, arch, x, rng.standard_normal((R * K, x.shape[0], arch.latent_dim)))  # (R K, N)
        est = log_mean_exp_core(a.reshape(R, K, -1), axis=1)  # (R, N): R independent IWAE_K estimates per point
        m, se = c.mean_se(est)
        means.append(m)
        ses.append(se)
    return {"K": list(Ks), "mean": np.array(means), "se": np.array(ses)}  # (len(Ks), N) each


def snr(params, arch, x, Ks, R: int, rng) -> dict:
    """|mean| / std over R independent gradient estimates, per parameter, averaged over the encoder's (and decoder's) parameters."""
    n_enc = 2 * len(params.encoder)
    out = {"K": list(Ks)}
    for bound, est in ESTIMATORS:
        enc_snr, dec_snr = [], []
        for K in Ks:
            g = np.stack([np.concatenate([a.ravel() for a in flatten(objective(
                params, arch, x, rng.standard_normal((K, x.shape[0], arch.latent_dim)), bound=bound, kl="mc", estimator=est)[1])])
                for _ in range(R)])  # (R, P)
            ratio = np.abs(g.mean(axis=0)) / g.std(axis=0, ddof=1)
            n = sum(a.size for a in flatten(params)[:n_enc])
            enc_snr.append(float(ratio[:n].mean()))
            dec_snr.append(float(ratio[n:].mean()))
        out[f"{bound}-{est}"] = {"encoder": enc_snr, "decoder": dec_snr}
    return out


def _relation(value: float, ref: float, se: float) -> str:
    """How value stands to ref, given its standard error: 'below' or 'above' it, or 'within 3 SE of' it."""
    if abs(value - ref) <= 3 * se:
        return "within 3 SE of"
    return "below" if value < ref else "above"


def finding(nb: dict) -> list[str]:
    """The answer in three lines, with the numbers of this run: bounds at three K for each proposal, the SNR trends.

    Every comparison word is chosen from the numbers' signs: 'below' only where the value is below.
    """
    K = nb["iwae"]["encoder"]["K"]
    at = sorted({0, len(K) // 2, len(K) - 1})  # the first, a middle and the last K
    bound = {p: np.mean(nb["iwae"][p]["mean"], axis=1) for p in ("encoder", "prior")}  # (len(K),): mean over the points
    se = {p: np.sqrt(np.sum(np.asarray(nb["iwae"][p]["se"]) ** 2, axis=1)) / len(nb["x"]) for p in ("encoder", "prior")}
    ks = lambda p: ", ".join(f"K={K[i]} {bound[p][i]:.3f}" for i in at)  # noqa: E731
    log_px = float(np.mean(nb["log_px"]))
    last = _relation(bound["encoder"][-1], log_px, se["encoder"][-1])
    looser = all(bound["prior"][i] < bound["encoder"][i] for i in at)
    s = nb["snr"]
    trend = lambda v: f"{v[0]:#.3g} -> {v[-1]:#.3g}"  # noqa: E731
    return [f"z ~ q(z|x): IWAE_K {ks('encoder')}, the last {last} log p(x) = {log_px:.3f} (mean of {len(nb['x'])} points).",
            f"z ~ p(z) instead: {ks('prior')}: " + ("a looser bound at each of these K." if looser else
                                                    "not looser at every one of these K."),
            f"Gradient SNR from K={s['K'][0]} to {s['K'][-1]}: encoder {trend(s['iwae-reparam']['encoder'])} (reparam), "
            f"{trend(s['iwae-dreg']['encoder'])} (DReG); decoder {trend(s['iwae-reparam']['decoder'])}."]


def run(out_dir, *, quick: bool, rng: np.random.Generator, data_dir=None) -> dict:
    cfg = QUICK if quick else FULL
    model = c.correlated_model(rng, D=5, sigma2=0.3, cos=0.5)
    x, _ = model.sample(4, rng)
    arch, q_best = best_linear_vae(model)
    q_prior = c.encoder_params(model, np.zeros((2, 5)), np.zeros(2), np.zeros(2))  # q(z|x) = N(0, I) = p(z)
    exact = model.log_marginal(x)
    post_mean, post_cov = model.posterior(x)
    qm, qlv = model.best_diagonal_q(x)
    curves, asym = {}, {}
    for name, params, means, cov in (("encoder", q_best, qm, np.diag(np.exp(qlv[0]))), ("prior", q_prior, 0 * qm, np.eye(2))):
        curves[name] = iwae_curve(params, arch, x, cfg["Ks"], cfg["budget"], rng)
        # (E w~^2 - 1) / 2 per point: the asymptotic K (log p(x) - IWAE_K)
        asym[name] = [0.5 * (weight_second_moment(pm, post_cov, m, cov) - 1) for pm, m in zip(post_mean, means)]
    # The gradients' SNR, on a model whose posterior is diagonal (so every bound's best q is p(z|x) and every
    # expected gradient points the same way at every K), at an encoder not yet there: mean 15% short, variance 35% too wide.
    ortho = c.correlated_model(rng, D=5, sigma2=0.3, cos=0.0)
    arch_o, best_o = best_linear_vae(ortho)
    A, a, log_S = c.read_encoder(best_o, 2)
    x_snr, _ = ortho.sample(cfg["snr_N"], rng)  # a minibatch: the SNR of its mean gradient grows like sqrt(N) for all estimators
    ratios = snr(c.encoder_params(ortho, 0.85 * A, 0.85 * a, log_S + 0.3), arch_o, x_snr, cfg["snr_Ks"], cfg["snr_R"], rng)
    numbers = {"model": {"W": model.W, "b": model.b, "sigma2": model.sigma2}, "snr_model": {"W": ortho.W, "b": ortho.b}, "x": x, "log_px": exact,
               "elbo_closed_form": model.elbo(x, qm, qlv), "iwae": curves, "asymptote_K_times_gap": asym,
               "snr": ratios, "snr_replicates": cfg["snr_R"], "snr_batch": cfg["snr_N"]}
    return {"files": [_plot(numbers, out_dir)], "numbers": numbers, "finding": finding(numbers)}


def _plot(n: dict, out_dir) -> str:
    """Write `draw`'s figure to out_dir/iwae.png; return the file name."""
    return c.save_png(draw(n), out_dir, "iwae.png")


def _bound_curves(n: dict, name: str):
    """K (len(K),), the bound averaged over the points, and its standard error, for proposal `name`."""
    cur = n["iwae"][name]
    se = np.asarray(cur["se"])
    return np.array(cur["K"], dtype=float), np.mean(cur["mean"], axis=1), np.sqrt(np.sum(se**2, axis=1)) / se.shape[1]


def draw(n: dict):
    """Three panels: the bound against K for two proposals (all of both curves, the encoder's enlarged in an inset);
    the gap on log-log axes with the 1/K law; the gradients' SNRs. n: `run`'s numbers."""
    proposals = (("encoder", c.C_Q, "z_k ~ q(z|x), the encoder"), ("prior", c.C_PRIOR, "z_k ~ p(z), the prior"))
    fig = c.figure(16.5, 5.6)
    fig.subplots_adjust(left=0.05, right=0.99, bottom=0.3, top=0.88, wspace=0.22)
    ax = fig.add_subplot(1, 3, 1)
    exact, elbo = float(np.mean(n["log_px"])), float(np.mean(n["elbo_closed_form"]))

    def bound_panel(a, names, label=True):
        a.axhline(exact, color=c.C_POSTERIOR, lw=2, label=f"log p(x) (exact) = {exact:.3f}" if label else None)
        a.axhline(elbo, color=c.C_Q, ls="--", lw=1, label=f"ELBO of q (closed form) = {elbo:.3f}" if label else None)
        for name, colour, text in proposals:
            if name in names:
                K, m, se = _bound_curves(n, name)
                a.errorbar(K, m, yerr=2 * se, fmt="o-", color=colour, ms=4 if label else 3, capsize=2,
                           label=f"IWAE_K, {text} (+- 2 SE)" if label else None)
        a.set_xscale("log", base=2)

    bound_panel(ax, ("encoder", "prior"))
    # Limits from every curve: the prior's bound starts tens of nats below log p(x). The encoder's curve, a few
    # hundredths of a nat below it, is enlarged in an inset where the panel has room.
    lows = [m - 2 * se for _, m, se in (_bound_curves(n, p) for p, _, _ in proposals)]
    ax.set_ylim(*c.data_limits(*lows, [exact]))
    c.style(ax, "IWAE_K rises with K towards log p(x)", "K (importance samples)", "nats, average of 4 points", legend=False)
    c.legend_below(ax)
    rect = c.free_rect(ax, 0.55, 0.5)
    if rect is not None:
        ins = ax.inset_axes(rect)
        bound_panel(ins, ("encoder",), label=False)
        K, m, se = _bound_curves(n, "encoder")
        ins.set_ylim(*c.data_limits(m - 2 * se, m + 2 * se, [exact, elbo]))
        ins.tick_params(labelsize=7)
        ins.grid(alpha=0.3)
        ins.set_title("enlarged: z ~ q(z|x)", fontsize=8)
    ax = fig.add_subplot(1, 3, 2)
    for name, colour, _ in proposals:
        K, m, se = _bound_curves(n, name)
        gap = exact - m
        ok = gap > 3 * se  # a gap within three standard errors of 0 is not resolved: not drawn on a log axis
        ax.errorbar(K[ok], gap[ok], yerr=2 * se[ok], fmt="o-", color=colour, ms=4, capsize=2,
                    label=f"log p(x) - IWAE_K, proposal {name} (+- 2 SE)")
        a = np.mean(n["asymptote_K_times_gap"][name])
        if np.isfinite(a):
            ax.plot(K, a / K, ":", color=colour, lw=2, label=f"Var[w] / (2 K p(x)^2) = {a:.2f} / K ({name})")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    c.style(ax, "the gap closes like 1/K once K is large enough", "K (importance samples)", "nats", legend=False)
    c.legend_below(ax)
    ax = fig.add_subplot(1, 3, 3)
    s = n["snr"]
    K = np.array(s["K"], dtype=float)
    ax.plot(K, s["iwae-reparam"]["encoder"], "o-", color=c.C_REPARAM, lw=2, label="encoder, IWAE, reparameterised")
    ax.plot(K, s["iwae-dreg"]["encoder"], "s-", color=c.C_DREG, lw=2, label="encoder, IWAE, DReG")
    ax.plot(K, s["elbo-stl"]["encoder"], "^--", color=c.C_STL, lw=1.5, label="encoder, ELBO of K averaged samples, STL")
    ax.plot(K, s["iwae-reparam"]["decoder"], "D-", color=c.C_DECODER, lw=2, label="decoder, IWAE (any estimator)")
    ref = s["iwae-reparam"]["encoder"][0]
    ax.plot(K, ref / np.sqrt(K), color=c.C_GUIDE, lw=1, ls="-.", label="slopes K^(-1/2) and K^(+1/2)")
    ax.plot(K, ref * np.sqrt(K), color=c.C_GUIDE, lw=1, ls="-.")
    floor = np.sqrt(2 / (np.pi * n["snr_replicates"]))  # E|mean| / std of R draws of a gradient whose true mean is 0
    values = [s[k][part] for k in ("iwae-reparam", "iwae-dreg", "elbo-stl") for part in ("encoder", "decoder")]
    lo, hi = c.data_limits(*values, ref / np.sqrt(K), ref * np.sqrt(K), [floor], log=True)
    ax.axhspan(lo, floor, color=c.C_UNRESOLVED, zorder=0, label=f"not resolved by {n['snr_replicates']} draws")
    ax.set_ylim(lo, hi)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    c.style(ax, f"gradient SNR |E g| / std g (mean over parameters; batch of {n['snr_batch']})", "K", "SNR", legend=False)
    c.legend_below(ax)
    fig.suptitle("Importance weighting: a tighter bound with K samples from the encoder, at a price for the encoder's gradient",
                 fontsize=12)
    return fig
