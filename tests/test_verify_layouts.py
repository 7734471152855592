"""The full-model check on models as frameworks store them: each declared layout round-trips, each mis-declaration fails.

Oracles: npvae.objective itself on an equivalent model in npvae's form (a log_std head is a log_var head with half
the weights; x coded 2x - 1 is a first layer with weights W / 2 and bias b + 1^T W / 2 on 0/1 data), a plain-NumPy
ELBO with central differences for the nonlinear scales, and torch's autograd where torch is installed.
"""

import json

import numpy as np
import pytest

from npvae import cli, testing, verify
from npvae.checks.check import gradient_model
from npvae.checks.gradcheck import rel_err
from npvae.nn.layers import Dense
from npvae.vae.model import Arch, VAEParams, flatten, init_params, param_names
from npvae.objectives import VALID, objective
from npvae.checks.verify_layouts import bound_and_grad_at_head

from conftest import FD_RTOL

OPTIONS = dict(bound="iwae", kl="mc", estimator="dreg", likelihood="bernoulli", activation="tanh")


def file_arrays(params, arch, x, eps, values, grads, **options):
    """A verify file's arrays in npvae's own form (what npvae.verify.write stores), options as a dict."""
    names = param_names(arch)
    return {"x": x, "eps": eps, "values": values, "options": {**OPTIONS, **options},
            **dict(zip(names, flatten(params))), **{f"grad.{n}": g for n, g in zip(names, flatten(grads))}}


def as_heads(arrays, last, Z):
    """The encoder's last layer [mu, scale] stored as heads encoder.mu.* and encoder.scale.*, parameters and gradients."""
    a = dict(arrays)
    for pre in ("", "grad."):
        W, b = a.pop(f"{pre}{last}.W"), a.pop(f"{pre}{last}.b")
        a.update({f"{pre}encoder.mu.W": W[:, :Z], f"{pre}encoder.mu.b": b[:Z], f"{pre}encoder.scale.W": W[:, Z:],
                  f"{pre}encoder.scale.b": b[Z:]})
    return a


def transposed(arrays):
    """Every W and its gradient as torch's Linear.weight, (out, in)."""
    return {k: v.T.copy() if k.endswith(".W") else v for k, v in arrays.items()}


def bias_rows(arrays):
    """Every bias and its gradient as (1, out)."""
    return {k: v[None, :] if k.endswith(".b") else v for k, v in arrays.items()}


def save(tmp_path, arrays, name="f.npz", **options):
    np.savez(tmp_path / name, **{**arrays, "options": np.array(json.dumps({**arrays["options"], **options}))})
    return tmp_path / name


def case_of(arrays, **options):
    weights = {k: v for k, v in arrays.items() if k.startswith(("encoder.", "decoder."))}
    grads = {k[len("grad."):]: v for k, v in arrays.items() if k.startswith("grad.")}
    return verify.make_case(weights, arrays["x"], arrays["eps"], arrays["values"], grads, {**arrays["options"], **options})


def run(capsys, path):
    rc = cli.main(["verify", str(path)])
    c = capsys.readouterr()
    return rc, c.out + c.err


def line_of(out, quantity):
    return next(line for line in out.splitlines() if line.strip().startswith(quantity))


@pytest.fixture
def ours():
    """npvae's own IWAE_4 with DReG on a 6-5-5-3 tanh Bernoulli VAE, in npvae's form."""
    rng = np.random.default_rng(0)
    arch, params, x, _ = gradient_model(rng, "bernoulli", "tanh")
    eps = rng.standard_normal((4, x.shape[0], 3))
    values, grads = objective(params, arch, x, eps, bound="iwae", kl="mc", estimator="dreg")
    return arch, params, x, eps, file_arrays(params, arch, x, eps, values, grads)


# ---- the maths at the head is npvae.objective's ---------------------------------------------------------------

