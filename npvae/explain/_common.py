"""What the explain experiments share: the demonstration model, the linear encoder, Gaussian closed forms, figures, JSON.

Shapes: x (N, D), z (N, Z); a linear encoder is mu = x A^T + a with A: (Z, D), a: (Z,) and a log-variance
log_S: (Z,) shared by every x. Private helpers: no input checking (the experiments build their own inputs).
Matplotlib is imported inside the functions and only through Figure + FigureCanvasAgg (no pyplot),
so nothing global changes.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..nn.layers import Dense
from ..store import atomic
from ..oracle.linear_chain import LinearGaussian
from ..vae.model import VAEParams

# One colour per role, the same in every figure of every topic, and no two roles share a colour. A topic that
# needs a new role adds it here (with its line of comment) rather than writing a colour into its figure.
C_POSTERIOR = "black"            # the exact posterior p(z|x) and what it fixes: exact log p(x), E KL(q(z|x) || p(z|x))
C_PRIOR = "0.55"                 # the prior p(z), the prior as a proposal, E KL(q(z|x) || p(z))
C_Q = "tab:blue"                 # the encoder's q(z|x) and its bounds: the ELBO, IWAE with z ~ q(z|x), I_q(x; z)
C_BEST = "tab:orange"            # the best attainable: the best diagonal q and its gap, the maximum-likelihood (pPCA) model
C_AGGREGATE = "tab:olive"        # the aggregate posterior q(z) = E_q(x) q(z|x) and KL(q(z) || p(z))
C_DATA = "#b8860b"               # the data distribution q(x) and its entropy H(q(x))
C_JOINT = "tab:pink"             # the KL between joints, KL(q(x) q(z|x) || p(x, z))
C_FIT = "#3a3a98"                # KL(q(x) || p(x)): how far the model's marginal p(x) is from the data
C_DECODER = "tab:purple"         # the decoder: E_q log p(x|z) and the decoder's gradient
C_REPARAM = "tab:cyan"           # the reparameterised gradient with every term sampled (Monte Carlo KL; IWAE's gradient)
C_REPARAM_ANALYTIC = "#0b5d66"   # the reparameterised gradient with the KL term in closed form
C_STL = "tab:green"              # sticking the landing, the path derivative only (Roeder et al. 2017; DReG at K = 1)
C_DREG = "tab:brown"             # the doubly reparameterised IWAE gradient (Tucker et al. 2018)
C_SCORE = "tab:red"              # the score-function (REINFORCE) gradient without a baseline
C_SCORE_BASELINE = "#f28e8a"     # the score-function gradient with a baseline
C_GUIDE = "0.3"                  # guides, not quantities: reference slopes, an estimator's ceiling, arrows
C_UNRESOLVED = "0.88"            # shading over what a run's draws cannot resolve
C_EDGE = "white"                 # the edge between adjacent bars (not a quantity)


def correlated_model(rng: np.random.Generator, D: int, sigma2: float, cos: float, norms=(2.0, 1.5)) -> LinearGaussian:
    """A LinearGaussian with Z = 2 whose columns of W have lengths `norms` and cosine `cos`, in a random D-dim plane.

    M = W^T W + sigma2 I then has off-diagonal norms[0] norms[1] cos, so p(z|x) = N(., sigma2 M^-1) is
    correlated (a diagonal q cannot match it) whenever cos != 0 (Tipping & Bishop 1999; docs/maths.md, "The linear-Gaussian model").
    """
    Q, _ = np.linalg.qr(rng.standard_normal((D, 2)))  # (D, 2), orthonormal columns
    a1, a2 = norms
    R = np.array([[a1, a2 * cos], [0.0, a2 * math.sqrt(1.0 - cos * cos)]])
    return LinearGaussian(Q @ R, rng.standard_normal(D), sigma2)


def correlation_gap(model: LinearGaussian) -> float:
    """1/2 [sum_j log M_jj - log|M|]: log p(x) - ELBO of the best diagonal q, the same for every x.

    From the linear-Gaussian posterior N(., sigma2 M^-1) (Tipping & Bishop 1999;
    docs/maths.md, "The best diagonal q and the correlation gap").
    """
    M = model.W.T @ model.W + model.sigma2 * np.eye(model.Z)
    return 0.5 * float(np.sum(np.log(np.diag(M))) - np.linalg.slogdet(M)[1])


def encoder_params(model: LinearGaussian, A, a, log_S) -> VAEParams:
    """Linear-VAE parameters (npvae.oracle.linear_vae layout) with q(z|x) = N(A x + a, diag(exp(log_S))) and the model's decoder."""
    D, Z = model.D, model.Z
    enc = Dense(np.concatenate([A.T, np.zeros((D, Z))], axis=1), np.concatenate([a, log_S]))  # (D, 2Z), (2Z,)
    return VAEParams((enc,), (Dense(model.W.T.copy(), model.b.copy()),))


def read_encoder(params: VAEParams, Z: int):
    """(A (Z, D), a (Z,), log_S (Z,)) of a linear encoder whose log-variance weights are zero."""
    enc = params.encoder[0]
    return enc.W[:, :Z].T, enc.b[:Z], enc.b[Z:]


def read_decoder(params: VAEParams, sigma2: float) -> LinearGaussian:
    """The LinearGaussian a linear VAE's decoder defines: W = dec.W^T, b = dec.b."""
    dec = params.decoder[0]
    return LinearGaussian(dec.W.T.copy(), dec.b.copy(), sigma2)


