"""`npvae explain`'s estimate before a full run (npvae.explain.cost; the line in npvae.cli.explain), without running one.

The experiments and the probe are replaced by stand-ins (a full run takes up to a minute): these tests check what is
printed and when, the arithmetic of the estimate, and that the data search agrees with store.data.load's.
"""

import re

import numpy as np
import pytest

import npvae.explain
from conftest import SHARED_DATA
from npvae import cli
from npvae.cli.explain import MNIST_TOPICS
from npvae.explain import TOPICS, cost
from npvae.evaluation.cost import ANNOUNCE_ABOVE
from npvae.explain.posterior_nonlinear import _search_dirs
from npvae.store.data import DataNotFoundError, load


@pytest.fixture
def explain(monkeypatch, capsys, tmp_path):
    """Runs `npvae explain ARGS` with a stand-in experiment and a probe `slower` times the reference machine's;
    returns (stderr before the experiment started, stderr after it, the calls of the probe)."""
    monkeypatch.delenv("NPVAE_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # no MNIST in the cache either

    def go(*argv, slower=1.0):
        seen, probes = [], []

        def probe():
            probes.append(True)
            return cost.PROBE_REFERENCE * slower

        def run(topic, out, *, quick, seed, data_dir):
            seen.append(capsys.readouterr().err)
            return {"notes": [], "question": "?", "finding": [], "files": []}

        monkeypatch.setattr(cost, "probe_seconds", probe)
        monkeypatch.setattr(npvae.explain, "run", run)
        assert cli.main([str(a) for a in (*argv, "--out", tmp_path / "out")]) == 0
        assert len(seen) == 1
        return seen[0], capsys.readouterr().err, probes

    return go


def _mnist_dir(tmp_path):
    """A directory where the search finds binarised MNIST (an empty stand-in file: finding reads nothing)."""
    d = tmp_path / "with-mnist"
    d.mkdir()
    (d / "binarized_mnist.npz").touch()
    return d


def _slower(topic: str, seconds: float, column: int = 0) -> float:
    """How much slower than the reference machine a probe must be for REFERENCE[topic][column] to become `seconds`."""
    return seconds / cost.REFERENCE[topic][column]


def test_full_run_announces_its_estimate_once_before_it_starts(explain, tmp_path):
    before, after, probes = explain("explain", "gaps", "--data-dir", _mnist_dir(tmp_path), slower=_slower("gaps", 600))
    lines = before.splitlines()
    assert len(lines) == 1 and after == "" and len(probes) == 1
    assert re.fullmatch(r"npvae explain gaps: about 10 min on one core here \(--quick: about \d+ s, the embedded digits, "
                        r"smaller sizes\)", lines[0]), lines[0]


def test_quick_run_announces_nothing_and_times_nothing(explain, tmp_path):
    before, after, probes = explain("explain", "gaps", "--quick", "--data-dir", _mnist_dir(tmp_path), slower=100)
    assert before == after == "" and probes == []


def test_short_run_is_announced_only_over_the_threshold(explain):
    assert cost.REFERENCE["joint"][0] < ANNOUNCE_ABOVE == 10  # npvae eval's threshold, shared
    assert explain("explain", "joint")[0] == ""
    assert explain("explain", "joint", slower=_slower("joint", 9.9))[0] == ""  # just under the threshold
    before = explain("explain", "joint", slower=_slower("joint", 20))[0]
    assert re.fullmatch(r"npvae explain joint: about 20 s on one core here \(--quick: about \d+ s, smaller sizes\)\n", before), before


def test_threads_are_said(explain):
    before = explain("explain", "iwae", "--threads", "2", slower=_slower("iwae", 30))[0]
    assert before.startswith("npvae explain iwae: about 30 s with 2 threads here (--quick: "), before


def test_without_mnist_the_line_gives_the_digits_figure(explain, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with_mnist = explain("explain", "gaps", "--data-dir", _mnist_dir(tmp_path), slower=_slower("gaps", 600))[0]
    assert "about 10 min" in with_mnist and "the embedded digits" in with_mnist
    without = explain("explain", "gaps", "--data-dir", empty, slower=_slower("gaps", 600, column=1))[0]
    assert "about 10 min" in without and "the embedded digits" not in without  # the full run is on the digits already
    assert cost.REFERENCE["gaps"][0] != cost.REFERENCE["gaps"][1]  # so the figure without MNIST is the one used


def test_estimate_scales_with_the_probe(monkeypatch):
    for topic in TOPICS:
        ref = cost.REFERENCE[topic]
        assert cost.estimate(topic, probe=cost.PROBE_REFERENCE) == pytest.approx(ref[0])
        assert cost.estimate(topic, probe=3 * cost.PROBE_REFERENCE) == pytest.approx(3 * ref[0])
        assert cost.estimate(topic, quick=True, probe=0.5 * cost.PROBE_REFERENCE) == pytest.approx(0.5 * ref[2])
    monkeypatch.setattr(cost, "probe_seconds", lambda: 2 * cost.PROBE_REFERENCE)  # probe=None: timed now
    assert cost.estimate("iwae") == pytest.approx(2 * cost.REFERENCE["iwae"][0])


def test_unknown_topic():
    with pytest.raises(ValueError, match=r"unknown topic 'nonsense'; choose one of posterior, iwae"):
        cost.estimate("nonsense", probe=cost.PROBE_REFERENCE)
    assert set(cost.REFERENCE) == set(TOPICS)


def test_mnist_figure_only_when_the_data_are_found():
    p = cost.PROBE_REFERENCE
    for topic in TOPICS:
        found, missing = (cost.estimate(topic, data_found=f, probe=p) for f in (True, False))
        assert (found, missing) == pytest.approx(cost.REFERENCE[topic][:2])
        # the topics that train on MNIST take a different time without it; the others do not read it
        assert (found != missing) == (topic in MNIST_TOPICS), topic
        assert cost.estimate(topic, quick=True, data_found=True, probe=p) == cost.estimate(topic, quick=True, data_found=False, probe=p)


def _layouts(tmp_path):
    """Directories as a user may have them, and whether each holds a complete set of binarised MNIST's files."""
    amat = [f"binarized_mnist_{s}.amat" for s in ("train", "valid", "test")]
    spec = {"npz": (["binarized_mnist.npz"], True), "sub": (["binarized-mnist/binarized_mnist.npz"], True),
            "amat": (amat, True), "two-amat": (amat[:2], False), "gz": (["binarized_mnist.npz.gz"], False),
            "other": (["train-images-idx3-ubyte"], False), "empty": ([], False)}
    out = {}
    for name, (files, expected) in spec.items():
        for f in files:
            (tmp_path / name / f).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name / f).touch()
        (tmp_path / name).mkdir(exist_ok=True)
        out[name] = (tmp_path / name, expected)
    out["missing dir"] = (tmp_path / "nowhere", False)
    out["None"] = (None, False)
    out["list"] = ([tmp_path / "empty", str(tmp_path / "sub")], True)
    return out


def test_mnist_found_agrees_with_load(tmp_path):
    for name, (data_dir, expected) in _layouts(tmp_path).items():
        try:
            load("binarized-mnist", search_dirs=_search_dirs(data_dir))
            loaded = True
        except DataNotFoundError:
            loaded = False
        except Exception:  # found, and then refused as not MNIST (an empty stand-in file)
            loaded = True
        assert cost.mnist_found(data_dir) == loaded == expected, name


@pytest.mark.skipif(not (SHARED_DATA / "binarized_mnist.npz").is_file(), reason="binarised MNIST not found")
def test_mnist_found_on_the_real_files():
    assert cost.mnist_found(SHARED_DATA) and cost.mnist_found([str(SHARED_DATA)])
    assert load("binarized-mnist", search_dirs=[SHARED_DATA], compact=True).name == "binarized-mnist"


def test_probe_leaves_the_run_unchanged(tmp_path):
    """The probe draws from its own Generator: a run after it gives the same numbers as one without it."""
    a = npvae.explain.run("joint", tmp_path / "a", quick=True, seed=3)
    assert cost.probe_seconds() > 0
    b = npvae.explain.run("joint", tmp_path / "b", quick=True, seed=3)
    assert a["numbers"] == b["numbers"] and a["finding"] == b["finding"]
    state = np.random.get_state()[1].copy()
    cost.probe_seconds()
    assert np.array_equal(np.random.get_state()[1], state)  # nor does it touch numpy's global generator
