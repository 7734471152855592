"""`npvae explain`: each experiment in quick mode, its numbers checked against exact quantities computed HERE.

The references are independent of the experiments' code paths: scipy densities, Gauss-Hermite quadrature
(exact for the polynomials involved), sigma points (exact for expectations of quadratics under a Gaussian),
pPCA's eigenvalue formula, and closed forms written out again in the test. Every experiment runs once per
module (quick mode, seed 0) and the tests read the JSON it wrote.
"""

import json
import math
import re

import numpy as np
import pytest
from numpy.polynomial.hermite_e import hermegauss
from scipy import stats

from conftest import REPO, SHARED_DATA
from npvae import LinearGaussian
from npvae.explain import TOPICS, run

_RESULTS = {}


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    """topic -> (the JSON the run wrote, out_dir); each topic runs once, on first use."""

    def get(topic):
        if topic not in _RESULTS:
            out = tmp_path_factory.mktemp(topic)
            returned = run(topic, out, quick=True, seed=0, data_dir=SHARED_DATA)
            written = json.loads((out / f"{topic}.json").read_text())
            assert written == returned  # the dict returned is the JSON written
            _RESULTS[topic] = (written, out)
        return _RESULTS[topic]

    return get


def _model(n) -> LinearGaussian:
    return LinearGaussian(np.array(n["model"]["W"]), np.array(n["model"]["b"]), n["model"]["sigma2"])


def _M(W, s2):
    return W.T @ W + s2 * np.eye(W.shape[1])


def _diagonal_gap(W, s2):
    """1/2 [sum_j log M_jj - log|M|], written out again (Tipping & Bishop 1999; docs/maths.md, "The linear-Gaussian model")."""
    M = _M(W, s2)
    return 0.5 * (np.log(np.diag(M)).sum() - np.linalg.slogdet(M)[1])


# ---- every topic ---------------------------------------------------------------------------------

@pytest.mark.parametrize("topic", TOPICS)
def test_outputs_exist_and_pictures_are_valid_pngs(result, topic):
    from PIL import Image

    r, out = result(topic)
    assert r["files"][-1] == f"{topic}.json" and len(r["files"]) >= 2
    json.loads((out / f"{topic}.json").read_text(), parse_constant=lambda s: pytest.fail(f"non-strict JSON: {s}"))
    for name in r["files"][:-1]:
        with Image.open(out / name) as im:
            assert im.format == "PNG" and im.size[0] >= 800 and im.size[1] >= 300
            pixels = np.asarray(im.convert("L"))
        assert pixels.std() > 10  # something was drawn


class _Markers:
    """Markers without a line between them: a box is covered only where a marker's own extent (hx, hy px) reaches."""

    def __init__(self, xy, hx: float, hy: float):
        self.vertices, self.hx, self.hy = xy, hx, hy

    def intersects_bbox(self, box, filled=True) -> bool:
        x, y = self.vertices[:, 0], self.vertices[:, 1]
        return bool(np.any((x + self.hx >= box.x0) & (x - self.hx <= box.x1) & (y + self.hy >= box.y0) & (y - self.hy <= box.y1)))


def _marker_half_extent(line) -> tuple[float, float]:
    """Half the width and height in display px of one of a line's markers, its edge included."""
    from matplotlib.markers import MarkerStyle

    style = MarkerStyle(line.get_marker())
    ext = style.get_path().get_extents(style.get_transform())  # for a marker size of 1 point
    px = line.figure.dpi / 72
    edge = line.get_markeredgewidth() * px / 2
    return (max(abs(ext.x0), abs(ext.x1)) * line.get_markersize() * px + edge,
            max(abs(ext.y0), abs(ext.y1)) * line.get_markersize() * px + edge)


def _path(xy, filled):
    from matplotlib.path import Path as MplPath

    return xy if isinstance(xy, _Markers) else MplPath(xy)


def _display_paths(ax) -> list:
    """(name, vertices in display px, filled) for every curve (Line2D; markers alone as _Markers), band or error bar
    (collection) and bar or span (patch) drawn in ax."""
    out = []
    for line in ax.get_lines():
        xy = line.get_transform().transform(line.get_xydata())
        xy = xy[np.all(np.isfinite(xy), axis=1)]
        if len(xy) and line.get_linestyle() in ("None", "", " ", "none"):
            out.append((f"markers {line.get_label()!r}", _Markers(xy, *_marker_half_extent(line)), False))
        elif len(xy):  # (an empty line is a legend proxy)
            out.append((f"line {line.get_label()!r}", xy, False))
    for coll in ax.collections:
        for path in coll.get_paths():
            v = coll.get_transform().transform(path.vertices)
            v = v[np.all(np.isfinite(v), axis=1)]
            if len(v):
                out.append((f"band {coll.get_label()!r}", v, True))
    for patch in ax.patches:
        v = patch.get_transform().transform(patch.get_path().vertices)
        out.append((f"patch {patch.get_label()!r}", v[np.all(np.isfinite(v), axis=1)], True))
    return out


def _inside(inner, outer, tol: float = 1.0) -> bool:
    return (inner.x0 >= outer.x0 - tol and inner.x1 <= outer.x1 + tol and inner.y0 >= outer.y0 - tol
            and inner.y1 <= outer.y1 + tol)


def _panels(fig) -> list:
    """(name, axes, parent or None) for every panel of fig and every inset (child axes) of a panel."""
    out = []
    for i, ax in enumerate(fig.axes):
        out.append((f"panel {i}", ax, None))
        out += [(f"panel {i}'s inset {j}", child, ax) for j, child in enumerate(ax.child_axes)]
    return out


def _text_box(t, renderer):
    """The extent of a text's own glyphs (an annotation's arrow left out)."""
    from matplotlib.text import Text

    return Text.get_window_extent(t, renderer)


