"""`npvae check`: runs, prints its table or JSON, and FAILS when a gradient is wrong."""

import json

from npvae import cli
from npvae.checks import check as check_mod


def test_check_passes_and_prints_a_table(capsys):
    assert cli.main(["check"]) == 0
    out = capsys.readouterr().out
    assert "gradient" in out and "bound" in out and out.strip().endswith("0 failed")


def test_check_json(capsys):
    assert cli.main(["check", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] and len(report["rows"]) > 100
    assert {r["check"] for r in report["rows"]} == {"layer", "gradient", "bound", "value"}
    assert all(r["status"] == "ok" for r in report["rows"])


def test_check_catches_a_gradient_off_by_a_tiny_factor(monkeypatch, capsys):
    """A check that cannot fail proves nothing: scale one estimator's gradients by 1 + 1e-4 and it must exit 1."""
    real = check_mod.objective

    def wrong(params, arch, x, eps, **kw):
        v, g = real(params, arch, x, eps, **kw)
        if kw.get("estimator") == "dreg":  # the first network: the encoder, or q(z1|x)'s for two stochastic layers
            g = g._replace(**{g._fields[0]: tuple(type(l)(l.W * (1 + 1e-4), l.b) for l in g[0])})
        return v, g

    monkeypatch.setattr(check_mod, "objective", wrong)
    assert cli.main(["check"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "dreg" in out
