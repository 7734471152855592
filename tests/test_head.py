"""The head check's reference against independent oracles: npvae.objective on the same model (values, and every
estimator's gradient after the chain rule through npvae's own decoder and encoder), and central differences of the
head function in float64; then reductions, hints, layouts and the boundary."""

import numpy as np
import pytest

import npvae
from npvae.checks.check import gradient_model
from npvae.maths.estimators import VALID
from npvae.head import check_head
from npvae.head.case import make_case
from npvae.head.reference import reference
from npvae.head.scales import SCALES, dlog_var_ds, log_var_of
from npvae.nn.mlp import mlp_backward
from npvae.vae.model import decode, encode
from npvae.testing import assert_head_matches

from fake_tensor import FakeTensor

CASES = [(b, k, e) for (b, k), es in VALID.items() for e in es]


def npvae_head(seed, likelihood="bernoulli"):
    """An npvae MLP VAE's head at a batch: (arch, params, x, eps, mu, log_var, z, out, dec_cache)."""
    rng = np.random.default_rng(seed)
    arch, params, x, eps = gradient_model(rng, likelihood, "tanh")
    mu, lv, _ = encode(params, arch, x)
    z = mu + np.exp(0.5 * lv) * eps
    out, dec_cache = decode(params, arch, z)
    return arch, params, x, eps, mu, lv, z, out, dec_cache


@pytest.mark.parametrize("bound,kl,estimator", CASES)
@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_reference_equals_objective_after_the_chain_rule(bound, kl, estimator, likelihood):
    """Head values = npvae.objective's; head partials pushed through npvae's decoder and z = mu + std eps = its gradients."""
    arch, params, x, eps, mu, lv, z, out, dec_cache = npvae_head(3, likelihood)
    values, grads = npvae.objective(params, arch, x, eps, bound=bound, kl=kl, estimator=estimator)
    case = make_case(x, mu, lv, out, values, eps=eps, likelihood=likelihood, sigma2=0.7, bound=bound, kl=kl, estimator=estimator)
    ref = reference(case)
    np.testing.assert_allclose(ref.values, values, rtol=1e-13, atol=1e-13)
    N, (K, _, Z) = x.shape[0], z.shape
    dec_ref = reference(case, estimator="reparam") if estimator == "dreg" else ref  # DReG's decoder gets IWAE's gradient
    dec_grads, _ = mlp_backward(dec_ref.grads["out"].reshape(K * N, -1), dec_cache)
    enc_out = ref.grads["out"].reshape(K * N, -1)
    _, dz_dec = mlp_backward(enc_out, dec_cache)  # J^T (c_k dr/dout): the encoder's path through the decoder
    dz = ref.grads["z"] + dz_dec.reshape(K, N, Z)
    dmu = ref.grads["mu"] + dz.sum(0)
    dlv = ref.grads["scale"] + (dz * eps * 0.5 * np.exp(0.5 * lv)).sum(0)
    h, enc_cache = npvae.nn.mlp.mlp_forward(params.encoder, x, arch.activation)
    enc_grads, _ = mlp_backward(np.concatenate([dmu, dlv], 1), enc_cache, need_dx=False)
    for ours, theirs in zip(npvae.flatten(grads), npvae.flatten(npvae.VAEParams(enc_grads, dec_grads))):
        np.testing.assert_allclose(theirs / N, ours, rtol=1e-10, atol=1e-13)


def _fd(f, a, h=1e-6):
    g = np.empty_like(a)
    for j in np.ndindex(a.shape):
        e = np.zeros_like(a)
        e[j] = h
        g[j] = (f(a + e) - f(a - e)) / (2 * h)
    return g


HEADS = [("bernoulli", "logits", None), ("bernoulli", "probs", None), ("bernoulli", "probs", 1e-3), ("gaussian", "mean", None),
         ("gaussian-learned", "mean", None)]