def check_panels(fig) -> None:
    """After a draw, the layout rules of every explain figure, each of which a reader would see broken:
    - every curve, band, error bar and bar lies inside the limits of its panel (none cropped);
    - no legend covers a curve, band or bar of any panel, another panel, another legend or an axis' labels, or leaves
      the figure;
    - an inset covers no curve of its panel and stays inside it;
    - every text placed in a panel stays inside it, covers no curve, overlaps no other text, and a text written on
      a bar fits inside that bar;
    - titles, axis labels and tick labels stay inside the figure, and no two titles overlap."""

    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    panels = _panels(fig)
    paths = {id(ax): _display_paths(ax) for _, ax, _ in panels}
    legends = []
    for name, ax, parent in panels:
        box = ax.bbox
        for what, xy, filled in paths[id(ax)]:
            v = xy.vertices if isinstance(xy, _Markers) else xy
            lo, hi = v.min(axis=0), v.max(axis=0)
            assert lo[0] >= box.x0 - 1 and hi[0] <= box.x1 + 1 and lo[1] >= box.y0 - 1 and hi[1] <= box.y1 + 1, \
                f"{name}: {what} runs off the panel"
        if parent is not None:
            ib = ax.get_tightbbox(renderer)
            assert _inside(ib, parent.bbox), f"{name} leaves its panel"
            for what, xy, filled in paths[id(parent)]:
                assert not _path(xy, filled).intersects_bbox(ib, filled=filled), f"{name} covers {what}"
        legend = ax.get_legend()
        if legend is not None:
            lb = legend.get_window_extent(renderer)
            assert _inside(lb, fig.bbox, tol=0), f"{name}: the legend leaves the figure"
            for other, o_ax, _ in panels:
                for what, xy, filled in paths[id(o_ax)]:
                    assert not _path(xy, filled).intersects_bbox(lb, filled=filled), f"{name}: the legend covers {other}'s {what}"
                if o_ax is not ax and o_ax not in ax.child_axes:
                    assert not lb.overlaps(o_ax.bbox), f"{name}: the legend covers {other}"
                for axis in (o_ax.xaxis, o_ax.yaxis):
                    assert not lb.overlaps(axis.get_tightbbox(renderer)), f"{name}: the legend covers {other}'s axis labels"
            for other, ob in legends:
                assert not lb.overlaps(ob), f"{name}: the legend overlaps {other}'s"
            legends.append((name, lb))
        boxes = []
        for t in ax.texts:
            if not t.get_text():
                continue  # an annotation that is only an arrow
            tb = _text_box(t, renderer)
            label = f"{name}: the text {t.get_text()!r}"
            assert _inside(tb, box, tol=0), f"{label} leaves its panel"
            for other, ob in boxes:
                assert not tb.overlaps(ob), f"{label} overlaps the text {other!r}"
            boxes.append((t.get_text(), tb))
            anchor = t.get_transform().transform(t.get_position())
            bars = [p for p in ax.patches if p.get_window_extent(renderer).contains(*anchor)]
            for bar in bars:
                assert _inside(tb, bar.get_window_extent(renderer), tol=0), f"{label} does not fit in its bar"
            if not bars:
                for what, xy, filled in paths[id(ax)]:
                    if not filled:
                        assert not _path(xy, filled).intersects_bbox(tb, filled=False), f"{label} covers {what}"
        for _, lb in legends:
            for other, ob in boxes:
                assert not lb.overlaps(ob), f"{name}: a legend covers the text {other!r}"
    titles = [(f"{name}'s title", ax.title) for name, ax, _ in panels if ax.title.get_text()]
    titles += [("the figure's title", fig._suptitle)] if fig._suptitle is not None else []
    seen = []
    for name, t in titles:
        tb = t.get_window_extent(renderer)
        assert _inside(tb, fig.bbox, tol=0), f"{name} {t.get_text()!r} leaves the figure"
        for other, ob in seen:
            assert not tb.overlaps(ob), f"{name} overlaps {other}"
        seen.append((name, tb))
    for name, ax, _ in panels:
        for axis in (ax.xaxis, ax.yaxis):
            ab = axis.get_tightbbox(renderer)
            if ab is not None:
                assert _inside(ab, fig.bbox, tol=0), f"{name}: the {axis.axis_name} axis' labels leave the figure"


def _figures(result) -> dict:
    """file name -> the Figure each topic draws from its quick run's numbers (the same function that wrote the PNG)."""
    from npvae.explain import iwae, joint, posterior, posterior_nonlinear, reparam

    n = result("posterior")[0]["numbers"]
    return {"posterior_linear.png": lambda: posterior.draw_encoder_run(n["encoder_only"], n["reference"]),
            "posterior_decoder.png": lambda: posterior.draw_decoder_run(n["encoder_and_decoder"], n["ppca_max_loglik_per_point"]),
            "posterior_nonlinear.png": lambda: posterior_nonlinear.draw(n["nonlinear"]),
            "iwae.png": lambda: iwae.draw(result("iwae")[0]["numbers"]),
            "reparam.png": lambda: reparam.draw(result("reparam")[0]["numbers"]),
            "joint.png": lambda: joint.draw(result("joint")[0]["numbers"])}


@pytest.mark.parametrize("name", ["posterior_linear.png", "posterior_decoder.png", "posterior_nonlinear.png", "iwae.png",
                                  "reparam.png", "joint.png"])
def test_every_figure_keeps_its_curves_legends_and_labels_in_place(result, name):
    """check_panels on each of the six figures: nothing cropped, no legend or inset over data, labels in the figure."""
    check_panels(_figures(result)[name]())


