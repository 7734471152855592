"""The noise, looked at before anything else: is eps standard normal, and is z = mu + std * eps?

A loss computed on wrong noise can still match npvae's bound at that noise exactly (the bound is a function of z),
so the noise is checked on its own. eps standard normal is a statistical question, decided so that a correct
model is flagged with probability below 1e-12 per check (a two-sided chi-square test of sum eps^2 with n degrees
of freedom, and |mean| sqrt(n) > 7.1); std 0.01 instead of 1 is caught from n = 10 values on.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import chi2

from .scales import SCALES, std_of

P_FLAG = 1e-12  # false-alarm probability of each test for truly standard-normal noise
MEAN_Z = 7.1  # two-sided normal tail at 7.1 sigma: 1.2e-12


def normality(eps: np.ndarray, what: str) -> dict:
    """A row: is `eps` a standard-normal draw? (K, N, Z) -> {"quantity", "passed", "hint", ...}."""
    n = eps.size
    q = float(np.sum(eps * eps))
    p = 2.0 * min(float(chi2.cdf(q, n)), float(chi2.sf(q, n)))
    m = float(eps.mean()) * np.sqrt(n)
    row = {"quantity": "noise", "passed": True, "rel_error": float("nan"), "tol": float("nan"), "hint": "",
           "detail": f"{what}: {n} values, std {np.sqrt(q / n):.4g}, mean {eps.mean():+.3g}"}
    if p < P_FLAG:
        row.update(passed=False,
                   hint=f"{what} is not standard normal: its standard deviation is {np.sqrt(q / n):.3g}, not 1 "
                        f"(chi-square p = {p:.1e} over {n} values); draw eps ~ N(0, I)")
    elif abs(m) > MEAN_Z:
        row.update(passed=False,
                   hint=f"{what} is not standard normal: its mean is {eps.mean():+.3g} ({abs(m):.1f} standard errors from 0)")
    elif eps.shape[0] > 1 and np.all(eps == eps[:1]):
        row.update(passed=False, hint=f"the K = {eps.shape[0]} samples of {what} are one draw repeated: each sample needs its own eps")
    return row


def sample_row(z, mu, s, scale_kind: str, eps, tol: float) -> dict:
    """A row: is the user's z = mu + std * eps for the user's eps? If not, which scale was used instead."""
    sd = std_of(scale_kind, s)
    ref = mu + sd * eps
    err = float(np.max(np.abs(z - ref))) / max(float(np.max(np.abs(ref))), 1e-300)
    row = {"quantity": "z = mu + std * eps", "rel_error": err, "tol": tol, "passed": err <= tol, "hint": "", "detail": ""}
    if row["passed"]:
        return row
    alternatives = [("the variance std^2 (you used the variance)", sd * sd)]
    alternatives += [(f"the scale output read as a {k} (npvae.head.scales)", std_of(k, s)) for k in SCALES
                     if k != scale_kind and (k not in ("std", "var") or np.all(s > 0))]
    alternatives += [("the raw scale output itself", s),
                     ("exp(scale) (the scale output read as a log-std)", np.exp(s)), ("1 (no scale: z = mu + eps)", np.ones_like(s)),
                     ("std / 2", sd / 2), ("2 std", 2 * sd)]
    for name, alt in alternatives:
        r = mu + alt * eps
        if float(np.max(np.abs(z - r))) <= tol * max(float(np.max(np.abs(r))), 1e-300):
            row["hint"] = f"z is not mu + std * eps with the declared {scale_kind}: z = mu + X * eps with X = {name}"
            return row
    if float(np.max(np.abs(z - mu - sd * eps[::-1]))) <= tol * max(float(np.max(np.abs(ref))), 1e-300):
        row["hint"] = "z = mu + std * eps with the K samples of eps in another order"
    else:
        row["hint"] = "z is not mu + std * eps for the eps given, nor for any common misreading of the scale"
    return row
