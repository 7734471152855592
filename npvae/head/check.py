"""The head check: a user's loss and its head gradients against npvae's, with a report that says what is wrong.

Order of the report: the noise (is eps standard normal, is z = mu + std * eps), the loss value (which reduction of
the bound it is; if none, which classic mistake it equals), then each head gradient given, against the gradient
of alpha * (the bound's batch sum, or the estimator's surrogate) with alpha the reduction found:
    grads_mode "partial": gradients of a head function whose inputs mu, scale, z, out are independent (jax.grad)
    grads_mode "total":   retain_grad() on tensors of one graph: out's is partial; mu's and scale's hold the path
                          through z = mu + std * eps, which is taken out with the user's dL/dz before comparing:
                          dL/dmu - sum_k dL/dz_k, and dL/dscale - sum_k dL/dz_k eps_k dstd/dscale. dL/dz itself
                          holds the decoder's Jacobian, which is the user's network: it is used, not compared.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..checks.gradcheck import rel_err
from . import reduction as red
from .case import check_rtol, make_case
from .hypotheses import FACTORS, conventions, gradient_hypotheses, value_hypotheses
from .noise import normality, sample_row
from .reference import reference
from .scales import dlog_var_ds, std_of


class HeadReport(NamedTuple):
    """One row per quantity (noise, z, value, each gradient), the reduction found, and notes on the layout."""

    rows: list
    reduction: str | None
    notes: list
    passed: bool

    def summary(self) -> str:
        """The report as text: a line per quantity, a hint under each failure."""
        lines = [f"  note: {n}" for n in self.notes]
        for r in self.rows:
            err = "" if np.isnan(r["rel_error"]) else f"{r['rel_error']:.2e}"
            tol = "" if np.isnan(r["tol"]) else f"tol {r['tol']:.0e}"
            lines.append(f"  {r['quantity']:<36} {err:>10}  {tol:<9}  {'ok' if r['passed'] else 'FAIL'}"
                         + (f"  {r['detail']}" if r.get("detail") and r["passed"] else ""))
            if r["hint"]:
                lines.append(f"      {r['hint']}")
        n_fail = sum(not r["passed"] for r in self.rows)
        lines.append(f"{len(self.rows) - n_fail} passed, {n_fail} failed")
        return "\n".join(lines)


def check_head(x, mu, scale, out, loss, *, rtol=None, **options) -> HeadReport:
    """Compare a user's head with npvae's reference (npvae.testing.assert_head_matches documents the arguments)."""
    case = make_case(x, mu, scale, out, loss, **options)
    return compare(case, rtol)


def _tol(rtol, dtype):
    return rtol if rtol is not None else red.RTOL[np.dtype(dtype)]


def compare(case, rtol=None) -> HeadReport:
    """The rows of the report for a validated HeadCase."""
    rtol = check_rtol(rtol)
    N, D = case.x.shape
    K = case.z.shape[0]
    notes = list(case.notes)
    rows = []
    # 1. The noise: the user's own eps if given, else the eps implied by z.
    eps_seen = case.eps_user if case.eps_user is not None else case.eps
    what = "eps" if "eps" in case.given else "eps read from z as (z - mu) / std"
    rows.append(normality(eps_seen, what))
    tol = _tol(rtol, case.loss_dtype)
    if case.eps_user is not None:
        rows.append(sample_row(case.z, case.mu, case.s, case.scale_kind, case.eps_user, tol))
    # 2. The value.
    ref = reference(case)
    mag = _magnitude(case, ref)
    found = red.find(case.loss, ref.values, N, D, K, case.reduction, tol, mag)
    vrow = {"quantity": "loss value", "tol": tol, "hint": "", "detail": ""}
    name = alpha = None
    if found:
        name, alpha, err = found
        vrow.update(rel_error=err, passed=True, detail=f"= {red.words(name)}")
        notes.append(_reduction_note(name, N, D, K, case.loss.ndim == 1))
    elif ref.surrogate is not None and (hit := red.find(case.loss, ref.surrogate, N, D, K, case.reduction, tol, mag)):
        name, alpha, err = hit  # a DReG loss that returns its surrogate's value, sum_k stop(w_k)^2 a_k, not the bound
        vrow.update(rel_error=err, passed=True, detail=f"= {red.words(name).replace('the bound', 'the DReG surrogate sum_k w_k^2 a_k')}")
        notes.append(_reduction_note(name, N, D, K, case.loss.ndim == 1) + "; of DReG's surrogate sum_k stop(w_k)^2 a_k, not of the bound")
    elif convention := next(((note, c_ref, hit) for note, c_ref in conventions(case)
                             if (hit := red.find(case.loss, c_ref.values, N, D, K, case.reduction, tol, mag))), None):
        note, ref, (name, alpha, err) = convention  # a framework's clipping, not a mistake: the model is correct
        vrow.update(rel_error=err, passed=True, detail=f"= {red.words(name)}")
        notes.append(_reduction_note(name, N, D, K, case.loss.ndim == 1) + "; it " + note)
    else:
        near, best = red.nearest(case.loss, ref.values, N, D, K, case.reduction, mag)
        vrow.update(rel_error=best, passed=False)
        for hint, b in value_hypotheses(case, ref):
            hit = red.find(case.loss, b, N, D, K, case.reduction, tol, mag)
            if hit:
                name, alpha = hit[0], hit[1]
                vrow["hint"] = f"{hint} (with your loss = {red.words(name)})"
                break
        else:
            vrow["hint"] = (_scaling(case.loss, ref.values) + f", which is none of the reductions (nearest: {near!r}) nor a "
                            "classic mistake; compare the terms: " + _terms(case, ref))
    rows.append(vrow)
    # 3. The gradients, of alpha * (sum_n b_n); alpha from the value, or measured from the gradients if the value failed.
    if case.grads:
        user = _user_grads(case)
        if alpha is None:
            alpha, name = _alpha_from_grads(case, ref, user[0], N, D, K)
            if name is not None:
                notes.append(f"gradients compared as those of {red.words(name)} (reduction {name!r}), read from the gradients")
        rows += _gradient_rows(case, ref, user, alpha, rtol)
    return HeadReport(rows, name, notes, all(r["passed"] for r in rows))


def _magnitude(case, ref):
    """Per point, the size of the terms the loss is made of, |reconstruction| + beta |KL|: the scale of its rounding."""
    m = np.abs(ref.recon) + case.kl_weight * np.abs(ref.kl)
    return np.where(np.isfinite(m), m, 0.0)  # an unclipped log(0) is the reference's -inf, not a scale of rounding


def _reduction_note(name, N, D, K, per_point) -> str:
    note = f"your loss is {red.words(name)} (reduction {name!r})"
    same = red.ties(name, N, D, K, per_point)
    return note + (f"; at N = {N}, D = {D}, K = {K} that is also {', '.join(map(repr, same))}" if same else "")


def _scaling(loss, b) -> str:
    """What the loss is as a multiple of the bound: exact for a scalar, a least-squares fit (and its residual) per point."""
    if loss.ndim == 0:
        return f"your loss is {float(loss) / float(b.sum()):.6g} times the batch sum of the bound"
    a = float(np.dot(loss, b) / max(float(np.dot(b, b)), 1e-300))
    return f"your loss per point is at best {a:.6g} times the bound per point (leaving a relative error {red.value_error(loss, b, a):.1e})"


def _terms(case, ref) -> str:
    """The reference's terms, batch-summed, for a user to compare with their own."""
    kl = "KL" if case.kl == "analytic" else "mean_k [log q - log p(z)]"
    return (f"ours: bound sum {ref.values.sum():.6g} = reconstruction {ref.recon.sum():.6g} - {kl} {ref.kl.sum():.6g}"
            + (f" (kl_weight {case.kl_weight:g})" if case.kl_weight != 1 else ""))


