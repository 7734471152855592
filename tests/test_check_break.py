"""`npvae check --break NAME`: each planted bug is caught by exactly the checks its description names, the bug really
is live while planted, and the package is exactly as it was after.

Every run here is a whole `run_all` in float64 with seed 0 (about 2 s); the unbroken rows are computed once.
"""

import json
import sys
import types

import pytest

from npvae import cli
from npvae.checks import breaks
from npvae.checks.check import run_all

_RUNS = {}


@pytest.fixture(scope="module")
def clean():
    rows = run_all(0)
    assert all(r["passed"] for r in rows)  # nothing was left planted before this module ran
    return rows


@pytest.fixture
def run_of(clean):
    def get(name):
        if name not in _RUNS:
            _RUNS[name] = breaks.run(name, 0, clean)
        return _RUNS[name]
    return get


def failing(run, check=None):
    return [r for r in run.broken if r["status"] == "FAIL" and (check is None or r["check"] == check)]


@pytest.mark.parametrize("name", breaks.NAMES)
def test_each_bug_is_caught_by_the_checks_its_description_names(run_of, name):
    run = run_of(name)
    assert {r["check"] for r in failing(run)} == set(run.bug.caught_by)
    assert run.failing == tuple(c for c in breaks.CHECKS if c in run.bug.caught_by)
    assert run.caught == bool(run.bug.caught_by)
    assert run.bindings  # it was planted somewhere
    assert all(r["passed"] for r in run.clean)


def test_kl_no_half_fails_only_the_closed_form_kl_rows_and_doubles_the_kl(run_of):
    bad = failing(run_of("kl-no-half"))
    assert all("kl=analytic" in r["case"] or r["case"].startswith("KL(") for r in bad)
    kl_row = next(r for r in bad if r["case"].startswith("KL("))
    assert kl_row["error"] == pytest.approx(1.0, abs=1e-12)  # |2 KL - KL| / KL: twice the value, exactly


def one_layer_analytic(rows):
    return [r for r in rows if r["check"] == "gradient" and "kl=analytic" in r["case"] and not r["case"].startswith("L=")]


def test_a_consistent_sampler_bug_passes_the_analytic_gradient_rows_and_a_forward_only_one_does_not(run_of):
    """logvar-as-logstd (forward and its backward) vs variance-for-std (the same forward, the backward left as it was)."""
    consistent, forward_only = run_of("logvar-as-logstd"), run_of("variance-for-std")
    assert one_layer_analytic(failing(consistent)) == []
    assert one_layer_analytic(consistent.broken)  # the rows exist, and passed
    assert any("kl=mc" in r["case"] for r in failing(consistent, "gradient"))  # the z-form oracle sees the MC rows
    assert len(one_layer_analytic(failing(forward_only))) > 0


def test_bce_mean_is_caught_only_by_the_multi_pixel_bernoulli_row_and_is_live(run_of):
    run = run_of("bce-mean")
    assert [r["case"] for r in failing(run)] == ["log-weights of a Bernoulli tanh VAE, D=6 pixels, vs scipy.stats.bernoulli and norm"]
    # Live: the Bernoulli VAE's ELBO decoder gradient (its first decoder row in the probe) is exactly D = 6 times smaller.
    label = "    |gradient| of the decoder"
    before = next(v for l, _, v in run.probe_clean if l == label)
    after = next(v for l, _, v in run.probe_broken if l == label)
    assert before / after == pytest.approx(6.0, rel=1e-12)


def test_mse_mean_makes_the_gaussian_density_rows_exactly_one_over_d(run_of):
    rows = [r for r in failing(run_of("mse-mean")) if r["case"].startswith("Gaussian log-density")]
    assert len(rows) == 6  # three sigma2, two dtypes
    assert all(r["error"] == pytest.approx(1 - 1 / 3, abs=1e-6) for r in rows)  # D = 3: |ref / 3 - ref| / |ref|


def test_iwae_unnormalised_fails_iwae_gradient_rows_only(run_of):
    bad = failing(run_of("iwae-unnormalised"))
    assert bad and all(" iwae " in r["case"] for r in bad)


def test_iwae_no_log_k_moves_values_not_gradients(run_of):
    bad = failing(run_of("iwae-no-log-k"))
    assert {r["check"] for r in bad} == {"bound", "value"}
    assert all("iwae" in r["case"].lower() for r in bad)


def test_stop_gradient_fails_encoder_rows_only(run_of):
    bad = failing(run_of("stop-gradient"), "gradient")
    assert bad and all(r["case"].rsplit(" ", 1)[1].startswith("enc") for r in bad)


def _bindings():
    """Every npvae module attribute and module-level dict entry, by identity."""
    out = {}
    for n, m in list(sys.modules.items()):
        if m is None or not n.startswith("npvae"):
            continue
        for k, v in list(vars(m).items()):
            out[(n, k)] = id(v)
            if type(v) is dict:
                out.update({(n, k, repr(kk)): id(vv) for kk, vv in list(v.items())})
    return out


def test_the_package_is_exactly_as_it_was_after_every_bug(clean):
    for m in breaks.USED:  # what planting imports, imported first, so that `before` holds every binding it touches
        __import__(m)
    before = _bindings()
    for name in breaks.NAMES:
        with breaks.planted(name) as where:
            assert where
    with pytest.raises(RuntimeError):  # an error inside the block restores too
        with breaks.planted("stop-gradient"):
            raise RuntimeError("inside")
    # A module imported during the block binds the broken function; the sweep on the way out puts the original back.
    from npvae.maths import gaussian

    original = gaussian.sample_forward
    late = types.ModuleType("npvae._late_import_for_test")
    try:
        with breaks.planted("variance-for-std"):
            late.sample_forward = gaussian.sample_forward
            sys.modules[late.__name__] = late
            assert late.sample_forward is breaks.sample_forward_var
        assert late.sample_forward is original
    finally:
        sys.modules.pop(late.__name__, None)
    after = _bindings()
    assert {k: after.get(k) for k in before} == before
    assert json.dumps(run_all(0)) == json.dumps(clean)  # bit for bit, NaN included


def test_break_list(capsys):
    assert cli.main(["check", "--break", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list(breaks.NAMES)


def test_an_unknown_bug_is_one_line_and_exit_2(capsys):
    assert cli.main(["check", "--break", "kl-no-third"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1
    assert all(name in captured.err for name in breaks.NAMES)


def test_cli_break_caught_exits_0_with_the_lesson(capsys):
    assert cli.main(["check", "--break", "kl-no-half"]) == 0
    out = capsys.readouterr().out
    fail_rows = [line for line in out.splitlines() if line.endswith("  FAIL")]
    assert fail_rows and all(line.startswith("value ") for line in fail_rows)
    for head in ("What people write:", "Why it is wrong:", "What catches it:", "What cannot see it:", "Reports:"):
        assert head in out


def test_cli_break_not_caught_exits_1(capsys, monkeypatch):
    """A planted change that no check sees (here: a function replaced by itself) is reported as not caught, exit 1."""
    from npvae.checks import breaks
    from npvae.maths import gaussian

    idle = breaks.BUGS["kl-no-half"]._replace(name="idle", caught_by=(), replaces=lambda: {gaussian.std: gaussian.std})
    monkeypatch.setitem(breaks.BUGS, "idle", idle)
    assert cli.main(["check", "--break", "idle", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["caught"] is False and report["failing_checks"] == []
    assert all(r["status"] != "FAIL" and r["unbroken_error"] is not None for r in report["rows"])
