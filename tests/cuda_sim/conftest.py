"""The CUDA simulator tests' harness: serialise the simulator's shared-array creation (see sim_shared_lock.py)."""

import os

if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
    from sim_shared_lock import install

    install()
