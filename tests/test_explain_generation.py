"""`npvae explain generation`: its estimators against closed forms written out here, and its quick run.

The references are independent of the module's code paths: scipy's Gaussian and Bernoulli densities and
entropies, the chi-square distribution, the Gaussian KL written out again, a mixture whose components do not
overlap (its log-density is a component's minus log 2), and a linear autoencoder whose round trip is a matrix.
Tolerances are five standard errors of the Monte Carlo estimate, from the error model stated at each test.
"""

import json
import math

import numpy as np
import pytest
from scipy import stats
from scipy.special import expit, logsumexp

from conftest import SHARED_DATA
from npvae.explain import generation as g
from npvae.explain import run
from npvae.likelihoods import Likelihood
from npvae.nn.layers import Dense
from npvae.vae.model import Arch, VAEParams


def _kl_to_std_normal(m, v):
    """KL(N(m, diag(v)) || N(0, I)) = 1/2 sum [v + m^2 - 1 - log v]."""
    return 0.5 * float(np.sum(v + m * m - 1.0 - np.log(v)))


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("generation")
    r = run("generation", out, quick=True, seed=0, data_dir=SHARED_DATA)
    return r, out


# ---- the estimators -----------------------------------------------------------------------------

@pytest.mark.parametrize("max_elements", [1 << 22, 5])  # one block, and one row at a time
def test_log_aggregate_is_the_log_density_of_the_mixture(max_elements):
    rng = np.random.default_rng(1)
    M, Z = 7, 3
    mu, lv = rng.standard_normal((M, Z)), rng.uniform(-2, 1, (M, Z))
    z = 2 * rng.standard_normal((11, Z))
    comp = np.stack([stats.multivariate_normal(mu[m], np.diag(np.exp(lv[m]))).logpdf(z) for m in range(M)])  # (M, N)
    np.testing.assert_allclose(g.log_aggregate(z, mu, lv, max_elements), logsumexp(comp, axis=0) - math.log(M),
                               rtol=1e-12, atol=1e-12)


def test_log_aggregate_keeps_its_precision_for_narrow_components():
    """The expanded squares cancel terms of size |z|^2 / v: at sd 1e-3 and |z| ~ 3 that is 1e7, still 1e-9 nats off."""
    rng = np.random.default_rng(7)
    mu, lv = 3 * rng.standard_normal((4, 2)), np.full((4, 2), 2 * math.log(1e-3))
    z = mu[[0, 1, 2]] + 1e-3 * rng.standard_normal((3, 2))
    comp = np.stack([stats.multivariate_normal(mu[m], np.diag(np.exp(lv[m]))).logpdf(z) for m in range(4)])
    np.testing.assert_allclose(g.log_aggregate(z, mu, lv), logsumexp(comp, axis=0) - math.log(4), rtol=0, atol=1e-8)


def test_kl_aggregate_of_identical_components_is_the_gaussian_kl():
    rng = np.random.default_rng(2)
    m, v = np.array([0.5, -1.0, 0.0]), np.array([0.3, 2.0, 1.0])
    M = 50
    est, se = g.kl_aggregate(np.tile(m, (M, 1)), np.tile(np.log(v), (M, 1)), rng, 20_000)
    exact = _kl_to_std_normal(m, v)
    assert 0 < se < 0.05 and abs(est - exact) < 5 * se, (est, se, exact)


def test_kl_aggregate_of_two_separate_components_loses_log_2():
    """Components 16 sds apart (overlap ~e^-32): log q_M = log q_m - log 2 on each, so KL = mean_m KL_m - log 2."""
    rng = np.random.default_rng(3)
    mu = np.array([[-8.0, 0.0], [8.0, 1.0]])
    v = np.array([[0.25, 2.0], [1.0, 0.5]])
    est, se = g.kl_aggregate(mu, np.log(v), rng, 40_000)
    exact = 0.5 * (_kl_to_std_normal(mu[0], v[0]) + _kl_to_std_normal(mu[1], v[1])) - math.log(2)
    assert abs(est - exact) < 5 * se, (est, se, exact)
    # The moment bound sees one wide Gaussian: far below the mixture's KL, never above it.
    assert g.moment_bound(mu, np.log(v)) < est - 5 * se


