"""Check someone else's VAE against npvae: the same weights, data and noise in, per-point bounds and gradients compared.

The user's file (docs/verify.md) is a plain `np.savez` archive, read without pickle (checkpoint.read_arrays):

    encoder.0.W, encoder.0.b, ..., decoder.L.b   weights under npvae's names, W as (in, out): y = x @ W + b
    x (N, D), eps (K, N, Z)                       the batch and the standard-normal noise, z = mu + exp(log_var / 2) eps
    values (N,)                                   the user's bound per data point (what is maximised)
    grad.<parameter name>                         the user's gradient of the batch MEAN of the bound, per parameter
    options                                       a JSON string: bound, kl, estimator, likelihood, activation and,
                                                  as needed, kl_weight, free_bits, sigma2, min_log_var

npvae recomputes the objective in float64 from the same inputs (`objective`, the NumPy specification) and
compares every quantity by relative error, max |theirs - ours| / max |ours|, against a tolerance keyed by the
dtype the user computed in. `assert_vae_matches` (npvae.testing) is the same comparison for a test suite.
"""

from __future__ import annotations

import json
from typing import NamedTuple

import numpy as np

from .checkpoint import read_arrays
from .gradcheck import rel_err
from .layers import Dense
from .likelihoods import Likelihood
from .model import Arch, VAEParams, flatten, param_names, param_shapes
from .objectives import VALID, objective

# Tolerances on the relative error, by the dtype the user's numbers were computed in. float64: rounding of two
# independent float64 computations of sums of O(N D K) terms (seen ~1e-14). float32: torch's float32 against npvae's
# float64, seen ~1e-6. Each is far below any factor (a gradient off by 1 + 1e-3 fails both).
RTOL = {np.dtype(np.float64): 1e-9, np.dtype(np.float32): 1e-4}
OPTION_DEFAULTS = {"kl_weight": 1.0, "free_bits": 0.0, "sigma2": 1.0, "min_log_var": -6.0}
REQUIRED_OPTIONS = ("bound", "kl", "estimator", "likelihood", "activation")
# Models this format cannot express (convolutions, batch norm, separate mu and scale heads) are checked at their head.
HEAD_POINTER = ("; a model that is not an MLP VAE in this form (convolutions, batch norm, separate heads) is checked at its "
                "head: npvae.testing.assert_head_matches (docs/verify.md, 'Checking the head')")


class VerifyCase(NamedTuple):
    """What a user's VAE computed, and on what."""

    arch: Arch
    params: VAEParams
    x: np.ndarray
    eps: np.ndarray
    options: dict
    values: np.ndarray
    grads: dict  # name -> array


