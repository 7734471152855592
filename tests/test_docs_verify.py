"""Every example in docs/verify.md runs: each block marked `<!-- example: NAME -->` is executed in a namespace made by
the setup of that name below (the user's own model, as the text says), and must not raise. torch's and JAX's examples
run where those import (CI installs them in an optional step) and are skipped with the reason elsewhere."""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

DOC = Path(__file__).resolve().parent.parent / "docs" / "verify.md"
BLOCK = re.compile(r"<!-- example: (\w+) -->\n```python\n(.*?)```", re.S)


def blocks():
    found = BLOCK.findall(DOC.read_text())
    assert found, "docs/verify.md has no marked examples"
    return found


def setup_torch():
    torch = pytest.importorskip("torch")
    nn, F = torch.nn, torch.nn.functional
    torch.manual_seed(0)

    class VAE(nn.Module):  # pytorch/examples vae/main.py, as it is
        def __init__(self):
            super().__init__()
            self.fc1, self.fc21, self.fc22 = nn.Linear(784, 400), nn.Linear(400, 20), nn.Linear(400, 20)
            self.fc3, self.fc4 = nn.Linear(20, 400), nn.Linear(400, 784)

        def encode(self, x):
            h1 = F.relu(self.fc1(x))
            return self.fc21(h1), self.fc22(h1)

        def decode(self, z):
            return torch.sigmoid(self.fc4(F.relu(self.fc3(z))))

    def loss_function(recon_x, x, mu, logvar):
        BCE = F.binary_cross_entropy(recon_x, x.view(-1, 784), reduction="sum")
        KLD = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
        return BCE + KLD

    return {"model": VAE(), "loss_function": loss_function, "x": (torch.rand(16, 1, 28, 28) < 0.3).float()}


def setup_jax():
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    k1, k2, key = jax.random.split(jax.random.PRNGKey(0), 3)
    params = {"enc": jax.random.normal(k1, (64, 8)) * 0.1, "dec": jax.random.normal(k2, (4, 64)) * 0.3}

    def encode(params, x):  # stax-style: the last layer gives [mu, log_var]
        h = x @ params["enc"]
        return h[:, :4], h[:, 4:]

    def decode(params, z):
        return z @ params["dec"]  # logits

    x = jnp.asarray((np.random.default_rng(0).random((10, 64)) < 0.3).astype(np.float32))
    return {"params": params, "encode": encode, "decode": decode, "x": x, "key": key}


def setup_numpy():
    """A user's hand-written loss and gradient over a flat vector: here npvae's own, for a small tanh VAE."""
    import npvae
    from npvae.checks.check import gradient_model

    rng = np.random.default_rng(0)
    arch, params, x, eps = gradient_model(rng, "bernoulli", "tanh")
    shapes = [a.shape for a in npvae.flatten(params)]
    sizes = [int(np.prod(s)) for s in shapes]

    def unflat(theta):
        parts = np.split(theta, np.cumsum(sizes)[:-1])
        return npvae.unflatten(arch, [p.reshape(s) for p, s in zip(parts, shapes)])

    def loss(theta):
        return -float(npvae.objective(unflat(theta), arch, x, eps)[0].mean())

    def grad(theta):
        return -np.concatenate([g.ravel() for g in npvae.flatten(npvae.objective(unflat(theta), arch, x, eps)[1])])

    theta = np.concatenate([a.ravel() for a in npvae.flatten(params)])
    return {"loss": loss, "grad": grad, "theta": theta, "n_encoder": sum(sizes[: 2 * len(params.encoder)])}


SETUPS = {"torch": setup_torch, "jax": setup_jax, "numpy": setup_numpy}


@pytest.mark.parametrize("name,code", blocks(), ids=[n for n, _ in blocks()])
def test_example_runs(name, code):
    assert len(code.strip().splitlines()) <= 16, "an example is at most ten lines of the user's code (plus imports)"
    if name == "jax":  # in a process of its own: JAX's threads make every later os.fork() of the suite unsafe
        if importlib.util.find_spec("jax") is None:
            pytest.skip("JAX is not installed (CI installs it in an optional step)")
        run = (f"import runpy; ns = runpy.run_path({str(Path(__file__))!r})['setup_jax'](); "
               f"exec(compile({code!r}, 'docs/verify.md:jax', 'exec'), ns)")
        r = subprocess.run([sys.executable, "-c", run], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        return
    namespace = SETUPS[name]()
    exec(compile(code, f"docs/verify.md:{name}", "exec"), namespace)