@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian", "gaussian-learned"])
@pytest.mark.parametrize("bound,kl,estimator", [(b, k, e) for (b, k), es in VALID.items() for e in es])
def test_the_head_maths_is_npvae_objective_for_log_var(likelihood, bound, kl, estimator):
    rng = np.random.default_rng(1)
    arch, params, x, eps = gradient_model(rng, likelihood, "softplus")
    kw = dict(bound=bound, kl=kl, estimator=estimator, kl_weight=0.7 if bound == "elbo" else 1.0,
              free_bits=0.05 if kl == "analytic" else 0.0)
    v, g = objective(params, arch, x, eps, **kw)
    hv, hg = bound_and_grad_at_head(params, arch, x, x, eps, "log_var", **kw)
    assert rel_err(v, hv) <= 1e-14 and max(rel_err(a, b) for a, b in zip(flatten(g), flatten(hg))) <= 1e-14


def test_separate_log_var_heads_give_the_concatenated_layer_s_numbers(ours):
    arrays = ours[4]
    v, g = verify.ours(case_of(arrays))
    hv, hg = verify.ours(case_of(as_heads(arrays, "encoder.2", 3)))
    assert rel_err(v, hv) <= 1e-14
    assert rel_err(hg["encoder.mu.W"], g["encoder.2.W"][:, :3]) <= 1e-14 and rel_err(hg["encoder.scale.b"], g["encoder.2.b"][3:]) <= 1e-14
    assert all(rel_err(hg[n], g[n]) <= 1e-14 for n in g if not n.startswith("encoder.2"))


# ---- round trips: a file in each layout, written from a known model, passes; mis-declared, it fails -----------

LAYOUTS = {"heads": lambda a: as_heads(a, "encoder.2", 3), "out_in": transposed, "bias (1, out)": bias_rows,
           "all three": lambda a: bias_rows(transposed(as_heads(a, "encoder.2", 3)))}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_each_stored_layout_round_trips(ours, tmp_path, capsys, layout):
    a = LAYOUTS[layout](ours[4])
    path = save(tmp_path, a, **({"weight_layout": "out_in"} if layout in ("out_in", "all three") else {}))
    rc, out = run(capsys, path)
    n = sum(k.startswith("grad.") for k in a) + 1
    assert rc == 0 and out.strip().endswith(f"{n} passed, 0 failed"), out
    assert max(r["rel_error"] for r in verify.compare(verify.read(path))) <= 1e-14


def test_a_transposed_file_mis_declared_is_refused_with_the_option_named(ours, tmp_path, capsys):
    rc, out = run(capsys, save(tmp_path, transposed(ours[4])))
    assert rc == 2 and 'transposed? npvae stores W as (in, out)' in out and 'declare weight_layout "out_in"' in out, out
    rc, out = run(capsys, save(tmp_path, ours[4], weight_layout="out_in"))
    assert rc == 2 and 'transposed? weight_layout "out_in" reads W as (out, in)' in out, out


def test_a_square_model_mis_declared_fails_on_values_with_the_layout_named(tmp_path, capsys):
    """D = H = Z with heads: every W is square, so only the numbers tell (in, out) from (out, in)."""
    rng = np.random.default_rng(2)
    arch = Arch(4, (4,), 4, "tanh")
    p = init_params(arch, rng)
    params = VAEParams(*[tuple(Dense(d.W, rng.uniform(-0.5, 0.5, d.b.shape)) for d in part) for part in p])
    x, eps = (rng.random((5, 4)) < 0.5) * 1.0, rng.standard_normal((2, 5, 4))
    values, grads = objective(params, arch, x, eps, bound="elbo", kl="mc", estimator="stl")
    a = transposed(as_heads(file_arrays(params, arch, x, eps, values, grads, bound="elbo", estimator="stl"), "encoder.1", 4))
    assert all(v.shape[0] == v.shape[1] for k, v in a.items() if k.endswith(".W"))
    assert run(capsys, save(tmp_path, a, weight_layout="out_in"))[0] == 0
    rc, out = run(capsys, save(tmp_path, a))
    assert rc == 1 and "FAIL" in line_of(out, "values") and 'agrees with ours when declared weight_layout "out_in"' in out, out


