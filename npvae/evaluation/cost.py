"""What an evaluation will take, estimated before it runs, and the refusal of one that would run for weeks.

The estimate times a probe: the same model, backend and dtype computing log p(x) with PROBE_K importance samples for
up to PROBE_POINTS points (the fastest of three tries, so that compiling and caches do not count), and scales it by
k x points: the importance samples are nearly all of an evaluation's work (the ELBO's ELBO_K samples per point and the
encoder statistics add a few percent at k = 5000). One process; a Dask cluster divides the time by its workers.
"""

from __future__ import annotations

import time

import numpy as np

from ..objectives import log_px
from ..store.data import as_float
from .evaluate import params_dtype

PROBE_POINTS, PROBE_K = 50, 50
MAX_SECONDS = 30 * 24 * 3600  # one process for a month: beyond it, a refusal (the README's reliability table)
ANNOUNCE_ABOVE = 10.0  # seconds: a command estimated to take longer says so before it starts (eval, explain)


def seconds_per_pair(params, arch, x, backend: str = "numpy") -> float:
    """The time of one (importance sample, point) pair of log p(x), measured on a probe of x's first points."""
    xb = as_float(x[:PROBE_POINTS], params_dtype(params))
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        log_px(params, arch, xb, PROBE_K, np.random.default_rng(0), backend=backend)
        best = min(best, time.perf_counter() - t0)
    return best / (xb.shape[0] * PROBE_K)


def fmt_seconds(s: float) -> str:
    """'45 s', '12 min', '3.5 h', '2.0 days', '812 years', '3.1e+07 years'."""
    for limit, unit, scale in ((120, "s", 1), (7200, "min", 60), (3 * 86400, "h", 3600), (730 * 86400, "days", 86400)):
        if s < limit:
            return f"{s / scale:.0f} {unit}" if unit in ("s", "min") else f"{s / scale:.1f} {unit}"
    years = s / (365 * 86400)
    return f"{years:.0f} years" if years < 1e6 else f"{years:.1e} years"


def check_eval_cost(what: str, seconds: float, advice: str) -> None:
    """Refuse (ValueError) an evaluation estimated above MAX_SECONDS on one process, saying the estimate and what to lower."""
    if seconds > MAX_SECONDS:
        raise ValueError(f"{what} would take about {fmt_seconds(seconds)} on one process (the limit is "
                         f"{fmt_seconds(MAX_SECONDS)}): {advice}")
