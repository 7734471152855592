"""Public VAEs re-created at their head (tests/head_models/) through npvae's head check: each passes as its authors
wrote it, and each bug its users report fails with a hint that names the term.

Each model's test shows in its docstring the check in the model's own framework (at most 10 lines); the test runs
the NumPy re-creation of the same head. Hints are asserted on stable substrings of npvae/head/hypotheses.py and
npvae/head/noise.py. 
"""

import numpy as np
import pytest

from head_models import antixk_vanilla, hips_autograd, keras_vae, pyro_vae, pytorch_examples, tucker_dreg
from npvae.head import check_head
from npvae.testing import assert_head_matches

SEEDS = range(4)


def check(h, **options):
    """npvae's report on a head from tests/head_models (eps and z both given unless options say otherwise)."""
    kw = dict(eps=h.eps, z=h.z, grads=h.grads)
    kw.update(options)
    return check_head(h.x, h.mu, h.scale, h.out, kw.pop("loss", h.loss), **kw)


def failures(report) -> dict:
    """{quantity: hint} of the failed rows; the report must have failed."""
    assert not report.passed, report.summary()
    return {r["quantity"]: r["hint"] for r in report.rows if not r["passed"]}


def assert_fails_with(report, expected: dict):
    """The failed rows are exactly `expected`'s keys, and each hint holds its substring."""
    bad = failures(report)
    assert set(bad) == set(expected), report.summary()
    for q, text in expected.items():
        assert text in bad[q], f"{q}: {bad[q]!r} lacks {text!r}\n{report.summary()}"


# pytorch/examples ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_pytorch_examples(seed):
    """pytorch/examples vae/main.py, checked in its own code with retain_grad (docs/verify.md):

        mu, logvar = model.encode(x.view(-1, 784))
        eps = torch.randn_like(mu)
        z = mu + eps * torch.exp(0.5 * logvar)
        recon = model.decode(z)
        for t in (mu, logvar, z, recon):
            t.retain_grad()
        loss = loss_function(recon, x, mu, logvar)
        loss.backward()
        npvae.testing.assert_head_matches(x.view(-1, 784), mu, logvar, recon, loss, eps=eps, z=z, out_kind="probs",
            grads={"mu": mu.grad, "scale": logvar.grad, "z": z.grad, "out": recon.grad}, grads_mode="total")
    Here the partial form (tests/test_head_torch.py runs both in torch).
    """
    h = pytorch_examples.head(seed)
    r = assert_head_matches(h.x, h.mu, h.scale, h.out, h.loss, eps=h.eps, z=h.z, grads=h.grads, **pytorch_examples.OPTIONS)
    assert r.reduction == "-sum"


def test_pytorch_examples_float32():
    h = pytorch_examples.head(0, dtype=np.float32)
    assert h.loss.dtype == np.float32
    assert_head_matches(h.x, h.mu, h.scale, h.out, h.loss, eps=h.eps, z=h.z, grads=h.grads, **pytorch_examples.OPTIONS)


PYTORCH_BUGS = {
    "kl_no_half": {"loss value": "your KL is 2x ours: a missing 0.5?", "grad mu": "2x ours", "grad scale": "2x ours"},
    "kl_sign": {"loss value": "your KL has the wrong sign", "grad mu": "minus ours", "grad scale": "minus ours"},
    "sample_logvar_as_logstd": {"z = mu + std * eps": "z is not mu + std * eps with the declared log_var: z = mu + X * eps "
                                                      "with X = the variance std^2"},
    "kl_logvar_as_logstd": {"loss value": "your KL matches ours with the scale output read as a log_std (declared: log_var)",
                            "grad scale": "read as a log_std"},
}


@pytest.mark.parametrize("bug", PYTORCH_BUGS)
def test_pytorch_examples_bugs(bug):
    assert_fails_with(check(pytorch_examples.head(0, bug), **pytorch_examples.OPTIONS), PYTORCH_BUGS[bug])


