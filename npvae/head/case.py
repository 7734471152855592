"""A user's head, validated and made float64: what `check_head` compares, with notes on how its layout was read.

Arrays come from anything: NumPy, lists, or a framework's tensors, taken by duck typing (`.detach().cpu().numpy()`
for torch, `numpy.asarray` for JAX and the rest), so the package imports no framework. Shapes:
    x (N, D); mu, scale (N, Z); eps, z (K, N, Z), or (N, Z) read as K = 1; out, out_scale (K, N, D), or (N, D)
    loss: a scalar (any reduction) or (N,) per point; grads: a dict over "mu", "scale", "z", "out", "out_scale"
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..maths.estimators import BOUNDS, ESTIMATORS, KL_MODES, VALID
from .likelihood import HEAD_LIKELIHOODS, HeadLikelihood, check as check_likelihood, head_likelihood
from .scales import SCALES, check_raw, std_of

GRAD_KEYS = ("mu", "scale", "z", "out", "out_scale")
GRADS_MODES = ("partial", "total")
X_CODINGS = ("auto", "01", "pm1")


def as_array(name: str, a) -> np.ndarray:
    """A NumPy array from a NumPy array, a list, a torch tensor (detached, moved to the CPU) or a JAX array."""
    if a is None:
        raise ValueError(f"{name} is required")
    if hasattr(a, "detach") and hasattr(a, "cpu"):  # torch.Tensor, without importing torch
        a = a.detach().cpu().numpy()
    try:
        arr = np.asarray(a)
    except Exception as e:  # noqa: BLE001 (what a foreign object raises is not ours to know)
        raise ValueError(f"{name} cannot be read as an array ({type(a).__name__}: {e})") from None
    if arr.dtype.kind not in "fiub":
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    return arr


def float_dtype(a: np.ndarray) -> np.dtype:
    """The precision a user's number was computed in: float32 (or lower) or float64."""
    return np.dtype(np.float64) if a.dtype == np.float64 else np.dtype(np.float32)


@dataclass
class HeadCase:
    """Everything the check needs, float64; `notes` say how the inputs were read (layouts, codings)."""

    x: np.ndarray
    t: np.ndarray  # the likelihood's targets (x, or (x + 1) / 2 for +-1 data)
    mu: np.ndarray
    s: np.ndarray
    scale_kind: str
    eps: np.ndarray
    z: np.ndarray
    given: tuple  # which of "eps", "z" the user gave
    out: np.ndarray
    out_scale: np.ndarray | None
    lik: HeadLikelihood
    bound: str
    kl: str
    estimator: str
    kl_weight: float
    free_bits: float
    loss: np.ndarray
    loss_dtype: np.dtype
    reduction: str | None
    grads: dict
    grads_dtype: dict
    grads_mode: str
    notes: list = field(default_factory=list)
    eps_user: np.ndarray | None = None  # the user's eps as given, when z was given too


def _float(name, a):
    a = as_array(name, a)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} holds {int(a.size - np.count_nonzero(np.isfinite(a)))} non-finite value(s)")
    return a


def _samples(name, a, N, width, notes):
    """(K, N, width) from (K, N, width) or (N, width) (then K = 1, and a note says so)."""
    if a.ndim == 2 and a.shape == (N, width):
        notes.append(f"{name} given as (N, {'Z' if name in ('eps', 'z') else 'D'}) = {a.shape}: read as K = 1")
        return a[None]
    if a.ndim != 3 or a.shape[1:] != (N, width) or a.shape[0] == 0:
        what = "Z from mu" if name in ("eps", "z") else "D from x"
        raise ValueError(f"{name} must be (K, {N}, {width}) with K >= 1, or ({N}, {width}) for K = 1 (N from x, {what}), got {a.shape}")
    return a


def shown(v, n: int = 60) -> str:
    """repr(v) for a one-line message, cut to n characters (a value from a file may be a long list)."""
    r = repr(v)
    return r if len(r) <= n else r[:n - 3] + "..."


RTOL_RANGE = (float(np.finfo(np.float64).eps), 1.0)


def check_rtol(rtol, name: str = "rtol") -> float | None:
    """None (each dtype's own tolerance, RTOL), or a relative tolerance in RTOL_RANGE; a one-line ValueError otherwise."""
    if rtol is None:
        return None
    lo, hi = RTOL_RANGE
    sane = (f"a relative error, {lo:.1e} <= {name} < 1; sane: 1e-12 to 1e-3 (the defaults: 1e-9 for float64, "
            "1e-4 for float32)")
    try:
        v = number(name, rtol)
    except ValueError as e:
        raise ValueError(f"{e}: {sane}") from None
    if not lo <= v < hi:
        raise ValueError(f"{name} must be {sane}; got {shown(rtol)}")
    return v