@pytest.mark.parametrize("scale_kind", SCALES)
@pytest.mark.parametrize("likelihood,out_kind,clip", HEADS)
@pytest.mark.parametrize("bound,kl", [("elbo", "analytic"), ("elbo", "mc"), ("iwae", "mc")])
def test_partial_gradients_are_central_differences_of_the_head_function(scale_kind, likelihood, out_kind, clip, bound, kl):
    """Every partial of the batch-summed bound, for every scale parameterisation and likelihood, against central differences."""
    rng = np.random.default_rng(7)
    N, D, Z, K = 3, 4, 2, 3
    x = (rng.random((N, D)) < 0.5) * 1.0 if likelihood == "bernoulli" else rng.standard_normal((N, D))
    mu = rng.standard_normal((N, Z))
    s = rng.uniform(0.4, 1.5, (N, Z)) if scale_kind in ("std", "var") else rng.standard_normal((N, Z)) * 0.5
    z = rng.standard_normal((K, N, Z))
    out = rng.uniform(0.02, 0.98, (K, N, D)) if out_kind == "probs" else rng.standard_normal((K, N, D))
    if clip:
        out[0, 0, 0] = 1e-4  # one probability inside the clipped region: no gradient there
    o_s = rng.standard_normal((K, N, D)) * 0.3 if likelihood == "gaussian-learned" else None
    inputs = dict(mu=mu, s=s, z=z, out=out, out_scale=o_s)

    def value(**change):
        v = {**inputs, **change}
        c = make_case(x, v["mu"], v["s"], v["out"], 0.0, z=v["z"], scale_kind=scale_kind, likelihood=likelihood, out_kind=out_kind,
                      out_scale=v["out_scale"], sigma2=0.7, clip=clip, bound=bound, kl=kl, free_bits=0.0)
        return reference(c).values.sum()

    ref = reference(make_case(x, mu, s, out, 0.0, z=z, scale_kind=scale_kind, likelihood=likelihood, out_kind=out_kind,
                              out_scale=o_s, sigma2=0.7, clip=clip, bound=bound, kl=kl))
    for key, name in (("mu", "mu"), ("s", "scale"), ("z", "z"), ("out", "out"), ("out_scale", "out_scale")):
        if inputs[key] is None:
            continue
        fd = _fd(lambda a: value(**{key: a}), inputs[key])
        np.testing.assert_allclose(ref.grads[name], fd, rtol=1e-6, atol=1e-7, err_msg=name)


def test_free_bits_and_kl_weight_against_central_differences():
    rng = np.random.default_rng(2)
    N, D, Z = 3, 4, 3
    x, mu, s = (rng.random((N, D)) < 0.5) * 1.0, rng.standard_normal((N, Z)), rng.standard_normal((N, Z)) * 0.5
    out, eps = rng.standard_normal((1, N, D)), rng.standard_normal((1, N, Z))
    kw = dict(kl_weight=0.3, free_bits=0.4)
    c = make_case(x, mu, s, out, 0.0, eps=eps, **kw)
    kl_j = 0.5 * (mu**2 + np.expm1(s) - s)
    assert np.any(kl_j < 0.4) and np.any(kl_j > 0.4)  # both sides of the floor are exercised
    ref = reference(c)
    fd = _fd(lambda m: reference(make_case(x, m, s, out, 0.0, eps=eps, **kw)).values.sum(), mu)
    np.testing.assert_allclose(ref.grads["mu"], fd, rtol=1e-6, atol=1e-8)
    bernoulli = (x * out[0] - np.logaddexp(0, out[0])).sum(-1)  # log Bern(x | sigmoid(l)), written independently
    np.testing.assert_allclose(ref.values, bernoulli - 0.3 * np.maximum(kl_j, 0.4).sum(-1), rtol=1e-13)