@pytest.mark.parametrize("heads", [False, True])
def test_a_log_std_head_round_trips_and_declared_as_log_var_fails(ours, tmp_path, capsys, heads):
    """Oracle: npvae's model with log_var = 2 s, i.e. the scale columns of the last layer halved, and d/ds = 2 d/dlog_var."""
    a = dict(ours[4])
    for pre, f in (("", 0.5), ("grad.", 2.0)):
        for k in ("encoder.2.W", "encoder.2.b"):
            v = a[pre + k].copy()
            v[..., 3:] *= f
            a[pre + k] = v
    a = as_heads(a, "encoder.2", 3) if heads else a
    rc, out = run(capsys, save(tmp_path, a, scale="log_std"))
    assert rc == 0, out
    assert max(r["rel_error"] for r in verify.compare(verify.read(save(tmp_path, a, scale="log_std")))) <= 1e-13
    rc, out = run(capsys, save(tmp_path, a))
    assert rc == 1 and "FAIL" in line_of(out, "values") and 'agrees with ours when declared scale "log_std"' in out, out


def _x_pm1(arrays):
    """The same model on data coded 2x - 1: the first layer W / 2, b + 1^T W / 2; d/dW = 2 d/dW' - d/db', d/db = d/db'."""
    a = dict(arrays)
    W, b, gW, gb = a["encoder.0.W"], a["encoder.0.b"], a["grad.encoder.0.W"], a["grad.encoder.0.b"]
    a.update({"x": 2.0 * a["x"] - 1.0, "encoder.0.W": W / 2.0, "encoder.0.b": b + W.sum(axis=0) / 2.0,
              "grad.encoder.0.W": 2.0 * gW - gb[None, :]})
    return a


def test_x_coded_pm1_round_trips_and_is_refused_undeclared(ours, tmp_path, capsys):
    a = _x_pm1(ours[4])
    path = save(tmp_path, a, x_coding="pm1")
    rc, out = run(capsys, path)
    assert rc == 0 and max(r["rel_error"] for r in verify.compare(verify.read(path))) <= 1e-12, out
    rc, out = run(capsys, save(tmp_path, a))
    assert rc == 2 and 'declare x_coding "pm1"' in out, out
    rc, out = run(capsys, save(tmp_path, ours[4], x_coding="pm1"))
    assert rc == 2 and "needs every x in {-1, +1}" in out, out
    # A planted error: the encoder fed (x + 1) / 2 while the file says it reads x: the values differ.
    wrong = {**ours[4], "x": 2.0 * ours[4]["x"] - 1.0}
    rc, out = run(capsys, save(tmp_path, wrong, x_coding="pm1"))
    assert rc == 1 and "FAIL" in line_of(out, "values"), out


# ---- the nonlinear scales: a plain-NumPy ELBO and central differences ----------------------------------------

LOG_VAR = {"std": lambda s: 2 * np.log(s), "var": np.log, "softplus": lambda s: 2 * np.log(np.logaddexp(0, s))}


def _numpy_elbo(w, x, eps, scale):
    """The analytic-KL ELBO per point of a tanh 6-5-5-3 Bernoulli VAE with heads, written out (Kingma & Welling 2014)."""
    h = np.tanh(x @ w["encoder.0.W"] + w["encoder.0.b"])
    h = np.tanh(h @ w["encoder.1.W"] + w["encoder.1.b"])
    mu, lv = h @ w["encoder.mu.W"] + w["encoder.mu.b"], LOG_VAR[scale](h @ w["encoder.scale.W"] + w["encoder.scale.b"])
    z = mu + np.exp(lv / 2) * eps
    d = np.tanh(np.tanh(z @ w["decoder.0.W"] + w["decoder.0.b"]) @ w["decoder.1.W"] + w["decoder.1.b"])
    logits = d @ w["decoder.2.W"] + w["decoder.2.b"]
    return (x * logits - np.logaddexp(0, logits)).sum(-1).mean(0) - 0.5 * (mu**2 + np.exp(lv) - 1 - lv).sum(-1)


