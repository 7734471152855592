"""`npvae check`'s value rows: every quantity a user relies on against an independent closed form or reference.

Gradient rows prove that a backward pass matches its forward pass; these prove that the forward passes are
the right numbers: the ELBO (analytic and MC KL) and the KL against LinearGaussian's closed forms, IWAE values
against a log-sum-exp of the log-weights and the log-weights against scipy's densities (Gaussian and
Bernoulli VAEs), log p(x) on a
784-dimensional model against its exact marginal, the likelihoods at extreme outputs against 50-digit decimal
arithmetic, and the optimisers' first steps against the update rules written out by hand.
"""

from __future__ import annotations

import math
from decimal import Decimal, getcontext

import numpy as np
from scipy import stats
from scipy.special import logsumexp

from .. import likelihoods as lik
from ..maths.gaussian import kl_std_normal_forward
from ..objectives import log_px
from ..oracle.linear_chain import LinearGaussian
from ..oracle.linear_vae import best_linear_vae, linear_arch, linear_vae_params
from ..vae.model import encode
from ..objectives import bound_value, log_weights, objective
from ..nn.optim import adam_init, adam_update, sgd_init, sgd_update

EPS = {np.dtype(np.float32): float(np.finfo(np.float32).eps), np.dtype(np.float64): float(np.finfo(np.float64).eps)}
Z_MARGIN = 5.0  # Monte Carlo equalities: within this many standard errors (plus rounding)


def _row(check, case, error, tol, **extra):
    return {"check": check, "case": case, "error": float(error), "tol": float(tol), "status": "ok" if error <= tol else "FAIL",
            "passed": bool(error <= tol), **extra}


def _rel(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-300))


def sigma_points(Z: int, N: int) -> np.ndarray:
    """eps: (2Z, N, Z), the points +- sqrt(Z) e_j: their mean is 0 and their covariance I, so the average over
    them of any quadratic function of eps is its exact expectation under N(0, I)."""
    e = math.sqrt(Z) * np.eye(Z)
    return np.broadcast_to(np.concatenate([e, -e])[:, None, :], (2 * Z, N, Z)).copy()


def _linear_vae_away_from_posterior(rng, D=7, Z=3, N=5):
    """A linear-Gaussian model, its data, and a linear VAE with an arbitrary encoder (random V and log-variances)."""
    model = LinearGaussian(rng.standard_normal((D, Z)), rng.standard_normal(D), float(rng.uniform(0.3, 1.5)))
    x, _ = model.sample(N, rng)
    params = linear_vae_params(model, rng.standard_normal((Z, D)) * 0.3, rng.uniform(-1.5, 0.5, Z))
    return model, linear_arch(D, Z, model.sigma2), params, x


def elbo_and_kl_rows(rng) -> list[dict]:
    """ELBO (analytic KL and MC KL) and KL alone, at an arbitrary encoder, against closed forms, exactly (sigma points)."""
    model, arch, params, x = _linear_vae_away_from_posterior(rng)
    N, Z = x.shape[0], arch.latent_dim
    mu, log_var, _ = encode(params, arch, x)
    exact = model.elbo(x, mu, log_var)
    eps = sigma_points(Z, N)  # log p(x|z), log p(z) and log q(z|x) are quadratic in eps for the linear VAE
    rows = []
    for kl in ("analytic", "mc"):
        v = bound_value(params, arch, x, eps, bound="elbo", kl=kl)
        rows.append(_row("value", f"ELBO (kl={kl}) of a linear VAE, arbitrary encoder, vs LinearGaussian.elbo", _rel(v, exact), 1e-12))
        v, _ = objective(params, arch, x, eps, bound="elbo", kl=kl)
        rows.append(_row("value", f"objective's ELBO (kl={kl}) vs LinearGaussian.elbo", _rel(v, exact), 1e-12))
    # KL(N(m, S) || N(0, I)) = 1/2 [tr S + m'm - Z - log det S], written with full matrices and slogdet.
    ref = np.array([0.5 * (np.trace(S) + m @ m - Z - np.linalg.slogdet(S)[1])
                    for m, S in zip(mu, [np.diag(np.exp(lv)) for lv in log_var])])
    rows.append(_row("value", "KL(q || N(0, I)) vs 1/2 [tr S + m'm - Z - log det S] (slogdet)", _rel(kl_std_normal_forward(mu, log_var), ref), 1e-13))
    return rows


