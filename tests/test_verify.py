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
