"""The README's "What you should see" table, rerun: the first command's run and the tour's eval of it."""

import json
import re

import pytest

from conftest import REPO

# quantity in the README's table -> (command, how the value is read from its output)
QUANTITIES = {
    "best validation bound (nats per point, higher is better)": ("train", lambda t, m: t),
    "NLL = -log p(x), k = 5000, all 250 test digits": ("eval", lambda t, m: m["nll"]),
    "its standard error": ("eval", lambda t, m: m["nll_se"]),
    "-ELBO": ("eval", lambda t, m: -m["elbo"]),
    "KL term of the ELBO": ("eval", lambda t, m: m["kl"]),
    "active units (of Z = 2)": ("eval", lambda t, m: m["active_units"]),
}


def _table():
    text = (REPO / "README.md").read_text()
    section = text[text.index("### What you should see"):]
    rows = re.findall(r"^\| `npvae (train|eval RUN)` \| (.+?) \| (-?\d+(?:\.\d+)?) \|$", section, re.M)
    return [(cmd.split()[0], quantity, value) for cmd, quantity, value in rows]


def test_the_table_quotes_every_quantity_once():
    assert sorted(q for _, q, _ in _table()) == sorted(QUANTITIES)


@pytest.mark.slow
def test_the_first_run_gives_the_numbers_the_readme_quotes(tmp_path, capsys):
    from npvae.cli import main

    run = tmp_path / "digits"
    assert main(["train", "--out", str(run), "--no-pictures", "--quiet"]) == 0
    best = float(re.search(r"best validation bound (-?\d+\.\d+)", capsys.readouterr().out).group(1))
    assert main(["eval", str(run), "--json", "--quiet"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    for command, quantity, quoted in _table():
        want_command, read = QUANTITIES[quantity]
        assert command == want_command, quantity
        got = read(best, metrics)
        decimals = len(quoted.split(".")[1]) if "." in quoted else 0
        # the quoted digits are what the run gives, rounded: half a unit of the last digit shown, and no more
        assert abs(got - float(quoted)) <= 0.5 * 10.0 ** -decimals, (quantity, got, quoted)