def number(name: str, v, lo: float | None = None, *, positive: bool = False) -> float:
    """A finite real number (int or float; not a bool, not a string holding one: nothing is converted) as a float,
    >= lo or > 0 where asked; a one-line ValueError naming `name` otherwise."""
    if isinstance(v, str):
        raise ValueError(f"{name} must be a finite number, got {shown(v)} (a string, not a number: nothing is converted)")
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a finite number, got {shown(v)}")
    try:
        f = float(v)
    except OverflowError:  # an integer beyond float's range
        f = math.inf
    if not math.isfinite(f):
        raise ValueError(f"{name} must be a finite number, got {shown(v)}")
    if positive and not f > 0:
        raise ValueError(f"{name} must be a finite number > 0, got {shown(v)}")
    if lo is not None and f < lo:
        raise ValueError(f"{name} must be a finite number >= {lo:g}, got {shown(v)}")
    return f


def choice(name: str, v, choices, none: bool = False):
    """One of `choices` (strings; None too where `none`), else a one-line ValueError naming `name` and the choices."""
    if (none and v is None) or (isinstance(v, str) and v in choices):
        return v
    raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}{' or None' if none else ''}; got {shown(v)}")


def check_clip(clip) -> None:
    """clip: None, "torch", or a number c in (0, 0.5) (probabilities clipped to [c, 1 - c], Keras: 1e-7)."""
    if clip is None or (isinstance(clip, str) and clip == "torch"):
        return
    if isinstance(clip, str) or isinstance(clip, bool) or not isinstance(clip, (int, float, np.integer, np.floating)) \
            or not 0 < float(clip) < 0.5:
        raise ValueError(f"clip must be None, 'torch' or a float in (0, 0.5) such as 1e-7 (Keras), got {shown(clip)}")


def check_options(*, scale_kind, likelihood, out_kind, out_scale_kind, sigma2, clip, x_coding, bound, kl, estimator,
                  kl_weight, free_bits, reduction, grads_mode) -> tuple[float, float, float]:
    """Every keyword of make_case that is not an array, each of its type and range: (sigma2, kl_weight, free_bits)."""
    from .reduction import REDUCTIONS, is_declared_number

    choice("scale_kind", scale_kind, SCALES)
    choice("likelihood", likelihood, tuple(HEAD_LIKELIHOODS))
    if out_kind is not None and not (isinstance(out_kind, str) and out_kind in HEAD_LIKELIHOODS[likelihood]):
        raise ValueError(f"out_kind must be one of {', '.join(map(repr, HEAD_LIKELIHOODS[likelihood]))} or None for a "
                         f"{likelihood} decoder; got {shown(out_kind)}")
    choice("out_scale_kind", out_scale_kind, SCALES)
    s2 = number("sigma2", sigma2, positive=True)
    check_clip(clip)
    choice("x_coding", x_coding, X_CODINGS)
    choice("bound", bound, BOUNDS)
    choice("kl", kl, KL_MODES)
    choice("estimator", estimator, tuple(ESTIMATORS))
    beta, lam = number("kl_weight", kl_weight, 0.0), number("free_bits", free_bits, 0.0)
    if reduction is not None and not is_declared_number(reduction) and (not isinstance(reduction, str) or reduction not in REDUCTIONS):
        raise ValueError(f"reduction must be one of {', '.join(REDUCTIONS)}, a nonzero number alpha (the loss is alpha times the "
                         f"bound's batch sum), or None (found from the values); got {shown(reduction)}")
    if not (isinstance(grads_mode, str) and grads_mode in GRADS_MODES):
        raise ValueError(f"grads_mode must be 'partial' (jax.grad over a head function) or 'total' (retain_grad), got {shown(grads_mode)}")
    return s2, beta, lam


