"""The integer codes the compiled kernels branch on, in one place: the CPU and CUDA kernels both import these.

Names are what the user writes (npvae.nn.layers.ACTIVATIONS; the (bound, kl) pairs and estimators of
npvae.maths.estimators); the codes exist only because a kernel takes integers, not strings.
"""

from __future__ import annotations

IDENTITY, RELU, TANH, SOFTPLUS = 0, 1, 2, 3  # activations
ANALYTIC, ELBO_MC, IWAE = 0, 1, 2  # bound heads: ELBO with analytic KL, ELBO with MC KL, IWAE
REPARAM, STL, DREG = 0, 1, 2  # encoder gradient estimators

ACTIVATION = {"identity": IDENTITY, "relu": RELU, "tanh": TANH, "softplus": SOFTPLUS}
HEAD = {("elbo", "analytic"): ANALYTIC, ("elbo", "mc"): ELBO_MC, ("iwae", "mc"): IWAE}
ESTIMATOR = {"reparam": REPARAM, "stl": STL, "dreg": DREG}