def _bad_figure(kind: str):
    """A small figure with one known defect of the kind check_panels must find."""
    from npvae.explain import _common

    fig = _common.figure(6.0, 4.0)
    ax = fig.add_subplot(1, 1, 1)
    K = 2.0 ** np.arange(13)
    exact = -6.667
    prior = exact - 19.4 / K  # the prior-proposal curve of the old iwae.png: -26 nats at K = 1
    ax.plot(K, exact - 0.11 / K, "o-", label="encoder")
    ax.plot(K, prior, "o-", label="prior")
    ax.set_xscale("log", base=2)
    if kind == "cropped":
        ax.set_ylim(exact - 1.0, exact + 0.15)  # the old iwae.png's limits
        return fig
    ax.set_ylim(exact - 21, exact + 1)
    if kind == "legend over data":
        ax.legend(loc="lower left")  # over the prior's first points
    elif kind == "text off the panel":
        ax.text(K[-1], exact, "a label past the right edge", ha="left")
    elif kind == "text outside its bar":
        ax.barh(-20, 48.0, left=16.0, height=1.0)  # K from 16 to 64
        ax.text(32.0, -20, "a value far wider than its bar", ha="center", va="center")
    elif kind == "title outside the figure":
        fig.subplots_adjust(top=0.99)
        ax.set_title("a title pushed above the top of the figure", fontsize=14)
    elif kind == "inset over data":
        ax.inset_axes([0.55, 0.5, 0.4, 0.48]).plot([0, 1], [0, 1])  # over the encoder's curve, near the top
    return fig


@pytest.mark.parametrize("kind, message", [("cropped", "runs off the panel"), ("legend over data", "the legend covers"),
                                           ("text off the panel", "leaves its panel"),
                                           ("text outside its bar", "does not fit in its bar"),
                                           ("title outside the figure", "leaves the figure"), ("inset over data", "covers")])
def test_check_panels_fails_on_each_defect(kind, message):
    """check_panels can fail: on the old iwae figure's limits (the prior curve cropped) and on each other defect."""
    with pytest.raises(AssertionError, match=message):
        check_panels(_bad_figure(kind))


def test_check_panels_passes_the_same_figure_without_its_defect():
    """The control for the test above: the synthetic figure, every curve inside its limits, passes."""
    check_panels(_bad_figure("none"))


def test_reparam_picture_draws_the_error_of_averages_from_its_numbers(result):
    from npvae.explain import reparam

    nb = result("reparam")[0]["numbers"]
    fig = reparam.draw(nb)
    rms = nb["main"]["rms_error_dim0"]
    drawn = {line.get_label(): line for line in fig.axes[1].get_lines() if line.get_label() in rms}
    assert sorted(drawn) == sorted(reparam.ESTIMATORS)
    for k, line in drawn.items():
        np.testing.assert_array_equal(line.get_xdata(), rms["n"])
        np.testing.assert_array_equal(line.get_ydata(), rms[k])
    assert fig.axes[1].get_yscale() == "log" and fig.axes[0].get_yscale() == "log"  # orders of magnitude, not symlog
    # The ratio to the reparameterised variance is written above every bar.
    texts = [t.get_text() for t in fig.axes[0].texts]
    v = nb["main"]["variance"]
    ratio = v["score function, no baseline"][0] / v["reparam, MC KL"][0]
    assert f"{ratio:.0f}x" in texts


def test_posterior_nonlinear_picture_labels_each_curve_with_its_own_value(result):
    from npvae.explain import posterior_nonlinear

    nl = result("posterior")[0]["numbers"]["nonlinear"]
    fig = posterior_nonlinear.draw(nl)
    prop = nl["proposals"]
    handles, labels = fig.axes[3].get_legend_handles_labels()
    assert [t.get_text() for t in fig.axes[3].get_legend().get_texts()] == labels
    for name in ("encoder", "prior"):
        [(line, label)] = [(h, lab) for h, lab in zip(handles, labels) if f"the {name}" in lab]
        np.testing.assert_array_equal(line.get_ydata(), prop[name])  # the entry naming the encoder is the encoder's curve
        assert f"{prop[name][-1]:.1f} at K = {prop['K'][-1]}" in label, label


def test_roles_have_one_colour_each():
    """No two roles of _common share a colour, so that one colour means one quantity in every figure."""
    from matplotlib.colors import to_hex

    from npvae.explain import _common

    roles = {k: to_hex(v) for k, v in vars(_common).items() if k.startswith("C_")}
    assert len(roles) >= 15 and len(set(roles.values())) == len(roles), roles


def test_figures_take_their_colours_from_the_roles():
    """No colour literal in a topic's figure code: every colour= names a role of _common (or a colormap of one)."""
    for name in ("iwae", "reparam", "joint", "posterior", "posterior_nonlinear"):
        text = (REPO / "npvae" / "explain" / f"{name}.py").read_text()
        literals = re.findall(r"""(?:color|colour|ecolor|facecolor)\s*=\s*["'][^"']+["']""", text)
        assert not literals, (name, literals)


def test_run_refuses_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="unknown topic"):
        run("elbo", tmp_path)
    with pytest.raises(ValueError, match="seed"):
        run("joint", tmp_path, seed=-1)


# ---- posterior -------------------------------------------------------------------------------------

