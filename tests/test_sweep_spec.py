"""Sweep SPEC files (npvae.sweeps.spec): the grid's runs and names, and every bad SPEC refused before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from npvae.cli import main
from npvae.sweeps.spec import SpecError, load_spec, parse_spec, references_for

GOOD = {
    "sweep": {"out": "runs/x", "chunk_epochs": 5},
    "base": {"dataset": "digits", "epochs": 4, "lr": 1},
    "grid": {"k": [1, 5], "objective": {"vae": {"bound": "elbo"}, "iwae": {"bound": "iwae", "kl": "mc"}}},
    "eval": {"k": 100, "epochs": [2, 1, 2]},
    "reference": [{"where": {"objective": "iwae", "k": 5}, "nll": 87.63, "source": "paper"}],
}


def _parse(raw, tmp_path=Path("/tmp/specs")):
    return parse_spec(raw, tmp_path / "s.toml")


def test_the_grid_is_every_combination_in_grid_order_with_readable_names():
    spec = _parse(GOOD)
    assert [p.name for p in spec.points] == ["k-1_objective-vae", "k-1_objective-iwae", "k-5_objective-vae", "k-5_objective-iwae"]
    iwae5 = spec.points[3]
    assert (iwae5.config.k, iwae5.config.bound, iwae5.config.kl, iwae5.config.epochs) == (5, "iwae", "mc", 4)
    assert iwae5.config.lr == 1.0 and isinstance(iwae5.config.lr, float)  # an integer taken for a float option
    assert spec.out == Path("/tmp/specs/runs/x")  # relative to the SPEC's directory
    assert spec.eval.epochs == (1, 2) and spec.eval.k == 100
    assert [references_for(spec, p) != [] for p in spec.points] == [False, False, False, True]
    assert spec.varying() == ["k", "objective"]


def test_arch_names_are_path_safe():
    spec = _parse({"base": {"dataset": "digits"}, "grid": {"arch": ["64-16-4:8-2", "64-16-2"]}})
    assert [p.name for p in spec.points] == ["arch-64-16-4+8-2", "arch-64-16-2"]


@pytest.mark.parametrize("edit, words", [
    ({"sweep": {"outt": "x"}}, "unknown key sweep.outt"),
    ({"bogus": {}}, "unknown key bogus"),
    ({"base": {"dataset": "digits", "lrr": 1e-3}}, "unknown option base.lrr"),
    ({"grid": {"kk": [1, 2]}}, "unknown option grid.kk"),
    ({"grid": {"objective": {"vae": {"bound": "elbo", "bogus": 1}}}}, "unknown option grid.objective.vae.bogus"),
    ({"grid": {"k": [0, 5]}}, "run k-0: k must be"),
    ({"grid": {"k": ["5"]}}, "grid.k must be an integer"),
    ({"grid": {"k": []}}, "grid.k is an empty list"),
    ({"grid": {"k": [5, 5]}}, "grid.k repeats a value"),
    ({"grid": {"bound": ["iwae"]}}, "run bound-iwae: the IWAE bound has no analytic-KL form"),
    ({"grid": {"k": [1]}, "base": {"dataset": "digits", "k": 2}}, "grid.k sets k, which [base] sets too"),
    ({"grid": {"a": {"x": {"k": 1}}, "b": {"y": {"k": 2}}}}, "grid.b sets k, which grid.a sets too"),
    ({"grid": {"a": {"x/y": {"k": 1}}}}, "grid.a.x/y"),
    ({"sweep": {"chunk_epochs": 0}}, "sweep.chunk_epochs must be an integer >= 1"),
    ({"eval": {"k": 0}}, "eval.k must be an integer >= 1"),
    ({"eval": {"split": "tst"}}, "eval.split must be"),
    ({"eval": {"checkpoint": "first"}}, "eval.checkpoint must be"),
    ({"eval": {"kk": 1}}, "unknown key eval.kk"),
    ({"reference": [{"where": {"kk": 1}, "nll": 1.0}]}, "reference[0].where.kk is not a grid key"),
    ({"reference": [{"where": {"k": 7}, "nll": 1.0}]}, "reference[0].where.k = 7 is not one of grid.k's values"),
    ({"reference": [{"where": {"k": 5}, "nll": "88"}]}, "reference[0].nll must be a number"),
    ({"reference": [{"where": {"k": 5}, "nll": float("nan")}]}, "reference[0].nll must be a number"),
    ({"reference": [{"where": {"k": True}, "nll": 1.0}]}, "reference[0].where.k = True is not one of grid.k's values"),
    ({"reference": [{"where": {"k": 5}, "nll": 1.0}, {"where": {"objective": "iwae"}, "nll": 2.0}]},
     "reference[0] and reference[1] both match run k-5_objective-iwae"),
    ({"grid": {"../up": {"x": {"k": 2}}}}, "grid.../up: a grid key is used in run names"),
    ({"grid": {"k": [1], "arch": [""]}}, "grid.arch is empty"),
    ({"grid": {"objective": {"A": {"k": 1}, "a": {"k": 2}}}}, "have the same run name objective-a (letter case aside)"),
])
def test_a_bad_spec_is_refused_naming_the_key(edit, words):
    raw = {**GOOD, **edit}
    with pytest.raises(SpecError) as e:
        _parse(raw)
    assert words in str(e.value)


def test_the_cli_refuses_a_bad_spec_before_making_anything(tmp_path, capsys):
    spec = tmp_path / "bad.toml"
    spec.write_text('[sweep]\nout = "runs"\n[base]\ndataset = "digits"\n[grid]\nk = [1, 0]\n')
    assert main(["sweep", str(spec)]) == 2
    err = capsys.readouterr().err
    assert "run k-0: k must be" in err and str(spec) in err
    assert not (tmp_path / "runs").exists()
    spec.write_text('[base]\ndataset = "digits"\narch = "10-5-2"\n')
    assert main(["sweep", str(spec), "--check"]) == 2
    assert "run run: --arch 10-5-2 starts with D=10 but the data set has D=64" in capsys.readouterr().err
    spec.write_text("[base\n")
    assert main(["sweep", str(spec)]) == 2
    assert "is not valid TOML" in capsys.readouterr().err
    assert main(["sweep", str(tmp_path / "none.toml")]) == 2
    assert "cannot read the sweep SPEC" in capsys.readouterr().err


def test_a_run_trained_with_another_config_is_refused(tmp_path, capsys):
    spec = tmp_path / "s.toml"
    spec.write_text('[sweep]\nout = "runs"\n[base]\ndataset = "digits"\nepochs = 1\narch = "64-8-2"\n[grid]\nseed = [0]\n')
    assert main(["train", "--epochs", "1", "--arch", "64-8-2", "--lr", "0.01", "--out", str(tmp_path / "runs" / "seed-0"),
                 "--quiet", "--no-pictures"]) == 0
    capsys.readouterr()
    assert main(["sweep", str(spec), "--check"]) == 2
    assert "run seed-0" in (err := capsys.readouterr().err) and "lr = 0.01 there, 0.001 here" in err
    spec.write_text(spec.read_text().replace("epochs = 1", "epochs = 3").replace('arch = "64-8-2"', 'arch = "64-8-2"\nlr = 0.01'))
    assert main(["sweep", str(spec), "--check"]) == 0  # more epochs: the run is continued
    assert "seed-0: 1/3 epochs" in capsys.readouterr().out


def test_load_spec_reads_toml(tmp_path):
    p = tmp_path / "s.toml"
    p.write_text('[base]\ndataset = "digits"\n[grid]\nobjective = { vae = { bound = "elbo" } }\n')
    spec = load_spec(p)
    assert [pt.name for pt in spec.points] == ["objective-vae"] and spec.out == tmp_path / "runs" / "s"


def _timed_parse(raw, seconds: float = 10.0):
    """(the SpecError raised by parsing raw, the seconds it took); an alarm fails it past `seconds` instead of hanging."""
    import signal
    import time

    def late(*_):
        raise AssertionError(f"parsing took more than {seconds} s")

    old = signal.signal(signal.SIGALRM, late)
    signal.alarm(int(seconds))
    try:
        t0 = time.perf_counter()
        with pytest.raises(SpecError) as e:
            _parse(raw)
        return e.value, time.perf_counter() - t0
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def test_a_huge_grid_is_counted_and_refused_before_it_is_expanded():
    from npvae.sweeps.spec import MAX_RUNS

    assert MAX_RUNS == 10_000  # the limit docs/sweep.md names
    raw = {"base": {"dataset": "digits"},
           "grid": {"seed": list(range(1000)), "k": list(range(1, 101)), "batch_size": list(range(1, 101))}}
    e, seconds = _timed_parse(raw)
    assert str(e) == ("/tmp/specs/s.toml: the grid has 10,000,000 points (seed 1,000 x k 100 x batch_size 100), more "
                      "than the 10,000 a sweep may run (npvae.sweeps.spec.MAX_RUNS): split it into several SPECs or "
                      "shorten its lists")
    assert "\n" not in str(e) and seconds < 0.5, seconds


def test_named_sets_count_in_the_grid_size(monkeypatch):
    import npvae.sweeps.spec as spec_module

    monkeypatch.setattr(spec_module, "MAX_RUNS", 4)
    assert len(_parse(GOOD).points) == 4  # k 2 x objective 2: at the limit, accepted
    raw = {**GOOD, "grid": {**GOOD["grid"], "k": [1, 5, 50]}}
    with pytest.raises(SpecError, match=r"the grid has 6 points \(k 3 x objective 2\), more than the 4 a sweep"):
        _parse(raw)


def test_the_cli_check_refuses_a_huge_grid_at_once(tmp_path, capsys):
    spec = tmp_path / "huge.toml"
    spec.write_text('[base]\ndataset = "digits"\n[grid]\n'
                    + "".join(f"{k} = {list(range(1, 11))}\n" for k in ("seed", "k", "batch_size", "epochs", "valid_k"))
                    + "lr = [0.1, 0.01, 0.001, 0.0001, 1e-5, 2e-5, 3e-5, 4e-5, 5e-5, 6e-5]\n"
                    + "kl_weight = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]\n")
    import time

    t0 = time.perf_counter()
    assert main(["sweep", str(spec), "--check"]) == 2
    assert time.perf_counter() - t0 < 1.0
    err = capsys.readouterr().err
    assert err.startswith(f"npvae sweep: error: {spec}: the grid has 10,000,000 points (seed 10 x k 10 x batch_size 10")
    assert err.count("\n") == 1 and not (tmp_path / "runs").exists()


def test_grid_keys_and_set_names_may_hold_underscores_written_unambiguously():
    raw = {"base": {"dataset": "digits", "epochs": 2},
           "grid": {"batch_size": [10, 20], "kl_weight": [0.5],
                    "enc_layers": {"two_deep": {"arch": "64-16-8-2"}, "one": {"arch": "64-16-2"}}},
           "reference": [{"where": {"batch_size": 20, "enc_layers": "two_deep"}, "nll": 30.0}]}
    spec = _parse(raw)
    assert [p.name for p in spec.points] == ["batch.size-10_kl.weight-0.5_enc.layers-two+deep",
                                             "batch.size-10_kl.weight-0.5_enc.layers-one",
                                             "batch.size-20_kl.weight-0.5_enc.layers-two+deep",
                                             "batch.size-20_kl.weight-0.5_enc.layers-one"]
    p = spec.points[2]
    assert (p.config.batch_size, p.config.kl_weight, p.config.arch) == (20, 0.5, "64-16-8-2")
    assert p.values == {"batch_size": 20, "kl_weight": 0.5, "enc_layers": "two_deep"}
    assert [references_for(spec, q) != [] for q in spec.points] == [False, False, True, False]
    assert spec.varying() == ["batch_size", "enc_layers"]
    for q in spec.points:  # `_` separates the pairs only, and each pair reads back to one key and its value
        pairs = [pair.split("-", 1) for pair in q.name.split("_")]
        assert [k.replace(".", "_") for k, _ in pairs] == list(raw["grid"])


def test_the_names_of_existing_runs_do_not_change():
    raw = {"base": {"dataset": "digits"},
           "grid": {"layers": {"one": {"arch": "64-20-2"}, "two": {"arch": "64-20-4:4-2"}},
                    "objective": {"vae": {"bound": "elbo", "kl": "analytic"}, "iwae": {"bound": "iwae", "kl": "mc"}},
                    "k": [1, 5, 50]}}
    names = [p.name for p in _parse(raw).points]
    assert names[:3] == ["layers-one_objective-vae_k-1", "layers-one_objective-vae_k-5", "layers-one_objective-vae_k-50"]
    assert "layers-two_objective-iwae_k-5" in names and len(names) == 12  # bench/runs/burda's directories
    assert [p.name for p in _parse({"base": {"dataset": "digits"}, "grid": {"seed": [1]}}).points] == ["seed-1"]


@pytest.mark.parametrize("grid, words", [
    ({"a_b": {"x": {"k": 1}}, "a.b": {"y": {"seed": 2}}},
     "grid.a_b and grid.a.b are both written a.b in run names (a key's _ is written .): rename one"),
    ({"objective": {"a_b": {"k": 1}, "a+b": {"k": 2}}}, "have the same run name objective-a+b"),
    ({"batch_size": [10], "s_t": {"x/y": {"seed": 1}}}, "grid.s_t.x/y: a set's name is used in run names: letters, "
                                                        "digits, '_', '.', '+', '-' only"),
])
def test_underscored_names_that_would_read_alike_are_refused(grid, words):
    with pytest.raises(SpecError) as e:
        _parse({"base": {"dataset": "digits"}, "grid": grid})
    assert words in str(e.value)
