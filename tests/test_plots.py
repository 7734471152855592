"""npvae.pictures.plots: every picture is a readable PNG, run_pictures writes the right set, bad inputs are refused.

The tiled grids are read back from the PNG, pixel by pixel: the gutters between tiles are thin and
regular, and each tile shows its image on the fixed grey scale (0 white, 1 black), checked against the
data and the model's own probabilities. Also pinned: the file format, that randomness comes only from
the Generator passed in, and that nothing global in matplotlib is touched.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import npvae
import npvae.store.data
from npvae.pictures import plots
from npvae.nn.layers import Dense

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def digits():
    return npvae.store.data.load("digits")


def tiny(Z=2, rng_seed=0):
    arch = npvae.Arch(64, (16,), Z, "tanh", npvae.Likelihood("bernoulli"))
    return arch, npvae.init_params(arch, np.random.default_rng(rng_seed))


def read_png(path, min_bytes=2000, min_side=50) -> np.ndarray:
    """Check the PNG signature and a non-trivial size; return the decoded image (rows, cols[, channels])."""
    from matplotlib.image import imread

    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert len(data) > min_bytes, f"{path} is only {len(data)} bytes"
    img = imread(path)
    assert img.ndim in (2, 3) and min(img.shape[:2]) >= min_side, img.shape
    return img


PAD_RGB = np.array([0xC2, 0xD0, 0xDD]) / 255  # the gutter colour, written out again (npvae/pictures/canvas.py)


def _runs(on) -> tuple[np.ndarray, np.ndarray]:
    """Starts and lengths of the runs of True in a 1-D boolean array."""
    d = np.diff(np.concatenate([[0], on.astype(int), [0]]))
    starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
    return starts, ends - starts


def read_grid(path, image_shape, nrows: int, ncols: int):
    """Read a grid of nrows >= 2 x ncols >= 3 tiles back from its PNG: darkness (nrows * ncols, rows, cols), gutter px, scale.

    The gutters are found by their colour; each tile is then sampled at the centre of each image pixel's
    square, and darkness = 1 - grey, so that 0 is white and 1 is black. Asserts that the gutters are
    regular: one width everywhere, one pitch along each axis, a whole number of screen px per image px.
    """
    rgb = read_png(path)[..., :3]
    pad = np.all(np.abs(rgb - PAD_RGB) < 1.5 / 255, axis=-1)
    cols, col_w = _runs(pad.sum(axis=0) >= 0.5 * pad.sum(axis=0).max())  # vertical gutters span the grid's height
    rows, row_w = _runs(pad.sum(axis=1) >= 0.5 * pad.sum(axis=1).max())
    assert len(cols) == ncols - 1 and len(rows) == nrows - 1, (cols, rows)
    widths = np.concatenate([col_w, row_w])
    assert np.all(widths == widths[0]), f"gutters of different widths: {widths}"
    gutter = int(widths[0])
    pitch_x, pitch_y = np.diff(cols), np.diff(rows)
    assert len(set(pitch_x)) <= 1 and len(set(pitch_y)) <= 1, (pitch_x, pitch_y)
    h, w = image_shape
    scale, rest = divmod(int(pitch_x[0]) - gutter, w)
    assert scale >= 1 and rest == 0 and all(pitch_y == scale * h + gutter), (pitch_x, pitch_y, gutter)
    y, x = rows[0] - scale * h, cols[0] - scale * w  # the grid's top and left edges
    tiles = []
    for r in range(nrows):
        for c in range(ncols):
            top, left = y + r * (scale * h + gutter), x + c * (scale * w + gutter)
            centres_y = top + scale * np.arange(h) + scale // 2
            centres_x = left + scale * np.arange(w) + scale // 2
            tiles.append(1.0 - rgb[np.ix_(centres_y, centres_x)].mean(axis=-1))
    return np.stack(tiles), gutter, scale


def graded(Z=2):
    """tiny(), with decoder logits held in about [-2.4, 2.4]: means p(x=1|z) in (0.05, 0.95), so a stretched scale would show."""
    arch, params = tiny(Z)
    *body, last = params.decoder
    last = Dense(0.1 * last.W, np.linspace(-2.0, 2.0, last.b.size))
    return arch, params._replace(decoder=(*body, last))


def probabilities(params, arch, z):
    """p(x_d = 1 | z) = sigmoid(decoder logits), by scipy: z (M, Z) -> (M, D)."""
    from scipy.special import expit

    return expit(npvae.vae.model.decode(params, arch, z)[0])


HISTORY = {"epoch": [1, 2, 3, 4], "train_bound": [-40.0, -30.0, -27.0, -26.0], "valid_bound": [-38.0, -31.0, -28.0, None],
           "kl": [8.0, 4.0, 3.0, 3.0], "recon": [-30.0, -27.0, -24.0, -23.0], "kl_weight": [0.3, 0.6, 1.0, 1.0]}


# ---- each picture ---------------------------------------------------------------------------------

def test_image_grid_grey_scale_white_is_zero_black_is_one(tmp_path):
    images = np.stack([np.zeros(64), np.ones(64), np.full(64, 0.5)])
    path = plots.image_grid(images, (8, 8), tmp_path / "grid.png", ncols=3, title="three")
    img = read_png(path, min_bytes=500)
    rgb = img[..., :3]
    assert np.any(np.all(rgb == 0.0, axis=-1)), "the all-ones image should give black pixels"
    assert np.any(np.all(np.abs(rgb - 0.5) < 0.01, axis=-1)), "0.5 should give mid-grey pixels"
    assert path == tmp_path / "grid.png"


def test_image_grid_partial_last_row(tmp_path, digits):
    read_png(plots.image_grid(digits.test[:13], (8, 8), tmp_path / "grid13.png", ncols=5))


def test_prior_samples_png_and_randomness_only_from_rng(tmp_path):
    arch, params = tiny()
    rng = np.random.default_rng(7)
    a = read_png(plots.prior_samples(params, arch, (8, 8), tmp_path / "a.png", rng, n=30))
    # The Generator advanced by exactly one (n, Z) standard-normal draw, and nothing else was random.
    ref = np.random.default_rng(7)
    ref.standard_normal((30, 2))
    assert rng.bit_generator.state == ref.bit_generator.state
    b = read_png(plots.prior_samples(params, arch, (8, 8), tmp_path / "b.png", np.random.default_rng(7), n=30))
    np.testing.assert_array_equal(a, b)


def test_prior_samples_show_the_decoder_means_with_thin_regular_gutters(tmp_path):
    arch, params = graded()
    path = plots.prior_samples(params, arch, (8, 8), tmp_path / "s.png", np.random.default_rng(3), n=100)
    tiles, gutter, scale = read_grid(path, (8, 8), 10, 10)
    assert gutter <= 2 and gutter / (8 * scale + gutter) < 0.05, (gutter, scale)  # thin: under 5% of the tile pitch
    p = probabilities(params, arch, np.random.default_rng(3).standard_normal((100, 2)))  # the same z as drawn
    # Fixed grey scale: darkness is p itself, to 8-bit rounding (the colour map's 256 levels, then the PNG's).
    np.testing.assert_allclose(tiles.reshape(100, 64), p, atol=2.5 / 255)


def test_reconstructions_show_binary_inputs_and_the_bernoulli_means_on_a_fixed_scale(tmp_path, digits):
    arch, params = graded()
    x = digits.test[:10]
    path = plots.reconstructions(params, arch, digits.test, (8, 8), tmp_path / "r.png", n=10)
    tiles, gutter, _ = read_grid(path, (8, 8), 2, 10)
    assert gutter <= 2
    inputs, means = tiles[:10].reshape(10, 64), tiles[10:].reshape(10, 64)
    # The input row: binary digits in pure white and pure black, pixel for pixel.
    np.testing.assert_allclose(inputs, x, atol=1 / 255)
    assert 0.3 < np.mean(inputs < 1 / 255) and 0.1 < np.mean(inputs > 1 - 1 / 255)
    # The mean row: p(x=1 | z = mu(x)) on the fixed [0, 1] scale. These p lie in (0.05, 0.95), so a colour
    # scale stretched to their range would be off by 0.05 or more somewhere.
    p = probabilities(params, arch, npvae.vae.model.encode(params, arch, x)[0])
    assert p.min() > 0.05 and p.max() < 0.95 and p.max() - p.min() > 0.5
    np.testing.assert_allclose(means, p, atol=2.5 / 255)


@pytest.mark.parametrize("n", [13, 1])  # n = 10: test_reconstructions_show_binary_inputs_...
def test_reconstructions(tmp_path, digits, n):
    arch, params = tiny()
    read_png(plots.reconstructions(params, arch, digits.test, (8, 8), tmp_path / "r.png", n=n))


def test_curves_of_a_single_epoch(tmp_path):
    # (the full history, with KL, reconstruction and warm-up, is drawn by test_run_pictures_z2_...)
    read_png(plots.curves({"epoch": [1], "train_bound": [-50.0], "valid_bound": [-51.0]}, tmp_path / "curves.png"))


def test_latent_manifold_tiles_the_means_at_the_grid_of_z(tmp_path):
    arch, params = graded()
    tiles, gutter, _ = read_grid(plots.latent_manifold(params, arch, (8, 8), tmp_path / "m.png", n=5, span=2.0), (8, 8), 5, 5)
    assert gutter <= 2
    g = np.linspace(-2.0, 2.0, 5)
    z = np.array([(z1, z2) for z2 in g[::-1] for z1 in g])  # row by row from the top: z2 falls down the picture
    np.testing.assert_allclose(tiles.reshape(25, 64), probabilities(params, arch, z), atol=2.5 / 255)


@pytest.mark.parametrize("labels", ["classes", "float"])  # labels=None: test_run_pictures_non_image_data...
def test_latent_scatter(tmp_path, digits, labels):
    arch, params = tiny()
    labels = digits.test_labels if labels == "classes" else np.linspace(0, 1, len(digits.test))
    read_png(plots.latent_scatter(params, arch, digits.test, labels, tmp_path / "s.png"))


# ---- the set for a run ----------------------------------------------------------------------------

def test_run_pictures_z2_writes_the_full_set_without_pyplot(tmp_path, digits):
    pyplot_before = "matplotlib.pyplot" in sys.modules  # (True only if some other test imported it)
    arch, params = tiny(Z=2)
    paths = plots.run_pictures(params, arch, digits, tmp_path / "run", np.random.default_rng(0), history=HISTORY)
    names = ["samples.png", "reconstructions.png", "curves.png", "manifold.png", "latent.png"]
    assert [p.name for p in paths] == names
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == sorted(names)
    for p in paths:
        read_png(p)
    assert pyplot_before or "matplotlib.pyplot" not in sys.modules, "drawing imported matplotlib.pyplot"


def test_run_pictures_z3_skips_the_latent_plane(tmp_path, digits, caplog):
    arch, params = tiny(Z=3)
    with caplog.at_level("INFO", logger="npvae.pictures.plots"):
        paths = plots.run_pictures(params, arch, digits, tmp_path, np.random.default_rng(0))
    assert [p.name for p in paths] == ["samples.png", "reconstructions.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reconstructions.png", "samples.png"]
    assert set(plots.skipped_pictures(arch, digits.image_shape)) == {"curves.png", "manifold.png", "latent.png"}
    assert "Z == 2" in caplog.text and "latent.png" in caplog.text


def test_run_pictures_non_image_data_skips_only_the_manifold(tmp_path):
    # synthetic data: image_shape (1, 16), Gaussian values, no labels -> heat strips and a one-colour scatter
    ds = npvae.store.data.load("synthetic")
    arch = npvae.Arch(16, (8,), 2, "tanh", npvae.Likelihood("gaussian-learned"))
    params = npvae.init_params(arch, np.random.default_rng(0))
    paths = plots.run_pictures(params, arch, ds, tmp_path, np.random.default_rng(0))
    assert [p.name for p in paths] == ["samples.png", "reconstructions.png", "latent.png"]
    for p in paths:
        read_png(p)
    assert "not images" in plots.skipped_pictures(arch, ds.image_shape)["manifold.png"]


# ---- bad inputs -----------------------------------------------------------------------------------

def test_bad_inputs_raise_value_error(tmp_path, digits):
    arch2, p2 = tiny(Z=2)
    arch3, p3 = tiny(Z=3)
    x, out = digits.test, tmp_path / "x.png"
    with pytest.raises(ValueError, match="Z == 2"):
        plots.latent_manifold(p3, arch3, (8, 8), out)
    with pytest.raises(ValueError, match="Z == 2"):
        plots.latent_scatter(p3, arch3, x, None, out)
    with pytest.raises(ValueError, match="D = 64"):
        plots.image_grid(x, (7, 7), out)
    with pytest.raises(ValueError, match="D = 64"):
        plots.prior_samples(p2, arch2, (4, 4), out, np.random.default_rng(0))
    with pytest.raises(ValueError, match="x must have shape"):
        plots.reconstructions(p2, arch2, x[:, :49], (7, 7), out)
    with pytest.raises(ValueError, match="float32 or float64"):
        plots.image_grid(x.astype(np.uint8), (8, 8), out)
    with pytest.raises(ValueError, match="not an image"):
        plots.latent_manifold(p2, arch2, (1, 64), out)
    with pytest.raises(ValueError, match="labels"):
        plots.latent_scatter(p2, arch2, x, digits.test_labels[:5], out)
    with pytest.raises(ValueError, match="Generator"):
        plots.prior_samples(p2, arch2, (8, 8), out, 0)
    with pytest.raises(ValueError, match=r"\.png"):
        plots.image_grid(x, (8, 8), tmp_path / "x.jpg")
    with pytest.raises(ValueError, match="valid_bound"):
        plots.curves({"epoch": [1], "train_bound": [1.0]}, out)
    with pytest.raises(ValueError, match="entries"):
        plots.curves({"epoch": [1, 2], "train_bound": [1.0], "valid_bound": [1.0, 2.0]}, out)
    with pytest.raises(ValueError, match="dtype"):
        plots.reconstructions(p2, arch2, x.astype(np.float32), (8, 8), out)
    assert not out.exists()


# ---- nothing global -------------------------------------------------------------------------------

def test_importing_npvae_plots_imports_no_matplotlib():
    code = "import sys, npvae, npvae.pictures.plots; print(sorted(m for m in sys.modules if m.startswith('matplotlib')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout
