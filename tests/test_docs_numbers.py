"""Every number the docs quote from a run is checked against that run, so a change that moves it fails here.

A quoted figure carries a marker right after it (HTML comments do not render):

    ... reaches $-116.6$<!-- from: explain posterior: n.nonlinear.history.log_px[-1] --> ...

`explain TOPIC` is `npvae explain TOPIC` with its defaults (the full run, seed 0, one BLAS thread); `n` is its JSON's
"numbers" (dict keys as attributes, `n.main.variance["reparam, MC KL"]` where a key is not a name; lists are NumPy
arrays, so `n.a[-1] - n.b[-1]` is a number). The quoted figure is the last number before the marker on its line:
`-116.6`, `0.376`, `3.2e-04`, `$2 \\times 10^{-5}$`, `580,000`; it must equal the expression to the digits printed
(half a unit of the last digit shown). `at-most:` instead of `from:` says the quoted figure is a bound the value
stays under (`the identity holds to $10^{-10}$`). Every decimal number in a topic's "*What it shows*" paragraphs must
carry a marker: a new figure cannot go in unchecked.

The experiments are seeded, so the only slack beyond rounding is what the order of floating-point additions can
move (relative 1e-9, far below any printed digit).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, SHARED_DATA

DOCS = [REPO / "docs" / "theory.md", REPO / "docs" / "learn.md", REPO / "README.md"]
MARKER = re.compile(r"<!--\s*(?P<kind>from|at-most):\s*(?P<source>[a-z]+ [a-z_]+):\s*(?P<expr>.+?)\s*-->")
# A quoted figure: a decimal (with thousands commas or an exponent), or LaTeX's a \times 10^{b} / 10^{b}.
NUMBER = re.compile(r"(?P<tex>(?:(?P<m>-?\d+(?:\.\d+)?)\s*\\times\s*)?10\^\{(?P<e>-?\d+)\})"
                    r"|(?P<num>[-\u2212]?\d{1,3}(?:,\d{3})+(?:\.\d+)?|[-\u2212]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)")


def quoted(text: str) -> tuple[float, float]:
    """(value, half a unit of its last printed digit) of the last number in `text`."""
    matches = list(NUMBER.finditer(text))
    if not matches:
        raise ValueError(f"no number before the marker in {text[-60:]!r}")
    m = matches[-1]
    if m.group("tex"):
        mant = m.group("m") or "1"
        e = int(m.group("e"))
        return float(mant) * 10.0 ** e, 0.5 * 10.0 ** (e - _decimals(mant))
    s = m.group("num").replace("\u2212", "-").replace(",", "")
    mant, _, exp = s.lower().partition("e")
    e = int(exp) if exp else 0
    return float(s), 0.5 * 10.0 ** (e - _decimals(mant))


def _decimals(s: str) -> int:
    return len(s.split(".")[1]) if "." in s else 0


class _N:
    """A JSON dict whose keys read as attributes; lists come back as arrays."""

    def __init__(self, d):
        self._d = d

    def __getattr__(self, key):
        try:
            return _wrap(self._d[key])
        except KeyError:
            raise AttributeError(f"no key {key!r}; keys: {sorted(self._d)}") from None

    def __getitem__(self, key):
        return _wrap(self._d[key])


def _wrap(v):
    if isinstance(v, dict):
        return _N(v)
    if isinstance(v, list):
        return np.array(v, dtype=float) if all(isinstance(x, (int, float)) for x in np.ravel(np.array(v, dtype=object))) else v
    return v


def markers(path: Path):
    """(line number, kind, source, expression, quoted value, half unit) of every marker in path."""
    out = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        pos = 0
        for m in MARKER.finditer(line):
            value, half = quoted(line[pos:m.start()].rstrip("$ *"))
            out.append((i, m.group("kind"), m.group("source"), m.group("expr"), value, half))
            pos = m.end()
    return out


_RUNS: dict = {}


def source_numbers(source: str, tmp_root: Path):
    """The numbers of one source, computed once per session."""
    if source not in _RUNS:
        kind, name = source.split(" ")
        if kind != "explain":
            raise ValueError(f"unknown source {source!r}")
        from npvae.explain import run

        data = [str(SHARED_DATA)] if (SHARED_DATA / "binarized_mnist.npz").is_file() else []
        result = run(name, tmp_root / f"explain-{name}", seed=0, data_dir=data)
        if name == "posterior" and result["numbers"]["nonlinear"]["dataset"] != "binarized-mnist":
            pytest.skip("binarized_mnist.npz is not here: the quoted MNIST figures cannot be rerun")
        _RUNS[source] = result["numbers"]
    return _RUNS[source]


def _all_markers():
    return [(p, *m) for p in DOCS if p.exists() for m in markers(p)]


@pytest.fixture(scope="session")
def runs_root(tmp_path_factory):
    return tmp_path_factory.mktemp("docs-numbers")


@pytest.mark.slow
@pytest.mark.parametrize("path, line, kind, source, expr, value, half",
                         _all_markers(), ids=lambda v: v.name if isinstance(v, Path) else None)
def test_quoted_number_matches_its_run(path, line, kind, source, expr, value, half, runs_root):
    n = _N(source_numbers(source, runs_root))
    got = float(eval(expr, {"__builtins__": {}, "np": np, "abs": abs, "max": max, "min": min, "math": math}, {"n": n}))
    where = f"{path.name}:{line}: {expr}"
    if kind == "at-most":
        assert got <= value, f"{where} = {got:.6g}, above the quoted bound {value:g}"
    else:
        slack = half + 1e-9 * abs(got)
        assert abs(got - value) <= slack, f"{where} = {got:.10g}; the docs say {value:g} (to +-{half:g}): update the text"


def _what_it_shows(path: Path):
    """(line number, line) of the "*What it shows*" paragraphs of section 9's topics."""
    lines, inside = [], False
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if line.startswith("*What it shows*"):
            inside = True
        elif line.startswith(("*Answer*", "```", "#")):
            inside = False
        if inside:
            lines.append((i, line))
    return lines