def test_scale_parameterisations_map_to_one_log_variance():
    """Each parameterisation's log-variance from its definition, and its chain-rule factor by central differences."""
    sigma = np.array([0.3, 1.0, 2.5])
    raw = {"log_var": np.log(sigma**2), "log_std": np.log(sigma), "std": sigma, "var": sigma**2,
           "softplus": np.log(np.expm1(sigma))}
    # Near sigma = 1 the log-variance is near 0, where log's rounding is absolute: a few ulp of 1 (the softplus round
    # trip gave -2.2e-16 at sigma = 1 on an AMD EPYC with AVX2, 0 on an AVX-512 Xeon: numpy's exp and log differ by
    # instruction set), hence atol as well.
    for kind, s in raw.items():
        np.testing.assert_allclose(log_var_of(kind, s), 2 * np.log(sigma), rtol=1e-13, atol=4 * np.finfo(float).eps)
        np.testing.assert_allclose(dlog_var_ds(kind, s), _fd(lambda a: log_var_of(kind, a).sum(), s), rtol=1e-7)


def _pytorch_examples_head(seed, N=6, D=10, Z=3):
    rng = np.random.default_rng(seed)
    x = (rng.random((N, D)) < 0.4) * 1.0
    mu, lv = rng.standard_normal((N, Z)) * 0.5, rng.standard_normal((N, Z)) * 0.3
    eps = rng.standard_normal((N, Z))
    z = mu + np.exp(lv / 2) * eps
    p = 1 / (1 + np.exp(-(z @ rng.standard_normal((Z, D)))))
    bce = -(x * np.log(p) + (1 - x) * np.log(1 - p)).sum()
    kld = -0.5 * np.sum(1 + lv - mu**2 - np.exp(lv))
    return x, mu, lv, eps, z, p, bce, kld


@pytest.mark.parametrize("seed", range(5))
def test_reductions_are_found_and_named(seed):
    x, mu, lv, eps, z, p, bce, kld = _pytorch_examples_head(seed)
    N, D = x.shape
    for loss, name in ((bce + kld, "-sum"), ((bce + kld) / N, "-mean"), (-(bce + kld), "sum"), ((bce + kld) / (N * D), "-mean/D")):
        r = assert_head_matches(x, mu, lv, p, loss, eps=eps, out_kind="probs")
        assert r.reduction == name
    r = check_head(x, mu, lv, p, (bce + kld) / N, eps=eps, out_kind="probs", reduction="-sum")
    assert not r.passed  # a declared reduction is held to


def test_the_hints_name_the_term():
    x, mu, lv, eps, z, p, bce, kld = _pytorch_examples_head(0)
    N, D = x.shape

    def hint(loss, **kw):
        r = check_head(x, mu, lv, p, loss, **{"eps": eps, "out_kind": "probs", **kw})
        assert not r.passed
        return " | ".join(row["hint"] for row in r.rows if row["hint"])

    assert "missing 0.5" in hint(bce + 2 * kld)
    assert "wrong sign" in hint(bce - kld)
    assert "averaged over the D pixels" in hint(bce / D + kld)
    assert "log_std" in hint(bce - 0.5 * np.sum(1 + 2 * lv - mu**2 - np.exp(2 * lv)))
    assert "you used the variance" in hint(bce + kld, z=mu + np.exp(lv) * eps)
    assert "not standard normal" in hint(bce + kld, eps=0.01 * eps)


def test_iwae_hints_and_estimator_hints():
    rng = np.random.default_rng(4)
    N, D, Z, K = 5, 6, 2, 4
    x = (rng.random((N, D)) < 0.5) * 1.0
    mu, lv = rng.standard_normal((N, Z)), rng.standard_normal((N, Z)) * 0.3
    eps = rng.standard_normal((K, N, Z))
    z = mu + np.exp(lv / 2) * eps
    logits = np.tanh(z @ rng.standard_normal((Z, D))) * 3
    c = make_case(x, mu, lv, logits, 0.0, eps=eps, bound="iwae", kl="mc", estimator="dreg")
    b = reference(c).values
    r = check_head(x, mu, lv, logits, -(b + np.log(K)).mean(), eps=eps, bound="iwae", kl="mc", estimator="dreg")
    assert "not normalised" in r.rows[1]["hint"]
    # DReG's head gradients with w instead of w^2, and with q's parameters not held
    w_ref = reference(c, squared=False)
    g = {k: -w_ref.grads[k] / N for k in ("out", "z", "mu", "scale")}
    r = check_head(x, mu, lv, logits, -b.mean(), eps=eps, bound="iwae", kl="mc", estimator="dreg", grads=g)
    assert any("w, not w^2" in row["hint"] for row in r.rows)
    ok = {k: -reference(c).grads[k] / N for k in ("out", "z", "mu", "scale")}
    assert_head_matches(x, mu, lv, logits, -b.mean(), eps=eps, bound="iwae", kl="mc", estimator="dreg", grads=ok)
    held = reference(c, q_held=False)
    r = check_head(x, mu, lv, logits, -b.mean(), eps=eps, bound="iwae", kl="mc", estimator="dreg",
                   grads={**ok, "mu": -held.grads["mu"] / N})
    assert any("path through q's parameters" in row["hint"] for row in r.rows)