@pytest.mark.parametrize("scale", sorted(LOG_VAR))
def test_a_nonlinear_scale_head_matches_a_numpy_elbo_and_its_central_differences(ours, scale):
    rng = np.random.default_rng(4)
    a = as_heads(ours[4], "encoder.2", 3)
    a["encoder.scale.W"], a["encoder.scale.b"] = 0.1 * a["encoder.scale.W"], 1.0 + rng.random(3)  # s > 0.5 for std, var
    weights = {k: v for k, v in a.items() if k.startswith(("encoder.", "decoder."))}
    x, eps = a["x"], a["eps"]
    case = verify.make_case(weights, x, eps, np.zeros(x.shape[0]), {k: 0 * v for k, v in weights.items()},
                            dict(OPTIONS, bound="elbo", kl="analytic", estimator="reparam", scale=scale))
    values, grads = verify.ours(case)
    assert rel_err(values, _numpy_elbo(weights, x, eps, scale)) <= 1e-13
    h = 1e-5
    for name, g in grads.items():  # one random direction per parameter (jax's check_grads habit)
        u = rng.standard_normal(g.shape)
        f = [_numpy_elbo({**weights, name: weights[name] + sign * h * u}, x, eps, scale).mean() for sign in (1, -1)]
        fd = (f[0] - f[1]) / (2 * h)
        assert abs(fd - np.sum(g * u)) <= FD_RTOL[np.float64] * max(abs(fd), 1e-3), name


# ---- one scalar loss instead of per-point values --------------------------------------------------------------

ALPHA = {"mean": lambda N, D: 1 / N, "sum": lambda N, D: 1.0, "-mean": lambda N, D: -1 / N, "-sum": lambda N, D: -1.0,
         "-mean/D": lambda N, D: -1 / (N * D)}


def _scalar(arrays, reduction, grads_of=None):
    """The file with values the loss a * sum_n b_n and gradients those of a * sum (or of another reduction's)."""
    N, D = arrays["x"].shape
    a_v, a_g = ALPHA[reduction](N, D), ALPHA[grads_of or reduction](N, D)
    return {k: (a_g * N * v if k.startswith("grad.") else v) for k, v in arrays.items()} | {"values": np.asarray(a_v * arrays["values"].sum())}


@pytest.mark.parametrize("reduction", ALPHA)
def test_a_scalar_loss_round_trips_under_its_reduction(ours, tmp_path, capsys, reduction):
    path = save(tmp_path, _scalar(ours[4], reduction), reduction=reduction)
    rc, out = run(capsys, path)
    assert rc == 0 and max(r["rel_error"] for r in verify.compare(verify.read(path))) <= 1e-13, out


def test_a_scalar_loss_with_the_wrong_reduction_fails_and_names_the_right_one(ours, tmp_path, capsys):
    rc, out = run(capsys, save(tmp_path, _scalar(ours[4], "-mean", grads_of="-sum"), reduction="-mean"))
    assert rc == 1 and "ok" in line_of(out, "values") and out.count("equals ours for reduction '-sum'") == 12, out
    rc, out = run(capsys, save(tmp_path, _scalar(ours[4], "-mean")))  # no reduction declared: a scalar is the batch mean
    assert rc == 1 and "equals ours for reduction '-mean'" in line_of(out, "values"), out


# ---- what the full model cannot express, and malformed options -------------------------------------------------

HEAD_LINE = ("which the full-model check cannot express; check its head instead: npvae.testing.assert_head_matches "
             "(docs/verify.md, 'Checking the head')")


