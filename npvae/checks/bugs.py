"""The bugs of `npvae check --break NAME`: eight classic VAE mistakes, each with the lesson it teaches.

Each bug is written here as people write it, beside the name of the function it replaces (npvae.maths.gaussian,
npvae.maths.estimators, npvae.likelihoods): a wrong forward with the backward its author derives from it (so a finite
difference of that forward agrees with it), a forward edited without its backward, or a backward-only bug. BUGS holds
each one's record: what it replaces, which checks catch it, and in words what people write, why it is wrong, what sees
it and what cannot. Planting one is npvae.checks.planting; the exercise, npvae.checks.breaks.
This file is longer than most because the eight bugs and the lessons they teach belong side by side.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from ..maths.lme import log_mean_exp_core, softmax_core
from ..maths.stable import sigmoid, softplus

CHECKS = ("layer", "gradient", "bound", "value")  # the row kinds of npvae.checks.check, in printing order


# ---- the bugs, each with the line it gets wrong ----

def kl_per_dim_no_half(mu, log_var):
    """kl-no-half: mu^2 + expm1(log_var) - log_var per dimension; Kingma & Welling 2014, App. B has 1/2 in front."""
    return mu * mu + np.expm1(log_var) - log_var


def kl_backward_no_half(dkl, mu, log_var):
    """kl-no-half's backward, derived from its forward: dkl * (2 mu, expm1(log_var))."""
    d = dkl[:, None] if dkl.ndim == 1 else dkl
    return d * mu.dtype.type(2) * mu, d * np.expm1(log_var)


def sample_forward_var(mu, log_var, eps):
    """logvar-as-logstd, variance-for-std: z = mu + exp(log_var) eps, the variance where the s.d. exp(log_var / 2) goes."""
    sd = np.exp(log_var)
    return mu + sd * eps, (sd, eps)


def sample_backward_var(dz, cache):
    """logvar-as-logstd's backward, derived for its forward: dz/dmu = 1, dz/dlog_var = exp(log_var) eps (no 1/2)."""
    sd, eps = cache
    return dz.sum(axis=0), (dz * sd * eps).sum(axis=0)


def sample_backward_stopped(dz, cache):
    """stop-gradient: the sample is a constant (rng.normal(mu, sd), torch.normal, .sample()): nothing flows back into q."""
    return np.zeros_like(dz[0]), np.zeros_like(dz[0])


def bernoulli_forward_mean(lik, logits, x):
    """bce-mean: mean_d [x l - softplus(l)], the mean over the D pixels where log p(x|z) sums them."""
    return (x * logits - softplus(logits)).mean(axis=-1), (logits, x)


def bernoulli_backward_mean(dlogp, cache):
    """bce-mean's backward, derived from its forward: (x - sigmoid(l)) / D."""
    logits, x = cache
    return dlogp[..., None] * (x - sigmoid(logits)) / x.dtype.type(x.shape[-1])


def gaussian_forward_mean(lik, mean, x):
    """mse-mean: the fixed-variance Gaussian log-density's mean over the D pixels, -1/2 mean_d [log 2 pi s2 + r^2 / s2]."""
    t = x.dtype.type
    r = x - mean
    logp = t(-0.5) * (r * r).mean(axis=-1) / t(lik.sigma2) - t(0.5 * np.log(2.0 * np.pi * lik.sigma2))
    return logp, (r, t(lik.sigma2), t(x.shape[-1]))


def gaussian_backward_mean(dlogp, cache):
    """mse-mean's backward, derived from its forward: (x - m) / (s2 D)."""
    r, sigma2, D = cache
    return dlogp[..., None] * r / (sigma2 * D)


def iwae_unnormalised(a):
    """iwae-unnormalised: the right bound LME_k a_k, but gradient weights exp(a_k - max a), never divided by their sum."""
    return log_mean_exp_core(a, axis=0), np.exp(a - a.max(axis=0, keepdims=True))


def iwae_no_log_k(a):
    """iwae-no-log-k: logsumexp_k a_k for the bound, without - log K; its weights softmax_k a_k are its right gradient."""
    m = a.max(axis=0)
    return m + np.log(np.exp(a - m).sum(axis=0)), softmax_core(a, axis=0)


