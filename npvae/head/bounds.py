"""Bounds with the user's own encoder and decoder: npvae's ELBO, IWAE_k and log p(x) of the model, against the user's.

Given encode(x) -> (mu, scale) and decode(z) -> out (or (out, out_scale)), npvae draws M standard-normal samples per
point, computes the log-weights a_m = log p(x|z_m) + log p(z_m) - log q(z_m|x) in float64 with its own densities
(npvae.head.reference), and estimates, with common random numbers:
    ELBO      mean_m a_m
    IWAE_k    the mean of LME over the M / k disjoint groups of k samples    (Burda et al. 2016, eq. 8)
    log p(x)  LME over all M samples, IWAE_M, the tightest (biased low by O(1/M))
On the same samples ELBO <= IWAE_k <= IWAE_M holds for every point (Jensen within each group, then across groups),
so npvae's own order is a fact, not a test. What is tested is the user's: each of their estimates, per point with
the k samples they used, against npvae's estimate of the same expectation (the ELBO for an ELBO, IWAE_k for IWAE_k
or for a log p(x) estimate made with k samples), decided at 5 standard errors of the per-point differences, and
their order. A difference of log k is named (the - log K forgotten), as is a log p(x) equal to the ELBO.
"""

from __future__ import annotations

import numpy as np

from ..maths.lme import log_mean_exp_core
from .case import as_array
from .likelihood import HeadLikelihood, check as check_likelihood, head_likelihood, log_px
from .reference import log_prior, log_q
from .scales import check_raw, log_var_of

SE_DECIDE = 5.0


def log_weights(encode, decode, x, M: int, rng: np.random.Generator, *, scale_kind="log_var", lik=HeadLikelihood(), pm1=False,
                chunk: int = 100):
    """a: (M, N) log-weights of the user's model at x, in float64, drawn in chunks of `chunk` samples."""
    mu, s = (as_array(n, a).astype(np.float64) for n, a in zip(("mu", "scale"), encode(x)))
    check_raw("scale", scale_kind, s)
    v = log_var_of(scale_kind, s)
    N, Z = mu.shape
    t = lik.targets(np.asarray(x, np.float64), pm1)
    out = []
    for start in range(0, M, chunk):
        k = min(chunk, M - start)
        z = mu + np.exp(0.5 * v) * rng.standard_normal((k, N, Z))
        dec = decode(z.reshape(k * N, Z))
        o, os_ = (dec, None) if not isinstance(dec, tuple) else dec
        o = as_array("decode(z)", o).astype(np.float64).reshape(k, N, -1)
        os_ = None if os_ is None else as_array("decode(z)[1]", os_).astype(np.float64).reshape(k, N, -1)
        check_likelihood(lik, o, os_, t)
        out.append(log_px(lik, o, os_, t)[0] + log_prior(z) - log_q(z, mu, v))
    return np.concatenate(out, axis=0)


def iwae_k(a, k: int):
    """Per point, the mean of LME over the M // k disjoint groups of k log-weights: (M, N) -> (N,)."""
    g = a.shape[0] // k
    return log_mean_exp_core(a[: g * k].reshape(g, k, -1), axis=1).mean(0)


def check_bounds(encode, decode, x, *, rng: np.random.Generator, user=None, ks=(1, 10, 100), M: int = 1000,
                 scale_kind="log_var", likelihood="bernoulli", out_kind=None, sigma2=1.0, out_scale_kind="log_var", x_coding="01"):
    """npvae's ELBO, IWAE_k (k in ks) and log p(x) of the user's model, and a row per estimate in `user`.

    user: {"elbo": per-point values, "iwae": (k, per-point values), "log_px": (k, per-point values)}, any subset.
    Returns {"means": npvae's estimates (batch means), "rows": one per user estimate and one per step of their order, "passed"}.
    """
    if not isinstance(rng, np.random.Generator):
        raise ValueError("rng must be a numpy.random.Generator (randomness is an input)")
    ks = tuple(int(k) for k in ks)
    user = dict(user or {})
    if set(user) - {"elbo", "iwae", "log_px"}:
        raise ValueError(f"user estimates are 'elbo', 'iwae' and 'log_px', got {sorted(user)}")
    uk = tuple(int(v[0]) for n, v in user.items() if n != "elbo")
    if any(k < 1 for k in ks + uk) or list(ks) != sorted(set(ks)) or M < 2 * max(ks + uk):
        raise ValueError(f"ks must be increasing positive integers and M >= 2 k for every k compared; got ks={ks}, "
                         f"user k={list(uk)}, M={M}")
    lik = head_likelihood(likelihood, out_kind, float(sigma2), out_scale_kind)
    a = log_weights(encode, decode, x, M, rng, scale_kind=scale_kind, lik=lik, pm1=x_coding == "pm1")
    elbo = a.mean(0)
    means = {"ELBO": float(elbo.mean()), **{f"IWAE_{k}": float(iwae_k(a, k).mean()) for k in ks if k > 1},
             f"log p(x) ~ IWAE_{M}": float(log_mean_exp_core(a, axis=0).mean())}
    rows, theirs = [], []
    for name in ("elbo", "iwae", "log_px"):
        if name in user:
            k, u = (1, user[name]) if name == "elbo" else user[name]
            u = as_array(f"user[{name!r}]", u).astype(np.float64)
            if u.shape != elbo.shape:
                raise ValueError(f"user[{name!r}] must be per point, ({elbo.size},), got {u.shape}")
            rows.append(_user_row(name, u, elbo if name == "elbo" else iwae_k(a, int(k)), int(k), elbo))
            theirs.append((name, u))
    for (n1, u1), (n2, u2) in zip(theirs, theirs[1:]):
        m, se = _mean_se(u2 - u1)
        bad = m < -SE_DECIDE * se
        rows.append({"quantity": f"your {n1} <= your {n2}", "difference": m, "se": se, "status": "FAIL" if bad else "ok",
                     "passed": not bad, "hint": f"your {n2} is below your {n1}: the order of the bounds is broken" if bad else ""})
    return {"means": means, "rows": rows, "passed": all(r["passed"] for r in rows)}


def _mean_se(d):
    return float(d.mean()), float(d.std(ddof=1) / np.sqrt(d.size))


def _user_row(name, u, ours, k, elbo):
    """The user's estimate (per point, k samples) against npvae's estimate of the same expectation."""
    m, se = _mean_se(u - ours)
    row = {"quantity": f"your {name}" + (f" (k = {k})" if name != "elbo" else "") + " vs ours", "difference": m, "se": se,
           "status": "ok", "passed": True, "hint": ""}
    if abs(m) <= SE_DECIDE * se + 1e-9 * abs(float(ours.mean())):
        return row
    row.update(status="FAIL", passed=False)
    me, see = _mean_se(u - elbo)
    if k > 1 and abs(m - np.log(k)) <= SE_DECIDE * se + 1e-9:
        row["hint"] = f"your estimate is log k = {np.log(k):.4g} above ours: logsumexp without - log k"
    elif name != "elbo" and abs(me) <= SE_DECIDE * see + 1e-9:
        row["hint"] = "your estimate equals the ELBO (the mean of the log-weights): it needs log mean exp"
    elif m > 0:
        row["hint"] = "your estimate is above npvae's: it is not this model's bound (a missing term, or a wrong density?)"
    else:
        row["hint"] = "your estimate is below npvae's (samples from the prior, not q? a term counted twice?)"
    return row