def test_moment_bound_is_the_kl_of_the_mixtures_moments():
    rng = np.random.default_rng(4)
    mu, lv = rng.standard_normal((6, 3)), rng.uniform(-1, 1, (6, 3))
    v = np.exp(lv)
    m = mu.mean(axis=0)
    C = (mu[:, :, None] * mu[:, None, :]).mean(axis=0) + np.diag(v.mean(axis=0)) - np.outer(m, m)  # E[z z^T] - m m^T
    exact = 0.5 * (np.trace(C) + m @ m - 3 - np.linalg.slogdet(C)[1])
    assert g.moment_bound(mu, lv) == pytest.approx(exact, rel=1e-12)
    # One component: the bound is the KL itself.
    assert g.moment_bound(mu[:1], lv[:1]) == pytest.approx(_kl_to_std_normal(mu[0], v[0]), rel=1e-12)


@pytest.mark.parametrize("s, Z", [(0.7, 3), (1.0, 2), (1.4, 2)])
def test_hole_fraction_of_a_gaussian_q_is_the_chi_square_tail(s, Z):
    """q = N(0, s^2 I): log q < its alpha quantile iff |z|^2 > s^2 c, c = chi2_Z's (1 - alpha) quantile; under p = N(0, I)
    that has probability chi2_Z.sf(s^2 c). Error: the binomial sd of the fraction, plus the sd of q's empirical
    quantile, sqrt(alpha (1 - alpha) / n), carried over by the ratio of the two densities of |z|^2 at the threshold."""
    rng = np.random.default_rng(5)
    n, alpha = 20_000, g.HOLE_QUANTILE
    mu, lv = np.zeros((1, Z)), np.full((1, Z), 2 * math.log(s))
    own, prior = s * rng.standard_normal((n, Z)), rng.standard_normal((n, Z))
    frac, thr = g.hole_fraction(g.log_aggregate(prior, mu, lv), g.log_aggregate(own, mu, lv), alpha)
    u0 = s * s * stats.chi2.ppf(1 - alpha, Z)
    f = stats.chi2.sf(u0, Z)
    ratio = stats.chi2.pdf(u0, Z) / (stats.chi2.pdf(u0 / (s * s), Z) / (s * s))
    sd = math.sqrt((f * (1 - f) + ratio**2 * alpha * (1 - alpha)) / n)
    assert abs(frac - f) < 5 * sd, (frac, f, sd)
    # The threshold: log q at |z|^2 = s^2 c; the empirical quantile of chi2_Z has sd sqrt(alpha (1 - alpha) / n) / pdf(c).
    c = stats.chi2.ppf(1 - alpha, Z)
    thr_sd = 0.5 * math.sqrt(alpha * (1 - alpha) / n) / stats.chi2.pdf(c, Z)
    assert abs(thr - (-0.5 * (Z * math.log(2 * math.pi * s * s) + c))) < 5 * thr_sd


def test_pixel_entropy_is_the_bernoulli_entropy_and_stays_finite():
    l = np.array([[0.0, 0.5, -2.0, 3.0, -10.0, 7.5]])
    ref = stats.bernoulli(expit(l)).entropy().sum()
    assert g.pixel_entropy(l)[0] == pytest.approx(ref, rel=1e-12)
    assert g.pixel_entropy(np.zeros((2, 5))) == pytest.approx(5 * math.log(2), rel=1e-15)
    # Far from 0 (where 1 - sigmoid rounds to 0 and scipy's form fails): H = (1 + a) e^-a (1 + O(e^-a)), even in l.
    for a in (40.0, 300.0):
        for sign in (1, -1):
            assert g.pixel_entropy(np.array([sign * a])) == pytest.approx((1 + a) * math.exp(-a), rel=1e-12)
    big = g.pixel_entropy(np.array([800.0, -800.0]))
    assert np.isfinite(big) and big >= 0


