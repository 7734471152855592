"""The README's "What you should see" table, rerun: the first command's run, step 3's eval of it, and step 6 on MNIST."""

import json
import re
import shlex

import pytest

from conftest import REPO, SHARED_DATA

# quantity in the README's table -> (command, how the value is read from its output)
QUANTITIES = {
    "best validation bound (nats per point, higher is better)": ("train", lambda t, m: t),
    "NLL = -log p(x), k = 5000, all 250 test digits": ("eval", lambda t, m: m["nll"]),
    "its standard error": ("eval", lambda t, m: m["nll_se"]),
    "-ELBO": ("eval", lambda t, m: -m["elbo"]),
    "KL term of the ELBO": ("eval", lambda t, m: m["kl"]),
    "active units (of Z = 2)": ("eval", lambda t, m: m["active_units"]),
    "best validation bound after 5 epochs": ("mnist", lambda t, m: t),
}
COMMANDS = {"train": "train", "eval RUN": "eval", "train --dataset binarized-mnist ...": "mnist"}


def _readme() -> str:
    return (REPO / "README.md").read_text()


def _table():
    text = _readme()
    section = text[text.index("### What you should see"):]
    rows = re.findall(r"^\| `npvae (.+?)` \| (.+?) \| (-?\d+(?:\.\d+)?) \|$", section, re.M)
    return [(COMMANDS[cmd], quantity, value) for cmd, quantity, value in rows]


def _holds(got: float, quoted: str) -> bool:
    """The quoted digits are what the run gives, rounded: half a unit of the last digit shown, and no more."""
    decimals = len(quoted.split(".")[1]) if "." in quoted else 0
    return abs(got - float(quoted)) <= 0.5 * 10.0 ** -decimals


def _mnist_command() -> list[str]:
    """Step 6's command of the README's first hour, as argv after `npvae` (continuation lines joined)."""
    text = _readme()
    hour = text[text.index("## Your first hour"):text.index("### What you should see")]
    blocks = re.findall(r"```bash\n(.*?)```", hour, re.S)
    (block,) = [b for b in blocks if "binarized-mnist" in b]
    argv = shlex.split(block.replace("\\\n", " "))
    assert argv[:2] == ["npvae", "train"], argv
    return argv[1:]


def test_the_table_quotes_every_quantity_once():
    assert sorted(q for _, q, _ in _table()) == sorted(QUANTITIES)


def test_step_six_is_one_command_that_downloads():
    argv = _mnist_command()
    assert "--download" in argv and "--data-dir" not in argv and argv[argv.index("--epochs") + 1] == "5"


@pytest.mark.slow
def test_the_first_run_gives_the_numbers_the_readme_quotes(tmp_path, capsys):
    from npvae.cli import main

    run = tmp_path / "digits"
    assert main(["train", "--out", str(run), "--no-pictures", "--quiet"]) == 0
    best = float(re.search(r"best validation bound (-?\d+\.\d+)", capsys.readouterr().out).group(1))
    assert main(["eval", str(run), "--json", "--quiet"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    rows = [r for r in _table() if r[0] != "mnist"]
    assert len(rows) == 6
    for command, quantity, quoted in rows:
        want_command, read = QUANTITIES[quantity]
        assert command == want_command, quantity
        got = read(best, metrics)
        assert _holds(got, quoted), (quantity, got, quoted)


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "binarized_mnist.npz").is_file(), reason="needs binarized_mnist.npz (set NPVAE_DATA_DIR)")
def test_step_six_gives_the_bound_the_readme_quotes(tmp_path, capsys):
    """The README's MNIST command as written, reading a local copy instead of downloading (about a minute)."""
    from npvae.cli import main

    argv = [a for a in _mnist_command() if a != "--download"]
    argv += ["--data-dir", str(SHARED_DATA), "--out", str(tmp_path / "mnist"), "--no-pictures", "--quiet"]
    assert main(argv) == 0
    best = float(re.search(r"best validation bound (-?\d+\.\d+)", capsys.readouterr().out).group(1))
    ((_, quantity, quoted),) = [r for r in _table() if r[0] == "mnist"]
    assert _holds(best, quoted), (quantity, best, quoted)