def iwae_value_rows(rng) -> list[dict]:
    """Log-weights against scipy's densities, and IWAE_K values against scipy's logsumexp of them, away from p(z|x)."""
    model, arch, params, x = _linear_vae_away_from_posterior(rng)
    N, Z, K = x.shape[0], arch.latent_dim, 12
    eps = rng.standard_normal((K, N, Z)) * 1.5
    a = log_weights(params, arch, x, eps)
    mu, log_var, _ = encode(params, arch, x)
    sd = np.exp(0.5 * log_var)
    z = mu + sd * eps
    ref = (stats.norm.logpdf(x[None], z @ model.W.T + model.b, math.sqrt(model.sigma2)).sum(-1)
           + stats.norm.logpdf(z).sum(-1) - stats.norm.logpdf(z, mu, sd).sum(-1))
    rows = [_row("value", "log-weights log p(x, z) - log q(z|x) vs scipy.stats.norm densities", _rel(a, ref), 1e-12)]
    iwae = logsumexp(ref, axis=0) - math.log(K)
    rows.append(_row("value", f"IWAE_{K} from bound_value vs scipy logsumexp of the log-weights", _rel(bound_value(params, arch, x, eps, bound="iwae", kl="mc"), iwae), 1e-12))
    for estimator in ("reparam", "dreg"):
        v, _ = objective(params, arch, x, eps, bound="iwae", kl="mc", estimator=estimator)
        rows.append(_row("value", f"IWAE_{K} from objective ({estimator}) vs scipy logsumexp", _rel(v, iwae), 1e-12))
    return rows


def log_px_rows(rng, D: int = 784, Z: int = 5, N: int = 20, k: int = 400) -> list[dict]:
    """log_px on a 784-dimensional linear-Gaussian model (log-weights near -1000), float64 and float32, vs the exact
    marginal within Z_MARGIN standard errors plus rounding; and the same estimate whatever the chunk size."""
    W = rng.standard_normal((D, Z)) * 0.3
    rows = []
    for dtype in (np.float64, np.float32):
        model = LinearGaussian(W.astype(dtype), rng.standard_normal(D).astype(dtype), 0.6)
        x, _ = model.sample(N, rng)
        arch, params = best_linear_vae(model)  # a good proposal, not exact (W's columns are not orthogonal)
        exact = model.log_marginal(x).astype(np.float64)
        seed = int(rng.integers(2**32))
        est = log_px(params, arch, x, k, np.random.default_rng(seed)).astype(np.float64)
        err = est - exact
        se = float(err.std(ddof=1) / math.sqrt(N))
        # The estimate is biased low by about Var(w / p(x)) / 2k (the delta method), measured from other draws.
        a = log_weights(params, arch, x, rng.standard_normal((k, N, Z)).astype(dtype)).astype(np.float64)
        w = np.exp(a - logsumexp(a, axis=0) + math.log(k))  # w / mean(w), (k, N)
        bias = float(np.mean(w.var(axis=0, ddof=1)) / (2 * k))
        # float32: the log-weights are sums of D terms; pairwise summation keeps their rounding ~ eps sqrt(D) |log p|.
        rounding = 4 * EPS[np.dtype(dtype)] * math.sqrt(D) * float(np.max(np.abs(exact)))
        name = np.dtype(dtype).name
        rows.append(_row("value", f"log_px, D={D}, {name}, log p(x) about -900: vs exact marginal "
                         f"({Z_MARGIN:g} s.e. + bias + rounding)", abs(float(err.mean()) + bias), Z_MARGIN * se + 2 * bias + rounding,
                         se=se, bias=bias))
        small = log_px(params, arch, x, k, np.random.default_rng(seed), max_elements=3 * N * D).astype(np.float64)
        rows.append(_row("value", f"log_px, D={D}, {name}: chunks of 3 samples vs one chunk", _rel(small, est), 8 * EPS[np.dtype(dtype)]))
    return rows


def bernoulli_vae_rows(rng) -> list[dict]:
    """A Bernoulli tanh VAE's log-weights (D = 6 pixels) against scipy.stats.bernoulli and norm, its MLPs written out here.

    The likelihood rows below test one pixel at a time, where a mean over pixels equals their sum; this row sums
    D = 6 of them, so a reconstruction term averaged over pixels (a classic bug) is off by a factor D here.
    """
    from ..likelihoods import Likelihood
    from ..vae.model import Arch, init_params

    arch = Arch(6, (5,), 3, "tanh", Likelihood("bernoulli"))
    params = init_params(arch, rng)
    N, K = 4, 5
    x = (rng.random((N, 6)) < 0.5).astype(np.float64)
    eps = rng.standard_normal((K, N, 3))

    def mlp(layers, h):  # tanh after every layer but the last, h @ W + b (W: (inputs, outputs))
        for i, layer in enumerate(layers):
            h = h @ layer.W + layer.b
            h = np.tanh(h) if i < len(layers) - 1 else h
        return h

    enc = mlp(params.encoder, x)
    mu, sd = enc[:, :3], np.exp(0.5 * enc[:, 3:])
    z = mu + sd * eps
    probs = 1.0 / (1.0 + np.exp(-mlp(params.decoder, z)))  # moderate logits here: the plain sigmoid is exact enough
    ref = (stats.bernoulli.logpmf(x[None], probs).sum(-1) + stats.norm.logpdf(z).sum(-1) - stats.norm.logpdf(z, mu, sd).sum(-1))
    return [_row("value", "log-weights of a Bernoulli tanh VAE, D=6 pixels, vs scipy.stats.bernoulli and norm", _rel(log_weights(params, arch, x, eps), ref), 1e-12)]


def _decimal_bernoulli(logit: float, x: float) -> Decimal:
    """log Bern(x | sigmoid(l)) = x l - log(1 + e^l), at 50 digits."""
    l = Decimal(logit)
    return Decimal(x) * l - (Decimal(1) + l.exp()).ln()


