"""Three of tests/head_models' VAEs in PyTorch as their authors wrote them, checked at the head with torch's autograd:
retain_grad() in one graph (grads_mode="total") and torch.func.grad over the loss as a head function ("partial"),
in float32 and float64. x and eps are drawn on the host (NumPy) and shared by both dtypes."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install torch): the torch re-creations need it")
F = torch.nn.functional
from torch import nn  # noqa: E402
from torch.distributions import Bernoulli, Normal  # noqa: E402

from npvae.head import check_head  # noqa: E402
from npvae.testing import assert_head_matches  # noqa: E402

DTYPES = [torch.float32, torch.float64]
MODES = ["total", "partial"]
NAMES = ("mu", "scale", "z", "out")


def host(seed, N, D, Z, K=None, dtype=torch.float64):
    """x (N, D) binary and eps ((K,) N, Z), drawn by NumPy, as tensors of `dtype`."""
    rng = np.random.default_rng(seed)
    x = (rng.random((N, D)) < 0.3).astype(np.float64)
    eps = rng.standard_normal((N, Z) if K is None else (K, N, Z))
    return torch.tensor(x, dtype=dtype), torch.tensor(eps, dtype=dtype)


def head_grads(head: dict, loss_fn, mode: str):
    """(loss, grads) of loss_fn(**head): retain_grad on one graph ("total"), or torch.func.grad with the head tensors
    as independent inputs ("partial")."""
    if mode == "total":
        for t in head.values():
            t.retain_grad()
        loss = loss_fn(**head)
        loss.backward()
        return loss, {k: head[k].grad for k in NAMES}
    args = tuple(head[k].detach() for k in NAMES)
    g = torch.func.grad(lambda *a: loss_fn(**dict(zip(NAMES, a))), argnums=(0, 1, 2, 3))(*args)
    return loss_fn(**dict(zip(NAMES, args))), dict(zip(NAMES, g))


# pytorch/examples vae/main.py ----------------------------------------------------------------------------------------


class ExamplesVAE(nn.Module):
    """vae/main.py's VAE at D-H-Z (784-400-20 there); fc21 and fc22 scaled up so that the KL is no rounding error."""

    def __init__(self, D=64, H=32, Z=4, saturate=False):
        super().__init__()
        self.fc1, self.fc21, self.fc22 = nn.Linear(D, H), nn.Linear(H, Z), nn.Linear(H, Z)
        self.fc3, self.fc4 = nn.Linear(Z, H), nn.Linear(H, D)
        with torch.no_grad():
            self.fc21.weight.mul_(6.0), self.fc22.weight.mul_(3.0)
            if saturate:
                self.fc4.bias[:3] += 40.0  # sigmoid exactly 1 there

    def encode(self, x):
        h1 = F.relu(self.fc1(x))
        return self.fc21(h1), self.fc22(h1)

    def decode(self, z):
        h3 = F.relu(self.fc3(z))
        return torch.sigmoid(self.fc4(h3))


def loss_function(recon_x, x, mu, logvar, kl_half=0.5):
    BCE = F.binary_cross_entropy(recon_x, x, reduction="sum")
    KLD = -kl_half * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return BCE + KLD


def examples_head(seed, dtype, saturate=False):
    torch.manual_seed(seed)
    model = ExamplesVAE(saturate=saturate).to(dtype)
    x, eps = host(seed, 16, 64, 4, dtype=dtype)
    mu, logvar = model.encode(x)
    z = mu + eps * torch.exp(0.5 * logvar)
    return x, eps, {"mu": mu, "scale": logvar, "z": z, "out": model.decode(z)}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("seed", range(2))
def test_pytorch_examples(seed, mode, dtype):
    x, eps, head = examples_head(seed, dtype)
    loss, g = head_grads(head, lambda mu, scale, z, out: loss_function(out, x, mu, scale), mode)
    r = assert_head_matches(x, head["mu"], head["scale"], head["out"], loss, eps=eps, z=head["z"], out_kind="probs",
                            grads=g, grads_mode=mode)
    assert r.reduction == "-sum"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", MODES)
def test_pytorch_examples_kl_without_its_half(mode, dtype):
    x, eps, head = examples_head(0, dtype)
    loss, g = head_grads(head, lambda mu, scale, z, out: loss_function(out, x, mu, scale, kl_half=1.0), mode)
    r = check_head(x, head["mu"], head["scale"], head["out"], loss, eps=eps, z=head["z"], out_kind="probs", grads=g, grads_mode=mode)
    bad = {row["quantity"].split(" (")[0]: row["hint"] for row in r.rows if not row["passed"]}
    assert "missing 0.5" in bad["loss value"], r.summary()
    assert bad["grad mu"] == "your gradient is 2x ours", r.summary()




@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mode", MODES)
def test_pytorch_examples_torch_clamp(mode, dtype):
    """Saturated outputs: torch's own binary_cross_entropy, clamp and backward, passes with clip='torch'."""
    x, eps, head = examples_head(0, dtype, saturate=True)
    assert bool(((head["out"] == 1) & (x == 0)).any())
    loss, g = head_grads(head, lambda mu, scale, z, out: loss_function(out, x, mu, scale), mode)
    assert_head_matches(x, head["mu"], head["scale"], head["out"], loss, eps=eps, z=head["z"], out_kind="probs", clip="torch",
                        grads=g, grads_mode=mode)


# Pyro's examples/vae/vae.py with Trace_ELBO, written in torch.distributions ------------------------------------------


