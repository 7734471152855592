"""`npvae verify` and npvae.testing.assert_vae_matches: pass on a correct VAE, fail naming the quantity on a wrong one."""

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest

from npvae import cli, testing, verify
from npvae.checks.check import gradient_model
from npvae.vae.model import flatten, param_names
from npvae.objectives import objective

from conftest import REPO

OPTIONS = dict(bound="iwae", kl="mc", estimator="dreg", likelihood="bernoulli", activation="tanh")


@pytest.fixture
def exported(tmp_path):
    """A verify file written by npvae itself, and its arrays for editing."""
    path = tmp_path / "ours.npz"
    assert cli.main(["verify", "--example", str(path)]) == 0
    with np.load(path, allow_pickle=False) as f:
        arrays = dict(f)
    return path, arrays


def _rewrite(path, arrays, **changes):
    arrays = {**arrays, **changes}
    np.savez(path, **arrays)
    return path


def _run(capsys, *argv):
    rc = cli.main(["verify", *map(str, argv)])
    captured = capsys.readouterr()
    return rc, captured.out + captured.err


def test_npvae_s_own_export_passes(exported, capsys):
    rc, out = _run(capsys, exported[0])
    assert rc == 0 and out.strip().endswith("13 passed, 0 failed")
    rc, out = _run(capsys, exported[0], "--json")
    report = json.loads(out)
    assert rc == 0 and report["passed"] and len(report["rows"]) == 13 and max(r["rel_error"] for r in report["rows"]) == 0.0


def test_a_perturbed_gradient_fails_and_is_named(exported, capsys, tmp_path):
    path, arrays = exported
    g = arrays["grad.decoder.1.W"].copy()
    g[2, 3] *= 1.001
    rc, out = _run(capsys, _rewrite(tmp_path / "bad.npz", arrays, **{"grad.decoder.1.W": g}))
    assert rc == 1
    failing = [line for line in out.splitlines() if line.rstrip().endswith("FAIL")]
    assert len(failing) == 1 and "grad decoder.1.W" in failing[0]


def test_a_transposed_square_weight_fails_on_values(exported, capsys, tmp_path):
    """encoder.1.W is 5 x 5: stored the torch way round it still has the right shape, and only the numbers show it."""
    path, arrays = exported
    rc, out = _run(capsys, _rewrite(tmp_path / "t.npz", arrays, **{"encoder.1.W": arrays["encoder.1.W"].T.copy()}))
    assert rc == 1 and any("values" in line and "FAIL" in line for line in out.splitlines())


def test_a_transposed_rectangular_weight_is_refused_with_a_hint(exported, capsys, tmp_path):
    path, arrays = exported
    rc, out = _run(capsys, _rewrite(tmp_path / "t.npz", arrays, **{"encoder.0.W": arrays["encoder.0.W"].T.copy()}))
    assert rc == 2 and "encoder.0.W" in out and "transposed?" in out


def test_a_wrong_bound_fails_on_values(exported, capsys, tmp_path):
    """The file says IWAE, but its values are the ELBO of the same log-weights (a mean, not a log-mean-exp)."""
    path, arrays = exported
    case = verify.read(path)
    elbo, _ = objective(case.params, case.arch, case.x, case.eps, bound="elbo", kl="mc")
    rc, out = _run(capsys, _rewrite(tmp_path / "t.npz", arrays, values=elbo))
    failing = [line for line in out.splitlines() if line.rstrip().endswith("FAIL")]
    assert rc == 1 and len(failing) == 1 and "values" in failing[0]


def test_the_loss_gradient_is_diagnosed(exported, capsys, tmp_path):
    path, arrays = exported
    neg = {k: -v for k, v in arrays.items() if k.startswith("grad.")}
    rc, out = _run(capsys, _rewrite(tmp_path / "t.npz", arrays, **neg))
    assert rc == 1 and out.count("minus ours") == 12


