"""The CUDA backend's tests, run on numba's simulator in a subprocess (the simulator must be on before numba is imported)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest


def test_cuda_backend_on_the_simulator(request):
    """The quick suite runs the simulator's small cases; --full (or -m EXPR) is passed on to run its larger ones too."""
    pytest.importorskip("numba.cuda", reason="numba-cuda is not installed (pip install numba-cuda)")
    tests = Path(__file__).resolve().parent
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
    markexpr = request.config.option.markexpr
    which = ["--full"] if request.config.getoption("--full") else (["-m", markexpr] if markexpr else [])
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:warnings", "-p", "no:cacheprovider", *which, str(tests / "cuda_sim")],
                       cwd=tests.parent, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert " passed" in r.stdout and "skipped" not in r.stdout.splitlines()[-1], r.stdout[-2000:]
