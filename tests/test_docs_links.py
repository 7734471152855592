"""The docs stand on their own: every relative link in docs/ (any .md) and README.md resolves, every code link names what is
there, every citation of a docs section names a heading that exists, and nothing points outside the repository.

Link forms (docs/theory.md and docs/maths.md use them throughout):
    [`npvae/x.py`](../npvae/x.py)                         the file (or folder) must exist
    [`maths/gaussian.py: std`](../npvae/maths/gaussian.py) and the text's file must be the target, and `std` a function,
                                                           class or constant defined in it (`Class.method` for a method)
    [`test_x.py::test_name`](../tests/test_x.py)          a test (or helper) defined in that file (`Class::test_name` too)
    [text](theory.md#4-the-exact-oracle)                  and the anchor a heading of the target (GitHub's slugs)
Citations in code and docs, `(docs/maths.md, "Decoder likelihoods")` and `docs/theory.md, section 4`, must name
headings that exist. Fenced code blocks are skipped. Everything is read with `ast` and regular expressions: nothing
is imported.
"""

from __future__ import annotations

import ast
import re
from functools import lru_cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = sorted((REPO / "docs").rglob("*.md")) + [REPO / "README.md"]
SCANNED = ("npvae", "tests", "docs", "bench")  # and README.md; bench/runs (training output) is skipped
SKIPPED_DIRS = {"__pycache__", ".hypothesis", ".pytest_cache"}

# Names are built in pieces so that this file does not mention what it looks for.
OUTSIDE = {
    "maths-notes": re.compile(re.escape("MATHS" + ".md")),
    "style-notes": re.compile(re.escape("STYLE" + ".md")),
    "shared-dir": re.compile(re.escape("..") + "/" + "shared" + r"\b" + "|" + re.escape("/work/" + "shared")),
}
# Files allowed to mention a path outside the repository, and why. Only configuration that looks for the developer's
# local data may: a test that needs the data skips with its reason where the folder is absent.
ALLOWED = {
    "shared-dir": {
        "tests/conftest.py": "SHARED_DATA, the one place the test suite looks for the developer's local data folder",
    },
}

LINK = re.compile(r"(?<!\\)\[((?:[^\[\]]|\[[^\]]*\])*)\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
CODE_TEXT = re.compile(r"^`([^`]+)`$")
MATHS_CITE = re.compile(r"docs/maths\.md,\s*\"([^\"]+)\"")
THEORY_CITE = re.compile(r"docs/theory\.md,\s*sections?\s+(\d+(?:\.\d+)?(?:\s*(?:,|and)\s*\d+(?:\.\d+)?)*)")


def _rel(p: Path) -> str:
    return p.relative_to(REPO).as_posix()


def _strip_fences(text: str) -> str:
    """The Markdown without its fenced code blocks (line count kept, so that messages can give line numbers)."""
    return FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)


