"""The maths of the compiled backends, written once: plain Python over scalars and array elements, `math.*` only.

Each function is the formula of the NumPy specification it names (npvae.maths.stable, npvae.nn.layers,
npvae.maths.gaussian, npvae.maths.lme, npvae.maths.estimators, npvae.nn.optim) for ONE element, or for one data point's
column of an array, in the float type of its arguments (`like` makes every constant float32 for
float32 input). Nothing here imports numba: npvae.backends.compiled builds the numba CPU versions
and npvae.backends.cuda_kernels the CUDA device versions of these same code objects, so the CPU
kernels and the CUDA grids are only loops around them. The three elementary functions and `like`
are the per-target pieces (ELEMENTARY): npvae.backends.cpu_math and cuda_kernels register their
implementations. NaN in, NaN out: no branch here turns a NaN into a number.
Layouts: row r = k N + n of the 2-D arrays z, eps, dz, out (K N, .); weights (K, N); mu, log_var, sd (N, Z).
"""

from __future__ import annotations

import math

from .codes import ANALYTIC, DREG, IWAE, REPARAM

LOG_2PI = math.log(2.0 * math.pi)  # a global, so like(x, LOG_2PI) is a constant in x's type, not float64 maths in the kernel
ELEMENTARY = ("like", "exp_neg", "expm1_neg", "log1p_unit")  # registered per target, not compiled from here


def like(x, v):
    """The number v in x's float type (the compiled versions fold to a constant)."""
    return type(x)(v)


def exp_neg(u):
    """e^u for u <= 0 (or NaN)."""
    return math.exp(u)


def expm1_neg(u):
    """e^u - 1 for u <= 0 (or NaN), accurate as u -> 0."""
    return math.expm1(u)


def log1p_unit(e):
    """log(1 + e) for e in [0, 1] (or NaN), accurate as e -> 0."""
    return math.log1p(e)


# ---- npvae.maths.stable and npvae.nn.layers, one element ----

def softplus_sigmoid(l):
    """(softplus(l), sigmoid(l)) from one exp(-|l|): max(l, 0) + log1p(e) and the branch-stable 1/(1+e^-l) (npvae.maths.stable)."""
    one = like(l, 1.0)
    e = exp_neg(-abs(l))
    sp = (l if l > like(l, 0.0) else like(l, 0.0)) + log1p_unit(e)
    return sp, (one / (one + e) if l >= like(l, 0.0) else e / (one + e))


def softplus(l):
    """log(1 + e^l) = max(l, 0) + log1p(exp(-|l|)): no overflow at any |l|."""
    return (l if l > like(l, 0.0) else like(l, 0.0)) + log1p_unit(exp_neg(-abs(l)))


def sigmoid(l):
    """1 / (1 + e^-l), both branches exp of a non-positive number."""
    one = like(l, 1.0)
    e = exp_neg(-abs(l))
    return one / (one + e) if l >= like(l, 0.0) else e / (one + e)


def tanh(a):
    """tanh(a) = sign(a) (1 - e^-2|a|) / (1 + e^-2|a|), written with expm1 so small |a| keeps its precision."""
    t = expm1_neg(like(a, -2.0) * abs(a))
    th = -t / (like(a, 2.0) + t)
    return th if a >= like(a, 0.0) else -th


# Activations f (npvae.nn.layers) and their backward dy f'(a) from the forward's cache: relu and tanh
# keep y (y > 0 iff a > 0; tanh' = 1 - y^2), softplus keeps a.
def relu(a):
    return like(a, 0.0) if a <= like(a, 0.0) else a  # a NaN stays NaN, as np.maximum


def relu_grad(dy, y):
    return dy * (like(dy, 1.0) if y > like(dy, 0.0) else like(dy, 0.0))  # a product, so a NaN dy stays NaN


def tanh_grad(dy, y):
    return dy * (like(dy, 1.0) - y * y)


def softplus_grad(dy, a):
    return dy * sigmoid(a)


