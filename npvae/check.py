"""`npvae check`: finite-difference gradient checks of every objective and estimator, and bound checks on exact models.

Each check returns rows {"check", "case", "error", "tol", "passed", ...}; the CLI prints them as a
table or JSON. Everything is float64 with fixed eps, so every number here is deterministic.
"""

from __future__ import annotations

import numpy as np

from .gradcheck import FD_STEP, RTOL, elementwise, per_parameter, rel_err
from .layers import ACTIVATIONS, activation_backward, activation_forward
from .likelihoods import LIKELIHOODS, Likelihood
from .linear_gaussian import LinearGaussian
from .linear_vae import best_linear_vae, orthogonal_model
from .lme import _log_mean_exp
from .model import Arch, flatten, init_params, param_names
from .objectives import VALID, bound_value, log_weights, objective

F64 = np.dtype(np.float64)


def _row(check, case, error, tol, **extra):
    return {"check": check, "case": case, "error": float(error), "tol": float(tol), "passed": bool(error <= tol), **extra}


def gradient_rows(seed: int = 0) -> list[dict]:
    """Every (likelihood, bound, kl, estimator) x parameter: random-direction central difference vs the hand-written gradient."""
    rng = np.random.default_rng(seed)
    rows = []
    for li, name in enumerate(LIKELIHOODS):
        activation = ACTIVATIONS[1 + li % (len(ACTIVATIONS) - 1)]  # tanh, relu, softplus across likelihoods
        arch = Arch(6, (5, 4), 3, activation, Likelihood(name, sigma2=0.7, min_log_var=-3.0))
        params = init_params(arch, rng)
        N, K = 4, 3
        x = (rng.random((N, 6)) < 0.5).astype(F64) if name == "bernoulli" else rng.standard_normal((N, 6))
        eps = rng.standard_normal((K, N, 3))
        for (bound, kl), estimators in VALID.items():
            for estimator in estimators:
                options = dict(bound=bound, kl=kl, estimator=estimator, kl_weight=1.0)
                _, grads = objective(params, arch, x, eps, **options)
                case = f"{name}/{activation} {bound} kl={kl} {estimator}"
                for pname, analytic, fd, err in per_parameter(params, grads, arch, x, eps, options, rng, param_names(arch)):
                    rows.append(_row("gradient", f"{case} {pname}", err, RTOL[F64], analytic=analytic, fd=fd))
    return rows


def layer_rows(seed: int = 0) -> list[dict]:
    """Each activation's backward vs element-wise central differences of sum(dy * f(a))."""
    rng = np.random.default_rng(seed)
    rows = []
    for name in ACTIVATIONS:
        a = rng.standard_normal((3, 4))
        a[np.abs(a) < 1e-3] = 0.5  # keep away from ReLU's kink, where the derivative does not exist
        dy = rng.standard_normal((3, 4))
        _, cache = activation_forward(name, a)
        analytic = activation_backward(name, dy, cache)
        fd = elementwise(lambda arrs: float(np.sum(dy * activation_forward(name, arrs[0])[0])), [a], 0, FD_STEP[F64])
        rows.append(_row("layer", f"activation {name}", rel_err(analytic, fd), RTOL[F64]))
    return rows


def bound_rows(seed: int = 0, n_models: int = 3) -> list[dict]:
    """On random exact linear-Gaussian models: ELBO <= IWAE_K <= log p(x), the KL identity, and exactness at p(z|x)."""
    rng = np.random.default_rng(seed)
    rows = []
    for m in range(n_models):
        D, Z, N = 6, 3, 5
        # General W: the best diagonal q is not exact, so every inequality is strict.
        model = LinearGaussian(rng.standard_normal((D, Z)), rng.standard_normal(D), float(rng.uniform(0.3, 1.5)))
        x, _ = model.sample(N, rng)
        q_mean = rng.standard_normal((N, Z)) * 0.5
        q_log_var = rng.uniform(-1.0, 0.5, size=(N, Z))
        log_px = model.log_marginal(x)
        elbo = model.elbo(x, q_mean, q_log_var)
        gap = model.kl_to_posterior(x, q_mean, q_log_var)
        scale = np.max(np.abs(log_px))
        rows.append(_row("bound", f"model {m}: ELBO <= log p(x)", max(0.0, float(np.max(elbo - log_px))), 1e-12 * scale))
        rows.append(_row("bound", f"model {m}: log p(x) - ELBO = KL(q || p(z|x))", rel_err(log_px - elbo, gap), 1e-10))

        arch, params = best_linear_vae(model)
        eps = rng.standard_normal((2000, N, Z))
        a = log_weights(params, arch, x, eps)  # (K, N)
        means = [float(np.mean(_log_mean_exp(a.reshape(-1, k, N), axis=1))) for k in (1, 10, 100)]
        ok = means[0] < means[1] < means[2] < float(np.mean(log_px))
        rows.append(_row("bound", f"model {m}: E IWAE_1 < E IWAE_10 < E IWAE_100 < log p(x) (MC, K=2000)",
                         0.0 if ok else 1.0, 0.0, values=means + [float(np.mean(log_px))]))

        ortho = orthogonal_model(rng, D, Z, float(rng.uniform(0.3, 1.5)))
        x, _ = ortho.sample(N, rng)
        arch, params = best_linear_vae(ortho)
        eps = rng.standard_normal((7, N, Z)) * 3.0  # any eps at all, even far in the tails
        exact = ortho.log_marginal(x)
        for bound in ("elbo", "iwae"):
            v = bound_value(params, arch, x, eps, bound=bound, kl="mc")
            rows.append(_row("bound", f"model {m}: {bound} (MC) == log p(x) at q = p(z|x), any eps", rel_err(v, exact), 1e-12))
        _, grads = objective(params, arch, x, eps, bound="elbo", kl="mc", estimator="stl")
        enc = np.concatenate([g.ravel() for g in flatten(grads)[:2]])
        rows.append(_row("bound", f"model {m}: STL encoder gradient == 0 at q = p(z|x)", float(np.max(np.abs(enc))), 1e-12 * scale))
    return rows


def run_all(seed: int = 0) -> list[dict]:
    """All checks, in the order they are printed."""
    return layer_rows(seed) + gradient_rows(seed) + bound_rows(seed)
