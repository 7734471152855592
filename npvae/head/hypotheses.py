"""What a mismatch is: the classic mistakes, each a modified bound or gradient that the user's numbers are tried against.

A hint is given only when the user's numbers equal one of these to the dtype's tolerance, under one of the named
reductions: it comes from the structure of the mismatch, never from a guess. Each is a bug users of public VAE
code report (pytorch/examples, PyTorch-VAE, Pyro, Keras, HIPS autograd); tests/test_head.py and tests/test_head_models.py plant them.
"""

from __future__ import annotations

import numpy as np

from .likelihood import HeadLikelihood, LOG2PI
from .reference import kl_per_dim, reference
from .scales import SCALES, log_var_of


def value_hypotheses(case, ref):
    """(hint, b') pairs: the per-point values a classic mistake gives instead of the bound b = ref.values."""
    R, KL, beta = ref.recon, ref.kl, case.kl_weight
    N, D = case.x.shape
    K, Z = case.z.shape[0], case.mu.shape[1]
    out = []
    if case.bound == "elbo":
        kl_forms = [(2.0, "your KL is 2x ours: a missing 0.5?"), (0.5, "your KL is half ours: 0.5 applied twice?"),
                    (-1.0, "your KL has the wrong sign: the loss adds -KL where it should add +KL"),
                    (0.0, "your value has no KL term"), (1.0 / Z, "your KL is averaged over the Z latent dimensions, not summed")]
        if beta > 0.0 and beta != 1.0:
            kl_forms.append((1.0 / beta, f"your KL is not weighted by kl_weight = {beta:g}"))
        out += [(h, R - c * beta * KL) for c, h in kl_forms]
        out += [("your reconstruction term is averaged over the D pixels while the KL is summed (multiply it by D)", R / D - beta * KL),
                ("your reconstruction is averaged over the batch and the D pixels (torch's default reduction='mean') while the KL "
                 "is summed over the batch", R / (N * D) - beta * KL)]
        if K > 1:
            out.append(("your reconstruction is summed over the K samples, not averaged", K * R - beta * KL))
        for kind in SCALES:
            if kind != case.scale_kind and _valid(kind, case.s):
                alt = reference(case, scale_kind=kind)
                out.append((f"your KL matches ours with the scale output read as a {kind} (declared: {case.scale_kind})", alt.values))
        if case.kl == "analytic":
            mc = reference(_with(case, kl="mc", bound="elbo"))
            out.append(("your value uses a Monte Carlo KL (log q - log p at z): declare kl='mc'", mc.values))
        else:
            v = log_var_of(case.scale_kind, case.s)
            out.append(("your value uses the analytic KL: declare kl='analytic'", R - beta * kl_per_dim(case.mu, v).sum(-1)))
    else:
        out.append(("your IWAE is not normalised: logsumexp_k a_k without - log K", ref.values + np.log(K)))
        out.append(("your IWAE is the mean of the log-weights: that is the ELBO, not log mean exp", reference(_with(case, bound="elbo")).values))
        for kind in SCALES:
            if kind != case.scale_kind and _valid(kind, case.s):
                out.append((f"your log q(z|x) reads the scale output as a {kind} (declared: {case.scale_kind})",
                            reference(case, scale_kind=kind).values))
    out += _recon_forms(case, ref)
    return out


def _recon_forms(case, ref):
    """(hint, b'): the values of classic likelihood mistakes (each bound recomputed with the mistaken likelihood)."""
    lik, x = case.lik, case.x
    D = x.shape[1]
    forms = []
    if lik.name == "bernoulli" and lik.out_kind == "logits":
        forms.append(("your reconstruction applies the sigmoid twice (sigmoid outputs passed to a loss on logits)",
                      reference(_with(case, out=1.0 / (1.0 + np.exp(-case.out)))).values))
    if lik.name == "bernoulli" and lik.out_kind == "probs":
        forms.append(("your reconstruction takes the probabilities as logits", reference(_with(case, lik=HeadLikelihood())).values))
    if lik.name in ("gaussian", "gaussian-learned") and case.bound == "elbo":
        r = (x - case.out)
        const = 0.5 * D * (LOG2PI + (np.log(lik.sigma2) if lik.name == "gaussian" else 0.0))
        rest = ref.values - ref.recon  # finite: Gaussian log-likelihoods are
        forms.append(("your Gaussian log-likelihood lacks its constant -D/2 log(2 pi sigma2): fine for training, not a bound",
                      ref.values + const))
        forms.append(("your reconstruction is the summed squared error, not the Gaussian log-likelihood (no 1 / (2 sigma2), no constant)",
                      rest - (r * r).sum(-1).mean(0)))
        forms.append(("your reconstruction is the mean squared error over pixels (F.mse_loss), not the Gaussian log-likelihood",
                      rest - (r * r).mean(-1).mean(0)))
    return forms


def conventions(case):
    """(note, Reference): frameworks' clipping of probabilities, not mistakes: a loss that equals one is correct, and its
    gradients are compared with that convention's reference."""
    lik = case.lik
    if lik.name != "bernoulli" or lik.out_kind != "probs" or lik.clip is not None:
        return []
    out = [(f"agrees with probabilities clipped to [{name}, 1 - {name}]: declare clip={c:g}", reference(_with(case, lik=lik._replace(clip=c))))
           for c, name in ((1e-7, "1e-7 (Keras's epsilon)"), (1e-6, "1e-6"), (1e-8, "1e-8"), (1e-12, "1e-12"))]
    out.append(("agrees with torch's binary_cross_entropy, logs clamped at -100: declare clip='torch'",
                reference(_with(case, lik=lik._replace(clip="torch")))))
    return out


def gradient_hypotheses(case):
    """(hint, Reference): estimator mistakes, the gradients they give instead of the declared estimator's."""
    out = []
    if case.estimator == "stl":
        out.append(("your STL gradient keeps the score term: q's parameters are not held fixed (detached) in log q(z|x)",
                    reference(case, q_held=False)))
    if case.estimator == "dreg":
        out.append(("your DReG gradient weights by w, not w^2: that is IWAE's reparameterised gradient", reference(case, squared=False)))
        out.append(("your DReG gradient keeps a path through q's parameters: detach mu and the scale in log q(z|x)",
                    reference(case, q_held=False)))
        out.append(("your DReG gradient keeps a path through q's parameters and weights by w", reference(case, squared=False, q_held=False)))
    if case.estimator == "reparam" and case.kl == "mc":
        out.append(("your gradient holds q's parameters fixed in log q: that is STL, not the reparameterised gradient",
                    reference(case, q_held=True)))
        if case.bound == "iwae":
            out.append(("your gradient weights by w^2 with q held: that is DReG's encoder surrogate", reference(case, estimator="dreg")))
    for kind in SCALES:
        if kind != case.scale_kind and _valid(kind, case.s):
            out.append((f"your gradient matches ours with the scale output read as a {kind} (declared: {case.scale_kind})",
                        reference(case, scale_kind=kind)))
    return out


FACTORS = ((-1.0, "minus ours: the gradient of the loss where the bound's was expected, or the other way round"),
           (2.0, "2x ours"), (0.5, "half ours"), (0.0, "zero: no gradient reaches it (detached?)"))


def _valid(kind, s):
    return kind not in ("std", "var") or bool(np.all(s > 0))


def _with(case, **changes):
    """A copy of the case with some options changed."""
    import dataclasses

    return dataclasses.replace(case, **changes)
