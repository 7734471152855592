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
