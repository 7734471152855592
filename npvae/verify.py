"""Check someone else's VAE against npvae: the same weights, data and noise in, bounds and gradients compared.

The user's file (docs/verify.md) is a plain `np.savez` archive, read without pickle (checkpoint.read_arrays):

    encoder.0.W, encoder.0.b, ..., decoder.L.b   weights under npvae's names, W as (in, out): y = x @ W + b
    x (N, D), eps (K, N, Z)                       the batch and the standard-normal noise, z = mu + exp(log_var / 2) eps
    values (N,)                                   the user's bound per data point (what is maximised), or a 0-d loss
    grad.<parameter name>                         the user's gradient of the batch MEAN of the bound (of the 0-d loss)
    options                                       a JSON string: bound, kl, estimator, likelihood, activation and,
                                                  as needed, kl_weight, free_bits, sigma2, min_log_var and the layout

The layout options say how the model is stored, as frameworks store it (npvae.checks.verify_layouts): `scale` (what the
encoder's second output is), `weight_layout` ("in_out" or torch's "out_in"), `x_coding` ("01" or "pm1"), and, for a
0-d `values`, `reduction` (which scalar of the bound it is: "mean", "-mean", "sum", "-sum", ...). Separate heads
(encoder.mu.*, encoder.scale.*) and biases of shape (1, out) are read from the names and shapes. Each is declared,
never guessed. npvae recomputes in float64 (`objective`, the NumPy specification, or its maths at the declared
head) and compares every quantity by relative error, max |theirs - ours| / max |ours|, against a tolerance keyed
by the dtype the user computed in. `assert_vae_matches` (npvae.testing) is the same comparison for a test suite.
"""

from __future__ import annotations

import json
import re
from typing import NamedTuple

import numpy as np

from .store.checkpoint import read_arrays, write_arrays
from .checks.gradcheck import rel_err
from .head.case import check_rtol, number, shown
from .head.file import read_options
from .head.reduction import REDUCTIONS, alpha
from .head.scales import check_raw
from .vae.inputs import check_options
from .nn.layers import ACTIVATIONS
from .likelihoods import LIKELIHOODS, Likelihood, check_data
from .vae.model import Arch, VAEParams, flatten, param_names
from .objectives import BOUNDS, ESTIMATORS, KL_MODES, VALID, objective
from .checks.verify_layouts import (
    SCALES, WEIGHT_LAYOUTS, X_CODINGS, bound_and_grad_at_head, expected_shape, from_params, has_heads, numbered,
    refuse_unexpressible, scale_output, slots, to_params, width,
)

# Tolerances on the relative error, by the dtype the user's numbers were computed in. float64: rounding of two
# independent float64 computations of sums of O(N D K) terms (seen ~1e-14). float32: torch's float32 against npvae's
# float64, seen ~1e-6. Each is far below any factor (a gradient off by 1 + 1e-3 fails both).
RTOL = {np.dtype(np.float64): 1e-9, np.dtype(np.float32): 1e-4}
# A tolerance one sets (--rtol, rtol=) is a relative error: at least float64's rounding unit (below it two correct
# float64 computations of one sum already differ), and below 1 (at 1, a quantity 100% off would pass).
REQUIRED_OPTIONS = ("bound", "kl", "estimator", "likelihood", "activation")
SCALAR_REDUCTIONS = tuple(n for n, (_, per_point, _) in REDUCTIONS.items() if not per_point)  # the head check's names
OPTION_DEFAULTS = {"kl_weight": 1.0, "free_bits": 0.0, "sigma2": 1.0, "min_log_var": -6.0,
                   "scale": "log_var", "weight_layout": "in_out", "x_coding": "01", "reduction": None}
NUMBER_OPTIONS = ("kl_weight", "free_bits", "sigma2", "min_log_var")
NUMBER_RANGES = {"kl_weight": dict(lo=0.0), "free_bits": dict(lo=0.0), "sigma2": dict(positive=True), "min_log_var": {}}
CHOICES = {"bound": BOUNDS, "kl": KL_MODES, "estimator": tuple(ESTIMATORS), "likelihood": LIKELIHOODS, "activation": ACTIVATIONS,
           "scale": SCALES, "weight_layout": WEIGHT_LAYOUTS, "x_coding": X_CODINGS, "reduction": SCALAR_REDUCTIONS}
