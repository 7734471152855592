"""`npvae check`: finite-difference gradient checks of every objective and estimator, and bound checks on exact models.

Each check returns rows {"check", "case", "error", "tol", "passed", ...}; the CLI prints them as a
table or JSON. Everything is float64 with fixed eps, so every number here is deterministic.
"""

from __future__ import annotations

import numpy as np

from .gradcheck import FD_STEP, RTOL, elementwise, per_parameter, rel_err
from ..nn.layers import ACTIVATIONS, activation_backward, activation_forward
from ..likelihoods import Likelihood
from ..vae.ladder import LadderArch
from ..oracle.linear_vae import best_linear_ladder, best_linear_vae, ladder_q, linear_arch, linear_vae_params, orthogonal_model
from ..maths.lme import log_mean_exp_core
from ..vae import models
from ..vae.model import Arch, encode, flatten, init_params, param_names, unflatten
from ..objectives import VALID, bound_value, log_weights, objective
from ..oracle.linear_chain import LinearChain, LinearGaussian

F64 = np.dtype(np.float64)


def _row(check, case, error, tol, status=None, **extra):
    """One result; status "ok"/"FAIL" from error <= tol unless given ("inconclusive": the check could not decide)."""
    status = status or ("ok" if error <= tol else "FAIL")
    return {"check": check, "case": case, "error": float(error), "tol": float(tol), "status": status,
            "passed": status != "FAIL", **extra}


# The gradient models: every likelihood and every activation, hidden layers 5 x 5 (a square layer each way, where a
# transposed weight gradient would keep its shape), and biases drawn away from 0, so that ReLU units are not put
# exactly on their kink by zero biases and zero inputs.
GRADIENT_MODELS = (("bernoulli", "relu"), ("gaussian", "tanh"), ("gaussian-learned", "softplus"), ("bernoulli", "identity"))


MODEL_TRIES = 5


def gradient_model(rng, likelihood: str, activation: str):
    """(arch, params, x, eps) of one gradient check, every bias uniform in [-0.5, 0.5]."""
    arch = Arch(6, (5, 5), 3, activation, Likelihood(likelihood, sigma2=0.7, min_log_var=-3.0))
    params = init_params(arch, rng)
    arrays = [rng.uniform(-0.5, 0.5, a.shape) if n.endswith(".b") else a for n, a in zip(param_names(arch), flatten(params))]
    params = unflatten(arch, arrays)
    N, K = 4, 3
    x = (rng.random((N, 6)) < 0.5).astype(F64) if likelihood == "bernoulli" else rng.standard_normal((N, 6))
    eps = rng.standard_normal((K, N, 3))
    return arch, params, x, eps


def gradient_rows(seed: int = 0) -> list[dict]:
    """Every (likelihood, activation) x (bound, kl, estimator) x parameter: a random-direction central difference
    against the hand-written gradient, with the error model's tolerance (npvae.checks.gradcheck.fd_check)."""
    rng = np.random.default_rng(seed)
    rows = []
    for name, activation in GRADIENT_MODELS:
        for _ in range(MODEL_TRIES):  # a point where some parameter finds no kink-free direction is moved: a new draw
            arch, params, x, eps = gradient_model(rng, name, activation)
            model_rows = []
            for (bound, kl), estimators in VALID.items():
                for estimator in estimators:
                    options = dict(bound=bound, kl=kl, estimator=estimator, kl_weight=1.0)
                    _, grads = objective(params, arch, x, eps, **options)
                    case = f"{name}/{activation} {bound} kl={kl} {estimator}"
                    for r in per_parameter(params, grads, arch, x, eps, options, rng, param_names(arch)):
                        model_rows.append(_row("gradient", f"{case} {r.name}", r.error, r.tol, r.status, analytic=r.analytic, fd=r.fd))
            if all(r["status"] != "inconclusive" for r in model_rows):
                break
        rows += model_rows
    return rows


# L stochastic layers (npvae.vae.ladder): smooth activations only, so that no direction can cross a kink.
LADDER_MODELS = (("bernoulli", "tanh", "6-5-3:4-2"), ("gaussian-learned", "softplus", "6-5-3:4-2"), ("gaussian", "tanh", "6-5-3:4-2"),
                 ("bernoulli", "softplus", "6-5-3:4-2:3-2"))


def ladder_model(rng, likelihood: str, activation: str, spec: str = "6-5-3:4-2"):
    """(arch, params, x, eps) of one L-layer gradient check, every bias uniform in [-0.5, 0.5]."""
    arch = LadderArch.parse(spec, activation=activation, likelihood=Likelihood(likelihood, sigma2=0.7, min_log_var=-3.0))
    names = models.param_names(arch)
    arrays = [rng.uniform(-0.5, 0.5, a.shape) if n.endswith(".b") else a
              for n, a in zip(names, models.flatten(models.init_params(arch, rng)))]
    N, K, D = 4, 3, arch.data_dim
    x = (rng.random((N, D)) < 0.5).astype(F64) if likelihood == "bernoulli" else rng.standard_normal((N, D))
    return arch, models.unflatten(arch, arrays), x, rng.standard_normal((K, N, arch.noise_dim))