def likelihood_rows() -> list[dict]:
    """Each likelihood at extreme outputs vs 50-digit decimal arithmetic or scipy.stats, float64 and float32.

    The tolerance is a few ulps of the terms that are added, |x l| and softplus(l) for the Bernoulli: a
    log-probability computed from a logit cannot be more accurate than the logit is stored.
    """
    getcontext().prec = 50
    rows = []
    logits = np.array([-100.0, -30.0, -1.0, 0.0, 2.5, 30.0, 100.0])
    for dtype in (np.float64, np.float32):
        t = np.dtype(dtype)
        for xv in (0.0, 1.0):
            l = logits.astype(dtype)
            got = lik.forward(lik.Likelihood("bernoulli"), l[:, None, None], np.full((1, 1), xv, dtype))[0][:, 0]
            ref = np.array([float(_decimal_bernoulli(float(v), xv)) for v in l])
            size = np.maximum(np.abs(xv * l.astype(np.float64)), np.logaddexp(0.0, l.astype(np.float64))) + 1.0
            err = float(np.max(np.abs(got - ref) / size))
            rows.append(_row("value", f"Bernoulli log-prob, logits +-100, x={xv:g}, {t.name}, vs 50-digit decimal", err, 4 * EPS[t]))
        for s2 in (1e-6, 1.0, 1e6):
            x = np.array([[0.3, -2.0, 5.0]], dtype)
            m = np.array([[[0.3005, 1.0, -4.0]]], dtype)
            got = lik.forward(lik.Likelihood("gaussian", sigma2=s2), m, x)[0]
            ref = stats.norm.logpdf(x.astype(np.float64), m.astype(np.float64), math.sqrt(s2)).sum()
            rows.append(_row("value", f"Gaussian log-density, sigma2={s2:g}, {t.name}, vs scipy.stats.norm", _rel(got, ref), 8 * EPS[t]))
        for raw in (-50.0, 0.0, 50.0):
            x = np.array([[0.3, -2.0]], dtype)
            out = np.array([[[0.1, 1.0, raw, raw]]], dtype)
            got = lik.forward(lik.Likelihood("gaussian-learned", min_log_var=-6.0), out, x)[0]
            s = -6.0 + float(np.logaddexp(0.0, raw + 6.0))  # the soft floor s_min + softplus(raw - s_min), in float64
            ref = stats.norm.logpdf(x.astype(np.float64), out[..., :2].astype(np.float64), math.exp(0.5 * s)).sum()
            rows.append(_row("value", f"learned-variance Gaussian, raw log-var {raw:g}, {t.name}, vs scipy.stats.norm",
                             _rel(got, ref), 16 * EPS[t]))
    return rows


def optimiser_rows() -> list[dict]:
    """Adam's and SGD's first two steps against the update rules written out by hand in Python floats."""
    p0, g1, g2 = [0.5, -1.25, 3.0], [0.2, -0.03, 1e-9], [-0.1, 0.04, 2e-9]
    lr, b1, b2, eps, mom = 0.1, 0.9, 0.999, 1e-8, 0.8
    want_adam, want_sgd = [], []
    for p, a, b in zip(p0, g1, g2):  # Kingma & Ba 2015, Algorithm 1 (eps added to sqrt(v_hat), as torch)
        m1, v1 = (1 - b1) * a, (1 - b2) * a * a
        q1 = p - lr * (m1 / (1 - b1)) / (math.sqrt(v1 / (1 - b2)) + eps)
        m2, v2 = b1 * m1 + (1 - b1) * b, b2 * v1 + (1 - b2) * b * b
        want_adam.append(q1 - lr * (m2 / (1 - b1**2)) / (math.sqrt(v2 / (1 - b2**2)) + eps))
        want_sgd.append(p - lr * a - lr * (mom * a + b))  # torch: buf = g on the first step, then buf = mom buf + g
    rows = []
    for dtype in (np.float64, np.float32):
        t = np.dtype(dtype)
        params = [np.array(p0, dtype)]
        state = adam_init(params)
        for g in (g1, g2):
            params, state = adam_update(params, [np.array(g, dtype)], state, lr, (b1, b2), eps)
        rows.append(_row("value", f"Adam, two steps, {t.name}, vs the update rule by hand", _rel(params[0], want_adam), 8 * EPS[t]))
        params, state = [np.array(p0, dtype)], sgd_init([np.array(p0, dtype)])
        for g in (g1, g2):
            params, state = sgd_update(params, [np.array(g, dtype)], state, lr, momentum=mom)
        rows.append(_row("value", f"SGD with momentum, two steps, {t.name}, vs the update rule by hand", _rel(params[0], want_sgd), 8 * EPS[t]))
    return rows


def value_rows(seed: int = 0) -> list[dict]:
    rng = np.random.default_rng([seed, 17])
    return elbo_and_kl_rows(rng) + iwae_value_rows(rng) + bernoulli_vae_rows(rng) + log_px_rows(rng) + likelihood_rows() + optimiser_rows()
