"""`npvae check --break NAME`: plant one classic VAE bug in npvae's maths, run every check, see which rows catch it.

The bugs and their lessons are npvae.checks.bugs (BUGS, by name); `planted(name)` swaps the originals for the broken
functions wherever an npvae module holds them (npvae.checks.planting) and puts every one back in a finally; nothing is
edited on disk. A whole `run_all` takes about 2 s, so an exercise runs every check twice (unbroken, broken), not a
subset. The public names of npvae.checks.bugs and npvae.checks.planting are exported from here too (`breaks.BUGS`,
`breaks.sample_forward_var`, `breaks.USED`), where they were defined before those modules were split off.
"""

from __future__ import annotations

import contextlib
from typing import NamedTuple

import numpy as np

from . import bugs
from .bugs import (BUGS, CHECKS, NAMES, Bug, bernoulli_backward_mean, bernoulli_forward_mean, gaussian_backward_mean,
                   gaussian_forward_mean, get, iwae_no_log_k, iwae_unnormalised, kl_backward_no_half, kl_per_dim_no_half,
                   sample_backward_stopped, sample_backward_var, sample_forward_var)
from .planting import USED, swapped

__all__ = ["BUGS", "CHECKS", "NAMES", "USED", "Bug", "BreakRun", "get", "planted", "probe", "run",
           "bernoulli_backward_mean", "bernoulli_forward_mean", "gaussian_backward_mean", "gaussian_forward_mean",
           "iwae_no_log_k", "iwae_unnormalised", "kl_backward_no_half", "kl_per_dim_no_half", "sample_backward_stopped",
           "sample_backward_var", "sample_forward_var"]


@contextlib.contextmanager
def planted(name: str):
    """Within the block, bug `name` replaces the originals everywhere npvae holds them; yields the bindings replaced.

    Every binding is put back in a finally; then a sweep puts back any binding made during the block (by a module
    imported inside it) that still holds a broken function. This module and npvae.checks.bugs, which hold the broken
    functions under their own names, are left alone."""
    bug = get(name)
    with swapped(bug.replaces, keep=(__name__, bugs.__name__)) as where:
        yield where


# ---- one exercise ----

class BreakRun(NamedTuple):
    """One exercise: the rows of run_all unbroken and with the bug, where it was planted, and a few numbers it moves."""

    bug: Bug
    bindings: list
    clean: list
    broken: list
    probe_clean: list  # [(label, exact value or None, npvae's value)]
    probe_broken: list

    @property
    def failing(self) -> tuple:
        """The checks with at least one FAIL row in the broken run, in CHECKS order."""
        bad = {r["check"] for r in self.broken if r["status"] == "FAIL"}
        return tuple(c for c in CHECKS if c in bad)

    @property
    def caught(self) -> bool:
        """Caught as described: some row fails, and every check the bug names (caught_by) has a FAIL row."""
        return bool(self.failing) and set(self.bug.caught_by) <= set(self.failing)


def run(name: str, seed: int = 0, clean: list | None = None) -> BreakRun:
    """Every check unbroken (or `clean`: this seed's rows, already computed), then with bug `name` planted."""
    from .check import run_all

    bug = get(name)
    clean = run_all(seed) if clean is None else clean
    probe_clean = probe(seed)
    with planted(name) as where, np.errstate(all="ignore"):  # a broken model may overflow: its NaN rows FAIL, as they should
        broken = run_all(seed)
        probe_broken = probe(seed)
    return BreakRun(bug, where, clean, broken, probe_clean, probe_broken)


def probe(seed: int = 0) -> list:
    """[(label, exact value or None, npvae's value)], batch means: the value rows' linear-Gaussian VAE at an arbitrary
    encoder (exact ELBO and log p(x) from the oracle; sigma points make npvae's ELBO exact too) and a Bernoulli tanh VAE
    of the gradient rows (its bounds and the sizes of its gradients)."""
    from ..objectives import bound_value, objective
    from ..vae.model import encode
    from .check import gradient_model
    from .values import _linear_vae_away_from_posterior, sigma_points

    rng = np.random.default_rng([seed, 28])
    model, arch, params, x = _linear_vae_away_from_posterior(rng)
    mu, log_var, _ = encode(params, arch, x)
    elbo, lpx = float(model.elbo(x, mu, log_var).mean()), float(model.log_marginal(x).mean())
    sp, eps = sigma_points(arch.latent_dim, x.shape[0]), rng.standard_normal((12, x.shape[0], arch.latent_dim))
    out = [(f"linear-Gaussian VAE {arch.spec}: ELBO, kl=analytic", elbo, float(bound_value(params, arch, x, sp).mean())),
           ("  ELBO, kl=mc (sigma points: exact)", elbo, float(bound_value(params, arch, x, sp, kl="mc").mean())),
           ("  IWAE_12, one draw (exact column: log p(x), its limit)", lpx, float(bound_value(params, arch, x, eps, bound="iwae", kl="mc").mean()))]
    arch, params, x, eps = gradient_model(rng, "bernoulli", "tanh")
    for bound, kl in (("elbo", "analytic"), ("iwae", "mc")):
        v, g = objective(params, arch, x, eps, bound=bound, kl=kl)
        head = f"Bernoulli VAE {arch.spec} tanh, K={eps.shape[0]}: " if kl == "analytic" else "  "
        out.append((f"{head}{bound.upper()}, kl={kl}", None, float(v.mean())))
        for part in ("encoder", "decoder"):
            out.append((f"    |gradient| of the {part}", None, float(np.sqrt(sum(np.sum(a * a) for l in getattr(g, part) for a in l)))))
    return out
