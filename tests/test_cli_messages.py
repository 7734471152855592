"""What a new user is told when something is wrong: the command and option meant, the run directory meant or how to make
one, what to do without a connection, and only advice that applies."""

from __future__ import annotations

import hashlib
import os

import pytest

from npvae.cli import main
from npvae.store import _download
from npvae.store import run_dir as rd
from npvae.store.data import load


def _error(capsys) -> tuple[list[str], str]:
    """stderr's lines, and its last line (argparse's error, or main's)."""
    lines = capsys.readouterr().err.strip().splitlines()
    return lines, lines[-1]


# ---- 1. a misspelt option or command -------------------------------------------------------------

def test_a_misspelt_option_is_the_commands_error_with_the_option_meant(tmp_path, capsys):
    assert main(["train", "--epcohs", "5", "--out", str(tmp_path / "t1")]) == 2
    lines, last = _error(capsys)
    assert lines[0].startswith("usage: npvae train ")
    assert last == ("npvae train: error: unrecognized arguments: --epcohs 5 "
                    "(did you mean --epochs? npvae train --help lists the options)")
    assert not (tmp_path / "t1").exists()


def test_several_misspelt_options_each_get_theirs_and_an_unknown_word_gets_the_help(capsys):
    assert main(["eval", "RUN", "--splt", "valid", "--kk=5"]) == 2
    _, last = _error(capsys)
    assert last == ("npvae eval: error: unrecognized arguments: --splt valid --kk=5 "
                    "(did you mean --split for --splt, --k for --kk? npvae eval --help lists the options)")
    assert main(["sample", "RUN", "extra"]) == 2
    _, last = _error(capsys)
    assert last == "npvae sample: error: unrecognized arguments: extra (npvae sample --help lists the options)"


def test_an_unknown_option_before_the_command_stays_the_top_levels(capsys):
    assert main(["--epcohs", "train"]) == 2
    lines, last = _error(capsys)
    assert lines[0].startswith("usage: npvae [-h]") and last == "npvae: error: unrecognized arguments: --epcohs"


def test_a_misspelt_command_names_the_command_meant(capsys):
    assert main(["trian"]) == 2
    _, last = _error(capsys)
    assert last.startswith("npvae: error: argument COMMAND: invalid choice: 'trian' (did you mean train? choose from 'check',")
    assert main(["xyzzy"]) == 2  # nothing near: argparse's own words
    _, last = _error(capsys)
    assert "did you mean" not in last and "invalid choice: 'xyzzy' (choose from 'check'" in last


