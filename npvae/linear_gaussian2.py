"""A two-stochastic-layer linear-Gaussian model: the exact oracle for a two-layer VAE.

p(z2) = N(0, I_Z2), p(z1|z2) = N(A z2 + c, V1), p(x|z1) = N(W z1 + b, s2 I_D), V1 = diag(exp(log_var1)):
Burda et al. 2016's two-layer architecture with every network made linear. Marginally z1 ~ N(c, P),
P = A A^T + V1, so x is pPCA (Tipping & Bishop 1999; MATHS.md "pPCA") with loadings W' = W L_P
(P = L_P L_P^T) and offset b' = W c + b. Shapes: x (N, D), W (D, Z1), b (D,), A (Z1, Z2), c (Z1,),
log_var1 (Z1,); z1 (..., N, Z1), z2 (..., N, Z2).

The variational family is the two-layer VAE's, q(z1, z2|x) = q(z1|x) q(z2|z1) with
q(z1|x) = N(m1, diag(exp(lv1))), m1 and lv1 (N, Z1), and q(z2|z1) = N(B z1 + d, diag(exp(lv2))),
B (Z2, Z1), d (Z2,), lv2 (Z2,) shared by all points. Everything goes through Cholesky factors of
Z1 x Z1 or (Z1 + Z2) x (Z1 + Z2) matrices, O(D Z1^2); no D x D matrix is formed and nothing is inverted
(a diagonal V1 is divided by). Float32 stays float32, as in `linear_gaussian`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy.linalg import cho_solve, solve_triangular

from npvae import _validate as check
from npvae import gaussian

LOG_2PI = math.log(2.0 * math.pi)


class Posterior(NamedTuple):
    """p(z1|x) = N(z1_mean (N, Z1), z1_cov (Z1, Z1)); p(z2|z1, x) = p(z2|z1) = N(F z1 + g, z2_cov), F (Z2, Z1)."""
    z1_mean: np.ndarray
    z1_cov: np.ndarray
    F: np.ndarray
    g: np.ndarray
    z2_cov: np.ndarray


class TwoLayerQ(NamedTuple):
    """q(z1|x) = N(m1, diag(exp(lv1))), q(z2|z1) = N(B z1 + d, diag(exp(lv2))); pass as model.elbo(x, *q)."""
    m1: np.ndarray
    lv1: np.ndarray
    B: np.ndarray
    d: np.ndarray
    lv2: np.ndarray


# ---- private cores: the maths, once. They do no checking; the public methods below check. ----

def _ppca_view(W, b, A, c, log_var1, s2):
    """pPCA view x = W' u + b' + noise, u ~ N(0, I): L_P, W' = W L_P, b' = W c + b, L_M. No checking.

    L_P L_P^T = P = A A^T + V1 = Cov(z1) and L_M L_M^T = M = W'^T W' + s2 I_Z1, both (Z1, Z1); z1 = c + L_P u.
    """
    LP = np.linalg.cholesky(A @ A.T + np.diag(np.exp(log_var1)))
    Wp = W @ LP                                                  # (D, Z1)
    LM = np.linalg.cholesky(Wp.T @ Wp + s2 * np.eye(W.shape[1], dtype=W.dtype))
    return LP, Wp, W @ c + b, LM


def _log_marginal(W, b, A, c, log_var1, s2, x):
    """log N(x; b', W' W'^T + s2 I) per row, (N,), by determinant lemma + Woodbury (MATHS.md pPCA). No checking."""
    D, Z1 = W.shape
    dt = W.dtype.type
    LP, Wp, bp, LM = _ppca_view(W, b, A, c, log_var1, s2)
    r = x - bp                                                   # (N, D)
    y = solve_triangular(LM, Wp.T @ r.T, lower=True)             # (Z1, N); ||y||^2 = r^T W' M^-1 W'^T r
    quad = (np.sum(r * r, axis=1) - np.sum(y * y, axis=0)) / s2  # r^T C^-1 r
    log_det_C = 2 * np.sum(np.log(np.diag(LM))) + (D - Z1) * np.log(s2)
    return dt(-0.5) * (D * dt(LOG_2PI) + log_det_C + quad)


def _conditional_z2(A, c, log_var1):
    """p(z2|z1) = N(F z1 + g, Q^-1): Q = I + A^T V1^-1 A, F = Q^-1 A^T V1^-1 (= A^T P^-1), g = -F c. No checking."""
    AtV = A.T * np.exp(-log_var1)                                # A^T V1^-1, (Z2, Z1)
    LQ = np.linalg.cholesky(np.eye(A.shape[1], dtype=A.dtype) + AtV @ A)
    F = cho_solve((LQ, True), AtV)
    return F, -F @ c, cho_solve((LQ, True), np.eye(A.shape[1], dtype=A.dtype))


def _posterior(W, b, A, c, log_var1, s2, x):
    """p(z1|x) = N(c + L_P M^-1 W'^T (x - b'), s2 L_P M^-1 L_P^T) (pPCA's posterior of u), and p(z2|z1). No checking."""
    LP, Wp, bp, LM = _ppca_view(W, b, A, c, log_var1, s2)
    y = solve_triangular(LM, Wp.T @ (x - bp).T, lower=True)     # (Z1, N)
    mean = c + (LP @ solve_triangular(LM, y, lower=True, trans="T")).T
    G = solve_triangular(LM, LP.T, lower=True)                   # L_M^-1 L_P^T, so cov = s2 G^T G
    F, g, z2_cov = _conditional_z2(A, c, log_var1)
    return Posterior(mean, s2 * (G.T @ G), F, g, z2_cov)


def _elbo(W, b, A, c, log_var1, s2, x, m1, lv1, B, d, lv2):
    """Closed-form ELBO E_q[log p(x, z1, z2) - log q(z1, z2|x)], (N,) (Kingma & Welling 2014). No checking.

    Under q, z1 ~ N(m1, S1) and z2 = B z1 + d + e2 with e2 ~ N(0, S2) independent of z1 (S1 = diag(exp(lv1)),
    S2 = diag(exp(lv2))), so every term is the expectation of a quadratic, E[u^T K u] = E[u]^T K E[u] + tr(K Cov u):
      E log p(x|z1)  = -D/2 log(2 pi s2) - 1/(2 s2) [||x - b - W m1||^2 + sum_j S1_j ||W_:j||^2]
      E log p(z1|z2) = -Z1/2 log 2pi - 1/2 sum_i [log V1_i + (mu_e,i^2 + Cov(e)_ii) / V1_i],
                       e = z1 - A z2 - c = R z1 - A d - c - A e2, R = I - A B,
                       mu_e = m1 - A mu2 - c, Cov(e)_ii = sum_j R_ij^2 S1_j + sum_k A_ik^2 S2_k
      E log p(z2)    = -Z2/2 log 2pi - 1/2 [||mu2||^2 + sum_kj B_kj^2 S1_j + sum_k S2_k],   mu2 = B m1 + d
      H[q]           = H[q(z1|x)] + E H[q(z2|z1)] = 1/2 sum_j (1 + log 2pi + lv1_j) + 1/2 sum_k (1 + log 2pi + lv2_k).
    The log 2pi terms of the latents cancel against the entropy; S2 - 1 - lv2 is written expm1(lv2) - lv2.
    """
    D, Z1 = W.shape
    dt = W.dtype.type
    S1, S2 = np.exp(lv1), np.exp(lv2)                            # (N, Z1), (Z2,)
    resid = x - b - m1 @ W.T                                     # (N, D)
    e_log_px = dt(-0.5) * (D * (dt(LOG_2PI) + np.log(s2))
                           + (np.sum(resid * resid, axis=1) + S1 @ np.sum(W * W, axis=0)) / s2)
    mu2 = m1 @ B.T + d                                           # (N, Z2)
    mu_e = m1 - mu2 @ A.T - c                                    # (N, Z1)
    R = np.eye(Z1, dtype=W.dtype) - A @ B                        # (Z1, Z1)
    var_e = S1 @ (R * R).T + (A * A) @ S2                        # Cov(e)_ii, (N, Z1)
    e_log_pz1 = dt(-0.5) * np.sum(log_var1 + (mu_e * mu_e + var_e) * np.exp(-log_var1) - 1 - lv1, axis=1)
    e_log_pz2 = dt(-0.5) * (np.sum(mu2 * mu2, axis=1) + S1 @ np.sum(B * B, axis=0) + np.sum(np.expm1(lv2) - lv2))
    return e_log_px + e_log_pz1 + e_log_pz2


def _joint_precision(W, A, log_var1, s2):
    """Precision Lam of p(z1, z2|x): [[V1^-1 + W^T W / s2, -V1^-1 A], [-A^T V1^-1, Q]], (Z1 + Z2)^2. No checking.

    Read off -2 log p(x, z1, z2) = z2^T z2 + (z1 - A z2 - c)^T V1^-1 (z1 - A z2 - c) + ||x - b - W z1||^2 / s2 + const.
    """
    Z1, Z2 = A.shape
    iV = np.exp(-log_var1)
    Lam = np.empty((Z1 + Z2, Z1 + Z2), dtype=W.dtype)
    Lam[:Z1, :Z1] = np.diag(iV) + W.T @ W / s2
    Lam[:Z1, Z1:] = -iV[:, None] * A
    Lam[Z1:, :Z1] = Lam[:Z1, Z1:].T
    Lam[Z1:, Z1:] = np.eye(Z2, dtype=W.dtype) + (A.T * iV) @ A
    return Lam


def _kl_to_posterior(W, b, A, c, log_var1, s2, x, m1, lv1, B, d, lv2):
    """KL(q(z1, z2|x) || p(z1, z2|x)), (N,), of the two joint Gaussians (MATHS.md, full-covariance KL). No checking.

    In w = T^-1 z = (z1, z2 - B z1), T = [[I, 0], [B, I]] with |T| = 1, q is N([m1; d], diag(S1, S2)) and the
    posterior has precision K = T^T Lam T. KL is invariant under T, and as in `linear_gaussian` it regroups
    (u_j = log S_j + log K_jj, delta = posterior mean - q mean, in w) into three terms each >= 0:
      KL = 1/2 [sum_j (expm1(u_j) - u_j) + delta^T K delta + (sum_j log K_jj - log|K|)].
    """
    Z1, Z2 = A.shape
    post = _posterior(W, b, A, c, log_var1, s2, x)
    T = np.eye(Z1 + Z2, dtype=W.dtype)
    T[Z1:, :Z1] = B
    K = T.T @ _joint_precision(W, A, log_var1, s2) @ T
    LK = np.linalg.cholesky(K)
    diag_K = np.diag(K)
    mu1 = post.z1_mean
    delta = np.concatenate([mu1 - m1, mu1 @ (post.F - B).T + post.g - d], axis=1)    # (N, Z1 + Z2)
    u = np.concatenate([lv1, np.broadcast_to(lv2, (x.shape[0], Z2))], axis=1) + np.log(diag_K)
    dK = delta @ LK                                              # rows (L_K^T delta)^T
    correlation_term = -2 * np.sum(np.log(np.diag(LK) / np.sqrt(diag_K)))
    return W.dtype.type(0.5) * (np.sum(np.expm1(u) - u, axis=1) + np.sum(dK * dK, axis=1) + correlation_term)


def _best_q(W, b, A, c, log_var1, s2, x):
    """The KL-optimal q in the family: m1, exp(lv1) = 1 / diag(Lam1), B = F, d = g, exp(lv2) = 1 / diag(Q). No checking.

    Lam1 = L_P^-T M L_P^-1 / s2 is the precision of p(z1|x). By the chain rule,
      KL(q || p(.|x)) = KL(q(z1|x) || p(z1|x)) + E_q(z1|x) KL(q(z2|z1) || p(z2|z1)).
    The second term is 1/2 [tr(Q S2) - Z2 - log|Q| - sum lv2 + E delta^T Q delta], delta = (F - B) z1 + g - d:
    E delta^T Q delta >= 0 with equality iff B = F, d = g (z1 has full support), and the rest is least, at
    1/2 [sum_k log Q_kk - log|Q|], at S2_k = 1 / Q_kk, whatever q(z1|x) is. The first term is the one-layer
    problem (MATHS.md pPCA): least at m1 = posterior mean, S1_j = 1 / Lam1_jj, with value
    1/2 [sum_j log Lam1_jj - log|Lam1|].
    So this q is the global optimum, and it is the posterior exactly iff Lam1 and Q are diagonal.
    """
    LP, _, _, LM = _ppca_view(W, b, A, c, log_var1, s2)
    post = _posterior(W, b, A, c, log_var1, s2, x)
    X = solve_triangular(LP, LM, lower=True, trans="T")          # L_P^-T L_M, so Lam1 = X X^T / s2
    lv1 = np.log(s2) - np.log(np.sum(X * X, axis=1))
    lv2 = -np.log(1 + np.exp(-log_var1) @ (A * A))               # Q_kk = 1 + sum_i A_ik^2 / V1_i
    return TwoLayerQ(post.z1_mean, np.broadcast_to(lv1, post.z1_mean.shape).copy(), post.F, post.g, lv2)


def _log_joint(W, b, A, c, log_var1, s2, x, z1, z2):
    """log p(x|z1) + log p(z1|z2) + log p(z2), (..., N). No checking."""
    lv_x = np.broadcast_to(np.log(s2), b.shape)
    return (gaussian.log_prob(x, z1 @ W.T + b, lv_x) + gaussian.log_prob(z1, z2 @ A.T + c, log_var1)
            + gaussian.log_std_normal(z2))


def _sample(W, b, A, c, log_var1, s2, n, rng):
    """Draw z2 ~ N(0, I), z1 ~ N(A z2 + c, V1), x ~ N(W z1 + b, s2 I): x (n, D), z1 (n, Z1), z2 (n, Z2). No checking."""
    (D, Z1), Z2 = W.shape, A.shape[1]
    z2 = rng.standard_normal((n, Z2), dtype=W.dtype)
    z1 = z2 @ A.T + c + gaussian.std(log_var1) * rng.standard_normal((n, Z1), dtype=W.dtype)
    x = z1 @ W.T + b + np.sqrt(s2) * rng.standard_normal((n, D), dtype=W.dtype)
    return x, z1, z2


# ---- the public model: validates once, then calls the cores. ----

@dataclass(frozen=True, eq=False, repr=False)
class TwoLayerLinearGaussian:
    """p(z2) = N(0, I), p(z1|z2) = N(A z2 + c, diag(exp(log_var1))), p(x|z1) = N(W z1 + b, sigma2 I).

    Burda et al. 2016's two-layer architecture made linear (module docstring). Parameters are stored as
    read-only copies; sigma2 as a scalar of the model's dtype.
    """

    W: np.ndarray
    b: np.ndarray
    A: np.ndarray
    c: np.ndarray
    log_var1: np.ndarray
    sigma2: float

    def __post_init__(self):
        W = check.float_array("W", self.W, 2)
        A = check.float_array("A", self.A, 2)
        b, c, lv = (check.float_array(n, getattr(self, n), 1) for n in ("b", "c", "log_var1"))
        (D, Z1), Z2 = W.shape, A.shape[1]
        if D < 1 or Z1 < 1 or Z2 < 1:
            raise ValueError(f"W (D, Z1) and A (Z1, Z2) need D, Z1, Z2 >= 1, got W {W.shape}, A {A.shape}")
        for name, a, want in (("b", b, (D,)), ("A", A, (Z1, None)), ("c", c, (Z1,)), ("log_var1", lv, (Z1,))):
            check.shape(name, a, want)
        check.same_dtype(W.dtype, b=b, A=A, c=c, log_var1=lv)
        with np.errstate(over="ignore", under="ignore"):
            v1 = np.exp(lv)
        if not np.all(np.isfinite(v1) & (v1 > 0)):
            raise ValueError(f"exp(log_var1) over- or underflows in {W.dtype}: log_var1 ranges {lv.min()}..{lv.max()}")
        s2 = W.dtype.type(check.positive_scalar("sigma2", self.sigma2))
        if not (np.isfinite(s2) and s2 > 0):   # e.g. 1e-50 underflows to 0 in float32
            raise ValueError(f"sigma2={self.sigma2!r} is not a positive finite {W.dtype} number")
        for name, a in (("W", W), ("b", b), ("A", A), ("c", c), ("log_var1", lv)):
            a = a.copy()
            a.flags.writeable = False
            object.__setattr__(self, name, a)
        object.__setattr__(self, "sigma2", s2)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(D, Z1, Z2)."""
        return (*self.W.shape, self.A.shape[1])

    @property
    def dtype(self) -> np.dtype:
        return self.W.dtype

    def __repr__(self):
        D, Z1, Z2 = self.shape
        return f"TwoLayerLinearGaussian(D={D}, Z1={Z1}, Z2={Z2}, sigma2={float(self.sigma2)!r}, dtype={self.dtype})"

    @property
    def _params(self):
        return self.W, self.b, self.A, self.c, self.log_var1, self.sigma2

    def _check(self, lead=(None,), **arrays):
        """Check named inputs' rank, shape, finiteness and dtype; `lead` is (N,) for q, (..., N) for z1 and z2."""
        D, Z1, Z2 = self.shape
        want = {"x": (None, D), "m1": (*lead, Z1), "lv1": (*lead, Z1), "B": (Z2, Z1), "d": (Z2,), "lv2": (Z2,),
                "z1": (*lead, Z1), "z2": (*lead, Z2)}
        for name, a in arrays.items():
            check.float_array(name, a, len(want[name]))
            check.shape(name, a, want[name])
        check.same_dtype(self.dtype, **arrays)

    def _check_q(self, x, m1, lv1, B, d, lv2):
        self._check(x=x)
        self._check((x.shape[0],), m1=m1, lv1=lv1, B=B, d=d, lv2=lv2)

    def _check_z(self, z1, z2, N=None):
        """z1 (..., N, Z1) and z2 (..., N, Z2) with the same leading shape (...); returns N."""
        check.float_array("z1", z1)
        if z1.ndim < 2:
            raise ValueError(f"z1 must have shape (..., N, Z1), got {z1.shape}")
        N = z1.shape[-2] if N is None else N
        self._check((*z1.shape[:-2], N), z1=z1, z2=z2)
        return N

    def log_marginal(self, x: np.ndarray) -> np.ndarray:
        """log p(x) = log N(x; W c + b, W (A A^T + V1) W^T + sigma2 I), x (N, D) -> (N,) (Tipping & Bishop 1999)."""
        self._check(x=x)
        return _log_marginal(*self._params, x)

    def posterior(self, x: np.ndarray) -> Posterior:
        """Exact p(z1|x) (mean (N, Z1), cov (Z1, Z1)) and p(z2|z1, x) = p(z2|z1) = N(F z1 + g, z2_cov); x (N, D)."""
        self._check(x=x)
        return _posterior(*self._params, x)

    def elbo(self, x, m1, lv1, B, d, lv2) -> np.ndarray:
        """Closed-form ELBO (see `_elbo`); x (N, D), m1, lv1 (N, Z1), B (Z2, Z1), d, lv2 (Z2,) -> (N,)."""
        self._check_q(x, m1, lv1, B, d, lv2)
        return _elbo(*self._params, x, m1, lv1, B, d, lv2)

    def kl_to_posterior(self, x, m1, lv1, B, d, lv2) -> np.ndarray:
        """KL(q(z1, z2|x) || p(z1, z2|x)) = log p(x) - ELBO, computed directly; arguments as `elbo` -> (N,)."""
        self._check_q(x, m1, lv1, B, d, lv2)
        return _kl_to_posterior(*self._params, x, m1, lv1, B, d, lv2)

    def best_q(self, x: np.ndarray) -> TwoLayerQ:
        """The KL-optimal q of the family (see `_best_q`); exact iff p(z1|x) and p(z2|z1) have diagonal covariances."""
        self._check(x=x)
        return _best_q(*self._params, x)

    def log_joint(self, x, z1, z2) -> np.ndarray:
        """log p(x, z1, z2); x (N, D), z1 (..., N, Z1), z2 (..., N, Z2) -> (..., N)."""
        self._check(x=x)
        self._check_z(z1, z2, x.shape[0])
        return _log_joint(*self._params, x, z1, z2)

    def log_q(self, z1, z2, m1, lv1, B, d, lv2) -> np.ndarray:
        """log q(z1|x) + log q(z2|z1); z1 (..., N, Z1), z2 (..., N, Z2), q as `elbo` -> (..., N)."""
        self._check((self._check_z(z1, z2),), m1=m1, lv1=lv1, B=B, d=d, lv2=lv2)
        return gaussian.log_prob(z1, m1, lv1) + gaussian.log_prob(z2, z1 @ B.T + d, lv2)

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Ancestral draws -> x (n, D), z1 (n, Z1), z2 (n, Z2), in the model's dtype."""
        n = check.positive_int("n", n)
        return _sample(*self._params, n, check.generator("rng", rng))

    @classmethod
    def with_posterior_in_family(cls, rng: np.random.Generator, D: int, Z1: int, Z2: int, sigma2: float = 0.5,
                                 dtype=np.float64) -> "TwoLayerLinearGaussian":
        """A random model whose exact posterior is in the family, so ELBO(best_q) = log p(x) exactly.

        W = U diag(s) with orthonormal U (D, Z1), so W^T W is diagonal; A has at most one non-zero per row and
        per column (a scaled partial permutation), so A A^T and Q = I + A^T V1^-1 A are diagonal. Then P and
        Lam1 = P^-1 + W^T W / s2 are diagonal, and by `_best_q` both parts of the gap vanish. Needs Z1 <= D.
        """
        rng = check.generator("rng", rng)
        D, Z1, Z2 = (check.positive_int(n, v) for n, v in (("D", D), ("Z1", Z1), ("Z2", Z2)))
        if Z1 > D:
            raise ValueError(f"orthogonal columns need Z1 <= D, got Z1={Z1}, D={D}")
        U, _ = np.linalg.qr(rng.standard_normal((D, Z1)))
        W = U * rng.uniform(0.3, 3.0, Z1)
        A = np.zeros((Z1, Z2))
        k = min(Z1, Z2)
        A[rng.permutation(Z1)[:k], rng.permutation(Z2)[:k]] = rng.choice([-1, 1], k) * rng.uniform(0.3, 2.0, k)
        params = (W, rng.standard_normal(D), A, rng.standard_normal(Z1), rng.uniform(-1, 1, Z1))
        return cls(*(p.astype(dtype) for p in params), sigma2)