@pytest.mark.parametrize("extra", [{"encoder.0.running_mean": np.zeros(5)}, {"encoder.bn1.weight": np.ones(5)},
                                   {"encoder.0.W": np.zeros((5, 6, 3, 3))}])
def test_batch_norm_and_convolutions_are_refused_with_the_head_check_named(ours, tmp_path, capsys, extra):
    rc, out = run(capsys, save(tmp_path, {**ours[4], **extra}))
    assert rc == 2 and "this model has batch-norm/convolution layers" in out and HEAD_LINE in out, out
    assert len(out.strip().splitlines()) == 1


@pytest.mark.parametrize("options,message", [
    ({"kl_weight": "1"}, "option kl_weight must be a finite number, got '1'"),
    ({"kl_weight": True}, "option kl_weight must be a finite number, got True"),
    ({"scale": "logvar"}, "option scale must be one of 'log_var', 'log_std', 'std', 'var', 'softplus'; got 'logvar'"),
    ({"scale": 2}, "option scale must be a string, got 2"),
    ({"weight_layout": "torch"}, "option weight_layout must be one of 'in_out', 'out_in'"),
    ({"x_coding": "pm"}, "option x_coding must be one of '01', 'pm1'"),
    ({"reduction": "none"}, "option reduction must be one of '-mean', 'mean'"),
    ({"reduction": "-sum"}, "option reduction declares a 0-d loss, but values are per point (4,)"),
    ({"likelihood": "gaussian", "x_coding": "pm1"}, 'x_coding "pm1" codes a Bernoulli target as +-1'),
    ({"scale": "std"}, "the encoder's scale output is declared a std but holds values <= 0"),
    ({"kl_weight": 0.5}, "kl_weight must be 1 for the IWAE bound"),
    ({"flavour": "x"}, "unknown options ['flavour']"),
])
def test_malformed_options_are_refused_in_one_line(ours, tmp_path, capsys, options, message):
    rc, out = run(capsys, save(tmp_path, ours[4], **options))
    assert rc == 2 and message in out and len(out.strip().splitlines()) == 1, out


@pytest.mark.parametrize("raw,message", [(np.array("{}"), "options are empty: they must declare at least bound"),
                                         (np.array([], dtype=str), "'options' must be one JSON string, got 0 entries"),
                                         (np.array("[]"), "options must be a JSON object, got list")])
def test_empty_or_odd_options_are_refused_clearly(ours, tmp_path, capsys, raw, message):
    np.savez(tmp_path / "o.npz", **{**ours[4], "options": raw})
    rc, out = run(capsys, tmp_path / "o.npz")
    assert rc == 2 and message in out, out


def test_assert_vae_matches_takes_the_layout_as_keywords(ours):
    a = bias_rows(transposed(_scalar(as_heads(ours[4], "encoder.2", 3), "-sum")))
    weights = {k: v for k, v in a.items() if k.startswith(("encoder.", "decoder."))}
    grads = {k[5:]: v for k, v in a.items() if k.startswith("grad.")}
    kw = dict(OPTIONS, weight_layout="out_in", reduction="-sum")
    testing.assert_vae_matches(weights, a["x"], a["eps"], a["values"], grads, **kw)
    with pytest.raises(AssertionError, match=r"14 of 15 quantities differ(.|\n)*equals ours for reduction '-mean'"):
        testing.assert_vae_matches(weights, a["x"], a["eps"], a["values"], {n: g / 4 for n, g in grads.items()}, **kw)
    with pytest.raises(ValueError, match="this model has batch-norm/convolution layers"):
        testing.assert_vae_matches({**weights, "encoder.0.running_var": np.ones(5)}, a["x"], a["eps"], a["values"], grads, **kw)


# ---- torch's autograd: models written the way torch stores them ------------------------------------------------

TORCH_LOG_VAR = {"log_var": lambda s, t: s, "log_std": lambda s, t: 2 * s, "std": lambda s, t: 2 * t.log(s),
                 "var": lambda s, t: t.log(s), "softplus": lambda s, t: 2 * t.log(t.nn.functional.softplus(s))}
