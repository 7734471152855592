"""npvae: a NumPy-from-scratch reference Variational Autoencoder with hand-written backprop.

Importing npvae compiles nothing, probes no GPU and prints nothing.
"""

from . import _moved

_moved.install()  # old module paths (npvae 0.1) stay importable, deprecated, for one version

from .objectives import log_px
from .nn.layers import Dense
from .likelihoods import Likelihood
from .oracle.linear_chain import LinearGaussian, ppca_fit
from .maths.lme import log_mean_exp, softmax
from .vae import models
from .vae.model import Arch, VAEParams
from .vae.models import flatten, init_params, param_names, unflatten  # either family (one stochastic layer, or a ladder of L)
from .objectives import bound_value, log_weights, objective
from .nn.optim import adam_init, adam_update, sgd_init, sgd_update
from .vae.ladder import LadderArch, LadderParams, TwoLayerArch, TwoLayerParams

from ._version import __version__  # noqa: F401  (npvae.__version__)

__all__ = [
    "Arch", "Dense", "LadderArch", "LadderParams", "Likelihood", "LinearGaussian", "TwoLayerArch", "TwoLayerParams", "VAEParams", "models",
    "adam_init", "adam_update", "bound_value", "flatten", "init_params", "log_mean_exp", "log_px",
    "log_weights", "objective", "param_names", "ppca_fit", "sgd_init", "sgd_update", "softmax", "unflatten",
]
