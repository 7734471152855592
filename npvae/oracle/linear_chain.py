"""A chain of L linear-Gaussian stochastic layers: the exact oracle for an L-layer VAE, pPCA at L = 1.

    p(z_L) = N(0, I),  p(z_l | z_{l+1}) = N(A_l z_{l+1} + c_l, V_l),  p(x | z_1) = N(W z_1 + b, s2 I_D),

V_l = diag(exp(log_var_l)), l = 1..L-1: Burda et al. 2016 (section 5)'s L-layer architecture with every
network linear; at L = 1 it is pPCA (Tipping & Bishop 1999; docs/theory.md, section 4). The variational family is
the ladder of the VAE: q(z_1|x) = N(m1, diag(exp(lv1))), q(z_{l+1}|z_l) = N(B_l z_l + d_l, diag(exp(lv_l))).
Shapes: x (N, D), W (D, Z1), A_l (Z_l, Z_{l+1}), c_l and log_var_l (Z_l,); m1, lv1 (N, Z1); B_l (Z_{l+1}, Z_l),
d_l and lv_l (Z_{l+1},); z_l (..., N, Z_l). Python index i holds layer l = i + 1 (A[0] is A_1).

Every closed form is one Gaussian fact used twice (Woodbury and the determinant lemma):
  prior, top down   z_l ~ N(mu_l, P_l): P_L = I, mu_L = 0, P_l = A_l P_{l+1} A_l^T + V_l, mu_l = A_l mu_{l+1} + c_l.
  conditioning      z ~ N(mu, R R^T), y = A z + c + e, e ~ N(0, V): with T = V^-1/2 A R, N = I + T^T T = L_N L_N^T,
                    log|Cov y| = log|V| + 2 sum log diag L_N, r^T Cov(y)^-1 r = ||r~||^2 - ||L_N^-1 T^T r~||^2
                    (r~ = V^-1/2 r), and z | y ~ N(mu + G^T L_N^-1 T^T r~, G^T G), G = L_N^-1 R^T, with
                    precision R^-T N R^-1 = X X^T, X = R^-T L_N.
x is pPCA in u = R_1^-1 (z_1 - mu_1) (loadings W R_1, offset W mu_1 + b), which gives log p(x) and p(z_1|x).
The posterior is a chain too: given z_l, z_{l+1} is independent of x and of z_{<l}, so
p(z_{l+1}|z_l, x) = p(z_{l+1}|z_l) = N(F_l z_l + g_l, cov_l), the same conditioning of the prior of z_{l+1}.
Only Cholesky factors of Z-sized matrices are formed (never a D x D one) and nothing is inverted; a float32
model computes and returns float32 (constants are cast to its dtype).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy.linalg import solve_triangular

from npvae import _validate as check
from npvae.maths import gaussian

LOG_2PI = math.log(2.0 * math.pi)


class ChainQ(NamedTuple):
    """q(z_1|x) = N(m1, diag(exp(lv1))), m1, lv1 (N, Z1); q(z_{l+1}|z_l) = N(B[i] z_l + d[i], diag(exp(lv[i])))."""
    m1: np.ndarray
    lv1: np.ndarray
    B: tuple
    d: tuple
    lv: tuple


class ChainPosterior(NamedTuple):
    """p(z_1|x) = N(z1_mean (N, Z1), z1_cov (Z1, Z1)); p(z_{l+1}|z_l, x) = N(F[i] z_l + g[i], cov[i])."""
    z1_mean: np.ndarray
    z1_cov: np.ndarray
    F: tuple
    g: tuple
    cov: tuple


# ---- private cores: the maths, once. They do no checking; the public methods below check. ----

def _prior(A, c, log_var, ZL, dt):
    """Prior marginals top down: mu_l (Z_l,) and R_l = chol(P_l) (module docstring), l = 1..L. No checking."""
    mus, Rs = [np.zeros(ZL, dt)], [np.eye(ZL, dtype=dt)]
    for A_l, c_l, lv_l in zip(A[::-1], c[::-1], log_var[::-1]):
        AR = A_l @ Rs[0]
        Rs.insert(0, np.linalg.cholesky(AR @ AR.T + np.diag(np.exp(lv_l))))
        mus.insert(0, A_l @ mus[0] + c_l)
    return mus, Rs


def _condition(R, A, lv):
    """Conditioning z ~ N(mu, R R^T) on y = A z + c + N(0, diag(exp(lv))): isd = V^-1/2, T, L_N, G. No checking."""
    isd = gaussian.std(-lv)
    T = isd[:, None] * (A @ R)                                   # (Zy, Zz)
    LN = np.linalg.cholesky(np.eye(R.shape[1], dtype=R.dtype) + T.T @ T)
    return isd, T, LN, solve_triangular(LN, R.T, lower=True)


def _precision(R, LN):
    """Precision of the conditioned z, R^-T N R^-1 = X X^T with X = R^-T L_N. No checking."""
    X = solve_triangular(R, LN, lower=True, trans="T")
    return X @ X.T


def _x_step(W, b, s2, A, c, log_var, x):
    """Prior marginals, L_N and G of conditioning z_1 on x, r~ (N, D) and y = L_N^-1 T^T r~ (Z1, N). No checking."""
    mus, Rs = _prior(A, c, log_var, (A[-1].shape[1] if A else W.shape[1]), W.dtype)
    isd, T, LN, G = _condition(Rs[0], W, np.full(W.shape[0], np.log(s2), dtype=W.dtype))
    r = (x - b - W @ mus[0]) * isd                               # whitened residual, (N, D)
    return mus, Rs, LN, G, r, solve_triangular(LN, T.T @ r.T, lower=True)


def _log_marginal(W, b, s2, A, c, log_var, x):
    """log N(x; W mu_1 + b, W P_1 W^T + s2 I), (N,), by Woodbury + determinant lemma (module docstring). No checking."""
    D = W.shape[0]
    dt = W.dtype.type
    _, _, LN, _, r, y = _x_step(W, b, s2, A, c, log_var, x)
    log_det_C = D * np.log(s2) + 2 * np.sum(np.log(np.diag(LN)))
    return dt(-0.5) * (D * dt(LOG_2PI) + log_det_C + np.sum(r * r, axis=1) - np.sum(y * y, axis=0))


def _posterior(W, b, s2, A, c, log_var, x):
    """(ChainPosterior, precisions [Lam_1 of p(z_1|x), Q_l of p(z_{l+1}|z_l)...]). No checking.

    p(z_1|x) = N(mu_1 + G^T y, G^T G); the prior of z_{l+1}, N(mu_{l+1}, R R^T), conditioned on z_l gives
    F_l = G^T L_N^-1 T^T V_l^-1/2 (= P_{l+1} A_l^T P_l^-1), g_l = mu_{l+1} - F_l mu_l, cov_l = G^T G.
    """
    mus, Rs, LN, G, _, y = _x_step(W, b, s2, A, c, log_var, x)
    F, g, cov, prec = [], [], [], [_precision(Rs[0], LN)]
    for l, (A_l, lv_l) in enumerate(zip(A, log_var)):
        isd, T, LN_l, G_l = _condition(Rs[l + 1], A_l, lv_l)
        F.append(G_l.T @ solve_triangular(LN_l, T.T * isd, lower=True))
        g.append(mus[l + 1] - F[-1] @ mus[l])
        cov.append(G_l.T @ G_l)
        prec.append(_precision(Rs[l + 1], LN_l))
    return ChainPosterior(mus[0] + (G.T @ y).T, G.T @ G, tuple(F), tuple(g), tuple(cov)), prec


def _joint_posterior(post):
    """Mean (N, sum Z) and covariance of p(z_1..z_L|x) from the chain: z_{l+1} = F_l z_l + g_l + noise. No checking."""
    means, Zs = [post.z1_mean], [post.z1_mean.shape[1]] + [len(g) for g in post.g]
    off = np.concatenate([[0], np.cumsum(Zs)])
    S = np.zeros((off[-1], off[-1]), dtype=post.z1_cov.dtype)
    S[:Zs[0], :Zs[0]] = post.z1_cov
    for l, (F, g, C) in enumerate(zip(post.F, post.g, post.cov)):
        lo, mid, hi = off[l], off[l + 1], off[l + 2]
        means.append(means[-1] @ F.T + g)
        S[mid:hi, :mid] = F @ S[lo:mid, :mid]                    # Cov(z_{l+1}, z_j) = F_l Cov(z_l, z_j), j <= l
        S[:mid, mid:hi] = S[mid:hi, :mid].T
        S[mid:hi, mid:hi] = S[mid:hi, lo:mid] @ F.T + C
    return np.concatenate(means, axis=1), S


def _q_marginals(m1, lv1, B, d, lv):
    """q's marginals: z_l = mean_l + sum_{j<=l} K_lj e_j, e_j ~ N(0, diag(S_j)), S = exp(lv1, lv...). No checking.

    mean_{l+1} = mean_l B_l^T + d_l, K_{l+1,j} = B_l K_lj, K_ll = I: Cov_q(z_l) = sum_j K_lj diag(S_j) K_lj^T.
    """
    means, Ks = [m1], [[np.eye(m1.shape[1], dtype=m1.dtype)]]
    for B_l, d_l in zip(B, d):
        means.append(means[-1] @ B_l.T + d_l)
        Ks.append([B_l @ K for K in Ks[-1]] + [np.eye(B_l.shape[0], dtype=m1.dtype)])
    return means, Ks, [np.exp(lv1)] + [np.exp(v) for v in lv]


def _trace(M, Ks, S):
    """tr(M Cov M^T) for Cov = sum_j K_j diag(S_j) K_j^T (M None: identity): (N,) or a scalar; 0 if Ks is empty."""
    return sum(S_j @ np.sum((K if M is None else M @ K) ** 2, axis=0) for K, S_j in zip(Ks, S))


def _elbo(W, b, s2, A, c, log_var, x, m1, lv1, B, d, lv):
    """Closed-form ELBO E_q[log p(x, z) - log q(z|x)], (N,) (Kingma & Welling 2014, App. B, per layer). No checking.

    Each term is the expectation of a quadratic, E[u^T K u] = E[u]^T K E[u] + tr(K Cov u), under q's marginals:
      E log p(x|z_1)       = -D/2 log(2 pi s2) - 1/(2 s2) [||x - b - W m1||^2 + tr(W Cov_q(z_1) W^T)]
      E log p(z_l|z_{l+1}) + H q(z_l|z_{l-1}) = -1/2 [log|V_l| + ||e||^2 + tr(M Cov_q(z_l) M^T)
                             + sum_k S_{l+1,k} ||V_l^-1/2 A_l[:, k]||^2 - Z_l - sum lv_l],
                             e = V_l^-1/2 (mean_l - A_l mean_{l+1} - c_l), M = V_l^-1/2 (I - A_l B_l)
      E log p(z_L) + H q(z_L|z_{L-1}) = -1/2 [||mean_L||^2 + tr(Cov_q(z_L) - S_L) + sum_k (expm1(lv_Lk) - lv_Lk)].
    The log 2pi of each latent cancels against its entropy; S - 1 - log S is written expm1(lv) - lv.
    """
    dt = W.dtype.type
    means, Ks, S = _q_marginals(m1, lv1, B, d, lv)
    lvs = (lv1, *lv)
    r = x - b - m1 @ W.T                                         # (N, D)
    out = dt(-0.5) * (W.shape[0] * (dt(LOG_2PI) + np.log(s2)) + (np.sum(r * r, axis=1) + _trace(W, Ks[0], S)) / s2)
    for l, (A_l, c_l, lv_p) in enumerate(zip(A, c, log_var)):
        isd = gaussian.std(-lv_p)
        e = (means[l] - means[l + 1] @ A_l.T - c_l) * isd        # (N, Z_l)
        M = isd[:, None] * (np.eye(len(c_l), dtype=dt) - A_l @ B[l])
        var = _trace(M, Ks[l], S) + S[l + 1] @ np.sum((isd[:, None] * A_l) ** 2, axis=0)
        out = out - dt(0.5) * (np.sum(lv_p) + np.sum(e * e, axis=1) + var - len(c_l) - np.sum(lvs[l], axis=-1))
    top = np.sum(means[-1] ** 2, axis=1) + _trace(None, Ks[-1][:-1], S) + np.sum(np.expm1(lvs[-1]) - lvs[-1], axis=-1)
    return out - dt(0.5) * top


def _kl_terms(Lam, lv, delta, M=None, Ks=(), S=()):
    """E KL(N(mean_q, diag(exp(lv))) || N(mean_p, Lam^-1)) in three terms each >= 0 (the KL between two Gaussians, docs/theory.md section 4).

    With u_j = lv_j + log Lam_jj and mean_p - mean_q = delta + M z, z ~ N(0, sum_j K_j diag(S_j) K_j^T)
    (no M: delta alone), 1/2 [ sum_j (expm1(u_j) - u_j)           variances vs the best 1 / Lam_jj
                               + E (delta + M z)^T Lam (...)       mean mismatch
                               + sum_j log Lam_jj - log|Lam| ]     correlations a diagonal q cannot express.
    """
    L = np.linalg.cholesky(Lam)
    diag = np.diag(Lam)
    u = lv + np.log(diag)
    dL = delta @ L                                               # rows (L^T delta)^T
    mean_term = np.sum(dL * dL, axis=1) + (0 if M is None else _trace(L.T @ M, Ks, S))
    correlation_term = -2 * np.sum(np.log(np.diag(L) / np.sqrt(diag)))   # log of L_jj^2 / Lam_jj <= 1, each
    return Lam.dtype.type(0.5) * (np.sum(np.expm1(u) - u, axis=-1) + mean_term + correlation_term)


def _kl_to_posterior(W, b, s2, A, c, log_var, x, m1, lv1, B, d, lv):
    """KL(q(z|x) || p(z|x)), (N,), directly, by the chain rule of KL (both are chains in the order z_1, z_2, ...):

      KL = KL(q(z_1|x) || p(z_1|x)) + sum_l E_q(z_l) KL(q(z_{l+1}|z_l) || p(z_{l+1}|z_l)),
    the l-th with mean gap (F_l - B_l) z_l + g_l - d_l, z_l ~ q's marginal (`_q_marginals`). No checking.
    """
    post, prec = _posterior(W, b, s2, A, c, log_var, x)
    means, Ks, S = _q_marginals(m1, lv1, B, d, lv)
    kl = _kl_terms(prec[0], lv1, post.z1_mean - m1)
    for l, (F, g, B_l, d_l, lv_l) in enumerate(zip(post.F, post.g, B, d, lv)):
        kl = kl + _kl_terms(prec[l + 1], lv_l, means[l] @ (F - B_l).T + g - d_l, F - B_l, Ks[l], S)
    return kl


def _best_q(W, b, s2, A, c, log_var, x):
    """The KL-optimal q of the family: m1 = E[z_1|x], exp(lv1) = 1 / diag(Lam_1); B = F, d = g, exp(lv) = 1 / diag(Q).

    By the chain rule (`_kl_to_posterior`), KL = KL_1 + sum_l E_q(z_l) KL_l, and each KL_l is, from `_kl_terms`,
    1/2 [sum_k (expm1(u_k) - u_k) + E delta_l^T Q_l delta_l + (sum_k log Q_kk - log|Q_l|)], delta_l = (F_l - B_l) z_l
    + g_l - d_l. E delta^T Q delta >= 0 with equality iff B_l = F_l and d_l = g_l (z_l has full support under q),
    and expm1(u) - u >= 0 with equality iff S_k = 1 / Q_kk; the last term does not depend on q. So each KL_l is
    least at the same point whatever q(z_1..z_l) is, and the layers decouple. KL_1 is the one-layer problem
    (docs/theory.md, section 4): least at the posterior mean and S1_j = 1 / Lam_jj. Hence this q is the global optimum, its
    gap is the sum of the correlation terms, and it is exact iff Lam_1 and every Q_l are diagonal. No checking.
    """
    post, prec = _posterior(W, b, s2, A, c, log_var, x)
    lv1 = np.broadcast_to(-np.log(np.diag(prec[0])), post.z1_mean.shape).copy()
    return ChainQ(post.z1_mean, lv1, post.F, post.g, tuple(-np.log(np.diag(Q)) for Q in prec[1:]))


def _log_joint(W, b, s2, A, c, log_var, x, zs):
    """log p(x|z_1) + sum_l log p(z_l|z_{l+1}) + log p(z_L), (..., N). No checking."""
    out = gaussian.log_prob(x, zs[0] @ W.T + b, np.broadcast_to(np.log(s2), b.shape))
    for A_l, c_l, lv_l, z, z_up in zip(A, c, log_var, zs, zs[1:]):
        out = out + gaussian.log_prob(z, z_up @ A_l.T + c_l, lv_l)
    return out + gaussian.log_std_normal(zs[-1])


def _log_q(zs, m1, lv1, B, d, lv):
    """log q(z_1|x) + sum_l log q(z_{l+1}|z_l), (..., N). No checking."""
    out = gaussian.log_prob(zs[0], m1, lv1)
    for z, z_up, B_l, d_l, lv_l in zip(zs, zs[1:], B, d, lv):
        out = out + gaussian.log_prob(z_up, z @ B_l.T + d_l, lv_l)
    return out


def _sample(W, b, s2, A, c, log_var, n, rng):
    """Ancestral draws from the top, z_L ~ N(0, I) down to x: x (n, D), zs (z_1 (n, Z1), ..., z_L). No checking."""
    dt = W.dtype
    zs = [rng.standard_normal((n, A[-1].shape[1] if A else W.shape[1]), dtype=dt)]
    for A_l, c_l, lv_l in zip(A[::-1], c[::-1], log_var[::-1]):
        zs.insert(0, zs[0] @ A_l.T + c_l + gaussian.std(lv_l) * rng.standard_normal((n, len(c_l)), dtype=dt))
    x = zs[0] @ W.T + b + np.sqrt(s2) * rng.standard_normal((n, W.shape[0]), dtype=dt)
    return x, tuple(zs)


# ---- the public model: validates once, then calls the cores. ----

def _read_only(a):
    a = a.copy()
    a.flags.writeable = False
    return a


def _check(dtype, **arrays):
    """Check named arrays, each (array, expected shape with None for any size): float, finite, of `dtype`."""
    for name, (a, want) in arrays.items():
        check.float_array(name, a, len(want))
        check.shape(name, a, want)
    check.same_dtype(dtype, **{name: a for name, (a, _) in arrays.items()})


@dataclass(frozen=True, eq=False, repr=False)
class LinearChain:
    """p(z_L) = N(0, I), p(z_l|z_{l+1}) = N(A[i] z_{l+1} + c[i], diag(exp(log_var[i]))), p(x|z_1) = N(W z_1 + b, s2 I).

    A, c, log_var: tuples of length L - 1 (empty for pPCA). Stored as read-only copies; sigma2 as a scalar of
    the model's dtype.
    """

    W: np.ndarray
    b: np.ndarray
    sigma2: float
    A: tuple = ()
    c: tuple = ()
    log_var: tuple = ()

    def __post_init__(self):
        W, b = check.float_array("W", self.W, 2), check.float_array("b", self.b, 1)
        A, c, log_var = seqs = [getattr(self, name) for name in ("A", "c", "log_var")]
        if not all(isinstance(s, (tuple, list)) for s in seqs) or len({len(s) for s in seqs}) != 1:
            raise ValueError(f"A, c, log_var must be tuples of a length L - 1, got {[type(s).__name__ for s in seqs]}")
        Zs = [W.shape[1]] + [check.float_array(f"A[{i}]", a, 2).shape[1] for i, a in enumerate(A)]
        if min(W.shape[0], *Zs) < 1:
            raise ValueError(f"W and A must give sizes D, Z1, ..., ZL >= 1, got {(W.shape[0], *Zs)}")
        arrays = {"b": (b, (W.shape[0],))}
        for i, (Z, Z_up) in enumerate(zip(Zs, Zs[1:])):
            arrays.update({f"A[{i}]": (A[i], (Z, Z_up)), f"c[{i}]": (c[i], (Z,)), f"log_var[{i}]": (log_var[i], (Z,))})
        _check(W.dtype, **arrays)
        for i, lv in enumerate(log_var):
            with np.errstate(over="ignore", under="ignore"):
                v = np.exp(np.stack([lv, -lv]))           # the variance and the precision must both be finite, > 0
            if not np.all(np.isfinite(v) & (v > 0)):
                raise ValueError(f"exp(log_var[{i}]) over- or underflows in {lv.dtype}: ranges {lv.min()}..{lv.max()}")
        s2 = W.dtype.type(check.positive_scalar("sigma2", self.sigma2))
        if not (np.isfinite(s2) and s2 > 0):   # e.g. 1e-50 underflows to 0 in float32
            raise ValueError(f"sigma2={self.sigma2!r} is not a positive finite {W.dtype} number")
        for name, value in (("W", _read_only(W)), ("b", _read_only(b)), ("sigma2", s2), ("A", A), ("c", c),
                            ("log_var", log_var)):
            object.__setattr__(self, name, tuple(map(_read_only, value)) if isinstance(value, (tuple, list)) else value)

    @property
    def L(self) -> int:
        return len(self.A) + 1

    @property
    def shape(self) -> tuple:
        """(D, Z1, ..., ZL)."""
        return (*self.W.shape, *(A_i.shape[1] for A_i in self.A))

    @property
    def dtype(self) -> np.dtype:
        return self.W.dtype

    def __repr__(self):
        return (f"{type(self).__name__}(D={self.shape[0]}, Zs={self.shape[1:]}, sigma2={float(self.sigma2)!r}, "
                f"dtype={self.dtype})")

    @property
    def _params(self):
        return self.W, self.b, self.sigma2, self.A, self.c, self.log_var

    def _check_x(self, x):
        _check(self.dtype, x=(x, (None, self.shape[0])))
        return x

    def _check_q(self, q, N):
        """q a ChainQ for N points; returns it with tuple fields."""
        if not (isinstance(q, tuple) and len(q) == 5):
            raise ValueError(f"q must be a ChainQ(m1, lv1, B, d, lv), got {type(q).__name__}")
        m1, lv1, *layers = q
        for name, seq in zip(("B", "d", "lv"), layers):
            if not (isinstance(seq, (tuple, list)) and len(seq) == self.L - 1):
                raise ValueError(f"q.{name} must be a tuple of L - 1 = {self.L - 1} arrays, got {seq!r:.60}")
        Zs = self.shape[1:]
        arrays = {"m1": (m1, (N, Zs[0])), "lv1": (lv1, (N, Zs[0]))}
        for i, (B_i, d_i, lv_i) in enumerate(zip(*layers)):
            arrays.update({f"B[{i}]": (B_i, (Zs[i + 1], Zs[i])), f"d[{i}]": (d_i, (Zs[i + 1],)),
                           f"lv[{i}]": (lv_i, (Zs[i + 1],))})
        _check(self.dtype, **arrays)
        return ChainQ(m1, lv1, *(tuple(seq) for seq in layers))

    def _check_zs(self, zs, N=None):
        """zs: L arrays (..., N, Z_l) with one leading shape (...); N from zs[0] unless given. Returns zs as a tuple."""
        if not (isinstance(zs, (tuple, list)) and len(zs) == self.L):
            raise ValueError(f"zs must be a sequence of L = {self.L} arrays (..., N, Z_l), got {type(zs).__name__}")
        check.float_array("zs[0]", zs[0])
        if zs[0].ndim < 2:
            raise ValueError(f"zs[0] must have shape (..., N, Z1), got {zs[0].shape}")
        lead = (*zs[0].shape[:-2], zs[0].shape[-2] if N is None else N)
        _check(self.dtype, **{f"zs[{i}]": (z, (*lead, Z)) for i, (z, Z) in enumerate(zip(zs, self.shape[1:]))})
        return tuple(zs)

    def log_marginal(self, x: np.ndarray) -> np.ndarray:
        """log p(x) = log N(x; W mu_1 + b, W P_1 W^T + sigma2 I), x (N, D) -> (N,) (Tipping & Bishop 1999)."""
        return _log_marginal(*self._params, self._check_x(x))

    def posterior(self, x: np.ndarray) -> ChainPosterior:
        """The exact posterior chain p(z_1|x), p(z_{l+1}|z_l); x (N, D) (see `_posterior`)."""
        return _posterior(*self._params, self._check_x(x))[0]

    def joint_posterior(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """p(z_1, ..., z_L|x) as one Gaussian: x (N, D) -> mean (N, sum Z), cov (sum Z, sum Z)."""
        return _joint_posterior(_posterior(*self._params, self._check_x(x))[0])

    def elbo(self, x: np.ndarray, q: ChainQ) -> np.ndarray:
        """Closed-form ELBO of q (see `_elbo`); x (N, D) -> (N,)."""
        return _elbo(*self._params, x, *self._check_q(q, self._check_x(x).shape[0]))

    def kl_to_posterior(self, x: np.ndarray, q: ChainQ) -> np.ndarray:
        """KL(q(z|x) || p(z|x)) = log p(x) - ELBO, computed directly (see `_kl_to_posterior`); x (N, D) -> (N,)."""
        return _kl_to_posterior(*self._params, x, *self._check_q(q, self._check_x(x).shape[0]))

    def best_q(self, x: np.ndarray) -> ChainQ:
        """The KL-optimal q of the family (see `_best_q`); exact iff every posterior precision is diagonal."""
        return _best_q(*self._params, self._check_x(x))

    def log_joint(self, x: np.ndarray, zs) -> np.ndarray:
        """log p(x, z_1, ..., z_L); x (N, D), zs[l] (..., N, Z_l) -> (..., N)."""
        return _log_joint(*self._params, x, self._check_zs(zs, self._check_x(x).shape[0]))

    def log_q(self, zs, q: ChainQ) -> np.ndarray:
        """log q(z_1|x) + sum_l log q(z_{l+1}|z_l); zs[l] (..., N, Z_l) -> (..., N)."""
        zs = self._check_zs(zs)
        return _log_q(zs, *self._check_q(q, zs[0].shape[-2]))

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, tuple]:
        """Ancestral draws -> x (n, D), zs (z_1 (n, Z1), ..., z_L (n, ZL)), in the model's dtype."""
        return _sample(*self._params, check.positive_int("n", n), check.generator("rng", rng))

    @staticmethod
    def _sizes(rng, D, Zs):
        rng = check.generator("rng", rng)
        if not (isinstance(Zs, (tuple, list)) and len(Zs) >= 1):
            raise ValueError(f"Zs must be a sequence (Z1, ..., ZL) of at least one size, got {Zs!r}")
        return rng, check.positive_int("D", D), [check.positive_int(f"Zs[{i}]", Z) for i, Z in enumerate(Zs)]

    @classmethod
    def random(cls, rng: np.random.Generator, D: int, Zs, sigma2: float = 0.5, dtype=np.float64) -> "LinearChain":
        """A general model, standard-normal W, b, A, c and log_var ~ U(-1, 1) (its posterior is not in the family)."""
        rng, D, Zs = cls._sizes(rng, D, Zs)
        W, b = rng.standard_normal((D, Zs[0])), rng.standard_normal(D)
        layers = [(rng.standard_normal((Z, Z_up)), rng.standard_normal(Z), rng.uniform(-1, 1, Z))
                  for Z, Z_up in zip(Zs, Zs[1:])]
        return cls._build(W, b, sigma2, layers, dtype)

    @classmethod
    def with_posterior_in_family(cls, rng: np.random.Generator, D: int, Zs, sigma2: float = 0.5,
                                 dtype=np.float64) -> "LinearChain":
        """A random model whose exact posterior is in the family, so ELBO(best_q) = log p(x) exactly. Needs Z1 <= D.

        W = U diag(s) with orthonormal U (D, Z1), so W^T W is diagonal; each A_l has at most one non-zero per row
        and per column (a scaled partial permutation), so every P_l = A_l P_{l+1} A_l^T + V_l is diagonal, and so
        are Lam_1 = P_1^-1 + W^T W / sigma2 and Q_l = P_{l+1}^-1 + A_l^T V_l^-1 A_l: by `_best_q` the gap vanishes.
        """
        rng, D, Zs = cls._sizes(rng, D, Zs)
        if Zs[0] > D:
            raise ValueError(f"orthogonal columns need Z1 <= D, got Z1={Zs[0]}, D={D}")
        U, _ = np.linalg.qr(rng.standard_normal((D, Zs[0])))
        W, b, layers = U * rng.uniform(0.3, 3.0, Zs[0]), rng.standard_normal(D), []
        for Z, Z_up in zip(Zs, Zs[1:]):
            A, k = np.zeros((Z, Z_up)), min(Z, Z_up)
            A[rng.permutation(Z)[:k], rng.permutation(Z_up)[:k]] = rng.choice([-1, 1], k) * rng.uniform(0.3, 2.0, k)
            layers.append((A, rng.standard_normal(Z), rng.uniform(-1, 1, Z)))
        return cls._build(W, b, sigma2, layers, dtype)

    @classmethod
    def _build(cls, W, b, sigma2, layers, dtype):
        A, c, log_var = (tuple(p[k].astype(dtype) for p in layers) for k in range(3))
        return cls(W.astype(dtype), b.astype(dtype), sigma2, A, c, log_var)


