"""A whole-model gradient check for any hand-written backward pass: <grad, u> against central differences of loss along u.

Framework-neutral: the model is a flat float64 vector theta (P,), `loss(theta) -> float` (noise held fixed) and
`grad(theta) -> (P,)`. Directions u are standard normal on one named block of theta at a time (so a report can
say which block disagrees), plus directions over all of theta. Along u, f(t) = loss(theta + t u).

Error model (Nocedal & Wright, section 8.1, as npvae.checks.gradcheck): a central difference with step h has
    |fd - f'|  <=  h^2 / 6 |f'''|  +  noise / h,     noise = eps_mach (max |f| + sum |g_j theta_j|)
(rounding of f, and of theta + t u, each worth ~eps relative). f''' comes from the wider points of the same
stencil, (f(4h) - 2f(2h) + 2f(-2h) - f(-4h)) / 16 h^3, and h = (3 noise / |f'''|)^(1/3) minimises the bound.
tol = FD_SAFETY (100: f is a sum of many rounded terms) * bound  +  RESIDUAL_WEIGHT * residual / h (below).

Kinks (ReLU, abs, max) are found from the values: on the 7 points t = 0, +-h, +-2h, +-4h a smooth f is a cubic
up to O(h^4 f''''), so the residual of the least-squares cubic is noise-sized (measured < 2 noise), while a
derivative jump J at t0 in (-3h, 3h) leaves a residual >= 0.11 J h (>= 0.31 J h within (-h, h); a jump J in f
itself, >= 0.13 J). A residual above KINK_NOISE noise is a kink: the stencil shrinks by SHRINK (a kink off the
point is left outside), and below REL_STEP_MIN the direction is redrawn. A kink too small to be seen still
moves fd by at most 1.04 residual / h (the worst case over t0 in (-h, h); 1.0 for a jump in f), which
RESIDUAL_WEIGHT (10) covers, so a lone kink cannot make a correct gradient FAIL (its err/tol stays < 0.11).
`kinks(theta)`, where given, must also keep every pre-activation's sign with margin (as npvae.checks.gradcheck).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..checks.gradcheck import DIRECTION_TRIES, EPS_MACH, FD_SAFETY, KINK_MARGIN

OFFSETS = np.array([-4.0, -2.0, -1.0, 0.0, 1.0, 2.0, 4.0])  # the stencil, in units of h
_Q = np.linalg.qr(np.vander(OFFSETS, 4), mode="complete")[0][:, 4:]  # (7, 3): the complement of cubics on OFFSETS
REL_STEP_MAX, REL_STEP_MIN = 1e-4, 1e-9  # h * rms(u) / max(1, rms(theta)): a step per coordinate, relative to theta
SHRINK = 8.0
KINK_NOISE = 1e3  # residual / noise above which the stencil holds a kink; smooth VAE losses measure < 2
RESIDUAL_WEIGHT = 10.0  # times the 1.04 that an unseen kink can move fd by, per unit residual / h
ALL = "(all of theta)"


class BlockRow(NamedTuple):
    """One block's result: worst |analytic - fd| / tol over its directions, and analytic / fd (a least-squares fit) when FAIL."""

    name: str
    size: int
    status: str  # "ok", "FAIL", or "inconclusive" (every direction drawn crossed a kink)
    worst: float
    analytic: tuple  # <grad, u> per direction checked
    fd: tuple  # the central differences
    tol: tuple
    ratio: float  # nan unless FAIL
    drawn: int  # directions drawn, those redrawn for kinks included


class GradReport(NamedTuple):
    """Rows per block; passed when no block FAILs (an inconclusive block is not checked, but fails nothing)."""

    rows: tuple

    @property
    def passed(self) -> bool:
        return all(r.status != "FAIL" for r in self.rows)

    @property
    def all_ok(self) -> bool:
        return all(r.status == "ok" for r in self.rows)

    def summary(self) -> str:
        """A readable table, then each disagreeing block with what its ratios suggest."""
        return _summary(self.rows)


def _numpy(a) -> np.ndarray:
    """np.asarray, through .detach().cpu().numpy() for torch-like tensors (torch is never imported)."""
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(a)


