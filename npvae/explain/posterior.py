"""Topic `posterior`: does maximising the ELBO push q(z|x) towards the prior p(z) or towards the posterior p(z|x)?

Two true statements that seem to disagree (Kingma & Welling 2014, eq. 3; Domke & Sheldon 2018, eq. 1):
    ELBO(x) = E_q[log p(x|z)] - KL(q(z|x) || p(z))          (the KL term pulls q towards the prior)
    ELBO(x) = log p(x) - KL(q(z|x) || p(z|x))                (raising the ELBO at fixed p IS pulling q to p(z|x))
Both hold; the second says where q ends. On the linear-Gaussian model every term is exact, so we train a
linear amortised encoder q(z|x) = N(A x + a, diag(S)) with the general VAE code (`npvae.objective`,
Adam), starting AT the prior, and track E_x of each term. The KL to the prior rises from 0; the KL to the
posterior falls to 1/2 [sum_j log M_jj - log|M|], the best a diagonal q can do (docs/theory.md, section 4).

"ELBO surgery" (Hoffman & Johnson 2016) splits the averaged KL to the prior:
    E_q(x) KL(q(z|x) || p(z)) = I_q(x; z) + KL(q(z) || p(z)),   q(z) = E_q(x) q(z|x).
With q(x) = N(xbar, Sx) (the data's mean and 1/N covariance) and a linear encoder of constant variance,
q(z) = N(A xbar + a, A Sx A^T + diag(S)) and I_q = H(q(z)) - E_x H(q(z|x)) = 1/2 log|Cov q(z)| - 1/2 sum_j log S_j.
A second run also trains the decoder: the model rotates until its posterior IS diagonal and the gap closes
(Lucas et al. 2019). The nonlinear VAE is in `posterior_nonlinear`.
"""

from __future__ import annotations

import numpy as np

from ..maths.gaussian import kl_std_normal_forward
from ..oracle.linear_chain import LinearGaussian, ppca_fit
from ..oracle.linear_vae import linear_arch
from ..vae.model import flatten, unflatten
from ..objectives import objective
from ..nn.optim import adam_init, adam_update
from . import _common as c
from . import posterior_nonlinear


def aggregate_posterior(A, a, log_S, xbar, Sx):
    """q(z) = E_q(x) q(z|x) for q(x) = N(xbar, Sx), q(z|x) = N(A x + a, diag(exp(log_S))): mean (Z,), cov (Z, Z).

    z = A x + a + S^(1/2) eps with x and eps independent, so its mean is A xbar + a and its covariance A Sx A^T + diag(S).
    """
    return A @ xbar + a, A @ Sx @ A.T + np.diag(np.exp(log_S))


def surgery_terms(A, a, log_S, xbar, Sx) -> tuple[float, float]:
    """(I_q(x; z), KL(q(z) || p(z))) in nats (Hoffman & Johnson 2016), both closed forms for a Gaussian q(x).

    I_q = H(q(z)) - E_x H(q(z|x)) = 1/2 log|Cov q(z)| - 1/2 sum_j log S_j (the 2 pi e factors cancel).
    """
    m, C = aggregate_posterior(A, a, log_S, xbar, Sx)
    info = 0.5 * (np.linalg.slogdet(C)[1] - np.sum(log_S))
    return float(info), c.kl_gauss(m, C, np.zeros_like(m), np.eye(len(m)))


def _measure(model: LinearGaussian, params, X, xbar, Sx) -> dict:
    """Every term of both decompositions, averaged over the data X (N, D), from the exact oracle."""
    A, a, log_S = c.read_encoder(params, model.Z)
    mu = X @ A.T + a  # (N, Z)
    lv = np.broadcast_to(log_S, mu.shape).copy()
    info, kl_agg = surgery_terms(A, a, log_S, xbar, Sx)
    return {
        "log_px": float(model.log_marginal(X).mean()),
        "elbo": float(model.elbo(X, mu, lv).mean()),
        "kl_to_posterior": float(model.kl_to_posterior(X, mu, lv).mean()),
        "kl_to_prior": float(kl_std_normal_forward(mu, lv).mean()),
        "mutual_information": info,
        "kl_aggregate_to_prior": kl_agg,
        "decoder_correlation_gap": c.correlation_gap(model),
    }