def nan_max(a, b):
    """max(a, b) that returns NaN if either is NaN (np.maximum's rule)."""
    return a if (a > b or a != a) else b


# ---- npvae.maths.gaussian: the reparameterised sample and the analytic KL ----

def std(log_var):
    """exp(log_var / 2): a log VARIANCE becomes a standard deviation here and nowhere else in the kernels."""
    return math.exp(like(log_var, 0.5) * log_var)


def sample_row(mu, log_var, sd, eps, z, r, n, want_lp):
    """z[r] = mu[n] + sd[n] eps[r] (sample k of point n, r = k N + n); returns log N(z; 0, I) - log q(z|x), written in eps.

    The log-ratio is gaussian.log_std_normal(z) - gaussian.log_prob_eps(log_var, eps), in their order of operations
    (0 unless want_lp).
    """
    half, log2pi = like(sd[0, 0], 0.5), like(sd[0, 0], LOG_2PI)
    sp = like(half, 0.0)
    sq = like(half, 0.0)
    for j in range(mu.shape[1]):
        zj = mu[n, j] + sd[n, j] * eps[r, j]
        z[r, j] = zj
        if want_lp:
            sp += log2pi + zj * zj
            sq += log2pi + log_var[n, j] + eps[r, j] * eps[r, j]
    return -half * sp - -half * sq


def kl_std_normal_dim(mu, log_var):
    """KL(N(mu, e^v) || N(0, 1)) = 1/2 [mu^2 + expm1(v) - v] for one latent dimension (Kingma & Welling 2014, App. B)."""
    return like(mu, 0.5) * (mu * mu + math.expm1(log_var) - log_var)


def kl_free_bits_point(mu, log_var, n, free_bits, above):
    """sum_j max(lambda, KL_j) for point n, and above[n, j] = KL_j > lambda (estimators.free_bits_kl); lambda = -inf: the KL."""
    s = like(free_bits, 0.0)
    for j in range(mu.shape[1]):
        kj = kl_std_normal_dim(mu[n, j], log_var[n, j])
        a = kj > free_bits
        above[n, j] = a
        s += kj if a else free_bits
    return s


# ---- npvae.maths.lme and npvae.maths.estimators' bounds: one data point's column of (K, N) log-weights ----

def column_max(a, n):
    """max_k a[k, n], NaN if any is NaN."""
    m = a[0, n]
    for k in range(1, a.shape[0]):
        m = nan_max(a[k, n], m)
    return m


def log_mean_exp_point(a, n, log_k):
    """log (1/K) sum_k exp(a[k, n]) (lme.log_mean_exp_core): shifted by the max, or by 0 where it is not finite, so all -inf gives -inf."""
    m = column_max(a, n)
    m_safe = m if (m > -math.inf and m < math.inf) else like(m, 0.0)
    s = like(m, 0.0)
    for k in range(a.shape[0]):
        s += math.exp(a[k, n] - m_safe)
    return math.log(s) + m_safe - log_k if s > like(m, 0.0) or s != s else like(m, -math.inf)


def bound_point(logw, n, mode, inv_k, n_t, log_k, w, wn):
    """The bound of point n from its log-weights logw[:, n], and w = d bound / d logw, wn = w / N (estimators.BOUNDS).

    ANALYTIC and ELBO_MC: mean_k (the analytic KL is subtracted by the caller), w = inv_k = 1/K;
    IWAE: LME_k, w = softmax_k (Burda et al. 2016, eq. 8 and its gradient).
    """
    K = logw.shape[0]
    if mode != IWAE:
        s = like(n_t, 0.0)
        for k in range(K):
            s += logw[k, n]
            w[k, n] = inv_k
            wn[k, n] = inv_k / n_t
        return s / like(n_t, K)
    m = column_max(logw, n)
    s = like(n_t, 0.0)
    for k in range(K):
        e = math.exp(logw[k, n] - m)
        w[k, n] = e
        s += e
    for k in range(K):
        w[k, n] = w[k, n] / s
        wn[k, n] = w[k, n] / n_t
    if not (m > -math.inf and m < math.inf):  # all -inf (or NaN): the LME shifts by 0, so -inf stays -inf
        return log_mean_exp_point(logw, n, log_k)
    return math.log(s) + m - log_k