def test_round_trip_of_a_linear_autoencoder_is_a_matrix():
    """Gaussian likelihood, no hidden layers: E[x|z] = z B + b, mu(x) = x A + a, so z moves by |z (B A - I) + b A + a|."""
    rng = np.random.default_rng(6)
    Z, D = 2, 4
    arch = Arch.parse(f"{D}-{Z}", likelihood=Likelihood("gaussian"))
    A, a, B, b = rng.standard_normal((D, Z)), rng.standard_normal(Z), rng.standard_normal((Z, D)), rng.standard_normal(D)
    enc = Dense(np.concatenate([A, np.zeros((D, Z))], axis=1), np.concatenate([a, np.zeros(Z)]))
    params = VAEParams((enc,), (Dense(B, b),))
    z = rng.standard_normal((9, Z))
    want = np.linalg.norm(z @ (B @ A - np.eye(Z)) + b @ A + a, axis=1)
    np.testing.assert_allclose(g.round_trip(params, arch, z), want, rtol=1e-12)
    # An encoder that inverts the decoder: nothing moves.
    Ainv = np.linalg.pinv(B)
    inv = VAEParams((Dense(np.concatenate([Ainv, np.zeros((D, Z))], axis=1), np.concatenate([-b @ Ainv, np.zeros(Z)])),),
                    (Dense(B, b),))
    assert np.max(g.round_trip(inv, arch, z)) < 1e-12


def test_tile_places_each_image_and_its_gutters():
    ims = np.arange(6 * 4, dtype=float).reshape(6, 4)  # six 2x2 images
    t = g.tile(ims, (2, 2), ncols=3, scale=2, row_groups=2)
    assert t.shape == (2 * 4 + 1, 3 * 4 + 2)  # two rows of 4-px tiles, a 1-px gutter between rows (row_groups > rows)
    np.testing.assert_array_equal(t[5:9, 5:9], np.kron(ims[4].reshape(2, 2), np.ones((2, 2))))  # row 1, column 1
    assert np.isnan(t[4]).all() and np.isnan(t[:, 4]).all()


# ---- the quick run ------------------------------------------------------------------------------

def test_quick_run_writes_its_picture_and_json(quick):
    from PIL import Image

    r, out = quick
    assert r["files"] == ["generation.png", "generation.json"]
    assert json.loads((out / "generation.json").read_text()) == r
    with Image.open(out / "generation.png") as im:
        assert im.format == "PNG" and im.size[0] >= 1500 and im.size[1] >= 800
    assert r["numbers"]["dataset"] == "digits" and r["notes"] == []


@pytest.mark.parametrize("key", ["two_d", "high_d"])
def test_quick_runs_numbers_are_well_defined(quick, key):
    n = quick[0]["numbers"]
    s = n[key]
    D = math.prod(n["image_shape"])
    agg, holes, qual = s["aggregate"], s["holes"], s["quality"]
    assert (s["latent_dim"] == 2) == (key == "two_d")
    # Brackets that hold for the M-point mixture itself: the moment bound below, and
    # E KL(q(z|x)||p) - log M <= KL(q_M||p) <= E KL(q(z|x)||p), since 0 <= I_M(x; z) <= log M.
    se = agg["kl_se"]
    assert se > 0 and agg["kl_moment_bound"] >= 0
    assert agg["kl_moment_bound"] - 5 * se <= agg["kl"] <= agg["kl_per_point"] + 5 * se
    assert agg["kl"] >= agg["kl_per_point"] - s["log_M"] - 5 * se
    # The hole fraction, recomputed from the log-densities the run wrote.
    lq_q, lq_p = np.array(holes["log_q_at_q"]), np.array(holes["log_q_at_prior"])
    assert lq_q.shape == lq_p.shape == (s["n_samples"],)
    assert holes["threshold"] == np.quantile(lq_q, holes["quantile"])
    assert holes["fraction_of_prior"] == np.mean(lq_p < holes["threshold"])
    n_in, n_out = qual["prior_in_holes"]["count"], qual["prior_on_support"]["count"]
    assert n_in + n_out == s["n_samples"] and n_in == round(holes["fraction_of_prior"] * s["n_samples"])
    for what in ("entropy", "round_trip"):
        mixed = (n_in * qual["prior_in_holes"][what] + n_out * qual["prior_on_support"][what]) / s["n_samples"]
        assert mixed == pytest.approx(qual["prior"][what], rel=1e-12)
        for v in qual.values():
            assert v[what] >= 0
    for v in qual.values():
        assert v["entropy"] <= D * math.log(2)
    im = {k: np.array(v, dtype=float) for k, v in s["images"].items()}
    assert im["prior_means"].shape == im["pixel_samples"].shape == (g.SHOW["samples"], D)
    assert im["originals"].shape == im["reconstructions"].shape == (g.SHOW["pairs"], D)
    assert im["interpolation"].shape == (g.SHOW["steps"], D) and im["interpolation_ends"].shape == (2, D)
    assert set(np.unique(im["pixel_samples"])) <= {0.0, 1.0} and set(np.unique(im["originals"])) <= {0.0, 1.0}
    assert all(np.all((v >= 0) & (v <= 1)) for v in im.values())
    assert np.all(np.isfinite(s["interpolation"]["log_q"])) and s["test"]["elbo"] < 0
    if key == "two_d":
        p = s["plane"]
        assert np.array(p["log_q"]).shape == (len(p["grid"]), len(p["grid"]))
        assert len(p["prior_in_hole"]) == len(p["prior_samples"])