@pytest.mark.parametrize("edit,message", [
    (lambda a: a.pop("options"), "no 'options'"),
    (lambda a: a.update(options=np.array("{not json")), "not valid JSON"),
    (lambda a: a.update(options=np.array(json.dumps({"bound": "iwae"}))), "options lack kl, estimator, likelihood, activation"),
    (lambda a: a.update(options=np.array(json.dumps({**OPTIONS, "estimator": "stl"}))), "is not one of"),
    (lambda a: a.pop("grad.encoder.0.b"), "missing ['encoder.0.b']"),
    (lambda a: a.pop("eps"), "no 'eps'"),
    (lambda a: a.update(eps=a["eps"][:, :2]), "eps must be (K, 4, 3)"),
    (lambda a: a.update(values=np.full(4, np.nan)), "values holds non-finite values"),
    (lambda a: a.update(x=a["x"].astype(np.int64)), "x must be a float32 or float64 array"),
    (lambda a: a.update(extra=np.zeros(3)), "unexpected parameters ['extra']"),
])
def test_malformed_files_are_refused_clearly(exported, capsys, tmp_path, edit, message):
    path, arrays = exported
    arrays = dict(arrays)
    edit(arrays)
    np.savez(tmp_path / "m.npz", **arrays)
    rc, out = _run(capsys, tmp_path / "m.npz")
    assert rc == 2 and message in out, out


def test_a_pickled_array_is_refused_unread(exported, capsys, tmp_path):
    path, arrays = exported
    np.savez(tmp_path / "p.npz", **{**arrays, "x": np.array([object()], dtype=object)})
    rc, out = _run(capsys, tmp_path / "p.npz")
    assert rc == 2 and "refused without being read" in out


def test_assert_vae_matches_passes_and_names_what_differs():
    rng = np.random.default_rng(3)
    arch, params, x, eps = gradient_model(rng, "gaussian", "softplus")
    values, grads = objective(params, arch, x, eps, bound="elbo", kl="mc", estimator="stl")
    weights = dict(zip(param_names(arch), flatten(params)))
    g = dict(zip(param_names(arch), flatten(grads)))
    opts = dict(bound="elbo", kl="mc", estimator="stl", likelihood="gaussian", activation="softplus", sigma2=0.7)
    testing.assert_vae_matches(weights, x, eps, values, g, **opts)
    with pytest.raises(AssertionError, match=r"1 of 13 quantities differ(.|\n)*grad decoder.0.b: relative error"):
        testing.assert_vae_matches(weights, x, eps, values, {**g, "decoder.0.b": g["decoder.0.b"] * 1.01}, **opts)
    with pytest.raises(AssertionError, match="N = 4 times ours"):
        testing.assert_vae_matches(weights, x, eps, values, {n: 4 * v for n, v in g.items()}, **opts)


TORCH_CASES = ["--bound iwae --kl mc --estimator dreg", "--bound iwae --kl mc --estimator reparam",
               "--bound elbo --kl mc --estimator stl", "--bound elbo --kl analytic --estimator reparam --activation relu",
               "--bound elbo --kl mc --estimator reparam --dtype float32"]


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed (pip install torch): the PyTorch example is skipped")
@pytest.mark.parametrize("options", TORCH_CASES)
def test_the_pytorch_example_passes(tmp_path, options):
    out = tmp_path / "torch_vae.npz"
    script = REPO / "bench" / "examples" / "export_torch_vae.py"
    subprocess.run([sys.executable, str(script), str(out), *options.split()], check=True, capture_output=True)
    rows = verify.compare(verify.read(out))
    assert all(r["passed"] for r in rows), [(r["quantity"], r["rel_error"]) for r in rows if not r["passed"]]


# ---- issue 27, item 9: every option and every entry of a verify file is checked at the boundary -------------------
# Each mutation of a valid file (`npvae verify --example` / `--example-head`) must exit 2 with one stderr line
# "npvae verify: error: ..." naming the bad entry: never a traceback, never a report that blames the user's VAE.

import re  # noqa: E402

from npvae.head import file as head_file  # noqa: E402

NAN, INF = float("nan"), float("inf")
CHOICE_BAD = ["nope", 1, 1.5, True, [], {}, NAN]  # for an option that is one of a list of names
NUMBER_BAD = ["1", "nope", True, None, [1], {}, NAN, INF, -INF, 10**400]  # for a number: a numeric string is no number


def _names(message: str, entry: str) -> bool:
    """Whether a message names `entry` as a word of its own ("x", not the x of "exactly"; "encoder.0.W", not inside
    "grad.encoder.0.W")."""
    return re.search(rf"(?<![\w.]){re.escape(entry)}(?!\w)", message) is not None