def train_linear(truth: LinearGaussian, X, rng, *, steps: int, train_decoder: bool, sigma2: float, record: int = 40,
                 batch: int = 100, lr=(0.05, 5e-4)) -> dict:
    """Adam on minus the ELBO (analytic KL, reparameterised) of a linear VAE, q starting at the prior; X: (N, D).

    The encoder's log-variance weights are held at zero (their gradient is masked), so S does not depend on x
    and q(z) stays Gaussian. With train_decoder=False the decoder is the truth; otherwise it starts at a small
    random W. The learning rate decays exponentially from lr[0] to lr[1]. Returns the measured history.
    """
    N, D = X.shape
    Z = truth.Z
    arch = linear_arch(D, Z, sigma2)
    dec = truth if not train_decoder else LinearGaussian(0.1 * rng.standard_normal((D, Z)), np.zeros(D), sigma2)
    params = c.encoder_params(dec, np.zeros((Z, D)), np.zeros(Z), np.zeros(Z))  # q(z|x) = N(0, I) = p(z)
    flat, state = flatten(params), adam_init(flatten(params))
    xbar, Sx = X.mean(axis=0), np.cov(X.T, bias=True)  # bias=True: 1/N, the moments of the data themselves
    at = {0} | set(np.geomspace(1, steps, record).astype(int).tolist())  # steps at which to measure, log-spaced
    hist = {"step": [], "q_mean_x0": [], "q_log_var": []}
    per_epoch = N // batch
    for i in range(steps + 1):
        p = unflatten(arch, flat)
        if i in at:
            model = c.read_decoder(p, sigma2) if train_decoder else truth
            for k, v in _measure(model, p, X, xbar, Sx).items():
                hist.setdefault(k, []).append(v)
            A, a, log_S = c.read_encoder(p, Z)
            hist["step"].append(i)
            hist["q_mean_x0"].append(A @ X[0] + a)
            hist["q_log_var"].append(log_S.copy())
        if i == steps:
            break
        if i % per_epoch == 0:
            order = rng.permutation(N)  # a fresh shuffle every epoch
        j = (i % per_epoch) * batch
        xb = X[order[j : j + batch]]
        _, grads = objective(p, arch, xb, rng.standard_normal((1, xb.shape[0], Z)), bound="elbo", kl="analytic")
        g = flatten(grads)
        g[0][:, Z:] = 0.0  # encoder.0.W's log-variance half: S stays constant in x
        if not train_decoder:
            g[2][:], g[3][:] = 0.0, 0.0  # decoder.0.W and .b: the decoder stays the truth
        rate = lr[0] * (lr[1] / lr[0]) ** (i / steps)
        flat, state = adam_update(flat, [-gi for gi in g], state, lr=rate)  # Adam descends: minus the bound's gradient
    A, a, log_S = c.read_encoder(unflatten(arch, flat), Z)
    hist["encoder_end"] = {"A": A, "a": a, "log_S": log_S}
    hist["aggregate_posterior_end"] = aggregate_posterior(A, a, log_S, xbar, Sx)
    dec_end = unflatten(arch, flat).decoder[0]
    hist["decoder"] = {"W": dec_end.W.T, "b": dec_end.b}
    return hist


def reference(truth: LinearGaussian, X) -> dict:
    """Where the encoder-only run should end: the oracle's best diagonal q and its terms (docs/theory.md, section 4)."""
    m, lv = truth.best_diagonal_q(X)
    mean, cov = truth.posterior(X)
    zero, eye = np.zeros(truth.Z), np.eye(truth.Z)
    return {"correlation_gap": c.correlation_gap(truth),
            "kl_to_prior_of_best_q": float(kl_std_normal_forward(m, lv).mean()),
            "kl_to_prior_of_posterior": float(np.mean([c.kl_gauss(mn, cov, zero, eye) for mn in mean])),
            "best_q_mean_x0": m[0], "best_q_log_var": lv[0], "posterior_mean_x0": mean[0], "posterior_cov": cov}