# ---- the registry ----

class Bug(NamedTuple):
    """One plantable bug: what it replaces, which checks catch it, and the lesson in words."""

    name: str
    summary: str  # one line, for --break list
    replaces: Callable  # () -> {original function: broken function}
    caught_by: tuple  # the checks (CHECKS) that have FAIL rows with it; () when no current check sees it
    wrote: str  # what people write
    wrong: str  # why it is wrong
    seen: str  # which checks catch it, and why they can see it
    unseen: str  # which checks cannot, and why
    reports: tuple  # public reports of the bug: "owner/repo#n: what it shows, URL"


def _gaussian():
    from ..maths import gaussian

    return gaussian


def _likelihood(name):
    from ..likelihoods import REGISTRY

    return REGISTRY[name]


def _iwae():
    from ..maths.estimators import iwae

    return iwae


def _gh(ref: str, what: str, kind: str = "issues") -> str:
    """"owner/repo#n: what, URL" (kind "pull" for a pull request)."""
    repo, n = ref.split("#")
    return f"{ref}: {what}, https://github.com/{repo}/{kind}/{n}"


_SAMPLE_SEEN = ("value and bound: every row that compares with an independent oracle at a known q: the ELBO against "
                "LinearGaussian.elbo, the log-weights against scipy.stats.norm at z = mu + exp(log_var / 2) eps written out in "
                "the check, the IWAE and log p(x) values, every log-weight == log p(x) at q = p(z|x), the ladder's log-weights "
                "against the chain oracle, E w / p(x) = 1; and at q = p(z|x) the STL and DReG encoder gradients are no longer 0, "
                "because the sample no longer comes from p(z|x).")

