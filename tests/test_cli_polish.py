"""The command line's small promises: the version agrees everywhere, the eval table's columns line up."""

import re

from conftest import REPO


def test_version_is_one_number_in_the_package_pyproject_and_the_cli(capsys):
    from npvae import __version__
    from npvae.cli import main

    pyproject = re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M).group(1)
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"npvae {__version__}" == f"npvae {pyproject}"
    # The README names the previous version's checkpoint format as the old one still read: it must be older.
    old = re.search(r"Runs of npvae (\d+\.\d+) \(`last\.npz`", (REPO / "README.md").read_text()).group(1)
    assert tuple(map(int, old.split("."))) < tuple(map(int, __version__.split(".")[:2]))


def test_the_eval_table_puts_every_number_in_one_column():
    from npvae.cli.eval import table_lines

    m = dict(nll=86.123, nll_se=0.24, elbo=-90.5, elbo_se=0.3, recon=-60.1, kl=30.4, gap_log_px_minus_elbo=4.377,
             active_units=21, latent_dim=50, active_units_points=1000, mutual_information=7.5)
    for k in (1, 5000, 100000):
        lines = table_lines(m, k)
        ends = {re.match(r"  .*?\s(-?\d+(\.\d+)?)(\s|$)", line).end(1) for line in lines}
        assert len(ends) == 1, "\n".join(lines)


def test_train_ends_with_next_commands_that_run_on_the_real_path(tmp_path, monkeypatch, capsys):
    """A default run (no --out) lands in runs/digits-<date>-<time>; the commands train prints name that path and work."""
    import shlex

    from npvae.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["train", "--epochs", "1", "--no-pictures"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    nxt = [shlex.split(line.split("#")[0]) for line in lines[lines.index("next:") + 1:]]
    assert [c[:2] for c in nxt] == [["npvae", "sample"], ["npvae", "eval"], ["npvae", "train"]]
    run = nxt[0][2]
    assert re.fullmatch(r"runs/digits-\d{8}-\d{6}(-\d+)?", run) and (tmp_path / run / "last.safetensors").exists()
    assert nxt[1][2] == run and nxt[2] == ["npvae", "train", "--resume", run, "--epochs", "2"]
    assert main(nxt[1][1:] + ["--k", "3", "--quiet"]) == 0  # eval, cut to k = 3 (the command itself: k = 5000)
    assert "metrics.json" in capsys.readouterr().out
    assert main(nxt[2][1:] + ["--no-pictures", "--quiet"]) == 0


def test_a_long_evaluation_names_the_options_that_would_shorten_it():
    from argparse import Namespace

    from npvae.cli.eval import faster

    plain = faster(Namespace(threads=1, workers=None, scheduler=None, n=None), "numpy")
    assert all(opt in plain for opt in ("--backend numba", "--threads N", "--n 1000", "--k"))
    done = faster(Namespace(threads=2, workers=None, scheduler=None, n=500), "numba")
    assert not any(opt in done for opt in ("--backend", "--threads", "--n ")) and "--k" in done


def test_a_missing_file_is_named_with_what_was_expected_there(tmp_path, capsys):
    from npvae.cli import main

    missing = tmp_path / "theirs.npz"
    assert main(["verify", str(missing)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"npvae verify: error: {missing}: no such file or directory (expected: an .npz") and "Errno" not in err
    assert len(err.splitlines()) == 1


def test_a_long_training_run_is_announced_after_its_first_epoch():
    from npvae.cli.train import estimate_line
    from npvae.training.config import TrainConfig

    line = estimate_line(TrainConfig(epochs=3280), 1, 15.0)  # 3279 epochs x 15 s = 49185 s
    assert "the 3279 left will take about 13.7 h" in line and "--backend numba" in line and "--resume" in line
    assert "--backend numba" not in estimate_line(TrainConfig(epochs=3280, backend="numba"), 1, 15.0)
    assert estimate_line(TrainConfig(epochs=100), 1, 0.5) is None  # 49.5 s left: nothing to announce