def _plot_encoder_run(h: dict, ref: dict, out_dir) -> str:
    """Write `draw_encoder_run`'s figure to out_dir/posterior_linear.png; return the file name."""
    return c.save_png(draw_encoder_run(h, ref), out_dir, "posterior_linear.png")


def _zoom(ax, step, curves, lines, title: str, after: float):
    """An inset over a free corner of ax: `curves` [(y, colour, lw)] from step `after` on and the horizontal `lines`
    [(y, colour, ls)], on limits from those values alone, so that the end of training reads to a hundredth of a nat."""
    from matplotlib.ticker import NullFormatter

    rect = c.free_rect(ax, 0.5, 0.5)
    if rect is None:
        return None
    ins = ax.inset_axes(rect)
    keep = step >= after
    for y, colour, lw in curves:
        ins.plot(step[keep], np.asarray(y)[keep], color=colour, lw=lw)
    for y, colour, ls in lines:
        ins.axhline(y, color=colour, ls=ls, lw=1)
    ins.set_xscale("log")
    ins.xaxis.set_minor_formatter(NullFormatter())  # a decade or so: labelled minor ticks would run into each other
    ins.set_ylim(*c.data_limits(*(np.asarray(y)[keep] for y, _, _ in curves), [y for y, _, _ in lines]))
    ins.tick_params(labelsize=7)
    ins.grid(alpha=0.3)
    ins.set_title(title, fontsize=8)
    return ins


