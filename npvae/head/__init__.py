"""Checking anyone's VAE at its head: the tensors where a VAE's own maths lives, whatever the network around it.

The head of a VAE is x, what the encoder outputs (mu and a scale in the user's parameterisation), the noise eps
and the sample z, what the decoder outputs at z, and the loss built from them. If the loss is right as a function
of the head, and its gradient with respect to the head is right, the user's autograd does the rest. This package
computes npvae's bound and its gradients at a user's head in float64, works out the loss's reduction, and names
the mistake when there is one (docs/verify.md, "Checking the head").

    scales.py      the scale parameterisations (log_var, log_std, std, var, softplus) and their chain rule
    likelihood.py  log p(x | out) on logits, probabilities (with frameworks' clipping), Gaussian means
    case.py        the user's arrays, validated, float64 (torch and JAX arrays by duck typing)
    reference.py   npvae's bound and head gradients, per estimator
    reduction.py   which scaling of the bound a loss is
    noise.py       is eps standard normal, is z = mu + std * eps
    hypotheses.py  the classic mistakes, tried against a mismatch
    check.py       the comparison and its report
    dirgrad.py     whole-model directional finite differences, for hand-written backward passes
    bounds.py      ELBO <= IWAE_K <= log p(x) with the user's encode and decode

May import npvae's maths (gaussian, lme, stable, estimators, gradcheck); nothing imports it but testing, verify and cli.
"""

from .check import HeadReport, check_head

__all__ = ["HeadReport", "check_head"]