def test_every_figure_in_what_it_shows_has_a_marker():
    """A decimal figure in a "What it shows" paragraph without a marker would go unchecked."""
    missing = []
    for i, line in _what_it_shows(REPO / "docs" / "theory.md"):
        bare = MARKER.sub(" ", line)
        for m in re.finditer(r"-?\d+\.\d+", line):
            after = line[m.end():]
            if re.search(r"(section|sections|§)\s*$", line[:m.start()]):  # a cross-reference, "section 9.1"
                continue
            if not re.match(r"(\s*\\times\s*10\^\{-?\d+\})?\$?\**\s*<!--\s*(from|at-most):", after) and m.group() in bare:
                missing.append(f"theory.md:{i}: {m.group()}")
    assert not missing, "figures without a marker (add <!-- from: explain TOPIC: EXPR -->): " + ", ".join(missing)


@pytest.mark.parametrize("text, value, half", [
    ("falls to 0.376", 0.376, 5e-4), ("reaches $-116.6", -116.6, 0.05), ("gap $3.2e-04", 3.2e-4, 5e-6),
    (r"falls to $2 \times 10^{-5}", 2e-5, 5e-6), ("holds to $10^{-10}", 1e-10, 5e-11), ("to 580,000", 580000, 0.5),
    ("grows 34 to 1115", 1115, 0.5), ("\u22126.667", -6.667, 5e-4),
])
def test_quoted_reads_the_last_number_and_its_precision(text, value, half):
    got, got_half = quoted(text)
    assert got == pytest.approx(value, rel=1e-15) and got_half == pytest.approx(half, rel=1e-12)


def test_a_moved_number_fails():
    """The check is not vacuous: a marker whose figure is off by one printed unit is caught."""
    n = _N({"a": [1.0, 2.3456]})
    value, half = quoted("it is 2.346")
    assert abs(float(eval("n.a[-1]", {"__builtins__": {}}, {"n": n})) - value) <= half
    value, half = quoted("it is 2.347")
    assert abs(float(eval("n.a[-1]", {"__builtins__": {}}, {"n": n})) - value) > half