# Models this format cannot express (convolutions, batch norm) are checked at their head.
HEAD_POINTER = ("; a model that is not an MLP VAE in this form (convolutions, batch norm) is checked at its "
                "head: npvae.testing.assert_head_matches (docs/verify.md, 'Checking the head')")




class VerifyCase(NamedTuple):
    """What a user's VAE computed, and on what: npvae's float64 parameters, and the user's own arrays and names."""

    arch: Arch
    params: VAEParams  # npvae's form: [mu, log_var]'s layer in one, W (in, out), float64
    x: np.ndarray  # (N, D) float64, as the encoder reads it
    target: np.ndarray  # (N, D) float64, the likelihood's target: x, or (x + 1) / 2 for x_coding "pm1"
    eps: np.ndarray
    options: dict  # every option, defaults filled; reduction set for a 0-d `values`, None for per-point ones
    values: np.ndarray  # (N,) or ()
    grads: dict  # the file's name -> array, in the file's layout
    weights: dict  # the file's name -> array, as given (for the hints that try another declaration)
    heads: bool  # separate encoder.mu.* and encoder.scale.*


def arch_from_weights(weights: dict, likelihood: Likelihood, activation: str, data_dim: int | None = None,
                      weight_layout: str = "in_out") -> Arch:
    """The Arch whose parameter names and shapes are those of `weights` (name -> array); a clear error otherwise.

    Layer widths are read from the biases (a bias's length is its layer's width whichever way W is stored), D from
    data_dim (the data's width) or the first W, so a transposed W is reported as such rather than as another model.
    """
    refuse_unexpressible(weights)
    _refuse_gaps(weights)
    heads = has_heads(weights)
    biases = [f"encoder.{i}.b" for i in range(numbered(weights, "encoder"))] + (["encoder.mu.b"] if heads else [])
    widths = [width(weights[n]) if isinstance(weights[n], np.ndarray) else None for n in biases]
    first = "encoder.0.W" if numbered(weights, "encoder") else "encoder.mu.W"
    for n, w in zip(biases, widths):
        if w is None or w == 0:
            raise ValueError(f"{n} has shape {getattr(weights[n], 'shape', type(weights[n]).__name__)}: a bias is (out,) or "
                             "(1, out) with out >= 1 (layer widths are read from the biases)" + HEAD_POINTER)
    if isinstance(weights.get(first), np.ndarray) and weights[first].ndim != 2:
        raise ValueError(f"{first} has shape {weights[first].shape}: a weight is 2-D, (in, out) (or (out, in), weight_layout "
                         "\"out_in\")" + HEAD_POINTER)
    if not biases or not isinstance(weights.get(first), np.ndarray):
        raise ValueError("weights must be stored under npvae's names, encoder.0.W, encoder.0.b, ..., decoder.L.b, numbered "
                         "from 0 without gaps (the last encoder layer may be heads encoder.mu.W/b, encoder.scale.W/b), "
                         "biases (out,) or (1, out)" + HEAD_POINTER)
    D = data_dim if data_dim is not None else weights[first].shape[0 if weight_layout == "in_out" else 1]
    if heads:
        hidden, Z = tuple(widths[:-1]), widths[-1]
    else:
        hidden, out = tuple(widths[:-1]), widths[-1]
        if out % 2:
            raise ValueError(f"{biases[-1]} has {out} entries: the encoder's last layer gives [mu, log_var], 2 Z of them "
                             "(or store them as heads encoder.mu.*, encoder.scale.*)")
        Z = out // 2
    arch = Arch(D, hidden, Z, activation, likelihood)
    problems = []
    for s in slots(arch, heads):
        shape, a = expected_shape(arch, s, weight_layout), weights.get(s.name)
        if a is None:
            problems.append(f"{s.name} is missing")
        elif not isinstance(a, np.ndarray):
            problems.append(f"{s.name} is a {type(a).__name__}, not a numpy array")
        elif a.shape != shape and not (s.field == "b" and a.shape == (1, *shape)):
            problems.append(f"{s.name} has shape {a.shape}, expected {shape}" + (_transposed(weight_layout) if a.shape == shape[::-1] else ""))
    extra = sorted(set(weights) - {s.name for s in slots(arch, heads)})
    if extra:
        problems.append(f"unexpected parameters {extra}")
    if problems:
        read = ", ".join(f"{n} {widths[i]}" for i, n in enumerate(biases))
        raise ValueError(f"the weights do not make an MLP VAE {arch.spec} (widths read from the biases: {read}): "
                         + "; ".join(problems) + HEAD_POINTER)
    return arch