def links(doc: Path) -> list[tuple[int, str, str]]:
    """(line, text, target) of every inline link outside code blocks."""
    text = _strip_fences(doc.read_text(encoding="utf-8"))
    return [(text.count("\n", 0, m.start()) + 1, m.group(1), m.group(2)) for m in LINK.finditer(text)]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (hyphens and underscores kept), spaces to hyphens."""
    h = re.sub(r"`|\*\*?|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", h).replace(" ", "-")


@lru_cache(maxsize=None)
def headings(doc: Path) -> tuple[tuple[int, str], ...]:
    """(level, text) of every ATX heading outside code blocks."""
    text = _strip_fences(doc.read_text(encoding="utf-8"))
    return tuple((len(m.group(1)), m.group(2).strip()) for m in re.finditer(r"^(#{1,6})\s+(.+?)\s*#*\s*$", text, re.M))


@lru_cache(maxsize=None)
def anchors(doc: Path) -> frozenset:
    seen, out = {}, set()
    for _, h in headings(doc):
        s = slug(h)
        n = seen.get(s, 0)
        out.add(s if n == 0 else f"{s}-{n}")
        seen[s] = n + 1
    return frozenset(out)


def _targets(node) -> list[str]:
    """Names an assignment target binds: a name, each name of a tuple, or `Class.attr` for an attribute of a name."""
    if isinstance(node, ast.Name):
        return [node.id]
    if isinstance(node, (ast.Tuple, ast.List)):
        return [n for e in node.elts for n in _targets(e)]
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        return [f"{node.value.id}.{node.attr}"]
    return []


def _bound(body, prefix: str = "") -> set[str]:
    """Functions, classes and assigned names of a module or class body, with `Class.member` for class members."""
    names = set()
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(prefix + node.name)
            if isinstance(node, ast.ClassDef):
                names |= _bound(node.body, f"{prefix}{node.name}.")
        elif isinstance(node, ast.Assign):
            names |= {prefix + n for t in node.targets for n in _targets(t)}
        elif isinstance(node, ast.AnnAssign):
            names |= {prefix + n for n in _targets(node.target)}
    return names


@lru_cache(maxsize=None)
def defined(path: Path) -> frozenset:
    return frozenset(_bound(ast.parse(path.read_text(encoding="utf-8")).body))


def check_code_link(text: str, path: Path) -> str | None:
    """None if a link text such as `gaussian.py: std` or `test_x.py::test_y` names what its target defines, else why not."""
    m = CODE_TEXT.match(text)
    if not m:
        return None
    inner = m.group(1).strip()
    if "::" in inner:
        file_part, *names = inner.split("::")
        names = [".".join(names)]
    elif re.match(r"^[\w./-]+\.py: ", inner):
        file_part, rest = inner.split(": ", 1)
        names = [n.strip() for n in rest.split(",")]
    else:
        return None
    if not path.as_posix().endswith(file_part.strip()):
        return f"the text names {file_part!r} but the link goes to {_rel(path)}"
    if path.suffix != ".py" or not path.is_file():
        return f"{_rel(path)} is not a Python file"
    missing = [n for n in names if n not in defined(path)]
    return f"{', '.join(missing)} not defined in {_rel(path)}" if missing else None


@pytest.mark.parametrize("doc", DOCS, ids=_rel)
def test_every_relative_link_resolves_and_names_what_is_there(doc):
    assert doc.exists(), f"{_rel(doc)} is missing"
    bad = []
    for line, text, target in links(doc):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        path = (doc.parent / file_part).resolve() if file_part else doc
        where = f"{_rel(doc)}:{line} [{text}]({target})"
        if not path.exists():
            bad.append(f"{where}: {file_part} does not exist")
            continue
        if not path.is_relative_to(REPO):
            bad.append(f"{where}: points outside the repository")
            continue
        if anchor and path.suffix == ".md" and anchor not in anchors(path):
            bad.append(f"{where}: no heading of {_rel(path)} has the anchor #{anchor}")
        why = check_code_link(text, path)
        if why:
            bad.append(f"{where}: {why}")
    assert not bad, "\n".join(bad)


def test_the_maths_page_links_code_and_tests():
    """docs/maths.md is the reference list: it links many functions and tests (a page emptied by accident fails)."""
    texts = [t for _, t, _ in links(REPO / "docs" / "maths.md")]
    n_code, n_test = sum(".py: " in t for t in texts), sum(".py::" in t for t in texts)
    assert n_code >= 60 and n_test >= 60, (n_code, n_test)


def _text_files():
    """Every text file under SCANNED (bench/runs and caches skipped), and README.md: (path relative to REPO, text)."""
    paths = [REPO / "README.md"]
    for top in SCANNED:
        for p in sorted((REPO / top).rglob("*")):
            rel = p.relative_to(REPO)
            if p.is_file() and not (SKIPPED_DIRS & set(rel.parts)) and rel.parts[:2] != ("bench", "runs"):
                paths.append(p)
    for p in paths:
        try:
            yield _rel(p), p.read_text(encoding="utf-8")
        except UnicodeDecodeError:  # pictures and other binary files
            continue


def test_citations_of_docs_sections_name_headings_that_exist():
    maths = {re.sub(r"^[\d.]+\s+", "", h).lower() for _, h in headings(REPO / "docs" / "maths.md")}
    theory = {m.group(1) for _, h in headings(REPO / "docs" / "theory.md") for m in [re.match(r"^(\d+(?:\.\d+)?)\.?\s", h)] if m}
    bad = []
    for rel, text in _text_files():
        for m in MATHS_CITE.finditer(text):
            if m.group(1).lower() not in maths:
                bad.append(f"{rel}: docs/maths.md has no heading {m.group(1)!r}")
        for m in THEORY_CITE.finditer(text):
            for n in re.findall(r"\d+(?:\.\d+)?", m.group(1)):
                if n not in theory:
                    bad.append(f"{rel}: docs/theory.md has no section {n}")
    assert not bad, "\n".join(bad)


def _mentions(kind: str) -> list[str]:
    allowed = ALLOWED.get(kind, {})
    return [f"{rel}:{text.count(chr(10), 0, m.start()) + 1}: {text.splitlines()[text.count(chr(10), 0, m.start())].strip()[:120]}"
            for rel, text in _text_files() if rel not in allowed for m in OUTSIDE[kind].finditer(text)]


def test_allowed_files_exist():
    for kind, files in ALLOWED.items():
        for rel in files:
            assert (REPO / rel).exists(), f"ALLOWED[{kind!r}] lists {rel}, which is not there"


@pytest.mark.parametrize("kind", [
    "maths-notes",
    "style-notes",
    "shared-dir",
])
def test_nothing_points_outside_the_repository(kind):
    """No file of the package, tests, docs, bench or README cites notes or folders that are not in the repository."""
    found = _mentions(kind)
    assert not found, f"{len(found)} mention(s) of {OUTSIDE[kind].pattern}:\n" + "\n".join(found)