def _user_grads(case):
    """The user's gradients as partial derivatives of the head function (total ones with the path through z taken out),
    and the magnitude each was computed at: a total's rounding is relative to the total, not to what is left of it."""
    g = dict(case.grads)
    scale = {k: float(np.max(np.abs(v))) for k, v in g.items()}
    if case.grads_mode == "total":
        gz = g["z"]
        if "mu" in g:
            g["mu"] = g["mu"] - gz.sum(0)
        if "scale" in g:
            dstd = std_of(case.scale_kind, case.s) * 0.5 * dlog_var_ds(case.scale_kind, case.s)
            g["scale"] = g["scale"] - (gz * case.eps).sum(0) * dstd
        del g["z"]
    return g, scale


def _alpha_from_grads(case, ref, user, N, D, K):
    """The named reduction the gradients show (out's first, then z's, mu's, scale's), or the loss's own scale when
    none shows one: (alpha, name or None). Never 1 by default, which would read a loss's gradient as a sign bug."""
    for key in ("out", "out_scale", "z", "mu", "scale"):
        if key not in user or ref.grads.get(key) is None or not np.any(ref.grads[key]):
            continue
        u, r = user[key], ref.grads[key]
        a = float(np.sum(u * r) / float(np.sum(r * r)))
        for n in red.candidates(case.loss, case.reduction):
            if abs(a - red.alpha(n, N, D, K)) <= 1e-6 * abs(red.alpha(n, N, D, K)):
                return red.alpha(n, N, D, K), n
    b = ref.values
    fit = float(case.loss) / float(b.sum()) if case.loss.ndim == 0 else float(np.dot(case.loss, b) / max(float(np.dot(b, b)), 1e-300))
    return (fit if np.isfinite(fit) and fit != 0 else 1.0), None


