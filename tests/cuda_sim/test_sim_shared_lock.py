"""The simulator's shared-array race, reproduced deterministically, and the lock that the harness installs."""

import os

import pytest

if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
    pytest.skip("the race is in numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1, run by tests/test_cuda_sim.py)", allow_module_level=True)

from numba.cuda.simulator import kernelapi

import sim_shared_lock


def test_the_harness_installed_the_lock():
    assert kernelapi.FakeCUDAShared.__dict__["array"] is sim_shared_lock._locked_array


def test_the_race_without_the_lock_and_none_with_it():
    assert sim_shared_lock._ORIGINAL["array"] is not sim_shared_lock._locked_array
    assert sim_shared_lock.reproduce(locked=False) > 1  # the threads of one block got different "shared" arrays
    assert sim_shared_lock.reproduce(locked=True) == 1
