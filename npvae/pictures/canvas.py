"""Drawing helpers for npvae.pictures.plots: boundary checks, figure and axes set-up, tiling images into grids.

Matplotlib is imported inside the functions (Figure + FigureCanvasAgg, never pyplot), so importing this
module selects no backend and changes no global state. Shapes: images (M, D) with D = rows * cols.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .. import _validate
from ..store.atomic import write_figure
from ..likelihoods import mean as decoder_mean
from ..vae.model import Arch, VAEParams
from ..vae.models import decode_x
from ..vae.inputs import check_x

DPI = 100
_PAD_COLOUR = "#c2d0dd"  # the lines between tiles: neither white (0) nor black (1)
GUTTER_PX = 2  # their width in screen pixels, the same in every grid: thin enough not to compete with the tiles
_STRIP_CMAP = "viridis"

# ---- checks at the boundary --------------------------------------------------------------------

def _check_image_shape(image_shape, D: int | None = None) -> tuple[int, int]:
    """(rows, cols) of positive ints whose product is D."""
    if not isinstance(image_shape, (tuple, list)) or len(image_shape) != 2:
        raise ValueError(f"image_shape must be (rows, cols), got {image_shape!r}")
    shape = tuple(_validate.positive_int("image_shape entry", s) for s in image_shape)
    if D is not None and math.prod(shape) != D:
        raise ValueError(f"image_shape {shape} holds {math.prod(shape)} pixels but the data have D = {D}")
    return shape


def _check_png(path) -> Path:
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"path must end in .png (a PNG is written), got {str(path)!r}")
    return path


def _check_x(params: VAEParams, arch: Arch, x) -> None:
    """params match arch; x: (N, D) float, finite, of the parameters' dtype (any values: pictures show grey data too)."""
    check_x(params, arch, x)


def _check_z2(arch: Arch, what: str) -> None:
    if arch.FAMILY != "one-layer":
        raise ValueError(f"{what} draws the latent plane of a one-stochastic-layer model with Z == 2; {arch.spec} has {arch.L} layers")
    if arch.latent_dim != 2:
        raise ValueError(f"{what} draws the latent plane and needs Z == 2, but this model has Z = {arch.latent_dim}")


def is_image(image_shape) -> bool:
    """Whether data of this shape are drawn as images (both sides > 1) rather than as heat strips."""
    return min(image_shape) > 1


# ---- the model, as pictures need it ------------------------------------------------------------

def _means(params: VAEParams, arch: Arch, z) -> np.ndarray:
    """Decoder means E[x|z]: z (M, Z) -> (M, D); no checking."""
    return decoder_mean(arch.likelihood, decode_x(params, arch, z))


# ---- drawing -----------------------------------------------------------------------------------

def _figure(width: float, height: float):
    """A Figure (inches) on its own Agg canvas: no pyplot, no global figure list, no window."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _axes(fig, left: float, bottom: float, width: float, height: float, **kw):
    """Axes at a rectangle in inches from the lower left: a fixed layout, as a layout engine would double the drawing time."""
    W, H = fig.get_size_inches()
    return fig.add_axes((left / W, bottom / H, width / W, height / H), **kw)


def _scale(image_shape, nrows: int, ncols: int) -> int:
    """Screen pixels per image pixel in a grid of nrows x ncols tiles: ~600 px wide, <= 2000 px tall, a tile <= 120 px.

    A whole number, so every image pixel is the same square of screen pixels (no resampling seams).
    """
    h, w = image_shape
    return max(1, min(round(600 / (ncols * w)), 2000 // (nrows * h), 120 // max(h, w)))


def _grid_axes(tiled, title: str | None, margins=(10, 10, 30, 10), min_width=360, fontsize=10):
    """A figure whose axes show `tiled` (already at screen resolution, see `_tile`) one screen pixel per array pixel.

    margins (l, b, t, r) in px; the figure is at least min_width px wide, for the title, which is centred
    on the figure whatever the margins.
    """
    H, W = tiled.shape[:2]
    left, bottom, top, right = margins
    widen = max(0, min_width - (left + W + right))  # room for the title above a narrow grid
    left, right = left + widen // 2, right + widen - widen // 2
    w_px, h_px = left + W + right, bottom + H + top
    fig = _figure(w_px / DPI, h_px / DPI)
    if title:
        fig.text(0.5, 1 - 6 / h_px, title, ha="center", va="top", fontsize=fontsize)
    return fig, _axes(fig, left / DPI, bottom / DPI, W / DPI, H / DPI)


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        write_figure(path, fig)
    finally:
        fig.clear()  # drop the artists (and their arrays) now; nothing global refers to the figure
    return path


def _tile_centres(count: int, size: int) -> list[float]:
    """Screen-pixel coordinate of the centre of each of `count` tiles `size` px wide along one axis of `_tile`'s output."""
    return [i * (size + GUTTER_PX) + (size - 1) / 2 for i in range(count)]


