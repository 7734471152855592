"""The head check as a file, for `npvae verify FILE`: a plain `np.savez` archive, read without pickle.

    x (N, D), mu (N, Z), scale (N, Z), out (K, N, D) [, out_scale], eps and/or z (K, N, Z), loss (a scalar or (N,))
    grad.mu, grad.scale, grad.z, grad.out, grad.out_scale     optional: the loss's gradients with respect to them
    options     a JSON string: {"check": "head", ...}, with any keyword of npvae.testing.assert_head_matches
                (scale_kind, likelihood, out_kind, out_scale_kind, sigma2, clip, x_coding, bound, kl, estimator,
                kl_weight, free_bits, reduction, grads_mode)
Every array is float32 or float64 (the dtype the user computed in); every option is of its documented type, checked by
npvae.head.case.check_options: a number is a JSON number, never a string holding one, and nothing is converted.
"""

from __future__ import annotations

import inspect
import json
import re

import numpy as np

from ..store.checkpoint import read_arrays, write_arrays
from .case import GRAD_KEYS, check_options, make_case, shown

ARRAYS = ("x", "mu", "scale", "out", "out_scale", "eps", "z", "loss")
OPTIONS = ("scale_kind", "likelihood", "out_kind", "out_scale_kind", "sigma2", "clip", "x_coding", "bound", "kl", "estimator",
           "kl_weight", "free_bits", "reduction", "grads_mode")
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
DEFAULTS = {k: p.default for k, p in inspect.signature(make_case).parameters.items() if k in OPTIONS}  # make_case's own


def is_head_file(arrays: dict, options: dict) -> bool:
    """A head file names itself (options "check": "head") or holds the head's tensors instead of weights."""
    return options.get("check") == "head" or ("mu" in arrays and "scale" in arrays and "out" in arrays)


def case_from_arrays(arrays: dict, options: dict):
    """A HeadCase from a head file's arrays and options; anything malformed is a ValueError naming it."""
    unknown = set(options) - set(OPTIONS) - {"check"}
    if unknown:
        marked = ' (the options say "check": "head": a file of weights has no check)' if options.get("check") == "head" else ""
        raise ValueError(f"unknown head options {sorted(unknown)}{marked}; the options are {', '.join(OPTIONS)}")
    if "check" in options and options["check"] != "head":
        raise ValueError(f"option check must be \"head\" (a head file; a full-model file has no check), got {shown(options['check'])}")
    kw = {k: v for k, v in options.items() if k != "check"}
    try:  # each option of its type and range before any array is looked at, named as the file's options entry names it
        check_options(**{**DEFAULTS, **kw})
    except ValueError as e:
        raise ValueError(f"option {e}") from None
    missing = [k for k in ("x", "mu", "scale", "out", "loss") if k not in arrays]
    if missing:
        raise ValueError(f"a head file needs x, mu, scale, out and loss: {', '.join(missing)} missing")
    extra = set(arrays) - set(ARRAYS) - {f"grad.{k}" for k in GRAD_KEYS}
    if extra:
        raise ValueError(f"unexpected entries {sorted(extra)} in a head file (its entries: {', '.join(ARRAYS)}, grad.<name>)")
    for name, a in arrays.items():  # make_case takes anything numeric (lists, ints) from code; a file holds what was computed
        if a.dtype not in FLOAT_DTYPES:
            raise ValueError(f"{name} must be a float32 or float64 array, got {a.dtype}")
    grads = {k[len("grad."):]: a for k, a in arrays.items() if k.startswith("grad.")}
    try:
        return make_case(arrays["x"], arrays["mu"], arrays["scale"], arrays["out"], arrays["loss"], eps=arrays.get("eps"),
                         z=arrays.get("z"), out_scale=arrays.get("out_scale"), grads=grads or None, **kw)
    except ValueError as e:  # make_case names a gradient grads['mu']; in a file it is the entry grad.mu
        raise ValueError(re.sub(r"grads\['(\w+)'\]", r"grad.\1", str(e))) from None


def read_options(arrays: dict, path, what: str = "a JSON string") -> dict:
    """The JSON object in a verify file's 'options' entry (removed from arrays), for head and full-model files alike."""
    if "options" not in arrays:
        raise ValueError(f"{path}: no 'options' entry ({what})")
    raw = arrays.pop("options").reshape(-1)
    if raw.size != 1:
        raise ValueError(f"{path}: 'options' must be one JSON string, got {raw.size} entries")
    try:
        options = json.loads(str(raw[0]), object_pairs_hook=_no_repeats)
    except ValueError as e:
        raise ValueError(f"{path}: 'options' is not valid JSON ({e})") from None
    except RecursionError:  # json's decoder recurses once per nested [ or {
        raise ValueError(f"{path}: 'options' is not valid JSON for npvae (nested too deeply)") from None
    if not isinstance(options, dict):
        raise ValueError(f"{path}: options must be a JSON object, got {type(options).__name__}")
    return options


def _no_repeats(pairs: list) -> dict:
    """A JSON object whose keys are all different: {"kl": "mc", "kl": "analytic"} is refused, not read as its last."""
    seen = set()
    for k, _ in pairs:
        if k in seen:
            raise ValueError(f"option {k!r} is given twice")
        seen.add(k)
    return dict(pairs)


def read(path):
    """A head file as a HeadCase."""
    arrays = read_arrays(path, text=("options",))
    return case_from_arrays(arrays, read_options(arrays, path))


def write(path, arrays: dict, options: dict) -> None:
    """Write a head file atomically (a temporary file renamed over path): arrays by the names above, options as JSON."""
    bad = set(arrays) - set(ARRAYS) - {f"grad.{k}" for k in GRAD_KEYS}
    if bad:
        raise ValueError(f"unknown head file entries {sorted(bad)}")
    write_arrays(path, {"options": np.array(json.dumps({"check": "head", **options})),
                        **{k: np.asarray(v) for k, v in arrays.items() if v is not None}})


def example(path) -> None:
    """A head file of pytorch/examples' VAE, in its own form: log-variance head, sigmoid probabilities, BCE summed plus KL."""
    rng = np.random.default_rng(0)
    N, D, Z = 8, 12, 3
    x = (rng.random((N, D)) < 0.4) * 1.0
    mu, lv = 0.5 * rng.standard_normal((N, Z)), 0.3 * rng.standard_normal((N, Z))
    eps = rng.standard_normal((N, Z))
    z = mu + np.exp(0.5 * lv) * eps
    p = 1.0 / (1.0 + np.exp(-(np.tanh(z @ rng.standard_normal((Z, 6))) @ rng.standard_normal((6, D)))))
    bce = -np.sum(x * np.log(p) + (1 - x) * np.log1p(-p))
    kld = -0.5 * np.sum(1 + lv - mu**2 - np.exp(lv))
    grads = {"out": -(x / p - (1 - x) / (1 - p)), "mu": mu, "scale": -0.5 * (1 - np.exp(lv))}  # d(bce + kld), z held
    write(path, {"x": x, "mu": mu, "scale": lv, "out": p, "eps": eps, "loss": np.array(bce + kld),
                 **{f"grad.{k}": g for k, g in grads.items()}}, {"out_kind": "probs"})