def _one_line_error(capsys, path, *extra):
    """(rc, stderr's lines) of `npvae verify path`; a traceback fails the test where it happens."""
    rc = cli.main(["verify", str(path), *map(str, extra)])
    return rc, capsys.readouterr().err.strip().splitlines()


def _check_refusals(capsys, tmp_path, mutations) -> None:
    """Run every (label, entry, arrays) mutation; list every one not refused in one line naming its entry."""
    bad = []
    for i, (label, entry, arrays) in enumerate(mutations):
        path = tmp_path / f"m{i}.npz"
        np.savez(path, **arrays)
        try:
            rc, err = _one_line_error(capsys, path)
        except Exception as e:  # noqa: BLE001 (a traceback is a finding: list it with the rest)
            rc, err = f"raised {type(e).__name__}", [str(e)[:200]]
            capsys.readouterr()
        if not (rc == 2 and len(err) == 1 and err[0].startswith("npvae verify: error:") and _names(err[0], entry)):
            bad.append(f"{label}: rc {rc}, stderr {err}")
    assert not bad, f"{len(bad)} of {len(mutations)} mutations not refused in one line naming the entry:\n" + "\n".join(bad)


def _with_options(arrays, options=None, raw=None):
    return {**arrays, "options": np.array(raw if raw is not None else json.dumps(options))}


def _array_mutations(arrays, legit: dict) -> list:
    """Wrong values, dtypes and shapes for each array; `legit` maps an array to the mutations it may take (a 0-d loss)."""
    out = []
    for k, a in arrays.items():
        if k == "options":
            continue
        one_inf = a.astype(np.float64).copy()
        one_inf.flat[0] = np.inf
        cases = {"NaN": np.full_like(a, np.nan), "one inf": one_inf, "int64": a.astype(np.int64), "bool": a.astype(bool),
                 "float16": a.astype(np.float16), "complex": a.astype(np.complex128), "string": np.array("abc"),
                 "0-d": np.array(1.0), "extra axis": a[..., None], "shape (0, ...)": np.zeros((0,) + a.shape[1:])}
        if a.ndim:
            cases["one short"] = a[:-1]
        if a.ndim > 1:
            cases["flattened"] = a.ravel()
        out += [(f"{k} {m}", k, {**arrays, k: v}) for m, v in cases.items() if m not in legit.get(k, ())]
    return out


def _file_mutations(arrays) -> list:
    """What is wrong with the options entry itself, for either kind of file."""
    o = json.loads(str(arrays["options"]))
    raws = {"empty string": "", "not JSON": "{bound", "a list": "[]", "null": "null", "a number": "3", "a string": '"head"',
            "nested too deeply": "[" * 100000 + "]" * 100000, "a key twice": json.dumps(o)[:-1] + ", " + json.dumps(o)[1:]}
    out = [(f"options {n}", "options", _with_options(arrays, raw=r)) for n, r in raws.items()]
    out.append(("options with 0 entries", "options", {**arrays, "options": np.array([], dtype="<U1")}))
    out.append(("options with 2 entries", "options", {**arrays, "options": np.array([json.dumps(o)] * 2)}))
    out.append(("options a float array", "options", {**arrays, "options": np.array(1.0)}))
    out.append(("an unknown option", "frobnicate", _with_options(arrays, {**o, "frobnicate": 1})))
    return out


def _option_mutations(arrays, bad_values: dict) -> list:
    o = json.loads(str(arrays["options"]))
    return [(f"option {k}={v!r:.30}", k, _with_options(arrays, {**o, k: v})) for k, vs in bad_values.items() for v in vs]