def _pad_rows(a, m: int) -> np.ndarray:
    """(k, D) -> (m, D) with NaN rows (blank tiles) after the k given."""
    return np.concatenate([a, np.full((m - a.shape[0], a.shape[1]), np.nan)])


def _tile(images, image_shape, ncols: int, scale: int) -> np.ndarray:
    """(M, D) -> RGBA (rows, cols, 4) at screen resolution: tiles of scale x scale px per image pixel, ncols to a row.

    The gutters are GUTTER_PX screen pixels whatever the scale: tiling first and enlarging after would
    thicken them with the tiles. Grey scale 0 -> white, 1 -> black, values outside [0, 1] saturate (a fixed
    scale: never stretched to the data's range); an all-NaN image is a blank, transparent cell.
    """
    import matplotlib

    M = images.shape[0]
    h, w = image_shape[0] * scale, image_shape[1] * scale
    g = GUTTER_PX
    nrows = -(-M // ncols)
    grey = np.full((nrows * (h + g) - g, ncols * (w + g) - g), np.nan)  # NaN: a gutter
    blank = np.zeros(grey.shape, dtype=bool)
    for i in range(nrows * ncols):
        r, c = divmod(i, ncols)
        top, left = r * (h + g), c * (w + g)
        if i < M and not np.all(np.isnan(images[i])):
            img = images[i].reshape(image_shape)
            grey[top : top + h, left : left + w] = np.repeat(np.repeat(img, scale, axis=0), scale, axis=1)
        else:  # the cell and the gutters above and left of it
            blank[max(top - g, 0) : top + h, max(left - g, 0) : left + w] = True
    cmap = matplotlib.colormaps["gray_r"].with_extremes(bad=_PAD_COLOUR)
    rgba = cmap(grey)  # below 0 and above 1 take the end colours (the colormap's under/over); NaN the gutter colour
    rgba[blank] = 0.0
    return rgba


def _strip(ax, rows, vmin: float, vmax: float, ylabel: str):
    """Heat strip: one data point a row, dimension d along x."""
    im = ax.imshow(rows, cmap=_STRIP_CMAP, vmin=vmin, vmax=vmax, aspect="auto", interpolation="nearest")
    ax.set_xlabel("dimension d")
    ax.set_ylabel(ylabel)
    return im


def _draw_images(images, image_shape, path: Path, ncols: int, title: str | None) -> Path:
    """Private core of image_grid: a grey tiled grid for images, a heat strip otherwise; no checking."""
    if is_image(image_shape):
        ncols = min(ncols, images.shape[0])
        tiled = _tile(images, image_shape, ncols, _scale(image_shape, -(-images.shape[0] // ncols), ncols))
        fig, ax = _grid_axes(tiled, title)
        ax.imshow(tiled, interpolation="nearest")
        ax.set_axis_off()
    else:
        h = float(np.clip(0.12 * images.shape[0], 1.6, 7.1))  # axes height, inches
        fig = _figure(7.0, h + 0.9)
        ax = _axes(fig, 0.8, 0.55, 4.9, h)
        im = _strip(ax, images, float(images.min()), float(images.max()), "data point")
        fig.colorbar(im, cax=_axes(fig, 5.85, 0.55, 0.18, h), label="value")
        if title:
            ax.set_title(title, fontsize=10)
    return _save(fig, path)