def kl_gauss(m0, S0, m1, S1) -> float:
    """KL(N(m0, S0) || N(m1, S1)) = 1/2 [tr(S1^-1 S0) + (m1-m0)^T S1^-1 (m1-m0) - n + log|S1| - log|S0|].

    docs/theory.md, section 4; docs/maths.md, "The KL between two Gaussians".
    """
    d = m1 - m0
    return 0.5 * float(np.trace(np.linalg.solve(S1, S0)) + d @ np.linalg.solve(S1, d) - len(m0)
                       + np.linalg.slogdet(S1)[1] - np.linalg.slogdet(S0)[1])


def entropy_gauss(S) -> float:
    """H(N(m, S)) = 1/2 log|2 pi e S|."""
    return 0.5 * float(S.shape[0] * math.log(2 * math.pi * math.e) + np.linalg.slogdet(S)[1])


def ellipse(mean, cov, n_sd: float = 2.0, n: int = 100):
    """Points (n, 2) on the n_sd-standard-deviation contour of a 2-D Gaussian."""
    t = np.linspace(0.0, 2.0 * np.pi, n)
    return mean + n_sd * np.stack([np.cos(t), np.sin(t)], axis=1) @ np.linalg.cholesky(cov).T


def mean_se(a, axis=0):
    """Mean and its standard error along `axis`."""
    a = np.asarray(a, dtype=np.float64)
    return a.mean(axis=axis), a.std(axis=axis, ddof=1) / math.sqrt(a.shape[axis])


def figure(width: float, height: float):
    """A Figure (inches) on its own Agg canvas: no pyplot, no global figure list, no window."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def save_png(fig, out_dir: Path, name: str) -> str:
    """Write fig to out_dir/name, drop its artists, and return the file name (relative to out_dir)."""
    try:
        atomic.write_figure(out_dir / name, fig)
    finally:
        fig.clear()
    return name


def style(ax, title: str | None = None, xlabel: str | None = None, ylabel: str | None = None, legend: bool = True):
    """The look every panel shares: a light grid, labels, a small legend."""
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title, fontsize=10)
    if xlabel:
        ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)
    if legend and ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)


def data_limits(*series, pad: float = 0.05, log: bool = False) -> tuple[float, float]:
    """(lo, hi) holding every finite value of every series, widened by `pad` of the span on each side (of log10 if log).

    Limits from the data of all curves, so that no curve runs off its panel; with log, values <= 0 are ignored.
    """
    v = np.concatenate([np.ravel(np.asarray(a, dtype=np.float64)) for a in series])
    v = v[np.isfinite(v) & (v > 0)] if log else v[np.isfinite(v)]
    if log:
        v = np.log10(v)
    lo, hi = float(v.min()), float(v.max())
    d = pad * (hi - lo) if hi > lo else 0.5
    lo, hi = lo - d, hi + d
    return (10.0**lo, 10.0**hi) if log else (lo, hi)


def legend_below(ax, ncol: int = 1):
    """The axes' legend under its tick labels and x label, outside the panel, so that it never covers a curve.

    Call it last: it is anchored to where the axes' decorations end when it is made.
    """
    below = ax.get_tightbbox(ax.figure.canvas.get_renderer()).y0  # display px: the bottom of the x label
    y = ax.transAxes.inverted().transform((0.0, below))[1]
    return ax.legend(fontsize=8, ncol=ncol, loc="upper center", bbox_to_anchor=(0.5, y), borderaxespad=0.3,
                     frameon=False)


def free_rect(ax, width: float, height: float, pad: float = 0.04):
    """A corner [x0, y0, width, height] of ax (axes fraction) that no line or band of ax enters, or None if none is free.

    For an inset (`ax.inset_axes(rect)`) that must not cover the panel's own curves; call it after the limits are set.
    """
    from matplotlib.path import Path as MplPath
    from matplotlib.transforms import Bbox

    to_axes = ax.transAxes.inverted()
    paths = [(to_axes.transform(line.get_transform().transform(line.get_xydata())), False) for line in ax.get_lines()]
    paths += [(to_axes.transform(coll.get_transform().transform(p.vertices)), True) for coll in ax.collections
              for p in coll.get_paths()]
    paths = [(MplPath(xy[np.all(np.isfinite(xy), axis=1)]), filled) for xy, filled in paths]
    lo_x, lo_y = pad + 0.1, pad + 0.07  # room inside the panel for the inset's own tick labels, left of it and below
    for x0, y0 in ((1 - pad - width, lo_y), (lo_x, lo_y), (1 - pad - width, 1 - pad - height), (lo_x, 1 - pad - height)):
        box = Bbox.from_bounds(x0 - 0.1, y0 - 0.07, width + 0.1 + pad / 2, height + 0.07 + pad / 2)  # with its tick labels
        if not any(len(path.vertices) and path.intersects_bbox(box, filled=filled) for path, filled in paths):
            return [x0, y0, width, height]
    return None


def text_colour(background) -> str:
    """Black or white, whichever reads better on `background` (a matplotlib colour): by its luminance."""
    from matplotlib.colors import to_rgb

    r, g, b = to_rgb(background)
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"


def to_jsonable(obj):
    """Arrays -> lists, numpy scalars -> floats/ints, non-finite floats -> None (strict JSON has no NaN)."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj


def write_json(path: Path, obj) -> None:
    atomic.write_json(path, to_jsonable(obj), allow_nan=False)
