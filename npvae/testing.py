"""Assertions for a user's own test suite, in the style of numpy.testing: does my VAE compute what npvae computes?

    import npvae.testing
    npvae.testing.assert_vae_matches(weights, x, eps, values, grads, bound="iwae", kl="mc", estimator="dreg",
                                     likelihood="bernoulli", activation="tanh")

weights and grads map npvae's parameter names (encoder.0.W, encoder.0.b, ..., decoder.L.b; W as (in, out)) to
arrays; values is the bound per point, grads the gradient of its batch mean. See docs/verify.md.
"""

from __future__ import annotations

from . import verify


def assert_vae_matches(weights: dict, x, eps, values, grads: dict, *, bound: str, kl: str, estimator: str,
                       likelihood: str, activation: str, rtol: float | None = None, **options) -> None:
    """Raise AssertionError naming every quantity (values, each gradient) that differs from npvae's by more than rtol.

    rtol defaults to npvae.verify.RTOL for the dtype of each quantity (1e-9 for float64, 1e-4 for float32).
    options: kl_weight, free_bits, sigma2, min_log_var, as npvae.objective takes them; and how the model is stored
    (npvae.checks.verify_layouts): scale (the encoder's second output: "log_var", "log_std", "std", "var", "softplus"),
    weight_layout ("in_out", or torch's "out_in"), x_coding ("01", or "pm1": x in {-1, +1}, target (x + 1) / 2) and,
    for a 0-d `values`, reduction ("mean" by default, "-mean", "sum", "-sum", ...: grads are then that scalar's).
    Separate heads encoder.mu.W/b, encoder.scale.W/b and biases of shape (1, out) are read from the names and shapes.
    """
    case = verify.make_case(dict(weights), x, eps, values, dict(grads), dict(bound=bound, kl=kl, estimator=estimator,
                                                                           likelihood=likelihood, activation=activation, **options))
    bad = [r for r in verify.compare(case, rtol) if not r["passed"]]
    if bad:
        lines = [f"  {r['quantity']}: relative error {r['rel_error']:.3e} > {r['tol']:.1e}" + (f" ({r['hint']})" if r["hint"] else "")
                 for r in bad]
        raise AssertionError(f"{len(bad)} of {len(case.grads) + 1} quantities differ from npvae's {bound}/{kl}/{estimator}:\n"
                             + "\n".join(lines))


def assert_head_matches(x, mu, scale, out, loss, *, eps=None, z=None, scale_kind="log_var", likelihood="bernoulli",
                        out_kind=None, out_scale=None, out_scale_kind="log_var", sigma2=1.0, clip=None, x_coding="auto",
                        bound="elbo", kl="analytic", estimator="reparam", kl_weight=1.0, free_bits=0.0, reduction=None,
                        grads=None, grads_mode="partial", rtol=None):
    """Raise AssertionError, with npvae's report, unless the loss and head gradients equal npvae's at this head.

    x (N, D) the data (0/1, or +-1 with x_coding="pm1"); mu, scale (N, Z) the encoder's outputs, scale in scale_kind
    (log_var, log_std, std, var, softplus); eps and/or z (K, N, Z), or (N, Z) for K = 1; out (K, N, D) the decoder's
    outputs (out_kind: "logits" or "probs" for bernoulli, "mean" for gaussian with sigma2 or gaussian-learned with
    out_scale in out_scale_kind); clip: None, a float (Keras clips probabilities at 1e-7) or "torch" (logs clamped at
    -100); loss: a scalar or per point (N,); reduction: None (found from the values) or a name of
    npvae.head.reduction.REDUCTIONS ("-mean", "-sum", ...); grads: the loss's gradients with respect to "mu",
    "scale", "z", "out", "out_scale" (any subset), as jax.grad over a head function gives them (grads_mode="partial")
    or as retain_grad() does (grads_mode="total", needs "z"). Arrays may be NumPy, torch or JAX. Returns the report.
    """
    from .head import check_head

    report = check_head(x, mu, scale, out, loss, eps=eps, z=z, scale_kind=scale_kind, likelihood=likelihood, out_kind=out_kind,
                        out_scale=out_scale, out_scale_kind=out_scale_kind, sigma2=sigma2, clip=clip, x_coding=x_coding,
                        bound=bound, kl=kl, estimator=estimator, kl_weight=kl_weight, free_bits=free_bits,
                        reduction=reduction, grads=grads, grads_mode=grads_mode, rtol=rtol)
    if not report.passed:
        raise AssertionError(f"the head differs from npvae's {bound}/{kl}/{estimator}:\n{report.summary()}")
    return report