_LAYER = re.compile(r"^(encoder|decoder)\.(\d+)\.(W|b)$")


def _refuse_gaps(weights: dict) -> None:
    """Layers are numbered from 0 without a gap, each with its W and b: name every one that is missing."""
    top = {}
    for n in weights:
        m = _LAYER.match(n)
        if m:
            top[m[1]] = max(top.get(m[1], -1), int(m[2]))
    missing = [f"{part}.{i}.{f}" for part, last in top.items() for i in range(last + 1) for f in "Wb"
               if f"{part}.{i}.{f}" not in weights]
    heads = [f"encoder.{h}.{f}" for h in ("mu", "scale") for f in "Wb"]
    if any(h in weights for h in heads):
        missing += [h for h in heads if h not in weights]
    if missing:
        raise ValueError(f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing: layers are numbered from 0 "
                         "without gaps, each with its W and b (heads: encoder.mu.W/b and encoder.scale.W/b)" + HEAD_POINTER)


def _transposed(weight_layout: str) -> str:
    if weight_layout == "in_out":
        return " (transposed? npvae stores W as (in, out), torch's Linear.weight is (out, in): declare weight_layout \"out_in\")"
    return " (transposed? weight_layout \"out_in\" reads W as (out, in), torch's Linear.weight; W as (in, out) is \"in_out\")"


