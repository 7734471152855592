"""`npvae verify FILE`: someone else's VAE (a verify file, or the head of one) against npvae (npvae.verify, npvae.head)."""

from __future__ import annotations

import json


def cmd_verify(args) -> int:
    from .. import verify
    from ..head import file as head_file

    args.rtol = _rtol(args.rtol)  # before anything is written or read: a bad option never reaches a report
    if getattr(args, "example_head", False):
        head_file.example(args.file)
        print(f"npvae verify: wrote {args.file}, the head of pytorch/examples' VAE (log-variance, probabilities, BCE summed + KL) "
              f"with its gradients; check it with: npvae verify {args.file}")
        return 0
    if args.example:
        _write_example(args.file, verify)
        print(f"npvae verify: wrote {args.file}, npvae's own IWAE_4 with DReG on a 6-5-5-3 tanh Bernoulli VAE; check it with: npvae verify {args.file}")
        return 0
    from ..store.checkpoint import read_arrays

    arrays = read_arrays(args.file, text=("options",))
    options = head_file.read_options(arrays, args.file, 'a JSON string: {"check": "head", ...} for a head file; bound, kl, '
                                     "estimator, likelihood, activation for an MLP VAE's weights")
    if head_file.is_head_file(arrays, options):
        return _verify_head(args, head_file.case_from_arrays(arrays, options))
    case = verify.case_from_arrays(arrays, options, args.file)
    rows = verify.compare(case, args.rtol)
    ok = all(r["passed"] for r in rows)
    if args.json:
        print(json.dumps({"passed": ok, "arch": case.arch.spec, "options": case.options, "rows": rows}, indent=1))
        return 0 if ok else 1
    o = case.options
    declared = "".join(f" {k}={o[k]}" for k, v in verify.OPTION_DEFAULTS.items() if k in verify.CHOICES and o[k] != v)
    print(f"npvae verify {args.file}: {case.arch.spec} {case.arch.activation} {o['likelihood']}, {o['bound']} kl={o['kl']} "
          f"{o['estimator']}{declared}, N={case.x.shape[0]}, K={case.eps.shape[0]}; relative error max|theirs - ours| / max|ours|")
    for r in rows:
        print(f"  {r['quantity']:<24} {r['rel_error']:>10.2e}  tol {r['tol']:.0e} ({r['dtype']})  {'ok' if r['passed'] else 'FAIL'}"
              + (f"  {r['hint']}" if r["hint"] else ""))
    n_fail = sum(not r["passed"] for r in rows)
    print(f"{len(rows) - n_fail} passed, {n_fail} failed")
    return 0 if ok else 1


def _rtol(text) -> float | None:
    """--rtol as a number (argparse hands it over as text, so that a bad one is one line like any other error here)."""
    from ..head.case import RTOL_RANGE, check_rtol

    if isinstance(text, str):
        try:
            text = float(text)
        except ValueError:
            raise ValueError(f"--rtol must be a number, got {text!r}: a relative error, {RTOL_RANGE[0]:.1e} <= --rtol < 1") from None
    return check_rtol(text, "--rtol")


def _write_example(path, verify) -> None:
    """A verify file written by npvae itself: a small VAE's IWAE_4 with the DReG estimator, in float64."""
    import numpy as np

    from ..checks.check import gradient_model
    from ..objectives import objective

    rng = np.random.default_rng(0)
    arch, params, x, _ = gradient_model(rng, "bernoulli", "tanh")
    eps = rng.standard_normal((4, x.shape[0], arch.latent_dim))
    options = dict(bound="iwae", kl="mc", estimator="dreg", likelihood="bernoulli", activation="tanh")
    values, grads = objective(params, arch, x, eps, bound="iwae", kl="mc", estimator="dreg")
    verify.write(path, params, arch, x, eps, options, values, grads)


def _verify_head(args, case) -> int:
    """npvae verify on a head file: the head check's report, exit 0 if every row agrees, 1 if not."""
    from ..head.check import compare

    report = compare(case, args.rtol)
    if args.json:
        print(json.dumps({"passed": report.passed, "check": "head", "reduction": report.reduction, "notes": report.notes,
                          "rows": report.rows}, indent=1, default=float))
    else:
        K, N, Z = case.z.shape
        print(f"npvae verify {args.file}: the head of a VAE, {case.lik.name} ({case.lik.out_kind}), scale {case.scale_kind}, "
              f"{case.bound} kl={case.kl} {case.estimator}, N={N}, K={K}, Z={Z}; relative error max|theirs - ours| / max|ours|")
        print(report.summary())
    return 0 if report.passed else 1