def test_every_entry_of_a_model_file_is_checked(tmp_path, capsys):
    """The full-model file: every entry dropped, the options entry broken, each option of a wrong type or range, each
    array of a wrong dtype, shape or value: exit 2, one line, the entry named."""
    path = tmp_path / "ours.npz"
    assert cli.main(["verify", "--example", str(path)]) == 0
    capsys.readouterr()
    with np.load(path) as f:
        arrays = dict(f)
    mutations = [(f"drop {k}", k, {n: a for n, a in arrays.items() if n != k}) for k in arrays]
    mutations += _file_mutations(arrays)
    bad_values = {k: CHOICE_BAD + [None] for k in (*verify.REQUIRED_OPTIONS, "scale", "weight_layout", "x_coding")}
    bad_values["reduction"] = CHOICE_BAD  # None is its default: the bound per point
    bad_values.update({k: NUMBER_BAD + ([-1.0] if k != "min_log_var" else []) for k in verify.NUMBER_OPTIONS})
    bad_values["sigma2"] += [0.0, 0]
    bad_values["kl_weight"] += [0.5]  # a weighted IWAE is no bound: this file's bound is IWAE_4
    bad_values["free_bits"] += [0.5]  # free bits floor the analytic KL: this file's KL is Monte Carlo
    bad_values["check"] = ["head", "model"]  # a head file's mark, on a file of weights
    mutations += _option_mutations(arrays, bad_values)
    mutations += _array_mutations(arrays, {"values": ("0-d",), "eps": ("one short",)})  # a 0-d loss; K = 3 samples
    assert len(mutations) > 250
    _check_refusals(capsys, tmp_path, mutations)


def test_every_entry_of_a_head_file_is_checked(tmp_path, capsys):
    """The head file, the same way: its required arrays dropped (the gradients are optional), its options of a wrong
    type or range, each array wrong."""
    path = tmp_path / "head.npz"
    assert cli.main(["verify", "--example-head", str(path)]) == 0
    capsys.readouterr()
    with np.load(path) as f:
        arrays = dict(f)
    mutations = [(f"drop {k}", k, {n: a for n, a in arrays.items() if n != k}) for k in arrays if not k.startswith("grad.")]
    mutations += _file_mutations(arrays)
    nullable = ("out_kind", "clip", "reduction")  # None is their default
    bad_values = {k: CHOICE_BAD + ([None] if k not in nullable else [])
                  for k in ("scale_kind", "likelihood", "out_kind", "out_scale_kind", "x_coding", "bound", "kl", "estimator",
                            "grads_mode")}
    bad_values.update({k: NUMBER_BAD + [-1.0] for k in ("sigma2", "kl_weight", "free_bits")})
    bad_values["sigma2"] += [0.0]
    bad_values["clip"] = ["nope", "Torch", 0, 0.5, -1e-7, 1.5, True, [1], {}, NAN, INF]
    bad_values["reduction"] = ["nope", "average", True, [], {}, NAN, INF, 0]  # a number alpha is nonzero and finite
    bad_values["check"] = ["model", "Head", 1, None, True]
    mutations += _option_mutations(arrays, bad_values)
    o = json.loads(str(arrays["options"]))
    mutations += [("free_bits with a Monte Carlo KL", "free_bits", _with_options(arrays, {**o, "free_bits": 0.5, "kl": "mc"})),
                  ("IWAE with an analytic KL", "kl", _with_options(arrays, {**o, "bound": "iwae", "kl": "analytic"})),
                  ("clip on logits", "clip", _with_options(arrays, {**o, "out_kind": "logits", "clip": 1e-7})),
                  ("a gradient of no head tensor", "grad.W", {**arrays, "grad.W": np.zeros(3)}),
                  ("grad.out_scale without out_scale", "grad.out_scale", {**arrays, "grad.out_scale": arrays["grad.out"]}),
                  ("total gradients without grad.z", "grad.z", _with_options(arrays, {**o, "grads_mode": "total"}))]
    mutations += _array_mutations(arrays, {"loss": ("0-d",)})  # a scalar loss is what the file holds
    assert len(mutations) > 200
    _check_refusals(capsys, tmp_path, mutations)


@pytest.mark.parametrize("what", ["truncated", "empty", "text", "directory", "missing"])
def test_a_file_that_is_no_verify_file_is_refused_in_one_line(exported, tmp_path, capsys, what):
    data = exported[0].read_bytes()
    path = tmp_path / f"{what}.npz"
    if what == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif what == "empty":
        path.write_bytes(b"")
    elif what == "text":
        path.write_text("bound,kl\nelbo,mc\n")
    elif what == "directory":
        path.mkdir()
    rc, err = _one_line_error(capsys, path)
    assert rc == 2 and len(err) == 1 and err[0].startswith("npvae verify: error:") and str(path) in err[0], err