TORCH_CASES = [(scale, bound, kl) for scale in TORCH_LOG_VAR for bound, kl in (("elbo", "analytic"), ("elbo", "mc"), ("iwae", "mc"))]


def _torch_file(torch, scale, bound, kl, x_coding, rng):
    """A torch VAE with separate mu and scale heads (nn.Linear: weights (out, in)), its loss -sum of the bound, autograd."""
    t = torch
    t.manual_seed(int(rng.integers(1 << 30)))
    D, H, Z, N, K = 6, 5, 3, 4, 3
    lin = lambda i, o: t.nn.Linear(i, o, dtype=t.float64)
    layers = {"encoder.0": lin(D, H), "encoder.mu": lin(H, Z), "encoder.scale": lin(H, Z), "decoder.0": lin(Z, H), "decoder.1": lin(H, D)}
    if scale in ("std", "var"):
        with t.no_grad():
            layers["encoder.scale"].weight.mul_(0.1)
            layers["encoder.scale"].bias.fill_(1.0)  # a std or variance must come out positive
    x01 = t.tensor((rng.random((N, D)) < 0.5) * 1.0)
    x = 2 * x01 - 1 if x_coding == "pm1" else x01
    eps = t.tensor(rng.standard_normal((K, N, Z)))
    h = t.tanh(layers["encoder.0"](x))
    mu, lv = layers["encoder.mu"](h), TORCH_LOG_VAR[scale](layers["encoder.scale"](h), t)
    z = mu + (0.5 * lv).exp() * eps
    logits = layers["decoder.1"](t.tanh(layers["decoder.0"](z)))
    if x_coding == "pm1":  # HIPS autograd's bernoulli_log_density: targets -1 or 1
        log_px = -t.logaddexp(t.zeros(()), -logits * x).sum(-1)
    else:
        log_px = (x * logits - t.nn.functional.softplus(logits)).sum(-1)
    log_n = lambda z, m, v: -0.5 * (np.log(2 * np.pi) + v + (z - m) ** 2 / v.exp()).sum(-1)
    a = log_px + log_n(z, 0 * z, 0 * z) - log_n(z, mu, lv)
    if kl == "analytic":
        bound_ = log_px.mean(0) - 0.5 * (mu**2 + lv.exp() - 1 - lv).sum(-1)
    else:
        bound_ = a.mean(0) if bound == "elbo" else t.logsumexp(a, 0) - np.log(K)
    loss = -bound_.sum()
    params = {f"{n}.{f}": getattr(m, attr) for n, m in layers.items() for f, attr in (("W", "weight"), ("b", "bias"))}
    grads = t.autograd.grad(loss, list(params.values()))
    arrays = {n: p.detach().numpy().copy() for n, p in params.items()}
    arrays.update({f"grad.{n}": g.numpy().copy() for n, g in zip(params, grads)})
    options = dict(bound=bound, kl=kl, estimator="reparam", likelihood="bernoulli", activation="tanh", scale=scale,
                   weight_layout="out_in", x_coding=x_coding, reduction="-sum")
    return {"x": x.numpy(), "eps": eps.numpy(), "values": loss.detach().numpy(), "options": options, **arrays}


@pytest.mark.parametrize("scale,bound,kl", TORCH_CASES)
def test_a_torch_vae_with_heads_in_its_own_layout_passes(tmp_path, capsys, scale, bound, kl):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(TORCH_CASES.index((scale, bound, kl)))
    for x_coding in ("01", "pm1"):
        a = _torch_file(torch, scale, bound, kl, x_coding, rng)
        rc, out = run(capsys, save(tmp_path, a))
        assert rc == 0, out
        wrong = "log_std" if scale != "log_std" else "log_var"
        rc, out = run(capsys, save(tmp_path, a, scale=wrong))
        assert rc in (1, 2) and ("FAIL" in out or "holds values <= 0" in out), out