def _value(out, where: str) -> float:
    """The loss as a finite Python float."""
    a = _numpy(out)
    if a.ndim != 0 or a.dtype.kind not in "fiu":
        raise ValueError(f"loss must return a real scalar, got shape {a.shape} dtype {a.dtype} {where}")
    if a.dtype.kind == "f" and a.dtype != np.float64:
        raise ValueError(f"loss must be computed in float64 (its rounding is the error model's), got {a.dtype} {where}")
    v = float(a)
    if not np.isfinite(v):
        raise ValueError(f"loss is not finite ({v}) {where}")
    return v


def _gradient(g, n: int) -> np.ndarray:
    g = _numpy(g)
    if g.shape != (n,):
        raise ValueError(f"grad must have theta's shape ({n},), got {g.shape}")
    if g.dtype != np.float64:
        raise ValueError(f"grad must be float64 (float32 rounding, ~1e-7, is above this check's tolerance), got {g.dtype}")
    if not np.all(np.isfinite(g)):
        raise ValueError("grad contains non-finite values")
    return g


def _indices(name, sel, n: int) -> np.ndarray:
    """A block's index array into theta (P,): a slice, or integer indices in range without repeats."""
    if not isinstance(name, str):
        raise ValueError(f"block names must be strings, got {name!r}")
    if isinstance(sel, slice) and any(v is not None and not -n <= v <= n for v in (sel.start, sel.stop)):
        raise ValueError(f"block {name!r} slices outside theta (size {n}): {sel}")
    idx = np.arange(n)[sel] if isinstance(sel, slice) else _numpy(sel)
    if idx.ndim != 1 or idx.dtype.kind not in "iu" or idx.size == 0:
        raise ValueError(f"block {name!r} must be a slice or a non-empty 1-D integer index array")
    if idx.min() < 0 or idx.max() >= n:
        raise ValueError(f"block {name!r} indexes outside theta (size {n}): {idx.min()}..{idx.max()}")
    if np.unique(idx).size != idx.size:
        raise ValueError(f"block {name!r} repeats an index")
    return idx


def _blocks(blocks, n: int) -> list:
    """[(name, indices)], the blocks disjoint; one block 'theta' by default, else the blocks and all of theta."""
    if blocks is None:
        return [("theta", np.arange(n))]
    if not isinstance(blocks, dict) or not blocks:
        raise ValueError("blocks must be a non-empty dict name -> slice or index array")
    out, owner = [], np.full(n, -1)
    for k, (name, sel) in enumerate(blocks.items()):
        idx = _indices(name, sel, n)
        if np.any(owner[idx] >= 0):
            raise ValueError(f"blocks {list(blocks)[owner[idx].max()]!r} and {name!r} overlap")
        owner[idx] = k
        out.append((name, idx))
    return out + [(ALL, np.arange(n))]


