"""The package's import structure (docs/architecture.md): no module imports, directly or through others, a module
that imports it back, whether the import is at the top of a file or inside a function."""

from pathlib import Path

import pytest

from architecture_groups import CONCEPTS, concept
from import_graph import cycles, graph

PACKAGE = Path(__file__).resolve().parent.parent / "npvae"


def concept_graph():
    """The graph without a package's __init__ -> its own submodules (a package listing its parts is not a loop)."""
    g = graph(PACKAGE)
    return {m: {d for d in deps if not d.startswith(m + ".")} for m, deps in g.items()}


def test_there_are_no_import_circles():
    assert cycles(concept_graph()) == []


def test_the_checker_finds_a_circle():
    """A checker that cannot fail proves nothing: a planted loop a -> b -> c -> a is found, and only it."""
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(g) == [["a", "b", "c"]]


@pytest.mark.parametrize("source, target", [
    ("npvae.backends.numba_backend", "npvae.backends.numba_ladder"),
    ("npvae.backends.numba_ladder", "npvae.backends.numba_cpu"),
    ("npvae.cli.sweep", "npvae.cli.data"),
    ("npvae.vae.ladder_objective", "npvae.vae.ladder"),
])
def test_the_graph_sees_imports_at_every_level(source, target):
    """Top-level and function-level imports, relative and absolute, all count."""
    assert target in graph(PACKAGE)[source]


def concept_edges():
    """{(importer's concept, imported concept): [(module, module), ...]} between different concepts."""
    edges = {}
    for m, deps in concept_graph().items():
        for d in deps:
            a, b = concept(m), concept(d)
            if a != b:
                edges.setdefault((a, b), []).append((m, d))
    return edges


def test_every_module_is_in_a_concept():
    assert [m for m in graph(PACKAGE) if _concept_or_none(m) is None] == []


def _concept_or_none(m):
    try:
        return concept(m)
    except KeyError:
        return None


def test_imports_run_one_way():
    """maths <- nn <- likelihoods <- store <- model <- specification <- ... <- cli: no concept imports a later one."""
    order = list(CONCEPTS)
    backwards = {k: v for k, v in concept_edges().items() if order.index(k[1]) > order.index(k[0])}
    assert backwards == {}


def transitive_reduction(edges: set) -> set:
    """The fewest edges with the same reachability (edges of a DAG): (a, b) goes when a reaches b another way."""
    succ = {}
    for a, b in edges:
        succ.setdefault(a, set()).add(b)

    def reaches(a, b, skip):
        todo, seen = [n for n in succ.get(a, ()) if (a, n) != skip], set()
        while todo:
            n = todo.pop()
            if n == b:
                return True
            if n not in seen:
                seen.add(n)
                todo += succ.get(n, ())
        return False

    return {(a, b) for a, b in edges if not reaches(a, b, (a, b))}


def test_transitive_reduction_drops_only_shortcuts():
    assert transitive_reduction({("a", "b"), ("b", "c"), ("a", "c"), ("d", "c")}) == {("a", "b"), ("b", "c"), ("d", "c")}


def test_the_docs_picture_is_the_code():
    """docs/architecture.md's diagram is the concepts' import graph, each edge implied by a path drawn only once."""
    text = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    block = text.split("```mermaid", 1)[1].split("```", 1)[0]
    drawn = {tuple(line.strip().split(" --> ")) for line in block.splitlines() if " --> " in line}
    assert drawn == transitive_reduction(set(concept_edges()))


def test_old_module_paths_are_the_moved_modules_with_a_deprecation_warning():
    """Every path in npvae._moved.MOVED imports, in a fresh interpreter, as the module at its new path, and warns once."""
    import subprocess
    import sys

    script = """
import importlib, warnings
import npvae
from npvae._moved import MOVED
for old, new in MOVED.items():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = importlib.import_module(old)
    assert got is importlib.import_module(new), old
    assert [w.category for w in caught] == [DeprecationWarning] and new in str(caught[0].message), (old, caught)
print(len(MOVED))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert int(out) >= 20