def test_posterior_encoder_goes_to_the_best_diagonal_q_not_to_the_prior(result):
    n = result("posterior")[0]["numbers"]
    h, W, b, s2 = n["encoder_only"], np.array(n["model"]["W"]), np.array(n["model"]["b"]), n["model"]["sigma2"]
    xbar, Sx = np.array(n["data_moments"]["xbar"]), np.array(n["data_moments"]["Sx"])
    M = _M(W, s2)
    P, L = np.linalg.solve(M, W.T), M / s2  # posterior mean map and precision
    Z = W.shape[1]
    # Step 0: q = p(z). E_x KL(N(0, I) || N(P(x - b), L^-1)) from the data's moments.
    e = P @ (xbar - b)
    kl0 = 0.5 * (np.trace(L) + e @ L @ e + np.trace(L @ P @ Sx @ P.T) - Z - np.linalg.slogdet(L)[1])
    assert h["kl_to_prior"][0] == 0.0
    assert h["kl_to_posterior"][0] == pytest.approx(kl0, rel=1e-10)
    gap = _diagonal_gap(W, s2)
    # No diagonal q beats the correlation term, at any step: an exact bound, up to rounding.
    assert min(h["kl_to_posterior"]) >= gap - 1e-10
    # The end: within 0.01 nats of it (3% of the gap, 0.05% of where q started). Adam's noise floor at the
    # final learning rate leaves ~1e-3; a q stuck at the prior (kl0 ~ 19) or a gap off by 2x fails.
    assert h["kl_to_posterior"][-1] - gap < 0.01
    # The KL to the prior rises to that of the best diagonal q, S_j = s2 / M_jj, mean P(x - b). It is not
    # stationary at the optimum, so it inherits the parameter error linearly: 0.05 nats (2%).
    S = s2 / np.diag(M)
    kl_best = 0.5 * (np.sum(S - 1 - np.log(S)) + e @ e + np.trace(P @ Sx @ P.T))
    assert h["kl_to_prior"][-1] == pytest.approx(kl_best, abs=0.05)
    assert kl_best > 5 * gap  # the teaching point: q ends far from the prior, near the posterior


def test_posterior_elbo_surgery_terms_sum_to_the_kl_to_the_prior(result):
    """Hoffman & Johnson 2016, at every recorded step: the mean of per-point KLs (npvae.maths.gaussian) = I_q + KL(q(z) || p(z))."""
    n = result("posterior")[0]["numbers"]
    for run_name in ("encoder_only", "encoder_and_decoder"):
        h = n[run_name]
        lhs = np.array(h["kl_to_prior"])
        rhs = np.array(h["mutual_information"]) + np.array(h["kl_aggregate_to_prior"])
        np.testing.assert_allclose(rhs, lhs, rtol=1e-10, atol=1e-12)
        assert min(h["mutual_information"]) >= 0 and min(h["kl_aggregate_to_prior"]) >= -1e-12


def test_posterior_mutual_information_by_the_joint_gaussian_formula(result):
    """I(x; z) = 1/2 log(|Cov x| |Cov z| / |Cov (x, z)|) for jointly Gaussian (x, z): a different route to I_q."""
    n = result("posterior")[0]["numbers"]
    Sx = np.array(n["data_moments"]["Sx"])
    enc = n["encoder_only"]["encoder_end"]
    A, S = np.array(enc["A"]), np.exp(np.array(enc["log_S"]))
    Czz = A @ Sx @ A.T + np.diag(S)
    joint = np.block([[Sx, Sx @ A.T], [A @ Sx, Czz]])
    logdet = lambda C: np.linalg.slogdet(C)[1]  # noqa: E731
    info = 0.5 * (logdet(Sx) + logdet(Czz) - logdet(joint))
    assert n["encoder_only"]["mutual_information"][-1] == pytest.approx(info, rel=1e-9)


def test_posterior_decoder_training_closes_the_gap_at_the_ppca_maximum(result):
    n = result("posterior")[0]["numbers"]
    h = n["encoder_and_decoder"]
    Sx = np.array(n["data_moments"]["Sx"])
    D, Z = Sx.shape[0], 2
    lam = np.sort(np.linalg.eigvalsh(Sx))[::-1]
    s2 = lam[Z:].mean()
    max_ll = -0.5 * (D * math.log(2 * math.pi) + np.log(lam[:Z]).sum() + (D - Z) * math.log(s2) + D)  # Tipping & Bishop 1999
    assert h["elbo"][-1] <= h["log_px"][-1] <= max_ll + 1e-9
    assert h["elbo"][-1] > max_ll - 0.01
    assert h["kl_to_posterior"][-1] < 0.01
    assert _diagonal_gap(np.array(h["decoder"]["W"]), s2) < 0.01  # the learned W has (nearly) orthogonal columns


def test_posterior_nonlinear_vae_on_digits(result):
    nl = result("posterior")[0]["numbers"]["nonlinear"]
    h = nl["history"]
    assert nl["dataset"] == "digits"
    assert all(g > 0 for g in h["gap"])  # the importance-sampled log p(x) lies above the ELBO
    assert h["elbo"][-1] > h["elbo"][0] + 5  # it trained
    assert max(h["mutual_information"]) <= nl["log_M"] + 1e-9  # the mixture estimate of I_q never exceeds log M
    im = nl["information_vs_M"]
    assert np.all(np.array(im["lower"]) <= np.log(im["M"]) + 1e-9)  # InfoNCE's ceiling, at every M
    assert im["M"][-1] == 250 and np.all(np.diff(im["M"]) > 0)  # up to every held-out digit
    # I_q <= E KL(q(z|x) || p(z)) (surgery: KL(q(z) || p(z)) >= 0), so the lower bound stays below it.
    assert max(im["lower"]) < im["kl_to_prior"]
    p = nl["proposals"]
    assert p["encoder"][0] > p["prior"][0] + 5  # one sample from the prior is a far worse proposal
    assert all(b > a for a, b in zip(p["prior"], p["prior"][1:]))


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "binarized_mnist.npz").exists(), reason="needs binarized_mnist.npz (set NPVAE_DATA_DIR)")
def test_posterior_nonlinear_vae_on_binarized_mnist(tmp_path):
    """The full experiment (784-200-20 on 10k binarised MNIST digits, ~30 s): the same facts as on digits."""
    from npvae.explain import posterior_nonlinear

    nl = posterior_nonlinear.run(tmp_path, quick=False, rng=np.random.default_rng(0), data_dir=SHARED_DATA)
    h = nl["history"]
    assert nl["dataset"] == "binarized-mnist"
    assert all(g > 0 for g in h["gap"])
    assert h["elbo"][-1] > h["elbo"][0] + 50  # from ~-544 nats (untrained) to ~-130
    assert -140 < h["log_px"][-1] < -110  # a 20-latent VAE after 20 epochs on 10k digits: ~-126 nats
    assert max(h["mutual_information"]) <= nl["log_M"] + 1e-9
    p = nl["proposals"]
    assert p["encoder"][0] > p["prior"][0] + 5