def test_pytorch_examples_bce_mean_with_kld_summed():
    """F.binary_cross_entropy's default reduction='mean' (over N D elements) beside a KLD summed over the batch: the
    value row names it; the gradients are compared as the KL's reduction (-sum): the KL's pass, the decoder's is 1/(N D)."""
    h = pytorch_examples.head(0, "bce_mean")
    N, D = h.x.shape
    bad = failures(check(h, **pytorch_examples.OPTIONS))
    assert set(bad) == {"loss value", "grad out"}
    assert "reduction='mean') while the KL is summed over the batch" in bad["loss value"]
    assert f"{1 / (N * D):.6g} times ours" in bad["grad out"]


@pytest.mark.parametrize("model", [pytorch_examples, hips_autograd, pyro_vae])
def test_noise_with_std_001_is_named_first(model):
    """eps * 0.01: the loss is still the bound at z, so only the noise row can say it, and it is the first row."""
    r = check(model.head(1, "noise_001"), **model.OPTIONS)
    assert r.rows[0]["quantity"] == "noise"
    assert_fails_with(r, {"noise": "eps is not standard normal: its standard deviation is 0.0"})


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pytorch_examples_torch_clamp_declared(dtype):
    """Saturated sigmoid outputs (p = 1 at x = 0): torch's BCE clamps log(1 - p) at -100; clip='torch' says so."""
    h = pytorch_examples.head(0, saturate=True, dtype=dtype)
    assert np.any((h.out == 1.0) & (h.x == 0))
    assert_head_matches(h.x, h.mu, h.scale, h.out, h.loss, eps=h.eps, z=h.z, grads=h.grads, clip="torch", **pytorch_examples.OPTIONS)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # npvae's nan, the bug
def test_pytorch_examples_torch_clamp_undeclared_passes_with_a_note():
    h = pytorch_examples.head(0, saturate=True, dtype=np.float32)
    r = check(h, **pytorch_examples.OPTIONS)
    assert r.passed, r.summary()
    assert any("declare clip='torch'" in n for n in r.notes)


# HIPS/autograd -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_hips_autograd(seed):
    """HIPS/autograd examples/variational_autoencoder.py, with autograd's grad over the bound as a head function:

        def head_objective(mu, log_std, z, logits):      # vae_lower_bound's lines, the head as inputs
            q = diag_gaussian_log_density(z, mu, log_std)
            p = diag_gaussian_log_density(z, 0, 0)
            return -np.mean(p + bernoulli_log_density(data, logits) - q) / data_dim
        mu, log_std = nn_predict_gaussian(rec_params, data)
        z = sample_diag_gaussian(mu, log_std, rs)
        logits = neural_net_predict(gen_params, z)
        g = [grad(head_objective, i)(mu, log_std, z, logits) for i in range(4)]
        npvae.testing.assert_head_matches(data, mu, log_std, logits, head_objective(mu, log_std, z, logits), z=z,
            scale_kind="log_std", kl="mc", grads=dict(zip(("mu", "scale", "z", "out"), g)))
    """
    h = hips_autograd.head(seed)
    r = assert_head_matches(h.x, h.mu, h.scale, h.out, h.loss, z=h.z, grads=h.grads, scale_kind="log_std", kl="mc")
    assert r.reduction == "-mean/D"
    assert any("+-1" in n for n in r.notes)  # the +-1 targets, found by themselves


def test_hips_autograd_log_std_declared_as_log_var():
    """The check told the default scale_kind (log_var) for this log-std head: the sample and the KL both say log_std."""
    r = check(hips_autograd.head(0), **{**hips_autograd.OPTIONS, "scale_kind": "log_var"})
    bad = failures(r)
    assert "z is not mu + std * eps with the declared log_var" in bad["z = mu + std * eps"]
    assert "your KL matches ours with the scale output read as a log_std (declared: log_var)" in bad["loss value"]
    for q in ("grad z", "grad mu", "grad scale"):
        assert "read as a log_std" in bad[q]