@pytest.mark.parametrize("kind", ["--example", "--example-head"])
@pytest.mark.parametrize("rtol", ["nan", "-1", "0", "inf", "-inf", "1", "2", "1e-20", "abc", ""])
def test_a_bad_rtol_is_refused_not_reported_as_failures(tmp_path, capsys, kind, rtol):
    """--rtol nan or -1 used to fail every quantity, blaming the VAE; inf or 1 passed anything. Now: exit 2, one line."""
    path = tmp_path / "f.npz"
    assert cli.main(["verify", kind, str(path)]) == 0
    capsys.readouterr()
    rc = cli.main(["verify", str(path), f"--rtol={rtol}"])
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert rc == 2 and captured.out == "" and len(err) == 1, (rc, captured)
    assert err[0].startswith("npvae verify: error: --rtol must be") and "< 1" in err[0], err


@pytest.mark.parametrize("kind", ["--example", "--example-head"])
def test_a_sane_rtol_is_taken(tmp_path, capsys, kind):
    path = tmp_path / "f.npz"
    assert cli.main(["verify", kind, str(path)]) == 0
    capsys.readouterr()
    for rtol in ("1e-12", "1e-6", "0.5"):
        assert cli.main(["verify", str(path), "--rtol", rtol, "--json"]) == 0
        rows = [r for r in json.loads(capsys.readouterr().out)["rows"] if r["quantity"] != "noise"]  # a test of its own
        assert rows and all(r["tol"] == float(rtol) for r in rows)


def test_the_library_refuses_a_bad_rtol(exported):
    case = verify.read(exported[0])
    for rtol in (NAN, -1.0, 0.0, INF, 1.0, 1e-20, "1e-9", True):
        with pytest.raises(ValueError, match="rtol must be") as e:
            verify.compare(case, rtol)
        assert "\n" not in str(e.value)
    assert all(r["passed"] for r in verify.compare(case, 1e-12))
    w = {n: a for n, a in zip(param_names(case.arch), flatten(case.params))}
    with pytest.raises(ValueError, match="rtol must be"):
        testing.assert_vae_matches(w, case.x, case.eps, case.values, case.grads, rtol=NAN, **OPTIONS)


def test_a_numeric_string_option_is_refused_not_converted(exported, tmp_path, capsys):
    """The issue's case: "kl_weight": "1" (and a sigma2 given as text) is refused, saying it is a string."""
    path, arrays = exported
    for k in ("kl_weight", "free_bits", "sigma2", "min_log_var"):
        np.savez(tmp_path / "s.npz", **_with_options(arrays, {**OPTIONS, k: "1"}))
        rc, err = _one_line_error(capsys, tmp_path / "s.npz")
        assert rc == 2 and err == [f"npvae verify: error: option {k} must be a finite number, got '1' (a string, not a number: "
                                   "nothing is converted)"], err
    h = tmp_path / "h.npz"
    head_file.example(h)
    with np.load(h) as f:
        harrays = dict(f)
    np.savez(tmp_path / "hs.npz", **_with_options(harrays, {"check": "head", "out_kind": "probs", "kl_weight": "1"}))
    rc, err = _one_line_error(capsys, tmp_path / "hs.npz")
    assert rc == 2 and len(err) == 1 and "option kl_weight must be a finite number, got '1' (a string" in err[0], err


def test_an_option_that_makes_npvae_s_own_bound_infinite_is_refused(tmp_path, capsys):
    """A sigma2 so small that npvae's own Gaussian log-likelihood is -inf: no comparison is made (it would fail every
    quantity, blaming the VAE); the options are named instead."""
    rng = np.random.default_rng(1)
    arch, params, x, _ = gradient_model(rng, "gaussian", "tanh")
    eps = rng.standard_normal((2, x.shape[0], arch.latent_dim))
    values, grads = objective(params, arch, x, eps, bound="elbo", kl="analytic", estimator="reparam")
    opts = dict(bound="elbo", kl="analytic", estimator="reparam", likelihood="gaussian", activation="tanh", sigma2=1e-320)
    verify.write(tmp_path / "g.npz", params, arch, x, eps, opts, values, grads)
    rc, err = _one_line_error(capsys, tmp_path / "g.npz")
    assert rc == 2 and len(err) == 1 and "not finite" in err[0] and _names(err[0], "sigma2"), err
