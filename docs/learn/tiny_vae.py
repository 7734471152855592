"""A whole variational autoencoder in one NumPy file: forward and backward by hand, Adam, and a training loop.

The on-ramp to npvae, in the spirit of Karpathy's micrograd: the package's one-layer VAE (Kingma & Welling 2014)
with one hidden layer each way, written to be read top to bottom. Each section implements one equation, and each
backward sits right under the forward it differentiates. tests/test_tiny_vae.py checks this file against npvae to
rounding error (the bound, every gradient, Adam's steps, a whole epoch of `npvae train`), so it cannot drift from
the real code. The equations are derived in docs/theory.md, sections 1 to 3.

The model, for binary x in {0, 1}^D and a latent z in R^Z:
    encoder   q(z|x) = N(mu, diag(exp(log_var))),          [mu, log_var] = tanh(x W1 + b1) W2 + b2
    prior     p(z)   = N(0, I)
    decoder   p(x|z) = prod_d Bernoulli(x_d | sigmoid(l_d)),  l = tanh(z V1 + c1) V2 + c2   (logits)
    ELBO(x)   = E_q(z|x)[log p(x|z)] - KL(q(z|x) || p(z))  <=  log p(x)             (Kingma & Welling 2014, eq. 3)
(x and z are rows, as in the code.) The ELBO is maximised; the optimiser descends on loss = -ELBO.
`log_var` is a log VARIANCE, here as in npvae.

Run it: python docs/learn/tiny_vae.py  (NumPy only: the digits are read from scikit-learn's copy without importing it).
Shapes: N points in a batch, D = 64 pixels, H = 128 hidden units, Z = 2 latent dimensions.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np


# ---- 0. The data: sklearn's 8x8 digits, binarised and split as npvae does (npvae.store.data) -----------------------

def digits_file() -> Path:
    """scikit-learn's copy of the UCI digits, digits.csv.gz, found without importing scikit-learn (and scipy)."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the digits ship with scikit-learn: install it, or pass data=(x_train, x_test) to main")
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "digits.csv.gz"


def load_digits(path=None) -> np.ndarray:
    """x_nd = [pixel_nd / 16 >= 0.5]: the 1797 digits as (1797, 64) float64 zeros and ones."""
    data = np.loadtxt(path or digits_file(), delimiter=",")  # (1797, 65): 64 grey levels in 0..16, then the label
    return (data[:, :-1] / 16.0 >= 0.5).astype(np.float64)


def split(x, rng: np.random.Generator):
    """npvae's digits split by rng.permutation: the first 1297 points train; after 250 for validation, 250 test."""
    perm = rng.permutation(len(x))
    return x[perm[:1297]], x[perm[1547:]]


# ---- 1. Two stable primitives: nothing overflows, nothing is clipped -------------------------------------------

def softplus(l):
    """softplus(l) = log(1 + e^l) = max(l, 0) + log1p(e^-|l|): exact for large |l|, where log(1 + e^l) overflows."""
    return np.maximum(l, 0.0) + np.log1p(np.exp(-np.abs(l)))