def test_total_gradients_take_the_path_through_z_out():
    """retain_grad() semantics: dL/dmu = partial + sum_k dL/dz_k; a z gradient of anything consistent passes."""
    x, mu, lv, eps, z, p, bce, kld = _pytorch_examples_head(1)
    c = make_case(x, mu, lv, p, 0.0, eps=eps, out_kind="probs")
    ref = reference(c)
    gz = np.random.default_rng(0).standard_normal(z.shape)[None]  # stands for J^T dL/dout, whatever the decoder
    dstd = 0.5 * np.exp(lv / 2)
    g = {"out": -ref.grads["out"], "z": gz, "mu": -ref.grads["mu"] + gz.sum(0), "scale": -ref.grads["scale"] + (gz * eps).sum(0) * dstd}
    assert_head_matches(x, mu, lv, p, bce + kld, eps=eps, out_kind="probs", grads=g, grads_mode="total")
    g["mu"] = -ref.grads["mu"]  # z detached from mu: the path is missing
    assert not check_head(x, mu, lv, p, bce + kld, eps=eps, out_kind="probs", grads=g, grads_mode="total").passed


def test_clipping_of_frameworks_is_recognised_not_failed():
    x, mu, lv, eps, z, p, bce, kld = _pytorch_examples_head(2)
    p = p.copy()
    p[0, :3] = [1e-9, 1 - 1e-10, 0.5]
    x = x.copy()
    x[0, :2] = [0, 1]
    pc = np.clip(p, 1e-7, 1 - 1e-7)
    keras = -(x * np.log(pc) + (1 - x) * np.log(1 - pc)).sum() + kld
    r = assert_head_matches(x, mu, lv, p, keras, eps=eps, out_kind="probs")
    assert any("clip=1e-07" in n for n in r.notes)
    assert_head_matches(x, mu, lv, p, keras, eps=eps, out_kind="probs", clip=1e-7)
    assert not check_head(x, mu, lv, p, keras, eps=eps, out_kind="probs", clip="torch").passed


def test_tensors_by_duck_typing_and_layouts_named():
    x, mu, lv, eps, z, p, bce, kld = _pytorch_examples_head(3)
    r = assert_head_matches(*(FakeTensor(a) for a in (x, mu, lv, p)), FakeTensor(np.array(bce + kld)), eps=FakeTensor(eps), out_kind="probs")
    assert any("read as K = 1" in n for n in r.notes)


@pytest.mark.parametrize("change,message", [
    (dict(scale_kind="std"), "declared a std but holds values <= 0"),
    (dict(out_kind="logits2"), "out_kind"),
    (dict(eps=None), "give the noise"),
    (dict(reduction="average"), "reduction must be one of"),
    (dict(grads={"W": np.zeros(3)}), "unknown key 'W'"),
    (dict(grads_mode="total", grads={"mu": np.zeros((6, 3))}), r"grads\['z'\] is needed"),
    (dict(bound="iwae", kl="analytic"), "is not one of"),
    (dict(kl_weight="1"), "kl_weight must be a finite number"),
    (dict(clip=0.7), "clip must be"),
])
def test_bad_inputs_are_one_line_errors(change, message):
    x, mu, lv, eps, z, p, bce, kld = _pytorch_examples_head(0)
    kw = {"eps": eps, "out_kind": "probs", **change}
    with pytest.raises(ValueError, match=message) as e:
        check_head(x, mu, lv, p, bce + kld, **kw)
    assert "\n" not in str(e.value)


