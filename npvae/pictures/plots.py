"""PNG pictures of what a run learned: prior samples, reconstructions, learning curves and the 2-D latent space.

Every function takes an output path ending in .png, writes one PNG and returns its Path. Matplotlib is
imported inside the functions and driven through `Figure` + `FigureCanvasAgg`, never pyplot, so
importing npvae selects no backend, changes no global state and opens no window.

Images are drawn on a fixed grey scale, 0 white and 1 black (ink on paper); values outside [0, 1], such
as a Gaussian decoder's means, show saturated rather than being rescaled, so pictures of different
runs compare. Tiles are enlarged by a whole number of screen pixels per image pixel and split by
2-px gutters. reconstructions.png puts each input over the decoder's mean (for Bernoulli pixels the
probability p(x_d = 1 | z = mu(x)), not a sample), with a bar showing the grey scale. Data that are
not images (an image_shape with a side of 1, such as `synthetic`'s (1, D)) are drawn as heat strips
instead: one data point a row, on a colour scale with a colourbar.
`latent_manifold` refuses such data (a grid of strips shows nothing) and `run_pictures` skips it,
giving the reason in `skipped_pictures` and the log. Shapes: images, x (M, D) with D = rows * cols.
"""


from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .. import _validate
from .canvas import (  # noqa: F401  (is_image is public here too)
    is_image,
    GUTTER_PX,
    _STRIP_CMAP,
    _axes,
    _check_image_shape,
    _check_png,
    _check_x,
    _check_z2,
    _draw_images,
    _figure,
    _grid_axes,
    _means,
    _pad_rows,
    _save,
    _scale,
    _strip,
    _tile,
    _tile_centres,
)
from ..vae.model import Arch, VAEParams, encode
from ..store.data import as_float, subset_indices
from ..vae.models import check_params, encoder_mean, prior_latent

log = logging.getLogger(__name__)

# ---- public pictures ---------------------------------------------------------------------------

def image_grid(images, image_shape, path, *, ncols: int = 10, title: str | None = None) -> Path:
    """Tile images (M, D), values in [0, 1], into a grey-scale grid of ncols columns (heat strips for non-images)."""
    _validate.float_array("images", images, 2)
    image_shape = _check_image_shape(image_shape, images.shape[1])
    ncols = _validate.positive_int("ncols", ncols)
    if images.shape[0] == 0:
        raise ValueError("images is empty: nothing to draw")
    return _draw_images(images, image_shape, _check_png(path), ncols, title)


def prior_samples(params: VAEParams, arch: Arch, image_shape, path, rng: np.random.Generator, *, n: int = 100) -> Path:
    """Decoder means E[x|z] at n draws z ~ N(0, I) from rng, in a grid: what the generative model imagines."""
    dtype = check_params(arch, params)
    image_shape = _check_image_shape(image_shape, arch.data_dim)
    _validate.generator("rng", rng)
    n = _validate.positive_int("n", n)
    path = _check_png(path)
    z, how = prior_latent(params, arch, rng, n, dtype)  # (n, Z), z1 for two stochastic layers
    title = f"decoder means E[x|z] at {n} draw{'s' * (n > 1)} {how}"
    return _draw_images(_means(params, arch, z), image_shape, path, 10, title)


def _mean_name(arch: Arch) -> str:
    """What the decoder's mean is, in words: a probability for Bernoulli pixels, an expectation otherwise."""
    return "p(x=1 | z=mu(x))" if arch.likelihood.name == "bernoulli" else "E[x | z=mu(x)]"


def reconstructions(params: VAEParams, arch: Arch, x, image_shape, path, *, n: int = 10) -> Path:
    """Data x[:n] above the decoder's means at z = mu(x), the encoder mean: for Bernoulli pixels p(x_d = 1 | z)."""
    _check_x(params, arch, x)
    image_shape = _check_image_shape(image_shape, arch.data_dim)
    n = _validate.positive_int("n", n)
    path = _check_png(path)
    x = x[:n]
    mu = encoder_mean(params, arch, x)  # (n, Z)
    recon = _means(params, arch, mu)  # (n, D)
    if not is_image(image_shape):
        return _reconstruction_strips(x, recon, path, arch)
    ncols = min(10, x.shape[0])
    # Blocks of ncols: a row of data over its row of means; a short last block is padded
    # with blank tiles so that each mean stays under its data point.
    pairs = [np.concatenate([_pad_rows(a[i : i + ncols], ncols) for a in (x, recon)])
             for i in range(0, x.shape[0], ncols)]
    scale = _scale(image_shape, 2 * len(pairs), ncols)
    tiled = _tile(np.concatenate(pairs), image_shape, ncols, scale)
    title = f"input x, and under it the decoder mean {_mean_name(arch)} (not a sample)"
    fig, ax = _grid_axes(tiled, title, margins=(115, 8, 26, 75), min_width=560, fontsize=9)
    ax.imshow(tiled, interpolation="nearest")
    centres = _tile_centres(2 * len(pairs), image_shape[0] * scale)
    ax.set_yticks(centres, ["input x", f"decoder mean\n{_mean_name(arch)}"] * len(pairs), fontsize=8)
    ax.set_xticks([])
    ax.tick_params(length=0)
    for s in ax.spines.values():
        s.set_visible(False)
    _grey_scale_bar(fig, ax)
    return _save(fig, path)


