"""Correct models that an independent review found failing the head check (each failed before its fix), and the
reductions it found missing: every one must pass, or be named, now."""

import numpy as np
import pytest
from scipy.optimize import brentq

from npvae.head import check_head
from npvae.head.case import make_case
from npvae.head.reference import reference


def bern(N=8, D=5, Z=3, K=1, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    x = (rng.random((N, D)) < 0.5).astype(dtype)
    mu, lv = rng.normal(size=(N, Z)).astype(dtype), (0.3 * rng.normal(size=(N, Z))).astype(dtype)
    return x, mu, lv, rng.normal(size=(K, N, Z)).astype(dtype), rng.normal(size=(K, N, D)).astype(dtype)


def elbo(x, mu, lv, logits, beta=1.0, lam=0.0):
    r = (x * logits - np.logaddexp(0, logits)).sum(-1)
    return r.mean(0) - beta * np.maximum(0.5 * (mu**2 + np.exp(lv) - 1 - lv), lam).sum(-1)


def test_a_float32_bound_that_nearly_cancels_passes_and_gets_no_sign_hint():
    """A Gaussian-learned bound near 0 nats made of terms of ~160: float32 rounds the terms, not the sum."""
    f, rng = np.float32, np.random.default_rng(0)
    N, D, Z = 64, 784, 8
    x = rng.normal(size=(N, D)).astype(f)
    mu, lv = (rng.normal(size=(N, Z)) * 0.5).astype(f), (rng.normal(size=(N, Z)) * 0.3 - 1).astype(f)
    eps, m = rng.normal(size=(N, Z)).astype(f), (x + rng.normal(size=(N, D)) * 0.05).astype(f)
    ov0 = (-1.7 + rng.normal(size=(N, D)) * 0.1).astype(f)

    def terms(ov):
        logp = -f(0.5) * ((x - m) ** 2 * np.exp(-ov) + ov + f(np.log(2 * np.pi))).sum(-1)
        return logp - f(0.5) * (mu * mu + np.exp(lv) - f(1) - lv).sum(-1)

    c = min(np.linspace(-6, 6, 4001), key=lambda c: abs(float(terms((ov0 + f(c)).astype(f)).mean())))
    ov = (ov0 + f(c)).astype(f)
    b = terms(ov)
    assert abs(float(b.mean())) < 1.0 < float(np.abs(b).mean())  # it does cancel
    assert check_head(x, mu, lv, m, -b.mean(), eps=eps, likelihood="gaussian-learned", out_scale=ov).passed
    g = {"mu": mu.copy(), "scale": (f(0.5) * (np.exp(lv) - f(1))).astype(f)}  # of -sum b, exact
    r = check_head(x, mu, lv, m, -b.sum(), eps=eps, likelihood="gaussian-learned", out_scale=ov, grads=g)
    assert r.passed and not any("minus ours" in row["hint"] for row in r.rows), r.summary()


def test_kl_weight_zero_reports_instead_of_crashing():
    x, mu, lv, eps, lo = bern()
    b = elbo(x, mu, lv, lo, beta=0.0)
    assert check_head(x, mu, lv, lo, -b.mean(), eps=eps, kl_weight=0.0).passed
    assert not check_head(x, mu, lv, lo, -1.5 * b.mean(), eps=eps, kl_weight=0.0).passed


def test_a_dreg_loss_returning_its_surrogate_passes():
    x, mu, lv, eps, lo = bern(K=4)
    z = mu + np.exp(0.5 * lv) * eps
    ref = reference(make_case(x, mu, lv, lo, 0.0, eps=eps, bound="iwae", kl="mc", estimator="dreg"))
    r = (x * lo - np.logaddexp(0, lo)).sum(-1)
    a = r - 0.5 * (z * z).sum(-1) + 0.5 * (lv + (z - mu) ** 2 * np.exp(-lv)).sum(-1)  # log p(z) - log q, the 2 pi cancel
    w = np.exp(a - a.max(0))
    w /= w.sum(0)
    N = x.shape[0]
    rep = check_head(x, mu, lv, lo, -((w**2) * a).sum(0).mean(), z=z, bound="iwae", kl="mc", estimator="dreg",
                     grads={k: -ref.grads[k] / N for k in ("out", "z", "mu")})
    assert rep.passed and any("DReG's surrogate" in n for n in rep.notes), rep.summary()


def test_free_bits_at_the_floor_in_float32_passes():
    """A KL_j that float32 rounds to exactly lambda (float64 puts it just above): either side's gradient is right."""
    f, lam = np.float32, 0.5
    x, mu, lv, eps, lo = bern(N=4, Z=2, dtype=f)
    v = f(brentq(lambda v: 0.5 * (np.exp(v) - 1 - v) - lam, 0.1, 3))
    for _ in range(4000):
        k32, k64 = f(0.5) * (np.exp(v) - f(1) - v), 0.5 * np.expm1(float(v)) - 0.5 * float(v)
        if (k32 > f(lam)) != (k64 > lam):
            break
        v = np.nextafter(v, f(0) if k64 > lam else f(5), dtype=f)
    mu[0, 0], lv[0, 0] = f(0), v
    klj = f(0.5) * (mu * mu + np.exp(lv) - f(1) - lv)
    above = klj > f(lam)
    loss = -((x * lo - np.logaddexp(f(0), lo)).sum(-1).mean(0) - np.where(above, klj, f(lam)).sum(-1)).mean()
    g = {"scale": (above * f(0.5) * (np.exp(lv) - f(1)) / f(4)).astype(f)}
    assert check_head(x, mu, lv, lo, loss, eps=eps, free_bits=lam, grads=g).passed


@pytest.mark.parametrize("scale,per_point,name", [(-7500 / 8, False, None), (1 / 5, True, "none/D"), (1 / 5, False, "sum/D"),
                                                  (1 / 8, False, "mean")])
def test_reductions_positive_per_pixel_and_declared_numbers(scale, per_point, name):
    x, mu, lv, eps, lo = bern()
    b = elbo(x, mu, lv, lo)
    loss = scale * b if per_point else scale * b.sum()
    r = check_head(x, mu, lv, lo, loss, eps=eps, reduction=scale if name is None else None)  # Pyro's plate: a number
    assert r.passed and (name is None or r.reduction == name), r.summary()


def test_tied_reductions_are_all_named_and_a_failed_value_reports_the_nearest():
    x, mu, lv, eps, lo = bern(N=5, D=5)
    b = elbo(x, mu, lv, lo)
    r = check_head(x, mu, lv, lo, -b.sum() / 5, eps=eps)
    assert "'-sum/D'" in " ".join(r.notes) and "'-mean'" in " ".join(r.notes)
    r = check_head(x, mu, lv, lo, -b.mean() * (1 + 1e-3), eps=eps)
    assert not r.passed and r.rows[1]["rel_error"] < 2e-3 and "nearest: '-mean'" in r.rows[1]["hint"]