class PyroEncoder(nn.Module):
    def __init__(self, D=64, H=32, Z=4):
        super().__init__()
        self.fc1, self.fc21, self.fc22 = nn.Linear(D, H), nn.Linear(H, Z), nn.Linear(H, Z)
        with torch.no_grad():
            self.fc21.weight.mul_(4.0), self.fc22.weight.mul_(2.0)

    def forward(self, x):
        hidden = F.softplus(self.fc1(x))
        return self.fc21(hidden), self.fc22(hidden)  # z_loc, log z_scale (the example returns torch.exp of it)


class PyroDecoder(nn.Module):
    fudge = 1e-7

    def __init__(self, D=64, H=32, Z=4):
        super().__init__()
        self.fc1, self.fc21 = nn.Linear(Z, H), nn.Linear(H, D)

    def forward(self, z):
        hidden = F.softplus(self.fc1(z))
        return (torch.sigmoid(self.fc21(hidden)) + self.fudge) * (1 - 2 * self.fudge)


def trace_elbo_loss(x, mu, scale, z, out):
    """Trace_ELBO's loss with one particle at the guide's reparameterised z: -sum_n [log p(x, z) - log q(z|x)]."""
    log_q = Normal(mu, scale.exp()).log_prob(z).sum(-1)
    log_p = Normal(torch.zeros_like(z), torch.ones_like(z)).log_prob(z).sum(-1) + Bernoulli(out).log_prob(x).sum(-1)
    return -(log_p - log_q).sum()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("seed", range(2))
def test_pyro_vae(seed, mode, dtype):
    torch.manual_seed(seed)
    enc, dec = PyroEncoder().to(dtype), PyroDecoder().to(dtype)
    x, eps = host(seed, 16, 64, 4, dtype=dtype)
    z_loc, log_scale = enc(x)
    z = z_loc + log_scale.exp() * eps  # Normal(z_loc, z_scale).rsample()
    head = {"mu": z_loc, "scale": log_scale, "z": z, "out": dec(z)}
    loss, g = head_grads(head, lambda **h: trace_elbo_loss(x, **h), mode)
    r = assert_head_matches(x, z_loc, log_scale, head["out"], loss, eps=eps, z=z, scale_kind="log_std", kl="mc", out_kind="probs",
                            grads=g, grads_mode=mode)
    assert r.reduction == "-sum"


# Tucker et al.'s DReG (google-research dreg_estimators), the stop_gradients as detach ---------------------------------


class TanhMLP(nn.Module):
    def __init__(self, n_in, H, n_out, scale=3.0):
        super().__init__()
        self.l1, self.l2 = nn.Linear(n_in, H), nn.Linear(H, n_out)
        with torch.no_grad():
            self.l2.weight.mul_(scale)

    def forward(self, a):
        return self.l2(torch.tanh(self.l1(a)))


def log_weights(x, mu, scale, z, out, stop=True):
    """log p(z) + log p(x|z) - log q(z|x), (K, N); q's mu and sigma detached when stop (stopped_proposal)."""
    sigma = F.softplus(scale)
    q = Normal(mu.detach(), sigma.detach()) if stop else Normal(mu, sigma)
    log_p_z = Normal(torch.zeros_like(z), torch.ones_like(z)).log_prob(z).sum(-1)
    return log_p_z + Bernoulli(logits=out).log_prob(x).sum(-1) - q.log_prob(z).sum(-1)


def dreg_inference_loss(x, stop=True, **head):
    lw = log_weights(x, stop=stop, **head)
    w = torch.softmax(lw, 0).detach()
    return -(w**2 * lw).sum(0).mean()


def tucker_head(seed, dtype, N=8, K=5, D=32, H=16, Z=3):
    torch.manual_seed(seed)
    proposal, likelihood = TanhMLP(D, H, 2 * Z).to(dtype), TanhMLP(Z, H, D).to(dtype)
    x, eps = host(seed, N, D, Z, K, dtype=dtype)
    outs = proposal(x - x.mean(0))
    mu, s = outs[:, :Z], outs[:, Z:] + 0.25  # sigma = softplus(s): raw_sigma_bias 0.25
    z = mu + F.softplus(s) * eps
    head = {"mu": mu, "scale": s, "z": z, "out": likelihood(z)}
    model_loss = -(torch.logsumexp(log_weights(x, stop=False, **head), 0) - math.log(K)).mean()
    return x, eps, head, model_loss.detach()



@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", ["total", "partial"])
@pytest.mark.parametrize("seed", range(2))
def test_tucker_dreg(seed, mode, dtype):
    x, eps, head, model_loss = tucker_head(seed, dtype)
    _, g = head_grads(head, lambda **h: dreg_inference_loss(x, **h), mode)
    r = assert_head_matches(x, head["mu"], head["scale"], head["out"], model_loss, eps=eps, z=head["z"], scale_kind="softplus",
                            bound="iwae", kl="mc", estimator="dreg", grads=g, grads_mode=mode)
    assert r.reduction == "-mean"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", MODES)
def test_tucker_dreg_without_the_detach(mode, dtype):
    x, eps, head, model_loss = tucker_head(0, dtype)
    _, g = head_grads(head, lambda **h: dreg_inference_loss(x, stop=False, **h), mode)
    r = check_head(x, head["mu"], head["scale"], head["out"], model_loss, eps=eps, z=head["z"], scale_kind="softplus",
                   bound="iwae", kl="mc", estimator="dreg", grads=g, grads_mode=mode)
    bad = {row["quantity"].split(" (")[0]: row["hint"] for row in r.rows if not row["passed"]}
    assert set(bad) == {"grad mu", "grad scale"}, r.summary()
    assert all("keeps a path through q's parameters" in h for h in bad.values()), r.summary()