def sigmoid(l):
    """sigmoid(l) = 1 / (1 + e^-l), through e = e^-|l| <= 1, so neither branch overflows."""
    e = np.exp(-np.abs(l))
    return np.where(l >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


# ---- 2. The parameters: eight arrays, in npvae's order (npvae.vae.model.flatten) ---------------------------------

class Params(NamedTuple):
    """The model's arrays; gradients come in the same container."""

    enc_W1: np.ndarray  # (D, H)   h = tanh(x W1 + b1)
    enc_b1: np.ndarray  # (H,)
    enc_W2: np.ndarray  # (H, 2Z)  [mu, log_var] = h W2 + b2
    enc_b2: np.ndarray  # (2Z,)
    dec_W1: np.ndarray  # (Z, H)   g = tanh(z V1 + c1)
    dec_b1: np.ndarray  # (H,)
    dec_W2: np.ndarray  # (H, D)   l = g V2 + c2
    dec_b2: np.ndarray  # (D,)


def init_params(rng: np.random.Generator, D: int, H: int, Z: int, x_mean=None) -> Params:
    """W ~ U(-a, a), a = sqrt(6 / (n_in + n_out)) (Glorot & Bengio 2010), biases 0; c2 = logit(x_mean) if given.

    Starting the output bias at the logit of the mean pixel makes p(x|z) begin at the data's marginals
    (Burda et al. 2016, their code); their clip to [1e-3, 1 - 1e-3] is part of that rule, not a guard on log(0).
    """
    def glorot(n_in, n_out):
        a = np.sqrt(6.0 / (n_in + n_out))
        return rng.uniform(-a, a, size=(n_in, n_out))

    W1, W2, V1, V2 = glorot(D, H), glorot(H, 2 * Z), glorot(Z, H), glorot(H, D)  # npvae's order of draws
    c2 = np.zeros(D)
    if x_mean is not None:
        p = np.clip(x_mean, 1e-3, 1.0 - 1e-3)
        c2 = np.log(p) - np.log1p(-p)  # logit(p) = log p - log(1 - p)
    return Params(W1, np.zeros(H), W2, np.zeros(2 * Z), V1, np.zeros(H), V2, c2)


# ---- 3. The encoder x -> (mu, log_var) ---------------------------------------------------------------------------

def encoder_forward(p: Params, x):
    """h = tanh(x W1 + b1), [mu, log_var] = h W2 + b2: x (N, D) -> mu, log_var (N, Z), cache."""
    h = np.tanh(x @ p.enc_W1 + p.enc_b1)  # (N, H)
    out = h @ p.enc_W2 + p.enc_b2  # (N, 2Z)
    Z = out.shape[1] // 2
    return out[:, :Z], out[:, Z:], (x, h)


def encoder_backward(p: Params, dmu, dlog_var, cache):
    """(dmu, dlog_var) (N, Z) -> (dW1, db1, dW2, db2); x is data and gets no gradient."""
    x, h = cache
    dout = np.concatenate([dmu, dlog_var], axis=1)  # (N, 2Z)
    dW2, db2 = h.T @ dout, dout.sum(axis=0)  # out = h W2 + b2: dW2 = h^T dout, db2 = sum_n dout
    da = (dout @ p.enc_W2.T) * (1.0 - h * h)  # dh = dout W2^T; tanh'(a) = 1 - tanh(a)^2 = 1 - h^2
    dW1, db1 = x.T @ da, da.sum(axis=0)  # a = x W1 + b1
    return dW1, db1, dW2, db2


# ---- 4. The reparameterised sample z = mu + exp(log_var / 2) eps ------------------------------------------------

def sample_forward(mu, log_var, eps):
    """z = mu + sigma eps, sigma = exp(log_var / 2), eps ~ N(0, I) passed in (Kingma & Welling 2014, eq. 10): (N, Z)."""
    sd = np.exp(0.5 * log_var)
    return mu + sd * eps, (sd, eps)


def sample_backward(dz, cache):
    """dz/dmu = 1, dz/dlog_var = sigma eps / 2: dz (N, Z) -> (dmu, dlog_var)."""
    sd, eps = cache
    return dz, 0.5 * (dz * sd * eps)


# ---- 5. The decoder z -> logits l ----------------------------------------------------------------------------------

def decoder_forward(p: Params, z):
    """g = tanh(z V1 + c1), l = g V2 + c2: z (N, Z) -> logits (N, D), cache."""
    g = np.tanh(z @ p.dec_W1 + p.dec_b1)  # (N, H)
    return g @ p.dec_W2 + p.dec_b2, (z, g)


def decoder_backward(p: Params, dl, cache):
    """dl (N, D) -> ((dV1, dc1, dV2, dc2), dz (N, Z))."""
    z, g = cache
    dV2, dc2 = g.T @ dl, dl.sum(axis=0)  # l = g V2 + c2
    da = (dl @ p.dec_W2.T) * (1.0 - g * g)  # dg = dl V2^T; tanh' = 1 - g^2
    dV1, dc1 = z.T @ da, da.sum(axis=0)  # a = z V1 + c1
    return (dV1, dc1, dV2, dc2), da @ p.dec_W1.T  # dz = da V1^T: z is not data, it carries the gradient on


# ---- 6. The Bernoulli log-likelihood, on logits --------------------------------------------------------------------

def bernoulli_forward(l, x):
    """log p(x|z) = sum_d [x_d l_d - softplus(l_d)] = sum_d log(sigmoid(l_d)^x_d (1 - sigmoid(l_d))^(1 - x_d)): (N,)."""
    return (x * l - softplus(l)).sum(axis=1)


def bernoulli_backward(dlogp, l, x):
    """d log p / d l_d = x_d - sigmoid(l_d), exactly: dlogp (N,) -> dl (N, D)."""
    return dlogp[:, None] * (x - sigmoid(l))


# ---- 7. The KL divergence to the prior, in closed form -----------------------------------------------------------

def kl_forward(mu, log_var):
    """KL(N(mu, e^v) || N(0, I)) = 1/2 sum_j [mu_j^2 + (e^v_j - 1) - v_j] (Kingma & Welling 2014, App. B): (N,).

    expm1(v) = e^v - 1 without the cancellation that loses every digit as v -> 0, where an unused dimension sits.
    """
    return 0.5 * (mu * mu + np.expm1(log_var) - log_var).sum(axis=1)


def kl_backward(dkl, mu, log_var):
    """dKL/dmu = mu, dKL/dv = (e^v - 1) / 2: dkl (N,) -> (dmu, dlog_var) (N, Z)."""
    d = dkl[:, None]
    return d * mu, d * 0.5 * np.expm1(log_var)


# ---- 8. The ELBO and its gradient: forward down the page, then backward up it ---------------------------------

def elbo_and_grad(p: Params, x, eps):
    """ELBO_n = log p(x_n|z_n) - KL_n with z_n = mu_n + sigma_n eps_n: (N,), and the gradient of (1/N) sum_n ELBO_n.

    x: (N, D) binary, eps: (N, Z) standard normal (one sample per point). The gradient comes as Params.
    """
    N = x.shape[0]
    mu, log_var, enc_cache = encoder_forward(p, x)  # 3.
    z, sample_cache = sample_forward(mu, log_var, eps)  # 4.
    l, dec_cache = decoder_forward(p, z)  # 5.
    elbo = bernoulli_forward(l, x) - kl_forward(mu, log_var)  # 6. and 7.
    w = np.full(N, 1.0 / N)  # d(batch mean) / d ELBO_n
    dl = bernoulli_backward(w, l, x)  # 6.
    dec_grads, dz = decoder_backward(p, dl, dec_cache)  # 5.
    dmu, dlog_var = sample_backward(dz, sample_cache)  # 4.: the reconstruction term's path to (mu, log_var)
    kmu, klv = kl_backward(w, mu, log_var)  # 7.: the KL's own, direct path to (mu, log_var)
    enc_grads = encoder_backward(p, dmu - kmu, dlog_var - klv, enc_cache)  # 3.: minus, as the ELBO subtracts the KL
    return elbo, Params(*enc_grads, *dec_grads)


# ---- 9. Adam (Kingma & Ba 2015), in torch's arrangement, as npvae.nn.optim ----------------------------------------

def adam_init(params):
    """Step 0, first and second moments m = v = 0."""
    return 0, [np.zeros_like(a) for a in params], [np.zeros_like(a) for a in params]


def adam_step(params, grads, state, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8):
    """One step DOWN grads: m = b1 m + (1-b1) g, v = b2 v + (1-b2) g^2, p -= lr/(1-b1^t) m / (sqrt(v/(1-b2^t)) + eps).

    The bias corrections 1 - b^t undo the moments' start at 0; sqrt(v/(1-b2^t)) is written sqrt(v)/sqrt(1-b2^t).
    """
    t, m, v = state
    t += 1
    m = [b1 * mi + (1.0 - b1) * g for mi, g in zip(m, grads)]
    v = [b2 * vi + (1.0 - b2) * (g * g) for vi, g in zip(v, grads)]
    bc1, bc2 = 1.0 - b1**t, 1.0 - b2**t
    new = [a - lr / bc1 * mi / (np.sqrt(vi) / np.sqrt(bc2) + eps) for a, mi, vi in zip(params, m, v)]
    return type(params)(*new), (t, m, v)


# ---- 10. Training: shuffle, batch, step; report the ELBO -----------------------------------------------------

def train_epoch(p: Params, adam, x, shuffle_rng: np.random.Generator, eps_rng: np.random.Generator, batch_size, lr):
    """One pass over x (N, D) in shuffle_rng's order, Adam on loss = -ELBO per batch; returns p, adam, mean batch ELBO."""
    N, Z = x.shape[0], p.enc_b2.shape[0] // 2
    order = shuffle_rng.permutation(N)
    batch_elbos = []
    for lo in range(0, N, batch_size):
        xb = x[order[lo:lo + batch_size]]  # (n, D), n = batch_size but the last
        eps = eps_rng.standard_normal((xb.shape[0], Z))  # the noise is an input: passed in, never drawn inside
        elbo, grads = elbo_and_grad(p, xb, eps)
        p, adam = adam_step(p, [-g for g in grads], adam, lr)  # the loss's gradient is minus the ELBO's
        batch_elbos.append(elbo.mean())
    return p, adam, float(np.mean(batch_elbos))


def main(epochs=100, seed=0, batch_size=100, lr=1e-3, hidden=128, latent=2, data=None, log=print):
    """Train on the digits (data: (x_train, x_test) binary, or None for npvae's split by seed); returns p, history.

    history["train_elbo"][e]: the mean batch ELBO of epoch e + 1; history["test_elbo"][e]: the test ELBO after e epochs
    (e = 0: at initialisation), each time with the same noise, so the changes are the model's and not the noise's.
    """
    x_train, x_test = split(load_digits(), np.random.default_rng(seed)) if data is None else data
    x_train, x_test = np.asarray(x_train, dtype=np.float64), np.asarray(x_test, dtype=np.float64)
    for name, x in (("x_train", x_train), ("x_test", x_test)):
        if x.ndim != 2 or not np.all((x == 0) | (x == 1)):
            raise ValueError(f"{name} must be an (N, D) array of zeros and ones, got shape {np.shape(x)}")
    # The first three are npvae's streams "init", "shuffle", "eps" (npvae.training.config): this is `npvae train`'s run.
    init_rng, shuffle_rng, eps_rng, test_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4))
    p = init_params(init_rng, x_train.shape[1], hidden, latent, x_mean=x_train.mean(axis=0))
    adam = adam_init(p)
    eps_test = test_rng.standard_normal((x_test.shape[0], latent))
    history = {"train_elbo": [], "test_elbo": [float(elbo_and_grad(p, x_test, eps_test)[0].mean())]}
    say = log or (lambda s: None)
    say(f"tiny VAE {x_train.shape[1]}-{hidden}-{latent} (tanh) on {len(x_train)} binary digits, batch {batch_size}, "
        f"Adam lr {lr:g}, seed {seed}\nepoch {0:4d}                     test ELBO {history['test_elbo'][0]:8.3f}")
    t0 = time.perf_counter()
    for epoch in range(1, epochs + 1):
        p, adam, train_elbo = train_epoch(p, adam, x_train, shuffle_rng, eps_rng, batch_size, lr)
        history["train_elbo"].append(train_elbo)
        history["test_elbo"].append(float(elbo_and_grad(p, x_test, eps_test)[0].mean()))  # the forward; gradient unused
        if epoch % max(1, epochs // 10) == 0 or epoch == epochs:
            say(f"epoch {epoch:4d}  loss {-train_elbo:8.3f} nats  test ELBO {history['test_elbo'][-1]:8.3f}")
    say(f"final test ELBO {history['test_elbo'][-1]:.3f} nats per digit ({len(x_test)} test digits, "
        f"{epochs} epochs in {time.perf_counter() - t0:.1f} s); log p(x) is at least this, on average")
    return p, history


if __name__ == "__main__":
    main()