def test_probabilities_out_of_range_and_nan_refused():
    x, mu, lv, eps, z, p, bce, kld = _pytorch_examples_head(0)
    with pytest.raises(ValueError, match="are they logits"):
        check_head(x, mu, lv, p * 3 - 1, bce + kld, eps=eps, out_kind="probs")
    with pytest.raises(ValueError, match="non-finite"):
        check_head(x, mu * np.nan, lv, p, bce + kld, eps=eps, out_kind="probs")


def test_npvae_verify_on_head_files(tmp_path):
    """npvae verify: an example head file agrees (exit 0), a loss off by a factor is reported (exit 1) with the factor,
    a head file without its loss is malformed (exit 2, one line)."""
    import subprocess
    import sys

    from npvae.head import file as head_file

    def run(*args):
        return subprocess.run([sys.executable, "-m", "npvae.cli", "verify", *map(str, args)], capture_output=True, text=True)

    good = tmp_path / "head.npz"
    assert run("--example-head", good).returncode == 0
    r = run(good)
    assert r.returncode == 0 and "reduction '-sum'" in r.stdout, r.stdout + r.stderr
    arrays = dict(np.load(good))
    options = arrays.pop("options")
    bad = tmp_path / "bad.npz"
    np.savez(bad, options=options, **{**arrays, "loss": arrays["loss"] * 3})
    r = run(bad)
    assert r.returncode == 1 and "3 times the batch sum" in r.stdout, r.stdout
    arrays.pop("loss")
    broken = tmp_path / "broken.npz"
    np.savez(broken, options=options, **arrays)
    r = run(broken)
    assert r.returncode == 2 and "loss missing" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert head_file.is_head_file(arrays, {"check": "head"})


def test_the_full_model_format_points_to_the_head_check():
    """Weights the MLP format cannot express (a batch-norm layer, say) are refused with the way to check the head."""
    from npvae import verify

    rng = np.random.default_rng(0)
    weights = {"encoder.0.W": rng.standard_normal((6, 8)), "encoder.0.b": np.zeros(8), "encoder.bn.running_mean": np.zeros(8)}
    with pytest.raises(ValueError, match="assert_head_matches"):
        verify.arch_from_weights(weights, npvae.Likelihood("bernoulli"), "tanh", data_dim=6)


# ---- issue 27, item 9: every keyword of the head check, of its documented type and range, refused in one line -------