def draw_encoder_run(h: dict, ref: dict):
    """Three panels: the KLs over training, the ELBO against log p(x), and q(z|x0) in the latent plane."""
    fig = c.figure(17.0, 5.9)
    fig.subplots_adjust(left=0.045, right=0.83, bottom=0.3, top=0.88, wspace=0.22)
    ax = fig.add_subplot(1, 3, 1)
    step = np.maximum(np.array(h["step"]), 0.5)  # step 0 drawn at 0.5 on the log axis
    info, kl_agg = np.array(h["mutual_information"]), np.array(h["kl_aggregate_to_prior"])
    ax.fill_between(step, 0, info, color=c.C_Q, alpha=0.25, label="I_q(x; z)  (surgery, part 1)")
    ax.fill_between(step, info, info + kl_agg, color=c.C_AGGREGATE, alpha=0.45, label="KL(q(z) || p(z))  (surgery, part 2)")
    ax.plot(step, h["kl_to_prior"], color=c.C_PRIOR, lw=2.5, label="E KL(q(z|x) || p(z))  (to the prior)")
    ax.plot(step, h["kl_to_posterior"], color=c.C_POSTERIOR, lw=2.5, label="E KL(q(z|x) || p(z|x))  (to the posterior)")
    ax.axhline(ref["correlation_gap"], color=c.C_BEST, ls="--", lw=1.5,
               label=f"best diagonal q: {ref['correlation_gap']:.3f} nats")
    ax.set_xscale("log")
    ax.set_yscale("symlog", linthresh=0.1)
    ax.set_ylim(0, 2 * max(max(h["kl_to_posterior"]), max(h["kl_to_prior"])))
    c.style(ax, "q starts AT the prior and moves AWAY from it", "Adam step", "nats (average over the data; symlog)",
            legend=False)
    c.legend_below(ax)
    ax = fig.add_subplot(1, 3, 2)
    best = h["log_px"][-1] - ref["correlation_gap"]
    ax.plot(step, h["log_px"], color=c.C_POSTERIOR, lw=2, label="log p(x)  (exact; decoder fixed)")
    ax.plot(step, h["elbo"], color=c.C_Q, lw=2, label="ELBO = log p(x) - KL(q || p(z|x))")
    ax.axhline(best, color=c.C_BEST, ls="--", lw=1.5, label=f"log p(x) - best diagonal gap = {best:.3f}")
    ax.set_xscale("log")
    ax.set_ylim(*c.data_limits(h["log_px"], h["elbo"], [best]))  # from step 0, where q is the prior
    c.style(ax, "the ELBO climbs to log p(x) minus the diagonal gap", "Adam step", "nats per data point", legend=False)
    c.legend_below(ax)
    _zoom(ax, step, [(h["log_px"], c.C_POSTERIOR, 1.5), (h["elbo"], c.C_Q, 1.5)], [(best, c.C_BEST, "--")],
          "enlarged: the last 90% of the steps", after=0.1 * step[-1])
    ax = fig.add_subplot(1, 3, 3)
    t = np.linspace(0, 2 * np.pi, 100)
    ax.plot(2 * np.cos(t), 2 * np.sin(t), color=c.C_PRIOR, lw=2, label="prior p(z)")
    ax.plot(*c.ellipse(ref["posterior_mean_x0"], ref["posterior_cov"]).T, color=c.C_POSTERIOR, lw=2.5, label="posterior p(z|x0)")
    idx = np.unique(np.linspace(0, len(h["step"]) - 1, 6).round().astype(int))
    from matplotlib import colormaps

    cmap = colormaps["Blues"]  # shades of C_Q: the encoder's q at successive steps
    labels = {0: "q(z|x0) at step 0 (= the prior)", 1: "q(z|x0) during training", len(idx) - 1: f"q(z|x0) at step {h['step'][-1]}"}
    for n, i in enumerate(idx):
        ax.plot(*c.ellipse(h["q_mean_x0"][i], np.diag(np.exp(h["q_log_var"][i]))).T, color=cmap(0.35 + 0.65 * n / (len(idx) - 1)),
                lw=1.3, label=labels.get(n))
    ax.plot(*c.ellipse(ref["best_q_mean_x0"], np.diag(np.exp(ref["best_q_log_var"]))).T, color=c.C_BEST, ls="--", lw=2,
            label="best diagonal q(z|x0)")
    ax.plot(*c.ellipse(*h["aggregate_posterior_end"]).T, color=c.C_AGGREGATE, ls=":", lw=2.5,
            label="aggregate q(z) = E_x q(z|x) at the end")
    ax.set_aspect("equal", adjustable="datalim")
    c.style(ax, "2-sd contours in the latent plane, one data point x0", "z1", "z2", legend=False)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.suptitle("Maximising the ELBO over q (decoder fixed): q(z|x) goes to the posterior, not to the prior", fontsize=12)
    return fig


def _plot_decoder_run(h: dict, max_ll: float, out_dir) -> str:
    """Write `draw_decoder_run`'s figure to out_dir/posterior_decoder.png; return the file name."""
    return c.save_png(draw_decoder_run(h, max_ll), out_dir, "posterior_decoder.png")