def test_finding_quotes_this_runs_numbers(quick):
    r = quick[0]
    lines, n = r["finding"], r["numbers"]
    assert isinstance(lines, list) and len(lines) == 3 and all(20 < len(line) <= 150 for line in lines), lines
    a, b = n["two_d"], n["high_d"]

    def states(line, *values):
        for v in values:
            assert v in line, f"{v!r} not in {line!r}"

    states(lines[0], f"test ELBO {b['test']['elbo']:.1f} against {a['test']['elbo']:.1f}",
           f"{b['quality']['prior']['entropy']:.1f} nats at prior samples, {b['quality']['q']['entropy']:.1f} at z ~ q(z)",
           f"{a['quality']['prior']['entropy']:.1f}, {a['quality']['q']['entropy']:.1f}")
    states(lines[1], f"{100 * b['holes']['fraction_of_prior']:.1f}%", f"{100 * a['holes']['fraction_of_prior']:.1f}%",
           *(f"[{s['aggregate']['kl_moment_bound']:.2f}, {s['aggregate']['kl']:.2f}]" for s in (a, b)))
    for s in (a, b):
        q = s["quality"]
        states(lines[2], f"{q['prior_in_holes']['entropy']:.1f} vs {q['prior_on_support']['entropy']:.1f}",
               f"{q['prior_in_holes']['round_trip']:.2f} vs {q['prior_on_support']['round_trip']:.2f}")


def test_picture_layout_keeps_panels_apart_and_inside_the_figure(quick):
    """No two panels (with their titles, labels and legends) overlap, and each lies inside the figure."""
    fig = g.draw(quick[0]["numbers"])
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = []
    for ax in fig.axes:
        box = ax.get_tightbbox(renderer)  # the axes with its title, tick labels, axis labels and legend
        assert fig.bbox.x0 <= box.x0 and box.x1 <= fig.bbox.x1 and fig.bbox.y0 <= box.y0 and box.y1 <= fig.bbox.y1, \
            f"{ax.get_title()!r} leaves the figure"
        boxes.append((ax.get_title(), box))
    for i, (t1, b1) in enumerate(boxes):
        for t2, b2 in boxes[i + 1:]:
            assert not b1.overlaps(b2), f"{t1!r} overlaps {t2!r}"
    assert len(fig.axes) == 12  # 2 x (3 image grids + 1 interpolation strip) + plane, holes, 2 quality panels
    # Every image grid on the fixed grey scale, 0 white and 1 black.
    grids = [ax for ax in fig.axes if ax.images]
    assert len(grids) == 8 and all(ax.images[0].get_clim() == (0.0, 1.0) for ax in grids)