BUGS = {b.name: b for b in (
    Bug("kl-no-half", "the analytic KL without its 1/2 (forward and matching backward): twice the KL",
        lambda: {_gaussian().kl_std_normal_per_dim: kl_per_dim_no_half, _gaussian().kl_std_normal_backward: kl_backward_no_half},
        ("value",),
        "KLD = -torch.sum(1 + logvar - mu.pow(2) - logvar.exp()), the -0.5 of Kingma & Welling's Appendix B left out; here "
        "npvae.maths.gaussian.kl_std_normal_per_dim without its 0.5, and a backward derived from that line, (2 mu, "
        "expm1(log_var)), so the two agree.",
        "KL(N(mu, s^2) || N(0, 1)) = 1/2 [mu^2 + s^2 - 1 - log s^2]. Without the 1/2 the objective is E log p(x|z) - 2 KL: "
        "a beta-VAE with beta = 2 nobody asked for. It trains and its samples look plausible, so nothing looks wrong, but "
        "the ELBO it reports is too low by exactly one KL and is not the bound it claims to be.",
        "value: the KL row compares kl_std_normal_forward with 1/2 [tr S + m'm - Z - log det S] written with full matrices "
        "and slogdet (relative error exactly 1: twice the value), and the two kl=analytic ELBO rows compare with the "
        "linear-Gaussian oracle's closed form. A value compared with an independent formula shows any wrong constant.",
        "gradient: the finite differences differentiate the same broken forward, and the backward was derived from it, so "
        "they agree to 1e-9. A gradient check proves that a backward matches its forward, never that the forward is the "
        "right function. bound, and the kl=mc value rows: they use the Monte Carlo KL, log p(z) - log q(z|x) at the "
        "samples, which never calls the closed form.",
        (_gh("KarenUllrich/Tutorial_BayesianCompressionForDL#8", "a KL missing a factor 0.5 in one layer type, confirmed by the authors"),
         _gh("FluxML/model-zoo#73", "the model zoo's VAE KL written wrong (log(sigma)^2 for 2 log sigma), and its sign in #147"))),
    Bug("logvar-as-logstd", "the sample reads log_var as a log-s.d. (z = mu + exp(log_var) eps, with its backward), the KL as a log-variance",
        lambda: {_gaussian().sample_forward: sample_forward_var, _gaussian().sample_backward: sample_backward_var},
        ("gradient", "bound", "value"),
        "z = mu + exp(log_var) * eps, with the backward written for that line (dz/dlog_var = exp(log_var) eps), while the KL "
        "and log q(z|x) keep reading log_var as a log-variance: the sampler and the densities disagree about what the "
        "encoder's second output is. numpy-ml's BernoulliVAE has exactly this: samples = noise * np.exp(t_log_var) + "
        "t_mean, and in its backward noise * np.exp(t_log_var), under a docstring that says N(t_mean, diag(exp(t_log_var))).",
        "The samples come from N(mu, exp(log_var)^2) but the KL (or log q) is that of N(mu, exp(log_var)): the objective is "
        "not the ELBO of any one q, so it is not a bound on log p(x), and the error grows as log_var leaves 0. Training "
        "still runs and the samples look reasonable, which is why it survives in published code.",
        _SAMPLE_SEEN + " gradient: the rows with a Monte Carlo KL (kl=mc, and the ladder's layers below the top). npvae's "
        "gradient oracle (npvae.checks.gradcheck) writes log q(z|x) in z, not in eps: its (z - mu) / exp(log_var / 2) sees "
        "the wider sample, while the objective's log q written in eps cannot. So the check differentiates another, "
        "independent forward: that is what lets a gradient check see a bug whose forward and backward agree.",
        "gradient, on every one-layer kl=analytic row (numpy-ml's setting): the sample's forward and backward agree and the "
        "closed-form KL never sees the sample, so finite differences of the broken objective match its gradient. A "
        "textbook gradient check, finite differences of the code's own loss (log q written in eps), agrees with every "
        "reparam gradient, MC KL and ladder included, to 1e-7. The KL value row passes too: the KL is right for a "
        "log-variance.",
        ("ddbourgin/numpy-ml: BernoulliVAE._sample and backward, "
         "https://github.com/ddbourgin/numpy-ml/blob/master/numpy_ml/neural_nets/models/vae.py",
         _gh("keras-team/keras#3283", "z_mean + K.exp(z_log_std) * epsilon: change it 'or the kl term will need modification'"),
         _gh("ctallec/world-models#13", "z = epsilon * exp(log_sigma) + mu where the original code has exp(log_sigma / 2)"))),
    Bug("variance-for-std", "the variance for the s.d. in the sample's forward only (sd = exp(log_var)); its backward still has the 1/2",
        lambda: {_gaussian().sample_forward: sample_forward_var},
        ("gradient", "bound", "value"),
        "std = torch.exp(logvar) for torch.exp(0.5 * logvar) in the sampling line, the rest left as it was: here one edited "
        "line of npvae.maths.gaussian.sample_forward, whose backward reads sd from the forward's cache and still applies "
        "dz/dlog_var = sd eps / 2, the derivative for sd = exp(log_var / 2). In rachtsingh/ibp_vae#3 the sample is "
        "mu + noise * logvar.exp().",
        "As in logvar-as-logstd the sample has variance exp(2 log_var), not exp(log_var); and the backward is no longer "
        "the derivative of the forward: d exp(log_var) / dlog_var is exp(log_var), twice what it applies.",
        "gradient, on every objective, kl=analytic included: the finite difference of the forward sees dz/dlog_var = "
        "sd eps, the backward gives half of it, on every encoder parameter that reaches log_var. " + _SAMPLE_SEEN,
        "layer only (it checks activations). Compare logvar-as-logstd: the forward is the same line and only the backward "
        "differs. A forward edited without its backward is the easy kind, any gradient check finds it; the hard kind is "
        "the bug whose author also derived the matching backward.",
        (_gh("rachtsingh/ibp_vae#3", "mu + noise * logvar.exp(): 'logvar.exp() is variance'; fixed, the reporter's test IWAE moved"),
         _gh("rishikksh20/vae_tacotron2#3", "'tf.exp(log_var) is variance not std'"))),
    Bug("bce-mean", "the Bernoulli reconstruction term averaged over the D pixels while the KL is summed (F.binary_cross_entropy's default)",
        lambda: {_likelihood("bernoulli").forward: bernoulli_forward_mean, _likelihood("bernoulli").backward: bernoulli_backward_mean},
        ("value",),
        "recon = F.binary_cross_entropy(x_hat, x) (reduction='mean'; size_average=True in old PyTorch) plus a KL summed "
        "over the latent dimensions; here npvae.likelihoods.bernoulli's forward with mean for sum over the pixels, and the "
        "backward divided by D to match.",
        "Given z the pixels are independent, so log p(x|z) is a sum over them; the mean divides it by D (784 for MNIST). "
        "The objective becomes (1/D) log p(x|z) - KL, 1/D times a beta-VAE with beta = D: the KL wins, the posterior "
        "collapses towards the prior, reconstructions blur, and the reported 'ELBO' is not a bound on log p(x).",
        "value: the log-weights of a Bernoulli VAE with D = 6 pixels against scipy.stats.bernoulli.logpmf summed over the "
        "pixels (and scipy's normal densities for p(z) and q(z|x)). The Bernoulli VAE above shows the numbers move: its "
        "ELBO changes and its decoder gradient is exactly D times smaller.",
        "gradient: forward and backward agree, so every gradient is the exact gradient of the objective as written. "
        "value: the Bernoulli log-probability rows check one pixel at a time (D = 1), where a mean over pixels is the sum; "
        "the exact-model rows (value and bound) use the Gaussian likelihood, which this bug does not touch. Until npvae "
        "check had the D = 6 row, nothing caught this bug: a check sees only what its case exercises. Compare mse-mean, "
        "the same mistake in the Gaussian, caught because the Gaussian rows have D = 3.",
        (_gh("pytorch/examples#817", "'F.binary_cross_entropy takes the average ... shouldn't the correct loss for the VAE be the sum'"),
         _gh("y0ast/VAE-Torch#11", "with sizeAverage = true 'the KLD term will overwhelm the objective ... the reconstruction will be bad'"))),
    Bug("mse-mean", "the Gaussian reconstruction term averaged over the D pixels while the KL is summed (F.mse_loss's default)",
        lambda: {_likelihood("gaussian").forward: gaussian_forward_mean, _likelihood("gaussian").backward: gaussian_backward_mean},
        ("bound", "value"),
        "recon = F.mse_loss(x_hat, x) (reduction='mean') plus a KL summed over the latent dimensions; here the "
        "fixed-variance Gaussian of npvae.likelihoods.gaussian averaged over the pixels, and its backward divided by D.",
        "As bce-mean: log p(x|z) sums over the pixels, and the mean divides it by D, a beta-VAE with beta = D in disguise.",
        "value: the Gaussian log-density rows (D = 3: relative error exactly 1 - 1/D = 0.67), the ELBO against the oracle, "
        "the log-weights against scipy, IWAE, and log p(x) of the 784-dimensional model; bound: at q = p(z|x) the "
        "log-weights are no longer log p(x) for every eps, E w / p(x) = 1 fails, and the STL and DReG encoder gradients "
        "are no longer 0.",
        "gradient: forward and backward agree. bound's ELBO < E IWAE_10 < E IWAE_100 < log p(x) rows pass although npvae's "
        "IWAE is now far above log p(x): the last gap is measured as E[(r - 1) - log r], which is >= 0 for any r, and it "
        "leans on the row before it, E w / p(x) = 1, which is the one that fails.",
        (_gh("orybkin/sigma-vae-tensorflow#2", "the MSE averaged: 'This is wrong ... always use reduce_sum for both MSE and KLD'"),
         _gh("zdebruine/MMVAE#19", "F.mse_loss's mean against a summed KL: the KL drops to 0 within a few epochs", "pull"))),
    Bug("iwae-unnormalised", "IWAE's gradient weights w_k = exp(a_k - max a) not divided by their sum (the bound itself is right)",
        lambda: {_iwae(): iwae_unnormalised},
        ("gradient",),
        "w = np.exp(a - a.max(0)) as the importance weights of the IWAE gradient, sum_k w_k grad a_k, and the line "
        "w /= w.sum(0) forgotten: the max is subtracted for stability and then mistaken for the normalisation.",
        "The gradient of LME_k a_k is sum_k softmax(a)_k grad a_k (Burda et al. 2016, eq. 14): weights that sum to 1. "
        "Unnormalised, the gradient is scaled by sum_k w_k, between 1 and K, differently for every point: a random, "
        "per-point learning rate on a gradient that is no longer the bound's.",
        "gradient, on every IWAE row (reparam and DReG, one layer and the ladder): the value is right, so the finite "
        "difference of the bound is right, and the backward disagrees with it. This is the bug a gradient check is for.",
        "bound and value: they compare values (IWAE, log-weights, log p(x)) that are computed correctly. The DReG encoder "
        "gradient at q = p(z|x) is still 0: there d a_k / dz_k = 0 for every sample, whatever weight multiplies it.",
        (_gh("AntixK/PyTorch-VAE#34", "another mistake in the same weights: not detached, so the gradient gains a term (PR #53)"),
         _gh("xqding/Importance_Weighted_Autoencoders#2", "why the max is subtracted before exp when the weights are computed"))),
    Bug("iwae-no-log-k", "the IWAE bound as logsumexp_k a_k, without - log K",
        lambda: {_iwae(): iwae_no_log_k},
        ("bound", "value"),
        "iwae = torch.logsumexp(log_w, dim=0), log (sum_k w_k) for log (1/K sum_k w_k); its gradient, softmax(log_w), is "
        "right for the line as written.",
        "Without - log K the value is IWAE_K + log K: log K too high (8.5 nats at K = 5000), above log p(x) once IWAE_K "
        "is tight, and growing with K instead of converging. The gradient is unchanged (log K is a constant), so "
        "training is right and every reported number is wrong.",
        "bound: at q = p(z|x) the IWAE is log p(x) exactly, for any eps, and now it is log p(x) + log K; value: the IWAE "
        "rows against scipy's logsumexp minus log K.",
        "gradient: a constant moves no gradient. The E IWAE ordering rows and log_px pass: they build their estimates "
        "from the log-weights with their own log-mean-exp, not with the bound's function.",
        (_gh("YosefLab/scVI-dev#8", "an IWAE loss posted as logsumexp(vae_losses, dim=1), with no - log k"),)),
    Bug("stop-gradient", "no gradient through the sample z into the encoder's mean and log-variance (the sample treated as a constant)",
        lambda: {_gaussian().sample_backward: sample_backward_stopped},
        ("gradient", "bound"),
        "z = rng.normal(mu, sd) (or torch.normal(mu, std), dist.sample() for dist.rsample(), z.detach()): the forward is "
        "right, but nothing is pulled back through z; in hand-written backprop, the sample's backward returning zeros.",
        "The reparameterisation gradient is the whole point of z = mu + sd eps (Kingma & Welling 2014, section 2.4): "
        "without it the encoder is trained by the KL alone (analytic KL: q is pulled to the prior and ignores x) or by "
        "q's entropy alone (MC KL: its variance grows without bound), while the decoder trains and the loss goes down.",
        "gradient: every encoder parameter of every objective (the decoder rows pass: their gradients never go through "
        "the sample's backward). bound: at q = p(z|x) the STL and DReG encoder gradients are 0 only because the path "
        "through z cancels log q's path term; with the path through z stopped, what is left is not 0.",
        "value and the other bound rows: values are forward passes, and the forward is right. A backward-only bug is "
        "invisible to every value check, however exact.",
        (_gh("pytorch/pytorch#4620", "torch.normal accepts tensors that need gradients but propagates none"),
         _gh("pytorch/pytorch#7705", "rsample().detach() and sample() give different gradients"))),
)}
NAMES = tuple(BUGS)


def get(name: str) -> Bug:
    """The bug called `name`; a one-line ValueError listing the names otherwise."""
    if name not in BUGS:
        raise ValueError(f"unknown bug {name!r} for --break; the names: {', '.join(NAMES)}, or 'list'")
    return BUGS[name]