def test_posterior_nonlinear_part_is_skipped_with_a_clear_note_without_the_data(tmp_path):
    from npvae.explain import posterior_nonlinear

    r = posterior_nonlinear.run(tmp_path, quick=False, rng=np.random.default_rng(0), data_dir=tmp_path)
    assert r["files"] == [] and "binarized-mnist" in r["notes"][0] and "skipped" in r["notes"][0]
    assert "skipped" in posterior_nonlinear.finding(r)


def _linear_gaussian_codes(rng, M, a, v):
    """M points x ~ N(0, I_2) and q(z|x) = N(a x, v I): I(x; z) = sum_j 1/2 log(1 + a_j^2 / v) exactly (jointly Gaussian)."""
    x = rng.standard_normal((M, 2))
    mu = x * a
    return mu, np.full_like(mu, math.log(v)), 0.5 * float(np.sum(np.log1p(a**2 / v)))


def test_information_bounds_sandwich_the_mutual_information_of_a_gaussian_encoder():
    """Poole et al. 2019: InfoNCE <= I <= leave-one-out in expectation; checked against I in closed form, with the
    spread over 20 independent sets of points as the error model."""
    from npvae.explain.posterior_nonlinear import information_bounds

    rng = np.random.default_rng(5)
    a, v, M = np.array([1.5, 0.8]), 0.5, 400
    reps = []
    for _ in range(20):
        mu, log_var, info = _linear_gaussian_codes(rng, M, a, v)
        reps.append(information_bounds(mu, log_var, rng.standard_normal(mu.shape)))
    lower, upper = (np.array([r[k] for r in reps]) for k in ("lower", "upper"))
    se = lambda arr: arr.std(ddof=1) / math.sqrt(len(arr))  # noqa: E731
    assert lower.mean() < info + 3 * se(lower) and upper.mean() > info - 3 * se(upper), (lower.mean(), info, upper.mean())
    assert np.all(lower <= math.log(M) + 1e-12)
    # Both are consistent: with I = 1.5 nats and M = 400 each is within 0.1 nat of I (the biases are O(e^I / M)).
    assert abs(lower.mean() - info) < 0.1 and abs(upper.mean() - info) < 0.1


def test_information_lower_bound_is_npvae_s_mixture_estimate():
    """The lower bound is the estimator of npvae.evaluation.evaluate.mutual_information (written there another way),
    on the same draw of z."""
    from npvae.evaluation.evaluate import mutual_information
    from npvae.explain.posterior_nonlinear import information_bounds

    mu, log_var, _ = _linear_gaussian_codes(np.random.default_rng(1), 300, np.array([2.0, 0.5]), 0.3)
    ours = information_bounds(mu, log_var, np.random.default_rng(2).standard_normal(mu.shape))["lower"]
    theirs = mutual_information(mu, log_var, np.random.default_rng(2), max_points=300)
    assert ours == pytest.approx(theirs, rel=1e-10)


def test_information_bounds_of_separated_codes_sit_at_log_M_and_far_above():
    """Codes that never overlap: the lower bound is log M (its ceiling), and the leave-one-out bound is large.

    Tolerance: the expanded square rounds at ~1e-16 (|z|^2 + |mu|^2) / v = 1e-16 * 2 * 5000^2 = 5e-9 here."""
    from npvae.explain.posterior_nonlinear import information_bounds

    M = 50
    mu = np.stack([np.arange(M) * 100.0, np.zeros(M)], axis=1)
    r = information_bounds(mu, np.zeros_like(mu), np.random.default_rng(0).standard_normal(mu.shape))
    assert r["lower"] == pytest.approx(math.log(M), abs=5e-8) and r["lower"] <= math.log(M) + 1e-12
    assert r["upper"] > 1000


# ---- iwae ------------------------------------------------------------------------------------------

def test_iwae_increases_with_k_and_stays_below_log_px(result):
    n = result("iwae")[0]["numbers"]
    model, x = _model(n), np.array(n["x"])
    exact = stats.multivariate_normal(model.b, model.W @ model.W.T + model.sigma2 * np.eye(model.D)).logpdf(x)
    q_mean, q_log_var = model.best_diagonal_q(x)
    elbo = model.elbo(x, q_mean, q_log_var)
    for name in ("encoder", "prior"):
        cur = n["iwae"][name]
        mean, se = np.array(cur["mean"]), np.array(cur["se"])  # (len(K), N)
        avg, avg_se = mean.mean(axis=1), np.sqrt((se**2).sum(axis=1)) / mean.shape[1]
        assert np.all(np.diff(avg) > 3 * np.sqrt(avg_se[1:] ** 2 + avg_se[:-1] ** 2)), (name, avg)
        assert np.all(mean < exact + 3 * se), name  # Burda et al. 2016, Thm 1
    enc = n["iwae"]["encoder"]
    assert np.all(np.abs(np.array(enc["mean"][0]) - elbo) < 5 * np.array(enc["se"][0]))  # IWAE_1 is the ELBO
    assert np.all(np.array(n["iwae"]["prior"]["mean"][0]) < elbo - 1)  # the prior is the worse proposal