def _direction(f, g, theta, u, idx, kinks):
    """(analytic, fd, tol) along u, or None when a kink is in the way (the core: no checking)."""
    vals = {}

    def at(t):
        if t not in vals:
            vals[t] = f(theta + t * u)
        return vals[t]

    unit = max(1.0, float(np.sqrt(np.mean(theta[idx] ** 2)))) / float(np.sqrt(np.mean(u[idx] ** 2)))
    h_min = REL_STEP_MIN * unit
    input_noise = float(np.abs(g[idx]) @ np.abs(theta[idx]))  # rounding theta + t u moves f by ~eps sum |g_j theta_j|

    def stencil(h):
        """(residual of the cubic fit, f''' from the wide points, noise) on the 7 points at step h > 0."""
        fs = np.array([at(o * h) for o in OFFSETS])
        df = fs - fs[3]  # differences of the rounded values: the cubic's constant drops out before any rounding
        third = (df[6] - 2 * df[5] + 2 * df[1] - df[0]) / (16 * h**3)
        return float(np.linalg.norm(_Q.T @ df)), third, EPS_MACH * (float(np.max(np.abs(fs))) + input_noise)

    H = REL_STEP_MAX * unit
    while True:
        res, third, noise = stencil(H)
        if res <= KINK_NOISE * noise:
            break
        H /= SHRINK
        if H < h_min:
            return None
    h_opt = (3 * noise / abs(third)) ** (1 / 3) if third != 0 else H
    h = H / 2.0 ** int(np.clip(np.round(np.log2(H / h_opt)), 0, np.floor(np.log2(H / h_min))))  # shares points with H
    if h < H:
        res, third2, noise = stencil(h)
        if res > KINK_NOISE * noise:
            return None
        third = max(abs(third), abs(third2))
    if kinks is not None:
        a0 = np.ravel(_numpy(kinks(theta.copy())))
        moved = [np.abs(np.ravel(_numpy(kinks(theta + o * h * u))) - a0) for o in OFFSETS if o != 0]
        if np.any(np.abs(a0) < KINK_MARGIN * np.max(moved, axis=0)):  # each pre-activation keeps its sign, with margin
            return None
    plus, minus = theta + h * u, theta - h * u
    analytic = float(g @ (plus - minus)) / (2 * h)  # along the direction actually taken, after rounding theta + h u
    fd = (at(h) - at(-h)) / (2 * h)
    tol = FD_SAFETY * (h * h / 6 * abs(third) + noise / h) + RESIDUAL_WEIGHT * res / h
    return analytic, fd, tol


def _row(name, idx, f, g, theta, rng, n_directions, kinks) -> BlockRow:
    """n_directions directions on idx, each redrawn up to DIRECTION_TRIES times while kinked."""
    got, drawn = [], 0
    for _ in range(n_directions):
        for _ in range(DIRECTION_TRIES):
            u = np.zeros_like(theta)
            u[idx] = rng.standard_normal(idx.size)
            drawn += 1
            r = _direction(f, g, theta, u, idx, kinks)
            if r is not None:
                got.append(r)
                break
        else:
            break  # a block whose point sits on a kink: the other directions would cross it too
    if not got:
        return BlockRow(name, idx.size, "inconclusive", float("nan"), (), (), (), float("nan"), drawn)
    a, d, t = (np.array(c) for c in zip(*got))
    err = np.abs(a - d)
    with np.errstate(divide="ignore"):
        worst = float(np.max(np.where(err == 0, 0.0, err / t)))  # a zero tolerance (f exactly linear) admits no error
    fail = worst > 1.0
    ratio = float(a @ d / (d @ d)) if fail and d @ d > 0 else (float("inf") if fail else float("nan"))
    return BlockRow(name, idx.size, "FAIL" if fail else "ok", worst, tuple(a), tuple(d), tuple(t), ratio, drawn)


def check_flat_gradient(loss, grad, theta, *, blocks=None, rng, n_directions=4, kinks=None) -> GradReport:
    """Check grad (P,) of loss at theta (P,) by central differences along random directions, per block; see the module."""
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    if not callable(loss) or not (grad is None or callable(grad)) or not (kinks is None or callable(kinks)):
        raise ValueError("loss, grad (or None) and kinks (or None) must be callables of theta")
    if isinstance(n_directions, bool) or not isinstance(n_directions, (int, np.integer)) or n_directions < 1:
        raise ValueError(f"n_directions must be an integer >= 1, got {n_directions!r}")
    theta = _numpy(theta)
    if theta.ndim != 1 or theta.dtype != np.float64 or theta.size == 0:
        raise ValueError(f"theta must be a non-empty 1-D float64 vector, got shape {theta.shape} dtype {theta.dtype}")
    if not np.all(np.isfinite(theta)):
        raise ValueError("theta contains non-finite values")
    theta = theta.copy()
    if kinks is not None:
        a0 = _numpy(kinks(theta.copy()))
        if a0.dtype.kind not in "fiu" or not np.all(np.isfinite(a0)):
            raise ValueError(f"kinks(theta) must return finite real pre-activations, got dtype {a0.dtype}")
    out = loss(theta.copy())
    if grad is None:
        if not (isinstance(out, (tuple, list)) and len(out) == 2):
            raise ValueError("with grad=None, loss(theta) must return a tuple (value, gradient)")
        _value(out[0], "at theta")
        g = _gradient(out[1], theta.size)
    else:
        if isinstance(out, (tuple, list)):
            raise ValueError("loss returned a tuple: pass grad=None to use its second element as the gradient")
        _value(out, "at theta")
        g = _gradient(grad(theta.copy()), theta.size)
    split = grad is None

    def f(x):
        v = loss(x)
        return _value(v[0] if split else v, "at a point theta + t u near theta")

    plan = _blocks(blocks, theta.size)
    return GradReport(tuple(_row(name, idx, f, g, theta, rng, n_directions, kinks) for name, idx in plan))