def test_help_and_version_still_exit_0(capsys):
    assert main(["--version"]) == 0 and capsys.readouterr().out.startswith("npvae ")
    assert main(["train", "--help"]) == 0 and capsys.readouterr().out.startswith("usage: npvae train ")
    with pytest.raises(SystemExit) as e:  # bench's own parser (bench/bench_train.py) says it
        main(["bench", "--help"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith("usage: npvae bench ")


# ---- 2. a run directory that is not there --------------------------------------------------------

def _fake_run(path):
    path.mkdir(parents=True)
    (path / rd.MARKER).write_text("")  # what rd.is_run looks for in a run that never finished an epoch


def test_a_run_directory_that_does_not_exist_says_how_to_make_one(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["eval", "runs/digits"]) == 2
    _, last = _error(capsys)
    assert last == ("npvae eval: error: runs/digits does not exist: train a run first (npvae train --out runs/digits), "
                    "or give the run directory that npvae train printed")


def test_a_near_run_directory_is_suggested(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _fake_run(tmp_path / "runs" / "digits")
    (tmp_path / "runs" / "digit2").mkdir()  # a folder that is not a run: never suggested
    assert main(["sample", "runs/digit"]) == 2
    _, last = _error(capsys)
    assert last == ("npvae sample: error: runs/digit does not exist: did you mean runs/digits? "
                    "(else give the run directory that npvae train printed)")


def test_a_run_named_by_its_dataset_suggests_the_newest_default_name(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for name in ("digits-20250101-120000", "digits-20250102-090000"):
        _fake_run(tmp_path / "runs" / name)
    assert main(["eval", "runs/digits"]) == 2
    _, last = _error(capsys)
    assert "runs/digits does not exist: did you mean runs/digits-20250102-090000?" in last


def test_a_file_given_as_run_directory_is_not_a_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "digits").write_text("not a run")
    assert main(["eval", "runs/digits"]) == 2
    _, last = _error(capsys)
    assert last == "npvae eval: error: runs/digits is not a directory (give the run directory that npvae train printed)"


# ---- 3. --download without a connection ----------------------------------------------------------

def _unreachable(monkeypatch, tmp_path, name):
    """Every URL of `name` a file:// URL that is not there: urlopen fails as offline, and no network is touched."""
    urls = {f: ((tmp_path / "nowhere" / f).as_uri(), "0" * 64) for f in _download.URLS[name]}
    monkeypatch.setitem(_download.URLS, name, urls)
    return urls


def _cache_in(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("NPVAE_DATA_DIR", raising=False)
    return tmp_path / "xdg"


def test_a_failed_download_says_what_to_do_and_leaves_no_folder_it_made(tmp_path, monkeypatch, capsys):
    xdg = _cache_in(monkeypatch, tmp_path)
    _unreachable(monkeypatch, tmp_path, "binarized-mnist")
    assert main(["train", "--dataset", "binarized-mnist", "--download", "--out", str(tmp_path / "r"), "--quiet"]) == 2
    lines, last = _error(capsys)
    assert len(lines) == 1 and last.startswith("npvae train: error: could not download file://")
    assert last.endswith("(no connection? fetch binarized_mnist_train.amat, binarized_mnist_valid.amat and "
                         f"binarized_mnist_test.amat from {(tmp_path / 'nowhere').as_uri()}/ elsewhere, put them in a "
                         "directory DIR and pass --data-dir DIR; from Python: load('binarized-mnist', search_dirs=[DIR]))")
    assert not xdg.exists()  # neither .../npvae/binarized-mnist nor the folders above it that the download made


def test_a_failed_download_keeps_the_folders_that_were_there(tmp_path, monkeypatch):
    _unreachable(monkeypatch, tmp_path, "mnist")
    cache = tmp_path / "cache"
    (cache / "mnist").mkdir(parents=True)
    with pytest.raises(_download.DownloadError, match=r"no connection\? fetch train-images-idx3-ubyte.gz, "):
        load("mnist", cache_dir=cache, download=True)
    assert (cache / "mnist").is_dir() and os.listdir(cache / "mnist") == []


def test_a_download_that_fails_halfway_keeps_the_verified_files(tmp_path, monkeypatch):
    urls = _unreachable(monkeypatch, tmp_path, "mnist")
    first = next(iter(urls))
    payload = tmp_path / "payload"
    payload.write_bytes(b"first file")
    urls[first] = (payload.as_uri(), hashlib.sha256(b"first file").hexdigest())
    with pytest.raises(_download.DownloadError):
        load("mnist", cache_dir=tmp_path / "cache", download=True)
    assert os.listdir(tmp_path / "cache" / "mnist") == [first]


# ---- 4. npvae bench's data -----------------------------------------------------------------------

def test_bench_downloads_as_train_does(tmp_path, monkeypatch, capsys):
    xdg = _cache_in(monkeypatch, tmp_path)
    _unreachable(monkeypatch, tmp_path, "binarized-mnist")
    assert main(["bench", "--quick", "--backends", "numpy", "--download", "--json", str(tmp_path / "b.json")]) == 2
    lines, last = _error(capsys)
    assert len(lines) == 1 and last.startswith("npvae bench: error: could not download file://")
    assert "pass --data-dir DIR" in last and not xdg.exists()


def test_bench_looks_in_every_data_dir_given(tmp_path, monkeypatch, capsys):
    _cache_in(monkeypatch, tmp_path)
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["bench", "--backends", "numpy", "--data-dir", str(a), "--data-dir", str(b)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("npvae bench: error: binarized-mnist: data files not found")
    assert f"  {a}  (no such directory)" in err and f"  {b}  (no such directory)" in err


def test_bench_help_shows_npvae_bench_commands(capsys):
    with pytest.raises(SystemExit) as e:
        main(["bench", "--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0
    assert "    npvae bench --quick " in out and "python bench/bench_train.py" not in out
    assert "--download" in out


# ---- 5. eval's advice ----------------------------------------------------------------------------

@pytest.fixture
def slow_eval(tmp_path, monkeypatch):
    """A one-epoch digits run, and eval made to estimate five minutes and to stop after saying so."""
    import npvae.evaluation.chunks
    import npvae.evaluation.cost

    run = tmp_path / "run"
    assert main(["train", "--epochs", "1", "--out", str(run), "--quiet", "--no-pictures"]) == 0
    monkeypatch.setattr(npvae.evaluation.cost, "seconds_per_pair", lambda params, arch, x, backend: 300.0 / (x.shape[0] * 7))

    def stop(*a, **k):
        raise ValueError("stopped after the estimate")

    monkeypatch.setattr(npvae.evaluation.chunks, "evaluate_chunked", stop)
    return run


def test_eval_suggests_a_subset_only_of_a_split_larger_than_it(slow_eval, capsys):
    capsys.readouterr()
    assert main(["eval", str(slow_eval), "--k", "7"]) == 2  # the digits' test split: 250 points
    err = capsys.readouterr().err
    estimate = next(line for line in err.splitlines() if line.startswith("npvae eval: about 5 min"))
    assert "x 250 points" in estimate and "--n " not in estimate and "a smaller --k" in estimate
    assert main(["eval", str(slow_eval), "--k", "7", "--split", "train"]) == 2  # 1297 points
    err = capsys.readouterr().err
    estimate = next(line for line in err.splitlines() if line.startswith("npvae eval: about 5 min"))
    assert "x 1297 points" in estimate and "--n 1000 (a stratified subset" in estimate


def test_resume_of_a_run_directory_that_does_not_exist_says_what_eval_says(tmp_path, monkeypatch, capsys):
    """--resume of a missing directory said 'is not a directory, so there is no run to continue'."""
    monkeypatch.chdir(tmp_path)
    _fake_run(tmp_path / "runs" / "digits")
    assert main(["train", "--resume", "runs/digit"]) == 2
    _, last = _error(capsys)
    assert last == ("npvae train: error: runs/digit does not exist: did you mean runs/digits? "
                    "(else give the run directory that npvae train printed)")
