"""The linear-Gaussian model (pPCA): the exact oracle every VAE bound in npvae is checked against.

p(z) = N(0, I_Z), p(x|z) = N(W z + b, sigma2 I_D), so p(x), p(z|x), the ELBO of any diagonal
Gaussian q and KL(q || p(z|x)) all have closed forms (MATHS.md, "The linear-Gaussian model (pPCA)";
Tipping & Bishop 1999). Shapes: x (N, D), z and q parameters (N, Z), W (D, Z), b (D,).

Everything goes through M = W^T W + sigma2 I_Z and its Cholesky factor L (M = L L^T), O(D Z^2):
the D x D covariance C = W W^T + sigma2 I is never formed and nothing is ever inverted.
A float32 model computes and returns float32; constants are cast to the model's dtype so that
nothing is promoted to float64 on the way.

q parameters are (q_mean, q_log_var), both exactly (N, Z): a variance shared by all rows (as in the
linear VAE) must be passed as np.broadcast_to(log_var, (N, Z)); nothing is broadcast silently.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.linalg import cho_solve, solve_triangular

from npvae import _validate as check

LOG_2PI = math.log(2.0 * math.pi)


# ---- private cores: the maths, once. They do no checking; the public methods below check. ----

def _chol_M(W, s2):
    """Lower Cholesky factor L of M = W^T W + s2 I_Z, (Z, Z). No checking."""
    M = W.T @ W + s2 * np.eye(W.shape[1], dtype=W.dtype)
    return np.linalg.cholesky(M)


def _log_marginal(W, b, s2, x):
    """log N(x; b, W W^T + s2 I) per row, (N,), by determinant lemma + Woodbury (MATHS.md pPCA). No checking."""
    D, Z = W.shape
    dt = W.dtype.type
    L = _chol_M(W, s2)
    r = x - b                                                   # (N, D)
    y = solve_triangular(L, W.T @ r.T, lower=True)              # (Z, N); ||y||^2 = r^T W M^-1 W^T r
    quad = (np.sum(r * r, axis=1) - np.sum(y * y, axis=0)) / s2  # r^T C^-1 r, (N,)
    log_det_C = 2 * np.sum(np.log(np.diag(L))) + (D - Z) * np.log(s2)
    return dt(-0.5) * (D * dt(LOG_2PI) + log_det_C + quad)


def _posterior(W, b, s2, x):
    """p(z|x) = N(M^-1 W^T (x - b), s2 M^-1): mean (N, Z), cov (Z, Z) (Tipping & Bishop 1999). No checking."""
    L = _chol_M(W, s2)
    mean = cho_solve((L, True), W.T @ (x - b).T).T             # (N, Z)
    cov = s2 * cho_solve((L, True), np.eye(W.shape[1], dtype=W.dtype))
    return mean, cov


def _elbo(W, b, s2, x, m, lv):
    """Closed-form ELBO of q = N(m, diag(exp(lv))), (N,) (MATHS.md pPCA; Kingma & Welling 2014, App. B). No checking.

    ELBO = -D/2 log(2 pi s2) - 1/(2 s2) [||x - b - W m||^2 + sum_j S_j ||W_:j||^2]
           - 1/2 sum_j [S_j + m_j^2 - 1 - log S_j],   S = exp(lv).
    """
    D = W.shape[0]
    dt = W.dtype.type
    resid = x - b - m @ W.T                                     # (N, D)
    col_sq = np.sum(W * W, axis=0)                              # ||W_:j||^2, (Z,)
    expected_sq = np.sum(resid * resid, axis=1) + np.exp(lv) @ col_sq
    expected_loglik = dt(-0.5) * (D * (dt(LOG_2PI) + np.log(s2)) + expected_sq / s2)
    # expm1(lv) - lv is S - 1 - log S without the cancellation of exp(lv) - 1 near lv = 0.
    kl_prior = dt(0.5) * np.sum(m * m + np.expm1(lv) - lv, axis=1)
    return expected_loglik - kl_prior


def _kl_to_posterior(W, b, s2, x, m, lv):
    """KL(N(m, diag(exp(lv))) || p(z|x)), (N,), full-covariance KL with S1 = s2 M^-1 (MATHS.md). No checking.

    With u_j = lv_j + log(M_jj / s2) and d = mu_post - m, the formula regroups into three terms
    that are each >= 0:
    KL = 1/2 [ sum_j (expm1(u_j) - u_j)          diagonal variances vs the best s2 / M_jj
             + d^T M d / s2                       mean mismatch
             + sum_j log M_jj - log|M| ]          correlations a diagonal q cannot express
    """
    L = _chol_M(W, s2)
    diag_M = np.sum(W * W, axis=0) + s2                         # M_jj, (Z,)
    d = cho_solve((L, True), W.T @ (x - b).T).T - m             # (N, Z)
    u = lv + np.log(diag_M / s2)                                # (N, Z)
    variance_term = np.sum(np.expm1(u) - u, axis=1)
    dL = d @ L                                                  # rows are (L^T d)^T, so d^T M d = ||dL||^2
    mean_term = np.sum(dL * dL, axis=1) / s2
    # log M_jj - 2 log L_jj = -log(L_jj^2 / M_jj): the log-determinant of M's correlation matrix.
    correlation_term = -2 * np.sum(np.log(np.diag(L) / np.sqrt(diag_M)))
    return W.dtype.type(0.5) * (variance_term + mean_term + correlation_term)


def _best_diagonal_q(W, b, s2, x):
    """Optimal diagonal q: posterior mean and log S_j = log(s2 / M_jj), both (N, Z) (MATHS.md pPCA). No checking."""
    mean, _ = _posterior(W, b, s2, x)
    diag_M = np.sum(W * W, axis=0) + s2
    log_var = np.broadcast_to(np.log(s2 / diag_M), mean.shape).copy()
    return mean, log_var


def _sample(W, b, s2, n, rng):
    """Draw z ~ N(0, I_Z) then x = W z + b + sqrt(s2) eps: x (n, D), z (n, Z). No checking."""
    D, Z = W.shape
    z = rng.standard_normal((n, Z), dtype=W.dtype)
    eps = rng.standard_normal((n, D), dtype=W.dtype)
    return z @ W.T + b + np.sqrt(s2) * eps, z


# ---- the public model: validates once, then calls the cores. ----

@dataclass(frozen=True, eq=False, repr=False)
class LinearGaussian:
    """p(z) = N(0, I_Z), p(x|z) = N(W z + b, sigma2 I_D); W (D, Z), b (D,), sigma2 > 0 (Tipping & Bishop 1999).

    W and b are stored as read-only copies; sigma2 is stored as a scalar of the model's dtype.
    """

    W: np.ndarray
    b: np.ndarray
    sigma2: float

    def __post_init__(self):
        W = check.float_array("W", self.W, 2)
        b = check.float_array("b", self.b, 1)
        check.shape("b", b, (W.shape[0],))
        check.same_dtype(W.dtype, b=b)
        D, Z = W.shape
        if Z < 1 or Z > D:
            raise ValueError(f"W must have shape (D, Z) with 1 <= Z <= D, got {W.shape}")
        s2 = W.dtype.type(check.positive_scalar("sigma2", self.sigma2))
        if not (np.isfinite(s2) and s2 > 0):   # e.g. 1e-50 underflows to 0 in float32
            raise ValueError(f"sigma2={self.sigma2!r} is not a positive finite {W.dtype} number")
        W, b = W.copy(), b.copy()
        W.flags.writeable = False
        b.flags.writeable = False
        object.__setattr__(self, "W", W)
        object.__setattr__(self, "b", b)
        object.__setattr__(self, "sigma2", s2)

    @property
    def D(self) -> int:
        return self.W.shape[0]

    @property
    def Z(self) -> int:
        return self.W.shape[1]

    @property
    def dtype(self) -> np.dtype:
        return self.W.dtype

    def __repr__(self):
        return f"LinearGaussian(D={self.D}, Z={self.Z}, sigma2={float(self.sigma2)!r}, dtype={self.dtype})"

    def _check_x(self, x):
        check.float_array("x", x, 2)
        check.shape("x", x, (None, self.D))
        check.same_dtype(self.dtype, x=x)
        return x

    def _check_q(self, x, q_mean, q_log_var):
        N = self._check_x(x).shape[0]
        for name, a in (("q_mean", q_mean), ("q_log_var", q_log_var)):
            check.float_array(name, a, 2)
            check.shape(name, a, (N, self.Z))
        check.same_dtype(self.dtype, q_mean=q_mean, q_log_var=q_log_var)

    def log_marginal(self, x: np.ndarray) -> np.ndarray:
        """log p(x) = log N(x; b, W W^T + sigma2 I), x (N, D) -> (N,) (MATHS.md pPCA, Woodbury + determinant lemma)."""
        return _log_marginal(self.W, self.b, self.sigma2, self._check_x(x))

    def posterior(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """p(z|x) = N(M^-1 W^T (x - b), sigma2 M^-1), x (N, D) -> mean (N, Z), cov (Z, Z) (Tipping & Bishop 1999)."""
        return _posterior(self.W, self.b, self.sigma2, self._check_x(x))

    def elbo(self, x: np.ndarray, q_mean: np.ndarray, q_log_var: np.ndarray) -> np.ndarray:
        """Closed-form ELBO of q = N(q_mean, diag(exp(q_log_var))); x (N, D), q_* (N, Z) -> (N,) (MATHS.md pPCA)."""
        self._check_q(x, q_mean, q_log_var)
        return _elbo(self.W, self.b, self.sigma2, x, q_mean, q_log_var)

    def kl_to_posterior(self, x: np.ndarray, q_mean: np.ndarray, q_log_var: np.ndarray) -> np.ndarray:
        """KL(q || p(z|x)) = log p(x) - ELBO, computed directly; x (N, D), q_* (N, Z) -> (N,) (MATHS.md, full-covariance KL)."""
        self._check_q(x, q_mean, q_log_var)
        return _kl_to_posterior(self.W, self.b, self.sigma2, x, q_mean, q_log_var)

    def best_diagonal_q(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """ELBO-optimal diagonal q: mean = posterior mean, var_j = sigma2 / M_jj; x (N, D) -> (N, Z), (N, Z) (MATHS.md pPCA)."""
        return _best_diagonal_q(self.W, self.b, self.sigma2, self._check_x(x))

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Ancestral draws z ~ N(0, I), x ~ N(W z + b, sigma2 I) -> x (n, D), z (n, Z), in the model's dtype."""
        n = check.positive_int("n", n)
        return _sample(self.W, self.b, self.sigma2, n, check.generator("rng", rng))