def make_case(x, mu, scale, out, loss, *, eps=None, z=None, scale_kind="log_var", likelihood="bernoulli", out_kind=None,
              out_scale=None, out_scale_kind="log_var", sigma2=1.0, clip=None, x_coding="auto", bound="elbo", kl="analytic",
              estimator="reparam", kl_weight=1.0, free_bits=0.0, reduction=None, grads=None, grads_mode="partial") -> HeadCase:
    """Validate a user's head into a HeadCase; every problem is a one-line ValueError naming the input."""
    from .reduction import is_declared_number

    s2, beta, lam = check_options(scale_kind=scale_kind, likelihood=likelihood, out_kind=out_kind, out_scale_kind=out_scale_kind,
                                  sigma2=sigma2, clip=clip, x_coding=x_coding, bound=bound, kl=kl, estimator=estimator,
                                  kl_weight=kl_weight, free_bits=free_bits, reduction=reduction, grads_mode=grads_mode)
    notes = []
    xa = _float("x", x).astype(np.float64)
    if xa.ndim != 2 or 0 in xa.shape:
        raise ValueError(f"x must be (N, D) with N, D >= 1, got shape {xa.shape}")
    N, D = xa.shape
    mu_a, s_a = _float("mu", mu), _float("scale", scale)
    if mu_a.ndim != 2 or mu_a.shape[0] != N or s_a.shape != mu_a.shape or mu_a.shape[1] == 0:
        raise ValueError(f"mu and scale must both be (N, Z) = ({N}, Z) with Z >= 1 (N = {N} from x), got {mu_a.shape} and {s_a.shape}")
    Z = mu_a.shape[1]
    mu_a, s_a = mu_a.astype(np.float64), s_a.astype(np.float64)
    check_raw("scale", scale_kind, s_a)
    pm1 = x_coding == "pm1" or (x_coding == "auto" and likelihood == "bernoulli" and np.any(xa == -1) and np.all(np.abs(xa) == 1))
    if pm1 and x_coding == "auto":
        notes.append("x holds -1 and +1: read as Bernoulli targets coded +-1 (HIPS autograd's convention), t = (x + 1) / 2")
    out_raw = _float("out", out)
    lik = head_likelihood(likelihood, out_kind, s2, out_scale_kind, clip, float_dtype(out_raw).name)
    t = lik.targets(xa, pm1)
    out_a = _samples("out", out_raw, N, D, notes).astype(np.float64)
    os_a = None
    if out_scale is not None:
        os_a = _samples("out_scale", _float("out_scale", out_scale), N, D, notes).astype(np.float64)
        if os_a.shape != out_a.shape:
            raise ValueError(f"out_scale must have out's shape {out_a.shape}, got {os_a.shape}")
        check_raw("out_scale", out_scale_kind, os_a)
    check_likelihood(lik, out_a, os_a, t)
    if (bound, kl) not in VALID or estimator not in VALID[(bound, kl)]:
        valid = ", ".join(f"{b}/{k}/{e}" for (b, k), es in VALID.items() for e in es)
        raise ValueError(f"bound/kl/estimator {bound}/{kl}/{estimator} is not one of {valid}")
    if lam > 0 and kl != "analytic":
        raise ValueError("free_bits floors each dimension's analytic KL: it needs kl='analytic'")
    if eps is None and z is None:
        raise ValueError("give the noise: eps (K, N, Z) with z = mu + std * eps, or the samples z, or both")
    sd = std_of(scale_kind, s_a)
    eps_a = z_a = eps_user = None
    if eps is not None:
        eps_a = _samples("eps", _float("eps", eps), N, Z, notes).astype(np.float64)
    if z is not None:
        z_a = _samples("z", _float("z", z), N, Z, notes).astype(np.float64)
    if eps_a is not None and z_a is not None and eps_a.shape != z_a.shape:
        raise ValueError(f"eps and z must have one shape, got {eps_a.shape} and {z_a.shape}")
    given = tuple(n for n, a in (("eps", eps_a), ("z", z_a)) if a is not None)
    if z_a is None:
        z_a = mu_a + sd * eps_a
    elif eps_a is None:
        eps_a = (z_a - mu_a) / sd
        notes.append("eps not given: read from z as (z - mu) / std")
    else:
        eps_user, eps_a = eps_a, (z_a - mu_a) / sd  # the head is what the loss saw: z; eps_user is checked against it
    if out_a.shape[0] != z_a.shape[0]:
        raise ValueError(f"out has K = {out_a.shape[0]} samples but the noise has K = {z_a.shape[0]}")
    la = _float("loss", loss)
    if la.ndim > 1 or (la.ndim == 1 and la.shape != (N,)) or la.size == 0:
        raise ValueError(f"loss must be a scalar or per point ({N},), got shape {la.shape}")
    if is_declared_number(reduction) and la.ndim != 0:
        raise ValueError("a reduction given as a number scales the batch sum: it needs a scalar loss")
    g, gd = {}, {}
    shapes = {"mu": mu_a.shape, "scale": mu_a.shape, "z": z_a.shape, "out": out_a.shape, "out_scale": out_a.shape}
    for k, v in (grads or {}).items():
        if k not in GRAD_KEYS:
            raise ValueError(f"grads has an unknown key {k!r}; its keys are gradients with respect to {', '.join(GRAD_KEYS)}")
        if v is None:
            continue
        a = _float(f"grads[{k!r}]", v)
        if k in ("z", "out", "out_scale") and a.ndim == 2:
            a = a[None]
        if a.shape != shapes[k]:
            raise ValueError(f"grads[{k!r}] must have {k}'s shape {shapes[k]}, got {a.shape}")
        g[k], gd[k] = a.astype(np.float64), float_dtype(a)
    if "out_scale" in g and os_a is None:
        raise ValueError("grads['out_scale'] given but no out_scale")
    if grads_mode == "total" and ({"mu", "scale"} & set(g)) and "z" not in g:
        raise ValueError("grads_mode='total' (retain_grad): the gradients of mu and scale hold the path through z, "
                         "so grads['z'] is needed to check them")
    return HeadCase(xa, t, mu_a, s_a, scale_kind, eps_a, z_a, given, out_a, os_a, lik, bound, kl, estimator, beta, lam,
                    la.astype(np.float64), float_dtype(la), reduction, g, gd, grads_mode, notes, eps_user)