def arch_from_weights(weights: dict, likelihood: Likelihood, activation: str, data_dim: int | None = None) -> Arch:
    """The Arch whose parameter names and shapes are those of `weights` (name -> array); a clear error otherwise.

    Layer widths are read from the biases (a bias's length is its layer's width whichever way W is stored), D from
    data_dim (the data's width) or encoder.0.W, so a transposed W is reported as such rather than as another model.
    """
    n_enc = sum(1 for n in weights if n.startswith("encoder.") and n.endswith(".b"))
    enc_b = [weights.get(f"encoder.{i}.b") for i in range(n_enc)]
    if n_enc == 0 or any(b is None or b.ndim != 1 for b in enc_b) or "encoder.0.W" not in weights:
        raise ValueError("weights must be stored under npvae's names, encoder.0.W, encoder.0.b, ..., decoder.L.b, "
                         "numbered from 0 without gaps, biases 1-D" + HEAD_POINTER)
    D = data_dim if data_dim is not None else weights["encoder.0.W"].shape[0]
    hidden, out = tuple(b.shape[0] for b in enc_b[:-1]), enc_b[-1].shape[0]
    if out % 2:
        raise ValueError(f"encoder.{n_enc - 1}.b has {out} entries: the encoder's last layer gives [mu, log_var], 2 Z of them")
    arch = Arch(D, hidden, out // 2, activation, likelihood)
    names = param_names(arch)
    problems = []
    for name, shape in zip(names, param_shapes(arch)):
        if name not in weights:
            problems.append(f"{name} is missing")
        elif weights[name].shape != shape:
            hint = " (transposed? npvae stores W as (in, out), torch's Linear.weight is (out, in))" if weights[name].shape == shape[::-1] else ""
            problems.append(f"{name} has shape {weights[name].shape}, expected {shape}{hint}")
    extra = sorted(set(weights) - set(names))
    if extra:
        problems.append(f"unexpected parameters {extra}")
    if problems:
        raise ValueError(f"the weights do not make an MLP VAE {arch.spec}: " + "; ".join(problems) + HEAD_POINTER)
    return arch


def parse_options(options: dict) -> dict:
    """Check the options and fill the defaults; a clear error names what is missing or wrong."""
    if not isinstance(options, dict):
        raise ValueError(f"options must be a JSON object, got {type(options).__name__}")
    missing = [k for k in REQUIRED_OPTIONS if k not in options]
    if missing:
        raise ValueError(f"options lack {', '.join(missing)} (need {', '.join(REQUIRED_OPTIONS)})")
    unknown = set(options) - set(REQUIRED_OPTIONS) - set(OPTION_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown options {sorted(unknown)}")
    o = {**OPTION_DEFAULTS, **options}
    if (o["bound"], o["kl"]) not in VALID or o["estimator"] not in VALID[(o["bound"], o["kl"])]:
        valid = ", ".join(f"{b}/{k}/{e}" for (b, k), es in VALID.items() for e in es)
        raise ValueError(f"bound/kl/estimator {o['bound']}/{o['kl']}/{o['estimator']} is not one of {valid}")
    return o


def make_case(weights: dict, x, eps, values, grads: dict, options: dict) -> VerifyCase:
    """Validate a user's arrays and options into a VerifyCase (float64 copies of everything)."""
    o = parse_options(options)
    if not isinstance(x, np.ndarray) or x.ndim != 2:
        raise ValueError(f"x must be a 2-D array (N, D), got {getattr(x, 'shape', type(x).__name__)}")
    arch = arch_from_weights(weights, Likelihood(o["likelihood"], sigma2=o["sigma2"], min_log_var=o["min_log_var"]),
                             o["activation"], data_dim=x.shape[1])
    names = param_names(arch)
    for name, a in (("x", x), ("eps", eps), ("values", values), *((f"grad.{n}", g) for n, g in grads.items()), *weights.items()):
        if not isinstance(a, np.ndarray) or a.dtype not in (np.float32, np.float64):
            raise ValueError(f"{name} must be a float32 or float64 array, got {getattr(a, 'dtype', type(a).__name__)}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name} holds non-finite values")
    if x.ndim != 2 or x.shape[1] != arch.data_dim:
        raise ValueError(f"x must be (N, {arch.data_dim}), got {x.shape}")
    N = x.shape[0]
    if eps.ndim != 3 or eps.shape[1:] != (N, arch.latent_dim):
        raise ValueError(f"eps must be (K, {N}, {arch.latent_dim}), got {eps.shape}")
    if values.shape != (N,):
        raise ValueError(f"values must be the bound per point, shape ({N},), got {values.shape}")
    missing = [n for n in names if n not in grads]
    if missing or set(grads) - set(names):
        raise ValueError(f"gradients must be given for exactly the parameters: missing {missing}, unexpected {sorted(set(grads) - set(names))}")
    for n in names:
        if grads[n].shape != weights[n].shape:
            raise ValueError(f"grad.{n} has shape {grads[n].shape}, its parameter {weights[n].shape}")
    f64 = lambda a: np.asarray(a, dtype=np.float64)
    params = VAEParams(*[tuple(Dense(f64(weights[f"{part}.{i}.W"]), f64(weights[f"{part}.{i}.b"])) for i in range(n))
                         for part, n in (("encoder", len(arch.encoder_sizes()) - 1), ("decoder", len(arch.decoder_sizes()) - 1))])
    return VerifyCase(arch, params, f64(x), f64(eps), o, values, {n: grads[n] for n in names})


def read(path) -> VerifyCase:
    """Read a verify file (see the module docstring); malformed files are a ValueError naming what is wrong."""
    arrays = read_arrays(path, text=("options",))
    if "options" not in arrays:
        raise ValueError(f"{path}: no 'options' entry (a JSON string with {', '.join(REQUIRED_OPTIONS)})")
    try:
        options = json.loads(str(arrays.pop("options").reshape(-1)[0]))
    except ValueError as e:
        raise ValueError(f"{path}: 'options' is not valid JSON ({e})") from None
    for need in ("x", "eps", "values"):
        if need not in arrays:
            raise ValueError(f"{path}: no {need!r} array")
    x, eps, values = arrays.pop("x"), arrays.pop("eps"), arrays.pop("values")
    grads = {n[len("grad."):]: a for n, a in arrays.items() if n.startswith("grad.")}
    weights = {n: a for n, a in arrays.items() if not n.startswith("grad.")}
    return make_case(weights, x, eps, values, grads, options)


def write(path, params: VAEParams, arch: Arch, x, eps, options: dict, values, grads: VAEParams) -> None:
    """Write a verify file from npvae's own objective (or anyone's arrays in npvae's containers)."""
    names = param_names(arch)
    arrays = {n: a for n, a in zip(names, flatten(params))}
    arrays.update({f"grad.{n}": g for n, g in zip(names, flatten(grads))})
    np.savez(path, x=x, eps=eps, values=values, options=np.array(json.dumps(options)), **arrays)


def compare(case: VerifyCase, rtol: float | None = None) -> list[dict]:
    """Recompute in float64 and compare: one row per quantity (the values, then each gradient)."""
    o = case.options
    ours_v, ours_g = objective(case.params, case.arch, case.x, case.eps, bound=o["bound"], kl=o["kl"], estimator=o["estimator"],
                               kl_weight=o["kl_weight"], free_bits=o["free_bits"])
    theirs = [("values", case.values, ours_v)] + [(f"grad {n}", case.grads[n], g) for n, g in zip(param_names(case.arch), flatten(ours_g))]
    rows = []
    for name, t, ours in theirs:
        tol = rtol if rtol is not None else RTOL[np.dtype(t.dtype)]
        err = rel_err(t, ours)
        rows.append({"quantity": name, "rel_error": err, "tol": tol, "passed": bool(err <= tol), "dtype": str(t.dtype),
                     "hint": _hint(np.asarray(t, np.float64), ours, case.x.shape[0]) if err > tol else ""})
    return rows


def _hint(theirs, ours, N: int) -> str:
    """A likely cause when a quantity differs by a simple factor: a sign, a sum for a mean, a loss for a bound."""
    for factor, why in ((-1.0, "minus ours: the gradient of the loss (-bound), not of the bound?"),
                        (float(N), f"N = {N} times ours: the gradient of the batch sum, not the mean?"),
                        (-float(N), "-N times ours: the gradient of the summed loss?")):
        if rel_err(theirs, factor * ours) < 1e-6:
            return why
    return ""
