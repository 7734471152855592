"""docs/learn.md, the reading path, works as written: every step script runs and passes its own asserts, every step
names what to read, what to run and what to look for, every command it names exists, every link resolves.

A step is a `## Step N: title` section of docs/learn.md holding a `**Read**`, a `**Run**` and a `**Look for**` paragraph, in
that order. The Run paragraph's one code span is the command: `python docs/learn/stepN_....py` (that file, of this step's
number) or an `npvae ...` command. Every `npvae ...` command anywhere on the page, in a code span or a code block, must
parse with the CLI's own parser (placeholders such as RUN are positional arguments and parse). The exercises are
`<!-- exercise: NAME -->` markers, or the text that replaces them, `npvae check --break NAME`: each NAME of BREAKS in
exactly one step, and no name that `npvae check --break` does not know.
Each docs/learn/step*.py is a percent-format script (jupytext): `# %% [markdown]` cells of comment lines, none empty,
and code cells that assert; it imports only npvae, NumPy, SciPy and the standard library, and writes nothing into the
repository. The scripts run in a subprocess with one thread each, a few seconds each (docs/learn.md promises seconds).
"""

from __future__ import annotations

import ast
import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LEARN = REPO / "docs" / "learn.md"
SCRIPTS = sorted((REPO / "docs" / "learn").glob("step*.py"))
STEP = re.compile(r"^## Step (\d+): (.+)$", re.M)
SCRIPT_NAME = re.compile(r"^step(\d+)_[a-z0-9_]+\.py$")
# The exercises every reading of the page must have; `npvae check --break list` may offer more, each placed at most once.
BREAKS = ("kl-no-half", "logvar-as-logstd", "variance-for-std", "bce-mean", "iwae-unnormalised", "stop-gradient")
LINK = re.compile(r"(?<!\\)\[((?:[^\[\]]|\[[^\]]*\])*)\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
SCRIPT_TIMEOUT_S = 60  # each script takes 1 to 3 s on one core; this only stops a hung one
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
ALLOWED_IMPORTS = {"npvae", "numpy", "scipy"} | set(sys.stdlib_module_names)


def steps() -> list[tuple[int, str, str]]:
    """(number, title, body) of every step of docs/learn.md, in page order."""
    text = LEARN.read_text(encoding="utf-8")
    heads = list(STEP.finditer(text))
    out = []
    for i, m in enumerate(heads):
        end = heads[i + 1].start() if i + 1 < len(heads) else text.find("\n## ", m.end())
        out.append((int(m.group(1)), m.group(2), text[m.end(): end if end != -1 else len(text)]))
    return out


def paragraph(body: str, label: str) -> str:
    """The paragraph that starts with **label**, without the label; '' if there is none."""
    m = re.search(rf"^\*\*{re.escape(label)}\*\*(.*?)(?=\n\s*\n|\Z)", body, re.S | re.M)
    return m.group(1).strip() if m else ""


def npvae_commands(text: str) -> list[str]:
    """Every `npvae ...` command on the page: code spans, and the lines of code blocks (split at && and ;)."""
    found = []
    for block in FENCE.findall(text):
        for line in block.splitlines():
            found += [c.strip() for c in re.split(r"&&|;", line.split("#")[0]) if c.strip().startswith("npvae ")]
    without_blocks = FENCE.sub("", text)
    found += [m.group(1).strip() for m in re.finditer(r"`(npvae [^`]+)`", without_blocks)]
    return found


def parse_error(command: str) -> str | None:
    """None if the CLI's parser accepts the command (or prints its help), else argparse's message."""
    from npvae.cli import build_parser

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            build_parser().parse_args(shlex.split(command)[1:])
    except SystemExit as e:
        return None if e.code == 0 else err.getvalue().strip().splitlines()[-1]
    return None


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (hyphens and underscores kept), spaces to hyphens."""
    h = re.sub(r"`|\*\*?|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", h).replace(" ", "-")


def anchors(doc: Path) -> set[str]:
    text = FENCE.sub("", doc.read_text(encoding="utf-8"))
    seen, out = {}, set()
    for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, re.M):
        s = slug(m.group(1))
        out.add(s if s not in seen else f"{s}-{seen[s]}")
        seen[s] = seen.get(s, 0) + 1
    return out


def cells(path: Path) -> list[tuple[str, list[str]]]:
    """(kind, lines) of the percent-format cells of a script: kind 'markdown' or 'code'; lines after the marker."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# %%"):
            out.append(("markdown" if "[markdown]" in line else "code", []))
        elif out:
            out[-1][1].append(line)
        elif line.strip():
            out.append(("code", [line]))   # text before the first marker is a cell of its own, code
    return out


# ---- the page ----

def test_nine_steps_in_order_each_with_its_script():
    numbers = [n for n, _, _ in steps()]
    assert numbers == list(range(1, 10)), f"docs/learn.md's steps are numbered {numbers}"
    by_number = {}
    for p in SCRIPTS:
        m = SCRIPT_NAME.match(p.name)
        assert m, f"{p.name}: a step script is named stepN_words.py"
        by_number.setdefault(int(m.group(1)), []).append(p.name)
    assert sorted(by_number) == numbers and all(len(v) == 1 for v in by_number.values()), by_number