def _grey_scale_bar(fig, ax) -> None:
    """A colour bar right of ax showing the fixed grey scale of `_tile`: 0 white, 1 black, whatever the data."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    W, H = fig.get_size_inches()
    box = ax.get_position()  # figure fractions
    cax = _axes(fig, (box.x1 * W) + 0.12, box.y0 * H, 0.12, box.height * H)
    bar = fig.colorbar(ScalarMappable(Normalize(0.0, 1.0), "gray_r"), cax=cax, ticks=[0, 0.5, 1])
    bar.ax.tick_params(labelsize=8)
    bar.outline.set_linewidth(0.5)


def _reconstruction_strips(x, recon, path: Path, arch: Arch) -> Path:
    """Non-image data: heat strips of x and the decoder means on one shared colour scale, [0, 1] for Bernoulli."""
    if arch.likelihood.name == "bernoulli":  # probabilities: a fixed scale, so a grey 0.5 never looks like a 1
        vmin, vmax = 0.0, 1.0
    else:
        vmin, vmax = float(min(x.min(), recon.min())), float(max(x.max(), recon.max()))
    h = float(np.clip(0.25 * x.shape[0], 1.5, 5.0))  # each panel's height, inches
    fig = _figure(7.0, 2 * h + 1.3)
    lower = _axes(fig, 0.8, 0.55, 4.9, h)
    upper = _axes(fig, 0.8, 0.95 + h, 4.9, h, sharex=lower)
    for ax, rows, name in ((upper, x, "data x"), (lower, recon, f"decoder mean {_mean_name(arch)}")):
        im = _strip(ax, rows, vmin, vmax, "data point")
        ax.set_title(name, fontsize=10)
    upper.set_xlabel("")
    upper.tick_params(labelbottom=False)
    fig.colorbar(im, cax=_axes(fig, 5.85, 0.55, 0.18, 2 * h + 0.4), label="value")
    return _save(fig, path)


def _series(history: dict, key: str, n: int) -> np.ndarray:
    """history[key] as a float array of length n; None (a value never computed) becomes NaN, a gap in the line."""
    v = history[key]
    try:
        a = np.array([np.nan if e is None else e for e in v], dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"history[{key!r}] must be a list of numbers, got {v!r}") from None
    if a.shape != (n,):
        raise ValueError(f"history[{key!r}] has {a.size} entries but history['epoch'] has {n}")
    return a


def curves(history: dict, path, *, title: str | None = None) -> Path:
    """The train and valid bound against epoch (nats per data point); KL and reconstruction terms below if given.

    history: {"epoch", "train_bound", "valid_bound"} lists of one length; optional "kl", "recon" (plotted)
    and "kl_weight" (epochs with beta < 1 are shaded: there the train value is a warm-up objective, not a bound).
    """
    if not isinstance(history, dict):
        raise ValueError(f"history must be a dict of lists, got {type(history).__name__}")
    missing = [k for k in ("epoch", "train_bound", "valid_bound") if k not in history]
    if missing:
        raise ValueError(f"history lacks {', '.join(map(repr, missing))}; it needs 'epoch', 'train_bound' and 'valid_bound'")
    path = _check_png(path)
    n = len(history["epoch"])
    if n == 0:
        raise ValueError("history is empty: no epoch to plot")
    epoch = _series(history, "epoch", n)
    if not np.all(np.isfinite(epoch)):
        raise ValueError(f"history['epoch'] must hold finite numbers, got {history['epoch']!r}")
    from matplotlib.ticker import MaxNLocator

    terms = [k for k in ("recon", "kl") if k in history]
    marker = "o" if n <= 30 else None  # a short run's points stay visible, even a single one

    lower = 2.0 + 0.15 if terms else 0.0  # inches for the panel of terms and the gap above it
    fig = _figure(6.5, 0.55 + lower + 3.3 + 0.35)
    ax = _axes(fig, 1.0, 0.55 + lower, 5.25, 3.3)
    axes = [ax, _axes(fig, 1.0, 0.55, 5.25, 2.0, sharex=ax)] if terms else [ax]
    for key, label in (("train_bound", "train (mean over the epoch's batches)"), ("valid_bound", "valid (after the epoch)")):
        ax.plot(epoch, _series(history, key, n), marker=marker, ms=3, label=label)
    ax.set_ylabel("bound on log p(x)\n(nats per data point)")
    ax.set_title(title or "learning curves (higher is better)", fontsize=10)
    if "kl_weight" in history:
        beta = _series(history, "kl_weight", n)
        if np.any(beta < 1):
            last = epoch[np.flatnonzero(beta < 1)[-1]]
            for a in axes:
                a.axvspan(epoch[0] - 0.5, last + 0.5, color="0.9", zorder=0)
            ax.plot([], [], lw=6, color="0.9", label="KL warm-up (beta < 1)")
    if terms:
        names = {"recon": "E_q[log p(x|z)]", "kl": "KL(q(z|x) || p(z))"}
        for key in terms:
            axes[1].plot(epoch, _series(history, key, n), marker=marker, ms=3, label=names[key])
        axes[1].set_ylabel("nats per data point")
        axes[1].legend(fontsize=8)
    for a in axes:
        a.grid(alpha=0.3)
    axes[-1].set_xlabel("epoch")
    if terms:
        ax.tick_params(labelbottom=False)
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    axes[-1].set_xlim(epoch.min() - 0.5, epoch.max() + 0.5)
    ax.legend(fontsize=8)
    return _save(fig, path)


def latent_manifold(params: VAEParams, arch: Arch, image_shape, path, *, n: int = 15, span: float = 3.0) -> Path:
    """Z == 2 only: decoder means at an n x n grid of z on [-span, span]^2, tiled with z1 across and z2 up."""
    dtype = check_params(arch, params)
    _check_z2(arch, "latent_manifold")
    image_shape = _check_image_shape(image_shape, arch.data_dim)
    if not is_image(image_shape):
        raise ValueError(f"latent_manifold tiles images, but image_shape {image_shape} is not an image (a side is 1)")
    n = _validate.positive_int("n", n)
    if n < 2:
        raise ValueError(f"n must be >= 2 (grid points per axis), got {n}")
    span = _validate.positive_scalar("span", span)
    path = _check_png(path)
    grid = np.linspace(-span, span, n, dtype=dtype)
    z1, z2 = np.meshgrid(grid, grid[::-1])  # row 0 at the top is the largest z2
    z = np.stack([z1.ravel(), z2.ravel()], axis=1)  # (n * n, 2), row by row
    scale = _scale(image_shape, n, n)
    tiled = _tile(_means(params, arch, z), image_shape, n, scale)
    # extent puts each tile's centre at its z: one tile plus its gutter (screen pixels) is one grid step
    h, w = image_shape[0] * scale, image_shape[1] * scale
    step = 2 * span / (n - 1)
    half_w, half_h = (w / 2) * step / (w + GUTTER_PX), (h / 2) * step / (h + GUTTER_PX)
    extent = (-span - half_w, span + half_w, -span - half_h, span + half_h)
    title = f"decoder means E[x|z] on a {n} x {n} grid of z in [-{span:g}, {span:g}]^2"
    fig, ax = _grid_axes(tiled, title, margins=(55, 50, 30, 20))
    ax.imshow(tiled, interpolation="nearest", extent=extent)
    ax.set_xlabel("z1")
    ax.set_ylabel("z2")
    return _save(fig, path)


def latent_scatter(params: VAEParams, arch: Arch, x, labels, path) -> Path:
    """Z == 2 only: the encoder means mu(x) of x (N, D), coloured by labels (N,) (one colour when labels is None)."""
    _check_x(params, arch, x)
    _check_z2(arch, "latent_scatter")
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (x.shape[0],) or not np.issubdtype(labels.dtype, np.number):
            raise ValueError(f"labels must be numbers of shape ({x.shape[0]},), got {labels.dtype} {labels.shape}")
    path = _check_png(path)
    mu, _, _ = encode(params, arch, x)  # (N, 2)
    size = float(np.clip(4000 / x.shape[0], 1.0, 16.0))
    fig = _figure(6.5, 5.6)
    ax = _axes(fig, 0.8, 0.55, 4.6, 4.7)
    if labels is None:
        ax.scatter(mu[:, 0], mu[:, 1], s=size, alpha=0.7, lw=0)
    elif np.issubdtype(labels.dtype, np.integer) and np.unique(labels).size <= 20:
        import matplotlib

        classes = np.unique(labels)
        cmap = matplotlib.colormaps["tab10" if classes.size <= 10 else "tab20"]
        for i, c in enumerate(classes):
            m = labels == c
            ax.scatter(mu[m, 0], mu[m, 1], s=size, color=cmap(i), alpha=0.8, lw=0, label=str(c))
        ax.legend(title="label", fontsize=8, markerscale=max(1.0, 20 / size) ** 0.5,
                  loc="center left", bbox_to_anchor=(1.01, 0.5))
    else:
        sc = ax.scatter(mu[:, 0], mu[:, 1], c=labels, s=size, cmap=_STRIP_CMAP, alpha=0.8, lw=0)
        fig.colorbar(sc, cax=_axes(fig, 5.65, 0.55, 0.18, 4.7), label="label")
    ax.set_aspect("equal", adjustable="datalim")
    ax.grid(alpha=0.3)
    ax.set_xlabel("z1 (encoder mean)")
    ax.set_ylabel("z2 (encoder mean)")
    ax.set_title(f"encoder means mu(x) of {x.shape[0]} data points", fontsize=10)
    return _save(fig, path)


# ---- a run's set of pictures -------------------------------------------------------------------

# The pictures run_pictures draws into a run directory, in its order (skipped_pictures says which it leaves out).
RUN_PICTURES = ("samples.png", "reconstructions.png", "curves.png", "manifold.png", "latent.png")


def skipped_pictures(arch: Arch, image_shape, history: dict | None = None) -> dict[str, str]:
    """File name -> why run_pictures does not draw it, for this model, data shape and history."""
    reasons = {}
    if history is None:
        reasons["curves.png"] = "no training history given"
    if arch.FAMILY != "one-layer":
        reasons["manifold.png"] = reasons["latent.png"] = "the latent plane is drawn for one stochastic layer with Z == 2"
    elif arch.latent_dim != 2:
        why = f"the latent plane is drawn only for Z == 2; this model has Z = {arch.latent_dim}"
        reasons["manifold.png"] = reasons["latent.png"] = why
    elif not is_image(image_shape):
        reasons["manifold.png"] = f"the data are not images (image_shape {tuple(image_shape)}), so there is nothing to tile"
    return reasons


def run_pictures(params: VAEParams, arch: Arch, dataset, run_dir, rng: np.random.Generator,
                 history: dict | None = None) -> list[Path]:
    """Write a run's pictures into run_dir and return their paths, in this order:

    samples.png (100 prior samples, z from rng), reconstructions.png (10 test points, drawn next from rng, stratified by class
    where there are labels),
    curves.png (when a history is given), manifold.png and latent.png (test split, coloured by its
    labels; Z == 2 only, and manifold.png for image data only). Each picture left out is logged
    (logger 'npvae.pictures.plots', level INFO) with the reason `skipped_pictures` gives.
    """
    image_shape = _check_image_shape(dataset.image_shape, arch.data_dim)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    skipped = skipped_pictures(arch, image_shape, history)
    x = as_float(dataset.test, dataset.dtype)  # the test split, cast once if compact (npvae.store.data)
    paths = [prior_samples(params, arch, image_shape, run_dir / "samples.png", rng)]
    # Ten test points drawn after the samples' z, stratified by class where there are labels: a prefix of a split
    # is not a sample of it (binarised MNIST's test split starts with a thousand zeros).
    shown = subset_indices(min(10, x.shape[0]), x.shape[0], rng, dataset.test_labels)
    paths.append(reconstructions(params, arch, x[shown], image_shape, run_dir / "reconstructions.png"))
    if "curves.png" not in skipped:
        paths.append(curves(history, run_dir / "curves.png"))
    if "manifold.png" not in skipped:
        paths.append(latent_manifold(params, arch, image_shape, run_dir / "manifold.png"))
    if "latent.png" not in skipped:
        paths.append(latent_scatter(params, arch, x, dataset.test_labels, run_dir / "latent.png"))
    for name, why in skipped.items():
        log.info("%s: not drawn: %s", run_dir / name, why)
    return paths