def scale_rows(out, wn, n):
    """out[k N + n] *= wn[k, n] for every sample k of point n: d log p / d out -> d (batch mean) / d out."""
    K, N = wn.shape
    for k in range(K):
        c = wn[k, n]
        for d in range(out.shape[1]):
            out[k * N + n, d] = c * out[k * N + n, d]


def lme_update_point(a, n, m, s):
    """Streaming logsumexp over chunk a[:, n]: m[n] <- max(m[n], max_k a), s[n] <- s[n] e^(m_old - m) + sum_k e^(a - m).

    As importance.log_px, except that a point whose log-weights are all -inf so far keeps s = 0 (NumPy's
    e^(-inf - -inf) would make it NaN); NaN in a gives NaN.
    """
    m_new = nan_max(m[n], column_max(a, n))
    if m_new == -math.inf:
        return
    t = like(m_new, 0.0)
    for k in range(a.shape[0]):
        t += math.exp(a[k, n] - m_new)
    s[n] = s[n] * math.exp(m[n] - m_new) + t
    m[n] = m_new


def lme_finish(m, s, log_k):
    """log(s) + m - log k from a streaming (m, s); -inf where every a was -inf."""
    return math.log(s) + m - log_k if s > like(log_k, 0.0) or s != s else like(log_k, -math.inf)


# ---- npvae.maths.estimators: the latent backward of one (point, dimension) ----

def latent_point(dz, z, eps, sd, mu, log_var, w, wn, above, beta, n_t, mode, estimator, n, j):
    """(dmu, dlog_var)[n, j] from dz = d(batch mean)/dz through the decoder (rows k N + n), with each estimator's prior/q terms.

    estimators.py, line for line: + beta wn d log p(z)/dz = -beta wn z (MC bounds); the path term of -beta log q,
    + beta wn eps / sd (STL, DReG); the squared weights, dz *= w (DReG); gaussian.sample_backward; the
    reparameterised +beta/(2N) on dlog_var; and for the analytic KL, the free-bits-masked KL backward.
    """
    K, N = w.shape
    half = like(beta, 0.5)
    s = sd[n, j]
    acc_mu = like(beta, 0.0)
    acc_lv = like(beta, 0.0)
    for k in range(K):
        r = k * N + n
        g = dz[r, j]
        if mode != ANALYTIC:
            bw = beta * wn[k, n]
            g = g - bw * z[r, j]
            if estimator != REPARAM:
                g = g - bw * (-eps[r, j] / s)
                if estimator == DREG:
                    g = g * w[k, n]
        acc_mu += g
        acc_lv += g * s * eps[r, j]
    dmu = acc_mu
    dlv = half * acc_lv
    if mode == ANALYTIC:
        c = -beta / n_t if above[n, j] else like(beta, 0.0)
        dmu = dmu + c * mu[n, j]
        dlv = dlv + c * half * math.expm1(log_var[n, j])
    elif estimator == REPARAM:
        dlv = dlv + beta * half / n_t
    return dmu, dlv


# ---- npvae.nn.optim: one Adam element ----

def adam_elem(p, g, m, v, sign, b1, c1, b2, c2, step_size, sqrt_bc2, eps):
    """(p, m, v) after one step with gradient sign g, in optim.adam_update's order of operations (c1 = 1 - b1, c2 = 1 - b2,
    step_size = lr / bc1): m = b1 m + c1 g; v = b2 v + c2 g^2; p -= step_size m / (sqrt(v) / sqrt(bc2) + eps)."""
    gi = sign * g
    mi = b1 * m + c1 * gi
    vi = b2 * v + c2 * (gi * gi)
    return p - step_size * mi / (math.sqrt(vi) / sqrt_bc2 + eps), mi, vi