def test_hips_autograd_01_images_in_the_pm1_density():
    """Images left 0/1 in a density written for -1/+1 targets: refused at the boundary, naming the targets."""
    with pytest.raises(ValueError, match="needs binary targets"):
        check(hips_autograd.head(0, "targets_01"), **hips_autograd.OPTIONS)


# Pyro ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("std_head", [False, True])
def test_pyro_vae(seed, std_head):
    """pyro-ppl/pyro examples/vae/vae.py: Trace_ELBO's loss at the guide's sample, grads of a head function:

        def head_loss(z_loc, z_log_scale, z, loc_img):   # Trace_ELBO's loss with one particle, at the head
            log_q = dist.Normal(z_loc, z_log_scale.exp()).log_prob(z).sum(-1)
            log_p = dist.Normal(0., 1.).log_prob(z).sum(-1) + dist.Bernoulli(loc_img).log_prob(x).sum(-1)
            return -(log_p - log_q).sum()
        hidden = vae.encoder.softplus(vae.encoder.fc1(x))
        z_loc, z_log_scale = vae.encoder.fc21(hidden), vae.encoder.fc22(hidden)
        eps = torch.randn_like(z_loc); z = z_loc + z_log_scale.exp() * eps; loc_img = vae.decoder(z)
        g = torch.func.grad(head_loss, argnums=(0, 1, 2, 3))(z_loc, z_log_scale, z, loc_img)
        npvae.testing.assert_head_matches(x, z_loc, z_log_scale, loc_img, head_loss(z_loc, z_log_scale, z, loc_img),
            eps=eps, z=z, scale_kind="log_std", kl="mc", out_kind="probs", grads=dict(zip(("mu", "scale", "z", "out"), g)))
    std_head: the encoder's z_scale itself as the scale, scale_kind="std".
    """
    h = pyro_vae.head(seed, std_head=std_head)
    r = assert_head_matches(h.x, h.mu, h.scale, h.out, h.loss, eps=h.eps, z=h.z, grads=h.grads,
                            **{**pyro_vae.OPTIONS, "scale_kind": "std" if std_head else "log_std"})
    assert r.reduction == "-sum"


# Keras ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_keras_vae(seed, dtype):
    """keras-io examples/generative/vae.py: train_step's loss as a function of the head, its tape's gradients:

        def head_loss(z_mean, z_log_var, reconstruction):   # train_step's lines
            kl = -0.5 * (1 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var))
            return ops.mean(ops.sum(keras.losses.binary_crossentropy(data, reconstruction), axis=(1, 2))) + ops.mean(ops.sum(kl, axis=1))
        z_mean, z_log_var, z = vae.encoder(data); reconstruction = vae.decoder(z)
        head = [tf.Variable(t) for t in (z_mean, z_log_var, reconstruction)]
        with tf.GradientTape() as tape:
            loss = head_loss(*head)
        g = tape.gradient(loss, head)
        npvae.testing.assert_head_matches(data.reshape(-1, 784), z_mean, z_log_var, reconstruction.reshape(-1, 784),
            loss, z=z, out_kind="probs", clip=1e-7, grads={"mu": g[0], "scale": g[1], "out": g[2].reshape(-1, 784)})
    The Sampling layer keeps its epsilon: eps is read from z.
    """
    h = keras_vae.head(seed, dtype=dtype)
    r = assert_head_matches(h.x, h.mu, h.scale, h.out, h.loss, z=h.z, grads=h.grads, **keras_vae.OPTIONS)
    assert r.reduction == "-mean"


def test_keras_vae_flattened_images_average_the_pixels():
    """binary_crossentropy on (N, 784) means over the pixels: the reconstruction is averaged while the KL is summed."""
    r = check(keras_vae.head(0, "flattened"), **keras_vae.OPTIONS)
    bad = failures(r)
    assert "your reconstruction term is averaged over the D pixels while the KL is summed" in bad["loss value"]
    assert "grad out" in bad and all(q in ("loss value", "grad out") for q in bad)