def _constant(r: BlockRow) -> bool:
    """Whether a FAIL row's analytic = ratio * fd along every direction (up to tol and 1e-3 relative)."""
    a, d, t = np.array(r.analytic), np.array(r.fd), np.array(r.tol)
    return bool(np.isfinite(r.ratio) and np.all(np.abs(a - r.ratio * d) <= t + 1e-3 * np.abs(a)))


def _hint(r: BlockRow) -> str:
    """What a FAIL row's ratios suggest."""
    a, d, t = np.array(r.analytic), np.array(r.fd), np.array(r.tol)
    if np.all(np.abs(d) <= t):
        return "the loss does not change along this block, but your gradient does: a gradient for an unused parameter, or in the wrong place"
    if abs(r.ratio) < 1e-3 or np.all(np.abs(a) <= t):
        return f"{r.ratio:.2g}x: the gradient is missing here (zero, never computed or never accumulated)"
    if not _constant(r):
        spread = a / np.where(d == 0, np.nan, d)
        return (f"not a constant factor (analytic/fd from {np.nanmin(spread):.3g} to {np.nanmax(spread):.3g}): "
                "a wrong formula, a transposed or misindexed array, or a mix-up with another block")
    if abs(r.ratio + 1) < 1e-3:
        return "-1x: the sign is flipped (the gradient of the objective maximised, not of the loss?)"
    sign = "the sign is flipped and " if r.ratio < 0 else ""
    return f"your gradient is {r.ratio:.4g}x the finite difference: {sign}a constant factor (2 or 1/2, a sum vs a mean, N?)"


def _summary(rows) -> str:
    bad = [r for r in rows if r.status == "FAIL"]
    head = "gradient check: " + ("FAIL" if bad else "ok") + " (" + ", ".join(
        f"{sum(r.status == s for r in rows)} {s}" for s in ("ok", "FAIL", "inconclusive")) + ")"
    width = max(len(r.name) for r in rows)
    lines = [head, f"  {'block':<{width}}  {'size':>8}  {'used/drawn':>10}  {'err/tol':>9}  status        analytic/fd"]
    for r in rows:
        ratio = "" if r.status != "FAIL" else f"{r.ratio:.4g}x" if _constant(r) else "varies"
        lines.append(f"  {r.name:<{width}}  {r.size:>8}  {len(r.fd):>5}/{r.drawn:<4}  {r.worst:>9.3g}  {r.status:<12}  {ratio}")
    named = [r for r in bad if r.name != ALL]
    for r in bad:
        if r.name == ALL and named:
            lines.append(f"{ALL}: disagrees through the blocks above")
        else:
            lines.append(f"{r.name}: {'outside every block: ' if r.name == ALL else ''}{_hint(r)}")
    ratios = [r.ratio for r in named if np.isfinite(r.ratio) and _constant(r)]
    if len(ratios) >= 2 and len(ratios) == len(named) and np.ptp(ratios) <= 1e-3 * abs(ratios[0]):
        lines.append(f"every disagreeing block is off by the same {ratios[0]:.4g}x: a sum instead of a mean "
                     f"(batch size {ratios[0]:.0f}?) or one scale applied to the whole gradient")
    for r in rows:
        if r.status == "inconclusive":
            lines.append(f"{r.name}: inconclusive, all {r.drawn} directions drawn crossed a kink at the point "
                         "(a pre-activation at exactly 0? move the point, e.g. nonzero biases)")
    return "\n".join(lines)
