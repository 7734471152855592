"""STL and DReG against the reparameterisation gradient in expectation, at L = 2 and 3: E[STL] = E[reparam] for the
ELBO (any beta) and E[DReG] = E[reparam] for the IWAE (Roeder et al. 2017; Tucker et al. 2018, eq. 7).

An independent check of the estimators' definitions: the finite-difference tests differentiate each estimator's
surrogate, so a mistake shared by the backward and the surrogate (DReG weighted by w instead of w^2, which is biased)
passes them; it fails here. Each parameter entry's mean difference over B independent batches is held to
|mean| <= Z_MAX standard errors: with B = 200 the statistic is t with 199 degrees of freedom, P(|t| > 5.5) ~ 1e-7 per
entry, so over the ~1000 entries of all cases a correct estimator fails for about one seed in 10^4, and the
w-for-w^2 mistake reaches |t| ~ 200.
"""

import numpy as np
import pytest

from npvae.vae.ladder import flatten
from ladder_lists import bound_and_grad
from test_ladder import random_problem

Z_MAX, B, M = 5.5, 200, 50  # t threshold, batches, replicas of the points in a batch


@pytest.mark.parametrize("spec", ["5-4-3:3-2", "6-5-3:4-2:3-2"])
@pytest.mark.parametrize("bound, estimator, K, beta", [("elbo", "stl", 1, 0.4), ("elbo", "stl", 3, 1.0), ("iwae", "dreg", 4, 1.0)])
def test_estimator_is_unbiased_for_the_reparameterisation_gradient(spec, bound, estimator, K, beta):
    rng = np.random.default_rng(0)
    arch, params, x, _ = random_problem(rng, "gaussian", spec=spec, N=2, K=1)
    xs = np.tile(x, (M, 1))
    diffs = []
    for _ in range(B):
        eps = [rng.standard_normal((K, xs.shape[0], Z)) for Z in arch.latents]
        _, reparam = bound_and_grad(params, arch, xs, eps, bound, "mc", "reparam", beta)
        _, other = bound_and_grad(params, arch, xs, eps, bound, "mc", estimator, beta)
        diffs.append(np.concatenate([(a - b).ravel() for a, b in zip(flatten(other), flatten(reparam))]))
    d = np.array(diffs)
    scale = np.abs(np.concatenate([a.ravel() for a in flatten(reparam)])).max()
    varies = np.abs(d).max(axis=0) > 1e-12 * scale  # the decoders' entries agree exactly, draw by draw
    assert varies.any()
    mean, se = d.mean(axis=0)[varies], d.std(axis=0, ddof=1)[varies] / np.sqrt(B)
    t = np.abs(mean) / se
    assert t.max() <= Z_MAX, f"worst |t| {t.max():.1f} over {varies.sum()} entries"