def test_keras_vae_clip_declared_and_undeclared():
    """Probabilities past the clip (float64): clip=1e-7 passes; undeclared passes too, with a note saying to declare it."""
    h = keras_vae.head(0, saturate=17.0)
    lo, hi = 1e-7, 1 - 1e-7
    assert np.any(h.out > hi) and np.any(h.out < lo) and np.all((h.out > 0) & (h.out < 1))
    assert_head_matches(h.x, h.mu, h.scale, h.out, h.loss, z=h.z, grads=h.grads, **keras_vae.OPTIONS)
    r = assert_head_matches(h.x, h.mu, h.scale, h.out, h.loss, z=h.z, grads=h.grads, out_kind="probs")
    assert any("declare clip=1e-07" in n for n in r.notes), r.notes


def test_keras_vae_float32_clip_declared():
    """Keras's own dtype: sigmoid is exactly 1 in float32 past ~17, and Keras clips it to float32(1 - 1e-7)."""
    h = keras_vae.head(0, saturate=17.0, dtype=np.float32)
    assert_head_matches(h.x, h.mu, h.scale, h.out, h.loss, z=h.z, grads=h.grads, **keras_vae.OPTIONS)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # npvae's nan, the bug
def test_keras_vae_float32_clip_undeclared_passes_with_a_note():
    h = keras_vae.head(0, saturate=17.0, dtype=np.float32)
    r = check(h, z=h.z, eps=None, out_kind="probs")
    assert r.passed and any("declare clip=1e-07" in n for n in r.notes), r.summary()


# AntixK/PyTorch-VAE --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("phase", ["train", "val"])
def test_antixk_vanilla_is_a_gaussian_bound_at_sigma2_half(seed, phase):
    """AntixK/PyTorch-VAE VanillaVAE: its loss is -mean/D of the Gaussian ELBO at sigma2 = 1/2 and kl_weight = kld_weight D,
    less 1/2 log(pi) (tests/head_models/antixk_vanilla.py):

        recons, x, mu, log_var = model(x)
        loss = model.loss_function(recons, x, mu, log_var, M_N=kld_weight)["loss"]
        g = torch.autograd.grad(loss, (mu, log_var, recons))      # recons, mu, log_var: a graph's leaves here
        D = x[0].numel()
        npvae.testing.assert_head_matches(x.flatten(1), mu, log_var, recons.flatten(1), loss + 0.5 * math.log(math.pi),
            z=z, likelihood="gaussian", sigma2=0.5, kl_weight=kld_weight * D,
            grads={"mu": g[0], "scale": g[1], "out": g[2].flatten(1)})
    z from the model's reparameterize (VanillaVAE.forward returns no z: call encode and reparameterize yourself).
    """
    h = antixk_vanilla.head(seed, phase)
    D = h.x.shape[1]
    opts = antixk_vanilla.options(antixk_vanilla.KLD_WEIGHT[phase], D)
    r = assert_head_matches(h.x, h.mu, h.scale, h.out, h.loss + antixk_vanilla.CONSTANT, eps=h.eps, z=h.z, grads=h.grads, **opts)
    assert r.reduction == "-mean/D"


def test_antixk_vanilla_without_the_constant():
    """As written (no constant) the value is no bound, and says so; every gradient passes, a constant having none."""
    h = antixk_vanilla.head(0)
    r = check(h, **antixk_vanilla.options(antixk_vanilla.KLD_WEIGHT["train"], h.x.shape[1]))
    assert_fails_with(r, {"loss value": "your Gaussian log-likelihood lacks its constant -D/2 log(2 pi sigma2)"})