class LinearGaussian(LinearChain):
    """pPCA, the chain at L = 1: LinearGaussian(W, b, sigma2), W (D, Z) with Z <= D (Tipping & Bishop 1999).

    Keeps the one-layer API: q is (q_mean, q_log_var), both (N, Z); posterior is (mean, cov); sample is (x, z).
    """

    def __post_init__(self):
        super().__post_init__()
        if self.L != 1:
            raise ValueError(f"LinearGaussian is the one-layer chain and takes no A, c, log_var; got L = {self.L}")
        if self.W.shape[1] > self.W.shape[0]:
            raise ValueError(f"W must have shape (D, Z) with 1 <= Z <= D, got {self.W.shape}")

    @property
    def D(self) -> int:
        return self.W.shape[0]

    @property
    def Z(self) -> int:
        return self.W.shape[1]

    def __repr__(self):
        return f"LinearGaussian(D={self.D}, Z={self.Z}, sigma2={float(self.sigma2)!r}, dtype={self.dtype})"

    def _q1(self, x, q_mean, q_log_var):
        N = self._check_x(x).shape[0]
        _check(self.dtype, q_mean=(q_mean, (N, self.Z)), q_log_var=(q_log_var, (N, self.Z)))
        return q_mean, q_log_var, (), (), ()

    def posterior(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """p(z|x) = N(M^-1 W^T (x - b), sigma2 M^-1), M = W^T W + sigma2 I: x (N, D) -> mean (N, Z), cov (Z, Z)."""
        return tuple(super().posterior(x)[:2])

    def elbo(self, x: np.ndarray, q_mean: np.ndarray, q_log_var: np.ndarray) -> np.ndarray:
        """Closed-form ELBO of q = N(q_mean, diag(exp(q_log_var))); x (N, D), q_* (N, Z) -> (N,) (docs/theory.md, section 4)."""
        return _elbo(*self._params, x, *self._q1(x, q_mean, q_log_var))

    def kl_to_posterior(self, x: np.ndarray, q_mean: np.ndarray, q_log_var: np.ndarray) -> np.ndarray:
        """KL(q || p(z|x)) = log p(x) - ELBO, computed directly; x (N, D), q_* (N, Z) -> (N,)."""
        return _kl_to_posterior(*self._params, x, *self._q1(x, q_mean, q_log_var))

    def best_diagonal_q(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """ELBO-optimal diagonal q: posterior mean, var_j = sigma2 / M_jj; x (N, D) -> (N, Z), (N, Z) (docs/theory.md, section 4)."""
        return tuple(self.best_q(x)[:2])

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Ancestral draws z ~ N(0, I), x ~ N(W z + b, sigma2 I) -> x (n, D), z (n, Z), in the model's dtype."""
        x, (z,) = super().sample(n, rng)
        return x, z


def ppca_fit(X: np.ndarray, Z: int) -> tuple[LinearGaussian, float]:
    """Closed-form pPCA maximum likelihood, X (N, D) -> (model, max log-lik summed over rows) (Tipping & Bishop 1999).

    S = 1/N sum (x - xbar)(x - xbar)^T with eigenvalues l_1 >= ... >= l_D and vectors U:
    b = xbar, s2 = mean(l_{Z+1..D}), W = U_Z (L_Z - s2 I)^{1/2} (rotation R = I), and
    max log-lik = -N/2 [D log 2pi + sum_{j<=Z} log l_j + (D - Z) log s2 + D] (docs/theory.md, section 4).
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
    evals, evecs = np.linalg.eigh((Xc.T @ Xc) / X.dtype.type(N))   # 1/N, the ML covariance (not 1/(N-1))
    evals, evecs = evals[::-1], evecs[:, ::-1]                  # descending
    s2 = np.mean(evals[Z:])
    # Discarded eigenvalues at rounding level mean the data lie in a Z-dim subspace: the ML sigma2 is 0
    # and the likelihood unbounded, so there is no model to return.
    if not s2 > np.finfo(X.dtype).eps * max(evals[0], np.finfo(X.dtype).tiny):
        raise ValueError(f"degenerate data: the {D - Z} discarded eigenvalues of the covariance average to "
                         f"{float(s2)!r}, so the ML sigma2 is not > 0; use a smaller Z or non-degenerate X")
    W = evecs[:, :Z] * np.sqrt(evals[:Z] - s2)                  # (D, Z), column j scaled by sqrt(l_j - s2)
    log_l = [math.log(float(v)) for v in evals[:Z]]
    max_loglik = -0.5 * N * (D * LOG_2PI + math.fsum(log_l) + (D - Z) * math.log(float(s2)) + D)
    return LinearGaussian(np.ascontiguousarray(W), b, s2), max_loglik


LinearGaussian.ppca_fit = staticmethod(ppca_fit)