def ladder_gradient_rows(seed: int = 0) -> list[dict]:
    """`gradient_rows` for the L-stochastic-layer model (L = 2, Burda et al., and L = 3): every parameter, every estimator."""
    rng = np.random.default_rng(seed)
    rows = []
    for name, activation, spec in LADDER_MODELS:
        arch, params, x, eps = ladder_model(rng, name, activation, spec)
        for (bound, kl), estimators in VALID.items():
            for estimator in estimators:
                options = dict(bound=bound, kl=kl, estimator=estimator, kl_weight=1.0)
                _, grads = objective(params, arch, x, eps, **options)
                case = f"L={arch.L} {spec} {name}/{activation} {bound} kl={kl} {estimator}"
                for r in per_parameter(params, grads, arch, x, eps, options, rng, models.param_names(arch)):
                    rows.append(_row("gradient", f"{case} {r.name}", r.error, r.tol, r.status, analytic=r.analytic, fd=r.fd))
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

        rows += iwae_order_rows(model, x, rng, f"model {m}")

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


def ladder_bound_rows(seed: int = 0, n_models: int = 3, Ls=(2, 3)) -> list[dict]:
    """The L-layer code against the exact linear-Gaussian chain (npvae.oracle.linear_chain, npvae.oracle.linear_vae), L = 2, 3.

    Exact, any eps: log_weights == log p(x, z) - log q(z|x) of the oracle at the same samples; the oracle's closed forms:
    ELBO <= log p(x) and log p(x) - ELBO = KL(q || p(z|x)); with the posterior in the family, every log-weight is
    log p(x) and the STL and DReG encoder gradients are 0.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for L in Ls:
        Zs = (3, 2, 2)[:L]
        for m in range(n_models):
            D, N, K = 5, 4, 6
            model = LinearChain.random(rng, D, Zs, sigma2=float(rng.uniform(0.3, 1.5)))
            arch, params = best_linear_ladder(model, shift1=rng.uniform(-0.5, 0.5, 2 * Zs[0]))
            x = model.sample(N, rng)[0]
            eps = 2.0 * rng.standard_normal((K, N, sum(Zs)))
            q = ladder_q(params, arch, x)
            e = arch.split_noise(eps)
            zs = [q.m1 + np.exp(0.5 * q.lv1) * e[0]]  # the samples, from q's parameters, written out here
            for B, d, lv, e_l in zip(q.B, q.d, q.lv, e[1:]):
                zs.append(zs[-1] @ B.T + d + np.exp(0.5 * lv) * e_l)
            want = model.log_joint(x, zs) - model.log_q(zs, q)
            case = f"L={L} model {m}"
            rows.append(_row("bound", f"{case}: log-weights == oracle's log p(x, z) - log q, any eps",
                             rel_err(log_weights(params, arch, x, eps), want), 1e-12))
            log_px, elbo = model.log_marginal(x), model.elbo(x, q)
            scale = np.max(np.abs(log_px))
            rows.append(_row("bound", f"{case}: ELBO <= log p(x)", max(0.0, float(np.max(elbo - log_px))), 1e-12 * scale))
            rows.append(_row("bound", f"{case}: log p(x) - ELBO = KL(q || p(z|x))", rel_err(log_px - elbo, model.kl_to_posterior(x, q)), 1e-10))

            exact = LinearChain.with_posterior_in_family(rng, D, Zs)
            arch, params = best_linear_ladder(exact)
            x = exact.sample(N, rng)[0]
            log_px = exact.log_marginal(x)
            scale = np.max(np.abs(log_px))
            rows.append(_row("bound", f"{case}: every log-weight == log p(x) at q = p(z|x), any eps",
                             rel_err(log_weights(params, arch, x, eps), np.broadcast_to(log_px, (K, N))), 1e-12))
            n_enc = 2 * L  # enc_1..enc_L, one Dense (W and b) each
            for bound, est in (("elbo", "stl"), ("iwae", "dreg")):
                _, grads = objective(params, arch, x, eps, bound=bound, kl="mc", estimator=est)
                enc = np.concatenate([g.ravel() for g in models.flatten(grads)[:n_enc]])
                rows.append(_row("bound", f"{case}: {est.upper()} encoder gradient == 0 at q = p(z|x)", float(np.max(np.abs(enc))), 1e-12 * scale))
    return rows


# Monte Carlo inequalities are decided by a margin of Z_MARGIN standard errors: a gap above it passes, one below
# minus it fails, and anything between is "inconclusive" (reported, never a failure, never a pass).
Z_MARGIN = 5.0


def _decide(gap: float, se: float) -> tuple[str, float]:
    """(status, gap in standard errors) of an MC estimate of a gap that must be > 0."""
    z = gap / se if se > 0 else (np.inf if gap > 0 else -np.inf)
    return ("ok" if z > Z_MARGIN else "FAIL" if z < -Z_MARGIN else "inconclusive"), float(z)


def iwae_order_rows(model: LinearGaussian, x, rng, label: str, groups: int = 100) -> list[dict]:
    """E w = p(x), and ELBO < E IWAE_10 < E IWAE_100 < log p(x), with an encoder away from p(z|x).

    The ELBO and log p(x) are exact (closed forms). The `groups` x 100 samples per point serve every
    estimate (common random numbers): each 100-block is also split into ten 10-blocks, and each gap is the
    mean of per-block differences, with its standard error over blocks and points:
    - E IWAE_10 - ELBO and E IWAE_100 - E IWAE_10: paired block differences;
    - log p(x) - E IWAE_100 = E[(r - 1) - log r] with r = (mean of a block's weights) / p(x), because E r = 1
      (importance sampling is unbiased for p(x)): a control variate that removes most of the noise. E r = 1 is
      itself the first row, an equality decided at Z_MARGIN s.e.: it is what ties log_weights to the exact marginal.
    The encoder is not p(z|x): its means are the posterior means moved, and its variance is 1 / lambda_min of the
    posterior precision Lambda in every direction. Then p Lambda - (p - 1) S^-1 > 0 for every p, so every moment of
    the weights is finite and the standard errors can be trusted (a diagonal q narrower than a correlated posterior
    gives heavy-tailed weights, where they cannot).
    """
    N, Z = x.shape[0], model.W.shape[1]
    precision = (model.W.T @ model.W + model.sigma2 * np.eye(Z)) / model.sigma2  # Lambda of p(z|x)
    lam = np.linalg.eigvalsh(precision)
    V = np.linalg.solve(precision * model.sigma2, model.W.T)  # the posterior mean is V (x - b)
    arch = linear_arch(model.W.shape[0], Z, model.sigma2)
    params = linear_vae_params(model, V, np.full(Z, -np.log(lam[0])))
    enc = params.encoder[0]
    b = enc.b.copy()
    b[:Z] += rng.normal(0.0, 0.5 / np.sqrt(lam[-1]), Z)  # move the means by about half a posterior s.d.
    params = params._replace(encoder=(enc._replace(b=b),))
    q_mean, q_log_var, _ = encode(params, arch, x)
    elbo, log_px = model.elbo(x, q_mean, q_log_var), model.log_marginal(x)
    a = log_weights(params, arch, x, rng.standard_normal((groups * 100, N, Z)))  # (groups * 100, N)
    iw100 = log_mean_exp_core(a.reshape(groups, 100, N), axis=1)  # (groups, N)
    iw10 = log_mean_exp_core(a.reshape(groups, 10, 10, N), axis=2).mean(axis=1)  # mean of the ten 10-blocks of each block
    r = np.exp(iw100 - log_px)  # (groups, N), E r = 1

    def mean_se(v):  # the mean over blocks and points, and its standard error
        return float(np.mean(v)), float(np.sqrt(np.sum(v.var(axis=0, ddof=1) / v.shape[0])) / N)

    rows = []
    m, s = mean_se(r)
    rows.append(_row("bound", f"{label}: E w / p(x) = 1, weights unbiased (MC, {groups}x100 samples, {Z_MARGIN:g} s.e.)",
                     abs(m - 1.0), Z_MARGIN * s, mean=m, se=s))
    for what, v in (("ELBO < E IWAE_10", iw10 - elbo), ("E IWAE_10 < E IWAE_100", iw100 - iw10),
                    ("E IWAE_100 < log p(x)", (r - 1.0) - np.log(r))):
        gap, s = mean_se(v)
        status, _ = _decide(gap, s)
        # error = the margin the gap must clear (Z_MARGIN s.e.), tol = the gap measured: ok when error < tol.
        rows.append(_row("bound", f"{label}: {what} (MC, CRN, {Z_MARGIN:g} s.e.)", Z_MARGIN * s, gap, status, gap=gap, se=s))
    return rows


def run_all(seed: int = 0) -> list[dict]:
    """All checks, in the order they are printed."""
    from .values import value_rows

    return (layer_rows(seed) + gradient_rows(seed) + ladder_gradient_rows(seed) + bound_rows(seed) + ladder_bound_rows(seed)
            + value_rows(seed))