def test_weight_second_moment_against_a_grid_integral():
    from npvae.explain.iwae import weight_second_moment

    m1, S1 = np.array([0.3, -0.2]), np.array([[0.5, 0.2], [0.2, 0.4]])
    m0, S0 = np.array([0.1, 0.0]), np.diag([0.6, 0.7])
    g = np.linspace(-6, 6, 1201)
    zz = np.stack(np.meshgrid(g, g, indexing="ij"), axis=-1)
    f = stats.multivariate_normal(m1, S1).pdf(zz) ** 2 / stats.multivariate_normal(m0, S0).pdf(zz)
    grid = f.sum() * (g[1] - g[0]) ** 2
    assert weight_second_moment(m1, S1, m0, S0) == pytest.approx(grid, rel=1e-6)
    assert weight_second_moment(m1, S1, m1, S1) == pytest.approx(1.0, rel=1e-12)
    assert weight_second_moment(m1, S1, m0, np.diag([0.1, 0.1])) == math.inf  # q too narrow: infinite variance


def test_iwae_gradient_snr_reparam_falls_dreg_and_decoder_rise(result):
    """Rainforth et al. 2018; Tucker et al. 2018: log-log slopes against K (theory for large K: -1/2, +1/2, +1/2)."""
    s = result("iwae")[0]["numbers"]["snr"]
    logK = np.log(s["K"])
    slope = lambda v: np.polyfit(logK, np.log(v), 1)[0]  # noqa: E731
    assert slope(s["iwae-reparam"]["encoder"]) < -0.3
    assert s["iwae-reparam"]["encoder"][-1] < s["iwae-reparam"]["encoder"][0] / 3
    assert s["iwae-dreg"]["encoder"][-1] > s["iwae-dreg"]["encoder"][0] and slope(s["iwae-dreg"]["encoder"]) > 0.1
    assert slope(s["iwae-reparam"]["decoder"]) > 0.3
    assert slope(s["elbo-stl"]["encoder"]) > 0.3  # averaging K samples of the ELBO: SNR ~ sqrt(K)


# ---- reparam ---------------------------------------------------------------------------------------

def _score_function_moments(model, x, mu, log_S, baseline, n_nodes=20):
    """Mean, variance and 4th central moment of (f(z) - c) eps / sigma per dimension, by Gauss-Hermite quadrature.

    f(z) = log p(x, z) - log q(z|x) is quadratic in eps, so every integrand is a polynomial of degree <= 12 in
    eps and 20 nodes per dimension integrate it exactly. Densities from scipy.
    """
    t, w = hermegauss(n_nodes)
    w = w / w.sum()
    Z = len(mu)
    grids = np.stack(np.meshgrid(*[t] * Z, indexing="ij"), axis=-1).reshape(-1, Z)  # (n^Z, Z)
    weights = np.prod(np.stack(np.meshgrid(*[w] * Z, indexing="ij"), axis=-1).reshape(-1, Z), axis=1)
    sd = np.sqrt(np.exp(log_S))
    z = mu + sd * grids
    log_joint = (stats.norm(z @ model.W.T + model.b, np.sqrt(model.sigma2)).logpdf(x).sum(axis=1)
                 + stats.norm.logpdf(z).sum(axis=1))
    f = log_joint - stats.norm(mu, sd).logpdf(z).sum(axis=1)
    g = (f - baseline)[:, None] * grids / sd  # (n^Z, Z)
    mean = weights @ g
    var = weights @ (g - mean) ** 2
    m4 = weights @ (g - mean) ** 4
    return mean, var, m4


def test_reparam_and_score_function_are_unbiased_with_the_variances_theory_gives(result):
    nb = result("reparam")[0]["numbers"]
    m, model, x, n = nb["main"], _model(nb), np.array(nb["x"]), nb["n"]
    mu, log_S = np.array(m["q_mean"]), np.array(m["q_log_var"])
    # The exact gradient: a central difference of the oracle's closed-form ELBO in mu.
    h = 1e-5
    fd = [(model.elbo(x[None], (mu + h * e)[None], log_S[None])[0] - model.elbo(x[None], (mu - h * e)[None], log_S[None])[0]) / (2 * h)
          for e in np.eye(len(mu))]
    np.testing.assert_allclose(m["exact"], fd, rtol=1e-7)
    for k, mean in m["mean"].items():
        assert np.all(np.abs(np.array(mean) - fd) < 5 * np.array(m["se"][k])), k
    # Reparameterised: linear in eps, so Gaussian; the sample variance's relative SE is sqrt(2 / (n - 1)).
    S = np.diag(np.exp(log_S))
    WtW = model.W.T @ model.W / model.sigma2
    for k, B in (("reparam, analytic KL", WtW), ("reparam, MC KL", WtW + np.eye(len(mu)))):
        var = np.diag(B @ S @ B)
        np.testing.assert_allclose(m["variance"][k], var, rtol=5 * math.sqrt(2 / (n - 1)))
    # STL (Roeder et al. 2017): d log p(x, z) / dz + (z - mu) / S, z = mu + sd eps, so g = g_exact + B eps with
    # B = -(W^T W / s2 + I) diag(sd) + diag(1 / sd); at the best diagonal q its diagonal cancels.
    sd = np.sqrt(np.exp(log_S))
    B = -(WtW + np.eye(len(mu))) * sd[None, :] + np.diag(1 / sd)
    np.testing.assert_allclose(m["variance"]["STL, path derivative only"], np.diag(B @ B.T), rtol=5 * math.sqrt(2 / (n - 1)))
    for k in m["closed_form_variance"]:
        np.testing.assert_allclose(m["closed_form_variance"][k], m["variance"][k], rtol=5 * math.sqrt(2 / (n - 1)))
    # Score function: quadrature moments; the sample variance's SE is sqrt((m4 - var^2) / n).
    for k, c in (("score function, baseline c = ELBO", m["elbo"]), ("score function, no baseline", 0.0)):
        q_mean, q_var, q_m4 = _score_function_moments(model, x, mu, log_S, c)
        np.testing.assert_allclose(q_mean, fd, rtol=1e-9)  # E[(f - c) d log q] is the gradient, for any c
        assert np.all(np.abs(np.array(m["variance"][k]) - q_var) < 5 * np.sqrt((q_m4 - q_var**2) / n)), k
        assert np.all(q_var > 10 * np.diag((WtW + np.eye(len(mu))) @ S @ (WtW + np.eye(len(mu))))), k
    assert np.all(np.array(m["variance"]["score function, no baseline"]) > 3 * np.array(m["variance"]["score function, baseline c = ELBO"]))