@pytest.mark.parametrize("change,message", [
    (dict(clip=[1]), r"clip must be None, 'torch' or a float in \(0, 0.5\)"),  # was a TypeError from float([1])
    (dict(clip=True), "clip must be"),
    (dict(clip="Torch"), "clip must be"),
    (dict(bound=["elbo"]), "bound must be one of 'elbo', 'iwae'"),  # was a TypeError: a list is not hashable
    (dict(kl={}), "kl must be one of 'analytic', 'mc'"),
    (dict(estimator=None), "estimator must be one of"),
    (dict(scale_kind=None), "scale_kind must be one of 'log_var'"),  # was "scale: unknown scale parameterisation"
    (dict(out_scale_kind="nope"), "out_scale_kind must be one of"),  # was accepted where there is no out_scale
    (dict(likelihood="poisson"), "likelihood must be one of 'bernoulli', 'gaussian', 'gaussian-learned'"),
    (dict(out_kind=3), "out_kind must be one of 'logits', 'probs' or None for a bernoulli decoder"),
    (dict(x_coding=1), "x_coding must be one of 'auto', '01', 'pm1'"),
    (dict(grads_mode=["total"]), "grads_mode must be 'partial'"),
    (dict(sigma2=0.0), "sigma2 must be a finite number > 0"),  # was accepted
    (dict(sigma2=-1), "sigma2 must be a finite number > 0"),
    (dict(sigma2="1"), r"sigma2 must be a finite number, got '1' \(a string"),
    (dict(kl_weight=10**400), "kl_weight must be a finite number"),  # was a TypeError from np.isfinite
    (dict(kl_weight=-0.5), "kl_weight must be a finite number >= 0"),
    (dict(free_bits=float("nan")), "free_bits must be a finite number"),
    (dict(free_bits=np.float64(-1)), "free_bits must be a finite number >= 0"),
    (dict(reduction=0), "reduction must be one of"),
    (dict(reduction=float("inf")), "reduction must be one of"),
    (dict(reduction=[1]), "reduction must be one of"),
])
def test_every_option_is_of_its_type_and_range(change, message):
    x, mu, lv, eps, z, p, bce, kld = _pytorch_examples_head(0)
    kw = {"eps": eps, "out_kind": "probs", **change}
    with pytest.raises(ValueError, match=message) as e:
        check_head(x, mu, lv, p, bce + kld, **kw)
    assert "\n" not in str(e.value)


def test_options_are_checked_before_the_arrays_and_sizes_name_their_source():
    """A bad option is named even when an array is bad too; an empty batch, latent or sample axis names its array."""
    x, mu, lv, eps, z, p, bce, kld = _pytorch_examples_head(0)
    with pytest.raises(ValueError, match="sigma2 must be"):
        check_head(x[:0], mu, lv, p, bce + kld, eps=eps, out_kind="probs", sigma2=-1)
    for kw, message in ((dict(x=x[:0]), r"x must be \(N, D\) with N, D >= 1"), (dict(x=x[:, :0]), r"x must be \(N, D\)"),
                        (dict(mu=mu[:, :0], scale=lv[:, :0], eps=eps[:, :0]), r"Z >= 1"),
                        (dict(eps=np.zeros((0, *eps.shape))), r"eps must be \(K, 6, 3\) with K >= 1"),
                        (dict(out=np.zeros((0, *p.shape))), r"out must be \(K, 6, 10\) with K >= 1")):
        args = {"x": x, "mu": mu, "scale": lv, "out": p, "eps": eps, **kw}
        with pytest.raises(ValueError, match=message) as e:
            check_head(args.pop("x"), args.pop("mu"), args.pop("scale"), args.pop("out"), bce + kld, out_kind="probs", **args)
        assert "\n" not in str(e.value)


def test_the_head_file_names_its_entries_and_options(tmp_path):
    """In a file, a gradient is the entry grad.<name> (not grads['<name>']), an option is 'option <key>', every array is
    float32 or float64 (code may pass lists and ints; a file holds what was computed) and options["check"] is "head"."""
    import re

    from npvae.head import file as head_file

    path = tmp_path / "h.npz"
    head_file.example(path)
    with np.load(path) as f:
        arrays = dict(f)
    options = head_file.read_options(dict(arrays), path)
    for edit, message in ((dict(arrays={"grad.mu": arrays["grad.mu"][:-1]}), "grad.mu must have mu's shape (8, 3)"),
                          (dict(arrays={"x": arrays["x"].astype(np.uint8)}), "x must be a float32 or float64 array, got uint8"),
                          (dict(options={"kl_weight": "1"}), "option kl_weight must be a finite number, got '1'"),
                          (dict(options={"check": "model"}), 'option check must be "head"'),
                          (dict(options={"grads_mode": "total"}), "grad.z is needed")):
        a = {k: v for k, v in {**arrays, **edit.get("arrays", {})}.items() if k != "options"}
        with pytest.raises(ValueError, match=re.escape(message)) as e:
            head_file.case_from_arrays(a, {**options, **edit.get("options", {})})
        assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="option 'kl' is given twice"):
        head_file.read_options({"options": np.array('{"kl": "mc", "kl": "analytic"}')}, path)