@pytest.mark.parametrize("phase", ["train", "val"])
def test_antixk_vanilla_as_a_standard_gaussian_elbo(phase):
    """Declared as the usual Gaussian ELBO (sigma2 = 1) with its own kld_weight: the report names F.mse_loss, a mean
    over the pixels where the KL is summed over the latents."""
    h = antixk_vanilla.head(0, phase)
    r = check(h, likelihood="gaussian", kl_weight=antixk_vanilla.KLD_WEIGHT[phase])
    bad = failures(r)
    assert "your reconstruction is the mean squared error over pixels (F.mse_loss)" in bad["loss value"]
    assert set(bad) == {"loss value", "grad out"}  # the KL's gradients are right under this reading


# Tucker et al.'s DReG code -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("estimator", ["iwae", "dreg", "stl"])
def test_tucker_dreg(seed, estimator):
    """google-research dreg_estimators: the model loss's value, the inference loss's head gradients (torch, detach):

        def inference_loss(mu, s, z, logits):                   # model.iwae's estimator, the head as inputs
            q = Normal(mu.detach(), F.softplus(s).detach())     # stopped_proposal
            lw = Normal(0., 1.).log_prob(z).sum(-1) + Bernoulli(logits=logits).log_prob(x).sum(-1) - q.log_prob(z).sum(-1)
            w = torch.softmax(lw, 0).detach()
            return -(w ** 2 * lw).sum(0).mean()                 # "dreg"
        g = torch.func.grad(inference_loss, argnums=(0, 1, 2, 3))(mu, s, z, logits)
        npvae.testing.assert_head_matches(x, mu, s, logits, model_loss, eps=eps, z=z, scale_kind="softplus",
            bound="iwae", kl="mc", estimator="dreg", grads=dict(zip(("mu", "scale", "z", "out"), g)))
    "stl" is checked with num_samples = 1, as npvae's STL is the ELBO's.
    """
    h = tucker_dreg.head(seed, estimator, K=1 if estimator == "stl" else 5)
    r = assert_head_matches(h.x, h.mu, h.scale, h.out, h.loss, eps=h.eps, z=h.z, grads=h.grads, **tucker_dreg.options(estimator))
    assert r.reduction == "-mean"


def test_tucker_dreg_float32_and_the_decoders_gradient():
    h = tucker_dreg.head(0, "dreg", dtype=np.float32)
    assert_head_matches(h.x, h.mu, h.scale, h.out, h.loss, eps=h.eps, z=h.z, grads=h.grads, **tucker_dreg.options("dreg"))
    h = tucker_dreg.head(0, "dreg", grads_of="model")  # the model loss: IWAE's own gradient for the decoder
    assert_head_matches(h.x, h.mu, h.scale, h.out, h.loss, eps=h.eps, z=h.z, grads=h.grads, **tucker_dreg.options("iwae"))
    assert not check(h, **tucker_dreg.options("dreg")).passed


TUCKER_BUGS = {
    ("dreg", "no_log_k"): {"loss value": "your IWAE is not normalised: logsumexp_k a_k without - log K"},
    ("dreg", "mean_log_w"): {"loss value": "your IWAE is the mean of the log-weights: that is the ELBO"},
    ("dreg", "no_stop"): {"grad mu": "your DReG gradient keeps a path through q's parameters",
                          "grad scale": "your DReG gradient keeps a path through q's parameters"},
    ("dreg", "dreg_w"): {"grad out": "your DReG gradient weights by w, not w^2", "grad z": "your DReG gradient weights by w, not w^2"},
    ("stl", "no_stop"): {"grad mu": "your STL gradient keeps the score term", "grad scale": "your STL gradient keeps the score term"},
}


@pytest.mark.parametrize("estimator,bug", TUCKER_BUGS)
def test_tucker_dreg_bugs(estimator, bug):
    h = tucker_dreg.head(0, estimator, bug, K=1 if estimator == "stl" else 5)
    assert_fails_with(check(h, **tucker_dreg.options(estimator)), TUCKER_BUGS[(estimator, bug)])