def test_reparam_score_function_variance_grows_with_the_latent_dimension(result):
    s = result("reparam")[0]["numbers"]["sweep_over_Z"]["variance_dim0"]
    reparam = np.array(s["reparam, MC KL"])
    assert reparam.max() < 1.5 * reparam.min()  # every dimension alike: the reparameterised variance does not grow
    assert s["score function, no baseline"][-1] > 5 * s["score function, no baseline"][0]


# ---- joint -----------------------------------------------------------------------------------------

def _sigma_point_mean(f, m, C):
    """E_{N(m, C)} f for f quadratic: the mean over the 2D points m +- sqrt(D) L e_i is exact."""
    D = len(m)
    L = np.linalg.cholesky(C) * math.sqrt(D)
    return np.mean(f(np.concatenate([m + L.T, m - L.T])))


def test_joint_identity_holds_exactly_in_closed_form(result):
    nb = result("joint")[0]["numbers"]
    model, e = _model(nb), nb["closed_form"]
    m, C = np.array(nb["q_x"]["mean"]), np.array(nb["q_x"]["cov"])
    A, a, log_S = (np.array(nb["encoder"][k]) for k in ("A", "a", "log_S"))
    q = lambda X: (X @ A.T + a, np.broadcast_to(log_S, (X.shape[0], len(a))).copy())  # noqa: E731
    e_elbo = _sigma_point_mean(lambda X: model.elbo(X, *q(X)), m, C)  # via the oracle's per-point ELBO
    e_kl_post = _sigma_point_mean(lambda X: model.kl_to_posterior(X, *q(X)), m, C)
    H = stats.multivariate_normal(m, C).entropy()
    C_p = model.W @ model.W.T + model.sigma2 * np.eye(model.D)
    d = model.b - m
    kl_x = 0.5 * (np.trace(np.linalg.solve(C_p, C)) + d @ np.linalg.solve(C_p, d) - model.D
                  + np.linalg.slogdet(C_p)[1] - np.linalg.slogdet(C)[1])
    tol = dict(rel=1e-10, abs=1e-10)
    assert e["expected_elbo"] == pytest.approx(e_elbo, **tol)
    assert e["entropy_qx"] == pytest.approx(H, **tol)
    assert -e["kl_joint"] - e["entropy_qx"] == pytest.approx(e_elbo, **tol)  # the joint view
    assert e["kl_joint"] == pytest.approx(kl_x + e_kl_post, **tol)  # = fit the data + infer z
    assert e["kl_qx_to_px"] == pytest.approx(kl_x, **tol) and e["expected_kl_to_posterior"] == pytest.approx(e_kl_post, **tol)


def test_joint_identity_holds_by_monte_carlo(result):
    nb = result("joint")[0]["numbers"]
    e, mc = nb["closed_form"], nb["monte_carlo"]
    for k, exact in (("elbo", e["expected_elbo"]), ("kl_joint", e["kl_joint"]), ("entropy_qx", e["entropy_qx"])):
        assert abs(mc[k]["mean"] - exact) < 5 * mc[k]["se"], k
    p = nb["path"]
    mc_t = np.array(p["mc_t"])
    closed = np.interp(mc_t, p["t"], p["expected_elbo"])  # mc_t is a subset of t, so this is a lookup
    assert np.all(np.abs(np.array(p["mc_elbo"]) - closed) < 5 * np.array(p["mc_elbo_se"]))
    ceiling = -np.array(p["entropy_qx"]) - np.array(p["kl_qx_to_px"])
    assert np.all(np.array(p["expected_elbo"]) < ceiling)  # the encoder alone cannot reach E log p(x)


# ---- the findings: the answer in words, with this run's numbers ----------------------------------

def _finding(result, topic):
    """The finding's lines (2 or 3 short strings) and the numbers of the run they describe."""
    r = result(topic)[0]
    lines = r["finding"]
    assert isinstance(lines, list) and 2 <= len(lines) <= 3, lines
    assert all(isinstance(line, str) and 20 < len(line) <= 150 for line in lines), lines
    return lines, r["numbers"]


def _states(line: str, *values: str) -> None:
    for v in values:
        assert v in line, f"{v!r} not in {line!r}"


