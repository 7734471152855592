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
    options: kl_weight, free_bits, sigma2, min_log_var, as npvae.objective takes them.
    """
    case = verify.make_case(dict(weights), x, eps, values, dict(grads), dict(bound=bound, kl=kl, estimator=estimator,
                                                                           likelihood=likelihood, activation=activation, **options))
    bad = [r for r in verify.compare(case, rtol) if not r["passed"]]
    if bad:
        lines = [f"  {r['quantity']}: relative error {r['rel_error']:.3e} > {r['tol']:.1e}" + (f" ({r['hint']})" if r["hint"] else "")
                 for r in bad]
        raise AssertionError(f"{len(bad)} of {len(case.grads) + 1} quantities differ from npvae's {bound}/{kl}/{estimator}:\n"
                             + "\n".join(lines))
