"""`npvae bench`'s command line: its program name, and unknown workloads or backends refused with the choices."""

from __future__ import annotations

import pytest

from npvae.cli import main


@pytest.mark.parametrize("argv, words", [(["--workloads", "Z"], "--workloads: unknown Z; choose from A, B-k1"),
                                         (["--backends", "numba,tpu"], "--backends: unknown tpu; choose from numpy")])
def test_unknown_choices_are_a_usage_error_not_a_traceback(argv, words, capsys):
    with pytest.raises(SystemExit) as e:
        main(["bench", *argv])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err and err.splitlines()[-1].startswith("npvae bench: error:")


def test_help_names_the_program_npvae_bench(capsys):
    with pytest.raises(SystemExit) as e:
        main(["bench", "--help"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith("usage: npvae bench ")


def test_end_to_end_bench_runs_npvae_epochs_in_turns_and_times_them(tmp_path):
    """bench/end_to_end.py on a tiny compact data set of MNIST's shape: npvae's epochs, their seconds, and the table."""
    import sys
    from pathlib import Path

    import numpy as np

    from npvae.store.data import Dataset

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import bench_train
    import end_to_end

    rng = np.random.default_rng(0)
    x = [(rng.random((n, 784)) < 0.13).astype(np.uint8) for n in (300, 100, 100)]
    d = Dataset("binarized-mnist", *x, image_shape=(28, 28), binary=True, float_dtype=np.float32)
    r = end_to_end.time_end_to_end(bench_train, "B-k1", ["numpy", "numba"], d, rounds=3)
    for f in ("numpy", "numba"):
        assert len(r[f]["epoch_s"]) == 2 and all(s > 0 for s in r[f]["epoch_s"])
        assert r[f]["samples_per_s"] == pytest.approx(300 / np.median(r[f]["epoch_s"]))
    inner = {"B-k1": {"numba": {"samples_per_s": r["numba"]["samples_per_s"] * 1.25}}}
    assert "| B-k1 | " in end_to_end.table({"B-k1": r}, inner) and "80%" in end_to_end.table({"B-k1": r}, inner)