def parse_options(options: dict) -> dict:
    """Check the options and fill the defaults; a clear one-line error names what is missing or wrong."""
    if not isinstance(options, dict):
        raise ValueError(f"options must be a JSON object, got {type(options).__name__}")
    if not options:
        raise ValueError(f"options are empty: they must declare at least {', '.join(REQUIRED_OPTIONS)}")
    missing = [k for k in REQUIRED_OPTIONS if k not in options]
    if missing:
        raise ValueError(f"options lack {', '.join(missing)} (need {', '.join(REQUIRED_OPTIONS)})")
    unknown = set(options) - set(REQUIRED_OPTIONS) - set(OPTION_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown options {sorted(unknown)} (the options: {', '.join((*REQUIRED_OPTIONS, *OPTION_DEFAULTS))})")
    o = {**OPTION_DEFAULTS, **options}
    for k, v in o.items():  # each of its documented type and range; nothing converted (a "1" is not a number)
        if k in NUMBER_OPTIONS:
            o[k] = number(f"option {k}", v, **NUMBER_RANGES[k])
            continue
        if not isinstance(v, str) and not (k == "reduction" and v is None):
            raise ValueError(f"option {k} must be a string, got {shown(v)}")
        if k in CHOICES and v is not None and v not in CHOICES[k]:
            raise ValueError(f"option {k} must be one of {', '.join(map(repr, CHOICES[k]))}; got {shown(v)}")
    if o["free_bits"] > 0 and o["kl"] != "analytic":
        raise ValueError(f"option free_bits floors each dimension's analytic KL: it needs kl \"analytic\", not {o['kl']!r}")
    if (o["bound"], o["kl"]) not in VALID or o["estimator"] not in VALID[(o["bound"], o["kl"])]:
        valid = ", ".join(f"{b}/{k}/{e}" for (b, k), es in VALID.items() for e in es)
        raise ValueError(f"bound/kl/estimator {o['bound']}/{o['kl']}/{o['estimator']} is not one of {valid}")
    check_options(o["bound"], o["kl"], o["estimator"], o["kl_weight"], o["free_bits"])
    if o["x_coding"] == "pm1" and o["likelihood"] != "bernoulli":
        raise ValueError(f"x_coding \"pm1\" codes a Bernoulli target as +-1; a {o['likelihood']} likelihood reads x as it is")
    return o


def _target(x: np.ndarray, o: dict, lik: Likelihood) -> np.ndarray:
    """The likelihood's target from the file's x: x, or (x + 1) / 2 for data coded 2x - 1; refused where meaningless."""
    pm1 = bool(np.all((x == -1) | (x == 1)))
    if o["x_coding"] == "pm1":
        if not pm1:
            raise ValueError(f"x_coding \"pm1\" needs every x in {{-1, +1}} (HIPS autograd's 2x - 1); x holds {_other(x, (-1, 1))}")
        return (x + 1.0) / 2.0
    if lik.name == "bernoulli" and pm1 and np.any(x == -1):
        raise ValueError("x holds -1 and +1: data coded 2x - 1 (HIPS autograd's convention)? declare x_coding \"pm1\"")
    check_data(lik, x)
    return x


def _other(x, allowed) -> str:
    return f"{float(x[~np.isin(x, allowed)].flat[0]):.6g}"


def make_case(weights: dict, x, eps, values, grads: dict, options: dict) -> VerifyCase:
    """Validate a user's arrays and options into a VerifyCase (float64 copies of everything npvae computes with)."""
    o = parse_options(options)
    if not isinstance(x, np.ndarray) or x.ndim != 2 or 0 in x.shape:
        raise ValueError(f"x must be a 2-D array (N, D) with N, D >= 1, got {getattr(x, 'shape', type(x).__name__)}")
    lik = Likelihood(o["likelihood"], sigma2=o["sigma2"], min_log_var=o["min_log_var"])
    arch = arch_from_weights(weights, lik, o["activation"], data_dim=x.shape[1], weight_layout=o["weight_layout"])
    heads = has_heads(weights)
    names = [s.name for s in slots(arch, heads)]
    for name, a in (("x", x), ("eps", eps), ("values", values), *((f"grad.{n}", g) for n, g in grads.items()), *weights.items()):
        if not isinstance(a, np.ndarray) or a.dtype not in (np.float32, np.float64):
            raise ValueError(f"{name} must be a float32 or float64 array, got {getattr(a, 'dtype', type(a).__name__)}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name} holds non-finite values")
    N = x.shape[0]
    if eps.ndim != 3 or eps.shape[1:] != (N, arch.latent_dim) or eps.shape[0] == 0:
        raise ValueError(f"eps must be (K, {N}, {arch.latent_dim}), got {eps.shape}: K >= 1 samples of the noise for x's N = {N} "
                         f"points, Z = {arch.latent_dim} from the encoder's last bias")
    if values.ndim == 0:
        o["reduction"] = o["reduction"] or "mean"
    elif values.shape != (N,):
        raise ValueError(f"values must be the bound per point, shape ({N},) for x's N = {N}, or a 0-d loss with option reduction; "
                         f"got {values.shape}")
    elif o["reduction"] is not None:
        raise ValueError(f"option reduction declares a 0-d loss, but values are per point ({N},): per-point values are "
                         "the bound, their gradients those of its batch mean; leave reduction out")
    missing, unexpected = [n for n in names if n not in grads], sorted(set(grads) - set(names))
    if missing or unexpected:
        entries = ", ".join(f"grad.{n}" for n in missing + unexpected)
        raise ValueError(f"gradients must be given for exactly the parameters: missing {missing}, unexpected {unexpected} "
                         f"(the entries {entries})")
    for n in names:
        if grads[n].shape != weights[n].shape:
            raise ValueError(f"grad.{n} has shape {grads[n].shape}, its parameter {n} {weights[n].shape}")
    x64 = np.asarray(x, dtype=np.float64)
    target = _target(x64, o, lik)
    params = to_params(weights, arch, heads, o["weight_layout"])
    if o["scale"] != "log_var":
        check_raw("the encoder's scale output", o["scale"], scale_output(params, arch, x64))
    return VerifyCase(arch, params, x64, target, np.asarray(eps, dtype=np.float64), o, values, {n: grads[n] for n in names},
                      dict(weights), heads)


def read(path) -> VerifyCase:
    """Read a verify file (see the module docstring); malformed files are a ValueError naming what is wrong."""
    arrays = read_arrays(path, text=("options",))
    return case_from_arrays(arrays, read_options_of(arrays, path), path)


def read_options_of(arrays: dict, path) -> dict:
    """The options of a full-model file (removed from arrays)."""
    return read_options(arrays, path, f"a JSON string with {', '.join(REQUIRED_OPTIONS)}")


def case_from_arrays(arrays: dict, options, path) -> VerifyCase:
    """A VerifyCase from a full-model file's arrays (options already read from them)."""
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
    write_arrays(path, {"x": x, "eps": eps, "values": values, "options": np.array(json.dumps(options)), **arrays})


def ours(case: VerifyCase) -> tuple[np.ndarray, dict]:
    """npvae's numbers in the file's terms: the values (per point, or the declared reduction's scalar) and its gradients."""
    o = case.options
    kw = dict(bound=o["bound"], kl=o["kl"], estimator=o["estimator"], kl_weight=o["kl_weight"], free_bits=o["free_bits"])
    if o["scale"] == "log_var" and o["x_coding"] == "01":
        values, grads = objective(case.params, case.arch, case.x, case.eps, **kw)  # the specification itself
    else:
        values, grads = bound_and_grad_at_head(case.params, case.arch, case.x, case.target, case.eps, o["scale"], **kw)
    named = from_params(grads, case.arch, case.heads, o["weight_layout"], {n: g.shape for n, g in case.grads.items()})
    if case.values.ndim == 1:
        return values, named
    (K, N), D = case.eps.shape[:2], case.x.shape[1]
    a = alpha(o["reduction"], N, D, K)  # the loss is a * sum_n b_n: its gradient is a N times the batch mean's
    return np.asarray(a * values.sum()), {n: (a * N) * g for n, g in named.items()}


def compare(case: VerifyCase, rtol: float | None = None) -> list[dict]:
    """Recompute in float64 and compare: one row per quantity (the values, then each gradient)."""
    rtol = check_rtol(rtol)
    with np.errstate(all="ignore"):
        ours_v, ours_g = ours(case)
    if not (np.all(np.isfinite(ours_v)) and all(np.all(np.isfinite(g)) for g in ours_g.values())):
        numbers = ", ".join(f"{k} {case.options[k]:g}" for k in NUMBER_OPTIONS)
        raise ValueError(f"npvae's own bound or gradients are not finite at this file's weights, x and eps with the options "
                         f"{numbers}: an option or a weight out of any sane range (nothing to compare yours with)")
    theirs = [("values", case.values, ours_v)] + [(f"grad {n}", g, ours_g[n]) for n, g in case.grads.items()]
    rows = []
    for name, t, our in theirs:
        tol = rtol if rtol is not None else RTOL[np.dtype(t.dtype)]
        err = rel_err(t, our)
        rows.append({"quantity": name, "rel_error": err, "tol": tol, "passed": bool(err <= tol), "dtype": str(t.dtype),
                     "hint": _hint(case, np.asarray(t, np.float64), our) if err > tol else ""})
    if not rows[0]["passed"] and not rows[0]["hint"]:
        rows[0]["hint"] = _declaration_hint(case, rtol)
    return rows


def _hint(case: VerifyCase, theirs, ours_) -> str:
    """A likely cause when a quantity differs by a simple factor (a sign, a sum for a mean) or is stored transposed."""
    N = case.x.shape[0]
    if case.values.ndim == 1:
        factors = ((-1.0, "minus ours: the gradient of the loss (-bound), not of the bound?"),
                   (float(N), f"N = {N} times ours: the gradient of the batch sum, not the mean?"),
                   (-float(N), "-N times ours: the gradient of the summed loss?"))
    else:
        (K, _), D, r = case.eps.shape[:2], case.x.shape[1], case.options["reduction"]
        factors = tuple((alpha(other, N, D, K) / alpha(r, N, D, K), f"equals ours for reduction {other!r}, not the declared "
                         f"{r!r}: {REDUCTIONS[other][2]}") for other in SCALAR_REDUCTIONS if other != r)
    for factor, why in factors:
        if rel_err(theirs, factor * ours_) < 1e-6:
            return why
    if theirs.ndim == 2 and theirs.shape[0] == theirs.shape[1] and rel_err(theirs.T, ours_) < 1e-6:
        return "the transpose of ours: stored the other way round from its weight (weight_layout)?"
    return ""


def _declaration_hint(case: VerifyCase, rtol) -> str:
    """When the values differ: another declaration of scale or weight_layout under which they agree, if there is one."""
    for key, choices in (("scale", SCALES), ("weight_layout", WEIGHT_LAYOUTS)):
        for other in choices:
            if other == case.options[key]:
                continue
            try:
                alt = make_case(case.weights, case.x, case.eps, case.values, case.grads, {**case.options, key: other})
            except ValueError:
                continue  # a declaration these arrays cannot have (a std <= 0, a shape that does not fit)
            tol = rtol if rtol is not None else RTOL[np.dtype(case.values.dtype)]
            if rel_err(case.values, ours(alt)[0]) <= tol:
                return f"agrees with ours when declared {key} \"{other}\""
    return ""
