"""Bounds with a user's encode/decode callables, on the exact linear-Gaussian model: the ELBO and log p(x) estimates
against their closed forms, the order of the bounds, and the user's own log p(x) estimator's classic mistakes."""

import numpy as np
import pytest

from npvae import LinearGaussian
from npvae.head.bounds import check_bounds, log_weights
from npvae.head.likelihood import HeadLikelihood
from npvae.maths.lme import log_mean_exp_core


def model(seed, D=5, Z=2):
    rng = np.random.default_rng(seed)
    lg = LinearGaussian(rng.standard_normal((D, Z)), rng.standard_normal(D) * 0.3, 0.5)
    x, _ = lg.sample(40, rng)
    return lg, x


def callables(lg, offset=0.0, widen=1.0):
    """encode: the exact posterior (moved by offset, its log-variance by log widen); decode: the mean Wz + b."""
    def encode(x):
        m, cov = lg.posterior(x)
        lv = np.log(np.diagonal(cov, axis1=-2, axis2=-1) if cov.ndim == 3 else np.broadcast_to(np.diag(cov), m.shape))
        return m + offset, lv + np.log(widen)

    return encode, lambda z: z @ lg.W.T + lg.b


def test_exact_posterior_is_diagonal_here_or_skipped():
    lg, x = model(0)
    _, cov = lg.posterior(x)
    c = cov if cov.ndim == 2 else cov[0]
    assert c.shape == (2, 2)


@pytest.mark.parametrize("seed", range(3))
def test_estimates_against_closed_forms(seed):
    """The ELBO estimate against LinearGaussian.elbo at the same q, log p(x) ~ IWAE_M against the exact marginal, 5 s.e."""
    lg, x = model(seed)
    encode, decode = callables(lg, offset=0.3, widen=1.5)
    a = log_weights(encode, decode, x, 4000, np.random.default_rng(seed), lik=HeadLikelihood("gaussian", "mean", 0.5))
    mu, lv = encode(x)
    elbo_exact = lg.elbo(x, mu, lv)
    se = a.std(0, ddof=1) / np.sqrt(a.shape[0])
    assert np.all(np.abs(a.mean(0) - elbo_exact) < 5 * se + 1e-12)
    gap = lg.log_marginal(x) - log_mean_exp_core(a, axis=0)
    assert gap.mean() > -5 * gap.std(ddof=1) / np.sqrt(gap.size) and np.abs(gap).max() < 0.1  # E IWAE_M <= log p(x), close


def test_the_users_estimates():
    lg, x = model(1)
    encode, decode = callables(lg, offset=0.4, widen=2.0)
    lik = HeadLikelihood("gaussian", "mean", 0.5)
    kw = dict(ks=(1, 10, 50), M=1000, likelihood="gaussian", sigma2=0.5)
    r = check_bounds(encode, decode, x, rng=np.random.default_rng(0), **kw)
    m = list(r["means"].values())
    assert m == sorted(m) and r["passed"]
    k = 20
    a = log_weights(encode, decode, x, k, np.random.default_rng(99), lik=lik)  # the user's own samples
    right = {"elbo": a.mean(0), "iwae": (k, log_mean_exp_core(a, axis=0))}

    def rows(user):
        return check_bounds(encode, decode, x, rng=np.random.default_rng(1), user=user, **kw)["rows"]

    assert all(row["passed"] for row in rows(right))
    assert "without - log k" in rows({"iwae": (k, right["iwae"][1] + np.log(k))})[0]["hint"]
    assert "equals the ELBO" in rows({"log_px": (k, a.mean(0))})[0]["hint"]
    order = rows({"elbo": right["iwae"][1] + 1.0, "iwae": right["iwae"]})
    assert not order[0]["passed"] and "order" in order[-1]["hint"]


def test_bad_arguments():
    lg, x = model(0)
    encode, decode = callables(lg)
    with pytest.raises(ValueError, match="Generator"):
        check_bounds(encode, decode, x, rng=0)
    with pytest.raises(ValueError, match="ks must be increasing"):
        check_bounds(encode, decode, x, rng=np.random.default_rng(0), ks=(10, 1))
    with pytest.raises(ValueError, match="M >= 2 k"):
        check_bounds(encode, decode, x, rng=np.random.default_rng(0), M=100, ks=(1, 10), likelihood="gaussian",
                     user={"log_px": (80, np.zeros(40))})