def ppca_fit(X: np.ndarray, Z: int) -> tuple[LinearGaussian, float]:
    """Closed-form pPCA maximum likelihood, X (N, D) -> (model, max log-lik summed over rows) (Tipping & Bishop 1999).

    S = 1/N sum (x - xbar)(x - xbar)^T with eigenvalues l_1 >= ... >= l_D and vectors U:
    b = xbar, s2 = mean(l_{Z+1..D}), W = U_Z (L_Z - s2 I)^{1/2} (rotation R = I), and
    max log-lik = -N/2 [D log 2pi + sum_{j<=Z} log l_j + (D - Z) log s2 + D] (MATHS.md pPCA).
    The fit runs in X's dtype; the log-likelihood is returned as a Python float.
    """
    X = check.float_array("X", X, 2)
    Z = check.positive_int("Z", Z)
    N, D = X.shape
    if N < 2:
        raise ValueError(f"X must have at least 2 rows to estimate a covariance, got {N}")
    if Z >= D:
        raise ValueError(f"Z must be < D = {D} so that some variance is left for sigma2, got Z={Z}")
    b = X.mean(axis=0)
    Xc = X - b
    S = (Xc.T @ Xc) / X.dtype.type(N)                          # 1/N, the ML covariance (not 1/(N-1))
    evals, evecs = np.linalg.eigh(S)
    evals, evecs = evals[::-1], evecs[:, ::-1]                  # descending
    s2 = np.mean(evals[Z:])
    # Discarded eigenvalues at rounding level mean the data lie in a Z-dim subspace: the ML sigma2 is 0
    # and the likelihood unbounded, so there is no model to return.
    if not s2 > np.finfo(X.dtype).eps * max(evals[0], np.finfo(X.dtype).tiny):
        raise ValueError(f"degenerate data: the {D - Z} discarded eigenvalues of the covariance average to "
                         f"{float(s2)!r}, so the ML sigma2 is not > 0; use a smaller Z or non-degenerate X")
    W = evecs[:, :Z] * np.sqrt(evals[:Z] - s2)                  # (D, Z), column j scaled by sqrt(l_j - s2)
    log_l = [math.log(float(l)) for l in evals[:Z]]
    max_loglik = -0.5 * N * (D * LOG_2PI + math.fsum(log_l) + (D - Z) * math.log(float(s2)) + D)
    return LinearGaussian(np.ascontiguousarray(W), b, s2), max_loglik


LinearGaussian.ppca_fit = staticmethod(ppca_fit)
