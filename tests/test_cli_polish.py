"""The command line's small promises: the version agrees everywhere, the eval table's columns line up, a refusal names the
command's options, a reader gone ends it quietly."""

import re

import pytest

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

    plain = faster(Namespace(threads=1, workers=None, scheduler=None, n=None), "numpy", 10_000)
    assert all(opt in plain for opt in ("--backend numba", "--threads N", "--n 1000", "--k"))
    done = faster(Namespace(threads=2, workers=None, scheduler=None, n=500), "numba", 10_000)
    assert not any(opt in done for opt in ("--backend", "--threads", "--n ")) and "--k" in done


def test_a_missing_file_is_named_with_what_was_expected_there(tmp_path, capsys):
    from npvae.cli import main

    missing = tmp_path / "theirs.npz"
    assert main(["verify", str(missing)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"npvae verify: error: {missing}: no such file or directory (expected: an .npz") and "Errno" not in err
    assert len(err.splitlines()) == 1


def test_a_long_training_run_is_announced_after_its_second_epoch():
    from npvae.cli.train import estimate_line
    from npvae.training.config import TrainConfig

    # After epoch 2 of the process (announce; the first compiles and warms up): tests/test_train_output.py
    line = estimate_line(TrainConfig(epochs=3280), 2, 15.0)  # 3278 epochs x 15 s = 49170 s
    assert "the 3278 left will take about 13.7 h" in line and "--backend numba" in line and "--resume" in line
    assert "--backend numba" not in estimate_line(TrainConfig(epochs=3280, backend="numba"), 2, 15.0)
    assert estimate_line(TrainConfig(epochs=100), 2, 0.5) is None  # 49 s left: nothing to announce


def _train_error(capsys, tmp_path, *options) -> str:
    """The one line `npvae train OPTIONS` says on stderr when it refuses them (exit 2)."""
    from npvae.cli import main

    assert main(["train", *options, "--epochs", "1", "--out", str(tmp_path / "run"), "--quiet", "--no-pictures"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("npvae train: error: "), err
    return err[len("npvae train: error: "):]


@pytest.mark.parametrize("options, said", [
    (["--bound", "iwae"], "the IWAE bound has no analytic-KL form: use --kl mc"),
    (["--estimator", "dreg"], "estimator 'dreg' is not defined for --bound elbo, --kl analytic (valid: elbo/analytic: reparam; "),
    (["--kl", "mc", "--free-bits", "1"], "free bits need the analytic KL (--kl analytic): "),
    (["--arch", "64-10-4:10-2", "--free-bits", "0.5"], "is a ladder of 2 (use --free-bits 0)"),
    (["--bound", "iwae", "--kl", "mc", "--kl-weight", "0.5"], "--kl-weight must be 1 for the IWAE bound"),
    (["--kl-weight", "-1"], "--kl-weight must be a finite number >= 0, got -1.0"),
    (["--batch-size", "0"], "--batch-size must be an integer >= 1, got 0"),
    (["-k", "0"], "--k must be an integer >= 1, got 0"),
])
def test_a_refused_training_option_is_named_as_the_command_line_spells_it(capsys, tmp_path, options, said):
    err = _train_error(capsys, tmp_path, *options)
    assert said in err and not re.search(r"(?<![\w-])(kl|bound|free_bits|kl_weight|batch_size|k)(=| must)", err), err


def test_a_missing_numba_names_the_backend_options(capsys, tmp_path, monkeypatch):
    import npvae.backends

    monkeypatch.setattr(npvae.backends, "numba_available", lambda: False)
    err = _train_error(capsys, tmp_path, "--backend", "numba")
    assert err == "--backend numba needs the numba package (pip install numba); or use --backend numpy"


def test_the_python_api_keeps_the_keyword_phrasing():
    from npvae.training.config import TrainConfig

    with pytest.raises(ValueError, match=r"^the IWAE bound has no analytic-KL form: use kl='mc'$"):
        TrainConfig(bound="iwae")
    with pytest.raises(ValueError, match=r"\(kl='analytic'\)"):
        TrainConfig(kl="mc", free_bits=1.0)


@pytest.fixture(scope="module")
def npvae_parser():
    from npvae.cli import build_parser

    return build_parser()


@pytest.mark.parametrize("command, message, said", [
    ("train", "use kl='mc'", "use --kl mc"),  # quoted
    ("train", 'use kl="mc" here', "use --kl mc here"),  # double-quoted
    ("train", "(use free_bits=0)", "(use --free-bits 0)"),  # a bare number
    ("train", "or use free_bits=0.", "or use --free-bits 0."),  # the sentence's full stop is not the value's
    ("train", "got free_bits=0.25 for 784-200-50", "got --free-bits 0.25 for 784-200-50"),
    ("train", "set lr=-1e-3 or so", "set --lr -1e-3 or so"),
    ("train", "bound=elbo, kl=analytic", "--bound elbo, --kl analytic"),  # bare words
    ("train", "k=5", "--k 5"),  # -k/--k: the long spelling
    ("train", "use backend='numba' or 'numpy', or 'auto' to take", "use --backend numba or numpy, or auto to take"),
    ("train", "data_dir='my data'", "--data-dir 'my data'"),  # a value the shell would split, quoted for it
    ("check", "break_name='list'", "--break list"),  # the dest is not the option's name
    ("explain", "quick=True runs in seconds", "--quick runs in seconds"),  # a flag
    ("explain", "quick=False", "quick=False"),  # a flag has no spelling for False
    ("train", "seed must be an integer >= 0, got -1", "--seed must be an integer >= 0, got -1"),
    ("train", "sigma2 = 1e-50 is not a positive finite float32 number", "--sigma2 1e-50 is not a positive finite float32 number"),
])
def test_keywords_of_the_commands_options_become_the_options(npvae_parser, command, message, said):
    from npvae.cli import phrasing

    assert phrasing.as_options(message, phrasing.options_of(npvae_parser, command)) == said


@pytest.mark.parametrize("command, message", [
    ("train", "use frobnicate='x'"),  # no such option
    ("train", "x must be (N, D), got shape (3,)"),
    ("eval", "use kl='mc'"),  # an option of train's, not eval's
    ("sample", "k=5"),  # eval's --k, not sample's
    ("verify", "free_bits floors each dimension's analytic KL: it needs kl='analytic'"),  # a head file's options entry
    ("verify", "kl_weight must be 1 for the IWAE bound"),
    ("train", "run_dir='x'"),  # positionals have no option spelling
    ("train", "output_kl='mc', arch.kl='mc', --kl=mc, kl == 'mc'"),  # longer names, attributes, options, comparisons
    ("train", "NUMBA_ENABLE_CUDASIM=1, D=784"),
    ("train", "checkpoint c: its config is unusable (seed must be an integer >= 0, got -1)"),  # only at the opening
    ("explain", "npvae explain gaps --data-dir DIR where DIR holds it; from Python, data_dir=DIR"),  # both already given
])
def test_other_names_stay_as_the_library_wrote_them(npvae_parser, command, message):
    from npvae.cli import phrasing

    assert phrasing.as_options(message, phrasing.options_of(npvae_parser, command)) == message


@pytest.mark.parametrize("argv, unbuffered", [
    (["check", "--break", "list"], False),  # block-buffered into a pipe: the write is the flush at the end
    (["check", "--break", "list"], True),  # each print writes: the first one fails inside the command
    (["train", "--help"], False),  # argparse's help, printed while parsing
])
def test_a_reader_gone_ends_the_command_quietly_with_141(argv, unbuffered):
    """`npvae eval RUN | head -1`: the pipe's read end is closed before the child starts, so its first write gets EPIPE
    (Python ignores SIGPIPE: a BrokenPipeError); the shell's 128 + SIGPIPE, and nothing on stderr."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    if unbuffered:
        env["PYTHONUNBUFFERED"] = "1"
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run([sys.executable, "-m", "npvae.cli", *argv], stdout=write_end, stderr=subprocess.PIPE,
                              text=True, env=env, cwd=REPO, timeout=120)
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr) == (141, "")


def test_a_command_started_with_stdout_closed_still_ends_cleanly():
    """`npvae check --break list >&-`: Python starts with sys.stdout None and print writes nothing; main's flush copes."""
    import shlex
    import subprocess
    import sys

    line = f"exec {shlex.quote(sys.executable)} -m npvae.cli check --break list >&-"
    done = subprocess.run(["sh", "-c", line], stderr=subprocess.PIPE, text=True, cwd=REPO, timeout=120)
    assert (done.returncode, done.stderr) == (0, "")


@pytest.mark.parametrize("command", [["train", "--epochs", "1"], ["eval", "RUN"], ["sample", "RUN"], ["check"],
                                     ["explain", "iwae", "--quick"]])
def test_a_negative_seed_is_refused_by_every_command_as_an_option(command, capsys):
    """--seed -1 reached NumPy's bare 'expected non-negative integer' from eval, sample and check: now argparse says it."""
    from npvae.cli import main

    assert main(command + ["--seed", "-1"]) == 2
    err = capsys.readouterr().err
    assert "argument --seed: must be an integer >= 0, got -1" in err and "non-negative" not in err


def test_a_file_written_into_a_missing_directory_is_named_not_its_temporary(tmp_path, capsys):
    """`verify --example runs/ours.npz` before runs/ exists named '.ours.npz.<hex>.tmp' and what verify expects to read."""
    from npvae.cli import main

    target = tmp_path / "runs" / "ours.npz"
    assert main(["verify", "--example", str(target)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"npvae verify: error: {target}: cannot be written, its directory does not exist", err
    assert not (tmp_path / "runs").exists()
