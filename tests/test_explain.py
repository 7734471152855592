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
    """1/2 [sum_j log M_jj - log|M|], written out again (MATHS.md)."""
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


def _display_paths(ax) -> list:
    """(name, vertices in display px, filled) for every curve (Line2D) and band or error bar (collection) drawn in ax."""
    out = []
    for line in ax.get_lines():
        xy = line.get_xydata()
        xy = xy[np.all(np.isfinite(xy), axis=1)]
        if len(xy):  # (an empty line is a legend proxy)
            out.append((f"line {line.get_label()!r}", line.get_transform().transform(xy), False))
    for coll in ax.collections:
        for path in coll.get_paths():
            v = path.vertices[np.all(np.isfinite(path.vertices), axis=1)]
            if len(v):
                out.append((f"band {coll.get_label()!r}", coll.get_transform().transform(v), True))
    return out


def check_panels(fig) -> None:
    """After a draw: every curve and band lies inside its axes; no legend covers a curve, a band or the axis
    labels, or leaves the figure; every text placed in an axes (an annotation) stays inside it."""
    from matplotlib.path import Path as MplPath

    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for i, ax in enumerate(fig.axes):
        box = ax.bbox
        for name, xy, filled in _display_paths(ax):
            lo, hi = xy.min(axis=0), xy.max(axis=0)
            assert lo[0] >= box.x0 - 1 and hi[0] <= box.x1 + 1 and lo[1] >= box.y0 - 1 and hi[1] <= box.y1 + 1, \
                f"panel {i}: {name} runs off the panel"
        legend = ax.get_legend()
        if legend is not None:
            lb = legend.get_window_extent(renderer)
            assert fig.bbox.x0 <= lb.x0 and lb.x1 <= fig.bbox.x1 and fig.bbox.y0 <= lb.y0 and lb.y1 <= fig.bbox.y1, \
                f"panel {i}: the legend leaves the figure"
            for name, xy, filled in _display_paths(ax):
                assert not MplPath(xy).intersects_bbox(lb, filled=filled), f"panel {i}: the legend covers {name}"
            for axis in (ax.xaxis, ax.yaxis):
                assert not lb.overlaps(axis.get_tightbbox(renderer)), f"panel {i}: the legend covers the axis labels"
        for t in ax.texts:
            tb = t.get_window_extent(renderer)
            assert box.x0 <= tb.x0 and tb.x1 <= box.x1 and box.y0 <= tb.y0 and tb.y1 <= box.y1, \
                f"panel {i}: the text {t.get_text()!r} leaves its panel"


def test_reparam_picture_keeps_every_curve_on_its_panel_and_legends_off_the_curves(result):
    from npvae.explain import reparam

    nb = result("reparam")[0]["numbers"]
    fig = reparam.draw(nb)
    check_panels(fig)
    # The running means are drawn as their error against the exact gradient, all four of them.
    errors = [line.get_ydata() for line in fig.axes[1].get_lines() if line.get_label() in nb["main"]["running_mean_dim0"]]
    exact = nb["main"]["exact"][0]
    expected = [np.array(v) - exact for v in nb["main"]["running_mean_dim0"].values()]
    assert len(errors) == 4
    for drawn, e in zip(errors, expected):
        np.testing.assert_allclose(drawn, e, rtol=0, atol=1e-12)


def test_posterior_nonlinear_picture_labels_each_curve_with_its_own_value(result):
    from npvae.explain import posterior_nonlinear

    nl = result("posterior")[0]["numbers"]["nonlinear"]
    fig = posterior_nonlinear.draw(nl)
    check_panels(fig)
    prop = nl["proposals"]
    handles, labels = fig.axes[2].get_legend_handles_labels()
    assert [t.get_text() for t in fig.axes[2].get_legend().get_texts()] == labels
    for name in ("encoder", "prior"):
        [(line, label)] = [(h, lab) for h, lab in zip(handles, labels) if f"the {name}" in lab]
        np.testing.assert_array_equal(line.get_ydata(), prop[name])  # the entry naming the encoder is the encoder's curve
        assert f"{prop[name][-1]:.1f} at K = {prop['K'][-1]}" in label, label


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
    p = nl["proposals"]
    assert p["encoder"][0] > p["prior"][0] + 5  # one sample from the prior is a far worse proposal
    assert all(b > a for a, b in zip(p["prior"], p["prior"][1:]))


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "binarized_mnist.npz").exists(), reason="needs ../shared/data/binarized_mnist.npz")
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
    s = n["snr"]
    _states(lines[2], *(f"{v[0]:#.3g} -> {v[-1]:#.3g}" for v in (s["iwae-reparam"]["encoder"], s["iwae-dreg"]["encoder"],
                                                                 s["iwae-reparam"]["decoder"])))


def test_reparam_finding_states_this_runs_variances(result):
    lines, n = _finding(result, "reparam")
    v = {k: var[0] for k, var in n["main"]["variance"].items()}
    mc, sf, sf0 = v["reparam, MC KL"], v["score function, baseline c = ELBO"], v["score function, no baseline"]
    _states(lines[0], f"{n['main']['exact'][0]:.3f}", f"{v['reparam, analytic KL']:.1f}", f"{mc:.1f}", f"{sf:.0f}", f"{sf0:.0f}")
    _states(lines[1], f"{sf / mc:.0f} to {sf0 / mc:.0f} times")
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