@pytest.mark.parametrize("number, title, body", steps(), ids=lambda v: f"step{v}" if isinstance(v, int) else "")
def test_step_names_what_to_read_run_and_look_for(number, title, body):
    labels = ["Read", "Run", "Look for"]
    where = [body.find(f"**{label}**") for label in labels]
    assert all(i >= 0 for i in where) and where == sorted(where), f"step {number}: needs **Read**, **Run**, **Look for**, in order"
    read, run, look = (paragraph(body, label) for label in labels)
    assert len(read) > 40 and len(look) > 80, f"step {number}: the Read or Look for paragraph is (nearly) empty"
    assert "](" in read, f"step {number}: Read links nothing to read"
    commands = re.findall(r"`([^`]+)`", run)
    assert len(commands) == 1, f"step {number}: Run must name ONE command, got {commands}"
    command = commands[0]
    if command.startswith("python "):
        parts = shlex.split(command)
        assert len(parts) == 2, f"step {number}: {command!r} takes no arguments"
        script = REPO / parts[1]
        assert script.is_file(), f"step {number}: {parts[1]} does not exist"
        m = SCRIPT_NAME.match(script.name)
        assert script.parent == REPO / "docs" / "learn" and m and int(m.group(1)) == number, \
            f"step {number} runs {parts[1]}, not docs/learn/step{number}_....py"
    else:
        assert command.startswith("npvae "), f"step {number}: {command!r} is neither a step script nor an npvae command"
        assert parse_error(command) is None, f"step {number}: {command!r}: {parse_error(command)}"


def test_every_npvae_command_on_the_page_parses():
    commands = npvae_commands(LEARN.read_text(encoding="utf-8"))
    assert len(commands) >= 5, commands
    bad = [f"{c!r}: {parse_error(c)}" for c in commands if parse_error(c) is not None]
    assert not bad, "commands in docs/learn.md that npvae does not accept:\n" + "\n".join(bad)


def test_it_closes_with_the_first_command_of_verify_md():
    verify = (REPO / "docs" / "verify.md").read_text(encoding="utf-8")
    first = next(line for block in re.findall(r"^```bash\n(.*?)^```", verify, re.S | re.M) for line in block.splitlines() if line.strip())
    text = LEARN.read_text(encoding="utf-8")
    last = text[text.rfind("\n## You can now verify a VAE"):]
    assert last.startswith("\n## You can now verify a VAE"), "docs/learn.md must close with '## You can now verify a VAE'"
    assert first.split("#")[0].strip() in last, f"the closing section must give docs/verify.md's first command, {first!r}"


def test_each_exercise_is_placed_once():
    from npvae.checks.breaks import NAMES

    placed = {name: [] for name in (*BREAKS, *NAMES)}
    for number, _, body in steps():
        for name in re.findall(r"<!--\s*exercise:\s*([\w-]+)\s*-->", body) + re.findall(r"\*\*Break it: `npvae check --break ([\w-]+)`", body):
            assert name in placed, f"step {number}: unknown exercise {name!r}; npvae check --break knows {', '.join(placed)}"
            placed[name].append(number)
    assert all(len(placed[name]) == 1 for name in BREAKS), f"each of {BREAKS} in exactly one step: {placed}"
    assert all(len(v) <= 1 for v in placed.values()), f"an exercise in two steps: {placed}"


def test_every_relative_link_resolves():
    text = FENCE.sub("", LEARN.read_text(encoding="utf-8"))
    bad = []
    for m in LINK.finditer(text):
        target = m.group(2)
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):
            continue
        file_part, _, anchor = target.partition("#")
        path = (LEARN.parent / file_part).resolve() if file_part else LEARN
        if not path.exists() or not path.is_relative_to(REPO):
            bad.append(f"[{m.group(1)}]({target}): {file_part} is not a file of the repository")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            bad.append(f"[{m.group(1)}]({target}): no heading of {path.name} has the anchor #{anchor}")
    assert not bad, "\n".join(bad)


# ---- the scripts ----

@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.stem)
def test_script_is_a_notebook_of_explained_asserts(path):
    cs = cells(path)
    assert cs and cs[0][0] == "markdown", f"{path.name} must open with a `# %% [markdown]` cell"
    for i, (kind, lines) in enumerate(cs):
        if kind == "markdown":
            assert all(not ln.strip() or ln.startswith("#") for ln in lines), f"{path.name}, cell {i}: markdown lines are comments"
            text = " ".join(ln.lstrip("#").strip() for ln in lines).strip()
            assert len(text) > 20, f"{path.name}, cell {i}: an empty markdown cell"
    code = [kind for kind, _ in cs if kind == "code"]
    assert len(code) >= 2 and len(code) < len(cs), f"{path.name}: needs markdown and code cells"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    assert any(isinstance(n, ast.Assert) for n in ast.walk(tree)), f"{path.name} asserts nothing"
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert imported <= ALLOWED_IMPORTS, f"{path.name} imports {sorted(imported - ALLOWED_IMPORTS)}"


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.stem)
def test_script_opens_as_a_jupytext_notebook(path):
    jupytext = pytest.importorskip("jupytext")
    nb = jupytext.read(path, fmt="py:percent")
    kinds = [c.cell_type for c in nb.cells]
    assert kinds.count("markdown") == sum(k == "markdown" for k, _ in cells(path)) and "code" in kinds


def _entries():
    """What a script could leave behind in the repository: the top level, docs/ and docs/learn/ (names only)."""
    return {p.relative_to(REPO).as_posix() for d in (REPO, REPO / "docs", REPO / "docs" / "learn") for p in d.iterdir()
            if p.name != "__pycache__"}


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.stem)
def test_script_runs_and_its_asserts_hold(path):
    before = _entries()
    env = {**os.environ, **ONE_THREAD, "PYTHONDONTWRITEBYTECODE": "1"}
    r = subprocess.run([sys.executable, str(path.relative_to(REPO))], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=SCRIPT_TIMEOUT_S)
    assert r.returncode == 0, f"{path.name} failed (exit {r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    assert r.stdout.strip(), f"{path.name} prints nothing to look for"
    new = _entries() - before
    assert not new, f"{path.name} wrote into the repository: {sorted(new)}"