def test_posterior_finding_states_this_runs_kls_and_surgery(result):
    lines, n = _finding(result, "posterior")
    h, d, nl = n["encoder_only"], n["encoder_and_decoder"], n["nonlinear"]["history"]
    _states(lines[0], f"{h['kl_to_posterior'][0]:.2f} -> {h['kl_to_posterior'][-1]:.3f}",
            f"{n['reference']['correlation_gap']:.3f}", f"{h['kl_to_prior'][0]:.2f} -> {h['kl_to_prior'][-1]:.2f}")
    _states(lines[1], f"{h['kl_to_prior'][-1]:.3f} = I_q {h['mutual_information'][-1]:.3f}",
            f"{h['kl_aggregate_to_prior'][-1]:.3f}", f"{d['kl_to_posterior'][-1]:.1e}")
    _states(lines[2], n["nonlinear"]["arch"], f"{nl['log_px'][-1]:.1f}", f"{nl['elbo'][-1]:.1f}", f"{nl['gap'][-1]:.2f}",
            f"{nl['kl_to_prior'][-1]:.2f}")


def test_iwae_finding_states_this_runs_bounds_and_snr_trends(result):
    lines, n = _finding(result, "iwae")
    K = n["iwae"]["encoder"]["K"]
    for line, proposal in zip(lines, ("encoder", "prior")):
        bound = np.mean(n["iwae"][proposal]["mean"], axis=1)  # mean over the points, one per K
        _states(line, *(f"K={K[i]} {bound[i]:.3f}" for i in (0, len(K) // 2, len(K) - 1)))
    _states(lines[0], f"log p(x) = {np.mean(n['log_px']):.3f}")
    # The word that relates the last bound to log p(x) follows this run's sign: IWAE_K at large K can land within
    # its Monte Carlo error on either side of log p(x), and "below" would then be false.
    last, se = np.mean(n["iwae"]["encoder"]["mean"][-1]), np.sqrt(np.sum(np.array(n["iwae"]["encoder"]["se"][-1]) ** 2)) / len(n["x"])
    d = last - np.mean(n["log_px"])
    _states(lines[0], "the last " + ("within 3 SE of" if abs(d) <= 3 * se else "below" if d < 0 else "above"))
    s = n["snr"]
    _states(lines[2], *(f"{v[0]:#.3g} -> {v[-1]:#.3g}" for v in (s["iwae-reparam"]["encoder"], s["iwae-dreg"]["encoder"],
                                                                 s["iwae-reparam"]["decoder"])))


def test_finding_words_follow_the_signs():
    """The comparison words of the findings, on numbers either side (the issue found "below" beside a value above)."""
    from npvae.explain.iwae import _relation
    from npvae.explain.posterior import _moves

    assert _relation(-6.70, -6.667, 0.001) == "below" and _relation(-6.60, -6.667, 0.001) == "above"
    assert _relation(-6.6667, -6.667, 0.001) == "within 3 SE of" == _relation(-6.6673, -6.667, 0.001)
    assert _moves(19.0, 0.376) == "falls" and _moves(0.0, 2.3) == "rises"


def test_reparam_finding_states_this_runs_variances(result):
    lines, n = _finding(result, "reparam")
    v = {k: var[0] for k, var in n["main"]["variance"].items()}
    mc, sf, sf0 = v["reparam, MC KL"], v["score function, baseline c = ELBO"], v["score function, no baseline"]
    _states(lines[0], f"{n['main']['exact'][0]:.3f}", f"{v['reparam, analytic KL']:.1f}", f"{mc:.1f}",
            f"{v['STL, path derivative only']:.2f} (STL)")
    assert sf > mc and sf0 > mc  # this run's numbers: so "more" is the right word
    _states(lines[1], f"{sf:.0f} (baseline", f"{sf0:.0f} (none)", f"{sf / mc:.0f} to {sf0 / mc:.0f} times more")
    s = n["sweep_over_Z"]["variance_dim0"]
    _states(lines[2], f"{n['sweep_over_Z']['Z'][0]} -> {n['sweep_over_Z']['Z'][-1]}",
            f"{s['reparam, MC KL'][0]:.1f} -> {s['reparam, MC KL'][-1]:.1f}",
            *(f"{s[k][0]:.0f} -> {s[k][-1]:.0f}" for k in ("score function, baseline c = ELBO", "score function, no baseline")))


def test_joint_finding_states_this_runs_terms(result):
    lines, n = _finding(result, "joint")
    e, mc, p = n["closed_form"], n["monte_carlo"]["elbo"], n["path"]
    _states(lines[0], f"{e['expected_elbo']:.3f}", f"{-e['kl_joint']:.3f}", f"{-e['entropy_qx']:.3f}",
            f"{mc['mean']:.3f} +- {mc['se']:.3f}")
    _states(lines[1], f"{e['kl_joint']:.3f} = KL(q(x) || p(x)) {e['kl_qx_to_px']:.3f}", f"{e['expected_kl_to_posterior']:.3f}")
    best = int(np.argmax(p["expected_elbo"]))
    _states(lines[2], f"t = {p['t'][best]:.2f}", f"{p['expected_kl_to_posterior'][best]:.3f}",
            f"{-e['entropy_qx'] - e['kl_qx_to_px']:.3f}")


# ---- docs/theory.md ------------------------------------------------------------------------------

def test_theory_links_point_at_functions_and_tests_that_exist():
    """Every [`file.py: name`](../path) or [`test_x.py::test_name`](../tests/...) link names something that is there."""
    docs = sorted((REPO / "docs").glob("*.md"))
    assert docs, "docs/theory.md is missing"
    n_links = 0
    for doc in docs:
        for text, target in re.findall(r"\[`([^`]+)`\]\((\.\./[^)#]+)\)", doc.read_text()):
            path = (doc.parent / target).resolve()
            assert path.exists(), f"{doc.name}: {target} does not exist"
            names = re.split(r"::|: ", text)[1:]
            for name in names:
                name = name.split(".")[-1].strip()
                assert re.search(rf"^\s*(def|class) {re.escape(name)}\b", path.read_text(), re.M), f"{doc.name}: {text}"
            n_links += 1
    assert n_links >= 30