def draw_decoder_run(h: dict, max_ll: float):
    """Two panels: log p(x) and the ELBO against the pPCA maximum; the gap and the decoder's correlation term."""
    fig = c.figure(11.0, 5.2)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.25, top=0.86, wspace=0.28)
    step = np.maximum(np.array(h["step"]), 0.5)
    ax = fig.add_subplot(1, 2, 1)
    ax.plot(step, h["log_px"], color=c.C_POSTERIOR, lw=2, label="log p(x) of the current decoder")
    ax.plot(step, h["elbo"], color=c.C_Q, lw=2, label="ELBO")
    ax.axhline(max_ll, color=c.C_BEST, ls="--", lw=1.5, label=f"pPCA maximum likelihood {max_ll:.3f}")
    ax.set_xscale("log")
    ax.set_ylim(*c.data_limits(h["log_px"], h["elbo"], [max_ll]))
    c.style(ax, "encoder and decoder trained together", "Adam step", "nats per data point", legend=False)
    c.legend_below(ax)
    _zoom(ax, step, [(h["log_px"], c.C_POSTERIOR, 1.5), (h["elbo"], c.C_Q, 1.5)], [(max_ll, c.C_BEST, "--")],
          "enlarged: the last 90% of the steps", after=0.1 * step[-1])
    ax = fig.add_subplot(1, 2, 2)
    ax.plot(step, h["kl_to_posterior"], color=c.C_POSTERIOR, lw=2, label="E KL(q(z|x) || p(z|x)) = log p(x) - ELBO")
    ax.plot(step, h["decoder_correlation_gap"], color=c.C_BEST, ls="--", lw=2,
            label="1/2 [sum log M_jj - log|M|] of the current decoder (the best diagonal q's gap)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    c.style(ax, "the decoder turns until its posterior is diagonal", "Adam step", "nats", legend=False)
    c.legend_below(ax)
    fig.suptitle("With a diagonal q the model, too, moves towards what q can represent (Lucas et al. 2019)", fontsize=12)
    return fig


def _moves(a: float, b: float) -> str:
    """'falls' or 'rises', as b stands to a (a number's own change, in words)."""
    return "falls" if b < a else "rises"


def finding(nb: dict) -> list[str]:
    """The answer in three lines, with the numbers of this run; nb: `run`'s numbers. The verbs follow the numbers' signs."""
    h, d, gap = nb["encoder_only"], nb["encoder_and_decoder"], nb["reference"]["correlation_gap"]
    post, prior, dec = h["kl_to_posterior"], h["kl_to_prior"], d["kl_to_posterior"]
    return [f"q goes to the posterior: E KL(q || p(z|x)) {_moves(post[0], post[-1])} {post[0]:.2f} -> {post[-1]:.3f} nats "
            f"(best diagonal q: {gap:.3f}); E KL(q || p(z)) {_moves(prior[0], prior[-1])} {prior[0]:.2f} -> {prior[-1]:.2f}.",
            f"ELBO surgery at the end: {prior[-1]:.3f} = I_q {h['mutual_information'][-1]:.3f} "
            f"+ KL(q(z) || p(z)) {h['kl_aggregate_to_prior'][-1]:.3f}; training the decoder too, the gap "
            f"{_moves(dec[0], dec[-1])} to {dec[-1]:.1e}.",
            posterior_nonlinear.finding(nb["nonlinear"])]


def run(out_dir, *, quick: bool, rng: np.random.Generator, data_dir=None) -> dict:
    """The linear experiments, then the nonlinear VAE; returns the numbers plotted, and writes the PNGs."""
    truth = c.correlated_model(rng, D=5, sigma2=0.3, cos=0.8)
    X, _ = truth.sample(2000, rng)
    enc_run = train_linear(truth, X, rng, steps=1000 if quick else 3000, train_decoder=False, sigma2=float(truth.sigma2))
    ref = reference(truth, X)
    fitted, max_ll = ppca_fit(X, truth.Z)
    dec_run = train_linear(truth, X, rng, steps=2000 if quick else 6000, train_decoder=True, sigma2=float(fitted.sigma2))
    files = [_plot_encoder_run(enc_run, ref, out_dir), _plot_decoder_run(dec_run, max_ll / X.shape[0], out_dir)]
    data_moments = {"xbar": X.mean(axis=0), "Sx": np.cov(X.T, bias=True)}
    nonlinear = posterior_nonlinear.run(out_dir, quick=quick, rng=rng, data_dir=data_dir)
    files += nonlinear.pop("files")
    notes = nonlinear.pop("notes")
    numbers = {"model": {"W": truth.W, "b": truth.b, "sigma2": truth.sigma2}, "data_x0": X[0], "data_moments": data_moments,
               "encoder_only": enc_run, "reference": ref, "encoder_and_decoder": dec_run,
               "ppca_max_loglik_per_point": max_ll / X.shape[0], "nonlinear": nonlinear}
    return {"files": files, "numbers": numbers, "notes": notes, "finding": finding(numbers)}