def _gradient_rows(case, ref, user_grads, alpha, rtol):
    rows = []
    user, magnitude = user_grads
    hyps = None
    floor_alt = _other_side_of_the_floor(case, rtol)
    for key in ("out", "out_scale", "z", "mu", "scale"):
        if key not in user:
            continue
        ours = alpha * ref.grads[key]
        tol = _tol(rtol, case.grads_dtype[key])
        diff = np.abs(user[key] - ours)
        if floor_alt is not None and key in ("mu", "scale"):  # a KL_j at lambda in the user's rounding: either side is right
            diff = np.minimum(diff, np.abs(user[key] - alpha * floor_alt.grads[key]))
        err = float(np.max(diff)) / max(float(np.max(np.abs(ours))), magnitude[key], 1e-300)
        label = f"grad {key}" + (" (path through z removed)" if case.grads_mode == "total" and key in ("mu", "scale") else "")
        row = {"quantity": label, "rel_error": err, "tol": tol, "passed": err <= tol, "hint": "", "detail": ""}
        if not row["passed"]:
            if hyps is None:
                hyps = gradient_hypotheses(case)
            for hint, alt in hyps:
                if rel_err(user[key], alpha * alt.grads[key]) <= tol:
                    row["hint"] = hint
                    break
            else:
                for f, why in FACTORS:
                    zero = f == 0.0 and float(np.max(np.abs(user[key]))) == 0.0
                    if zero or (f != 0.0 and rel_err(user[key], f * ours) <= tol):
                        row["hint"] = f"your gradient is {why}"
                        break
                else:
                    row["hint"] = _ratio_hint(user[key], ours)
        rows.append(row)
    if case.grads_mode == "total" and "z" in case.grads:
        rows.append({"quantity": "grad z", "rel_error": float("nan"), "tol": float("nan"), "passed": True, "hint": "",
                     "detail": "used to take the path through z out of mu's and scale's (it holds your decoder's Jacobian)"})
    return rows


def _other_side_of_the_floor(case, rtol):
    """The reference with each free-bits dimension whose KL_j is lambda to the user's rounding on the other side, or None."""
    if case.kl != "analytic" or case.free_bits <= 0:
        return None
    from .reference import kl_per_dim
    from .scales import log_var_of

    kl_j = kl_per_dim(case.mu, log_var_of(case.scale_kind, case.s))
    tol = _tol(rtol, min(case.grads_dtype.values(), key=lambda d: d.itemsize)) if case.grads_dtype else 0.0
    near = np.abs(kl_j - case.free_bits) <= tol * max(case.free_bits, 1.0)
    return reference(case, flip=near) if np.any(near) else None


def _ratio_hint(u, ours) -> str:
    """A least-squares factor between the user's gradient and ours, when it explains most of it."""
    a = float(np.sum(u * ours) / max(float(np.sum(ours * ours)), 1e-300))
    resid = rel_err(u, a * ours)
    if resid < 1e-6:
        return f"your gradient is {a:.6g} times ours: a reduction or weight that the value does not share?"
    return f"your gradient differs from ours by more than a factor (best factor {a:.3g} leaves {resid:.1e})"
