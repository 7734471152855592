"""End to end: epochs of `npvae.training.loop.train` beside PyTorch and JAX loops that do the same per epoch (bench_train.py --end-to-end).

An epoch, in every framework: shuffle the training split (a seeded permutation), take every batch of 128 from the
compact uint8 data and cast it to float32, draw the noise (each framework its own generator), one Adam step on minus
the bound; then the validation bound of the whole validation split in batches of 128 with the training K, and one
checkpoint of parameters and Adam's state. npvae's epoch is what `npvae train --backend numba --dtype float32
--no-pictures` runs: its own seconds per epoch (history.json) and the time of the checkpoints written after them (last,
and best when the bound improved, each with fsync); torch's and JAX's are timed around the same work (torch.save,
np.savez: no fsync). Run it pinned to one core (taskset -c 0): XLA otherwise takes a second core for its own threads.
The frameworks take turns epoch by epoch (npvae's by resuming its run), so that a change in the machine's load falls on
all of them; the first round (compilation, caches) is not counted. Figure: training points / median epoch seconds.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

import npvae.training.loop as T
from npvae.training.config import TrainConfig
from npvae.training.loop import train

BATCH = 128


def npvae_epochs(workload, dataset, backend: str, out: Path):
    """epoch() -> seconds of one more epoch of npvae.training.loop.train (history.json's own figure), resuming the run in `out`."""
    spec, act, bound, kl, K = workload
    base = dict(dataset="binarized-mnist", arch=spec, activation=act, bound=bound, kl=kl, k=K, batch_size=BATCH,
                dtype="float32", backend=backend, seed=0)
    done = {"epochs": 0}

    def epoch():
        done["epochs"] += 1
        saving = {"s": 0.0}
        real = T.save_state

        def timed_save(*a):  # the epoch's checkpoints (last, and best when it improved), written after its seconds are taken
            t = time.perf_counter()
            real(*a)
            saving["s"] += time.perf_counter() - t

        T.save_state = timed_save
        try:
            state = train(TrainConfig(**base, epochs=done["epochs"]), dataset, out, resume=done["epochs"] > 1,
                          progress=False, log=lambda s: None)
        finally:
            T.save_state = real
        return state.history["seconds"][-1] + saving["s"]

    return epoch


def torch_epochs(torch, bench, workload, arch, params, dataset, out: Path):
    """epoch() -> seconds of one epoch of the same work in PyTorch (autograd, torch.optim.Adam, torch.randn noise)."""
    _, _, bound, kl, K = workload
    enc, dec = bench.torch_model(torch, arch, params)
    opt = torch.optim.Adam(list(enc.parameters()) + list(dec.parameters()), lr=1e-3)
    x_train, x_valid = torch.from_numpy(dataset.train), torch.from_numpy(dataset.valid)  # uint8, cast batch by batch
    rng, gen = np.random.default_rng(0), torch.Generator().manual_seed(0)
    Z = arch.latent_dim

    def epoch():
        t = time.perf_counter()
        order = torch.from_numpy(rng.permutation(x_train.shape[0]))
        for i in range(0, x_train.shape[0], BATCH):
            xb = x_train[order[i:i + BATCH]].float()
            e = torch.randn((K, xb.shape[0], Z), generator=gen)
            opt.zero_grad(set_to_none=True)
            loss = -bench.torch_bound(torch, enc, dec, arch, xb, e, bound, kl).mean()
            loss.backward()
            opt.step()
        total = 0.0
        with torch.no_grad():
            for i in range(0, x_valid.shape[0], BATCH):
                xb = x_valid[i:i + BATCH].float()
                e = torch.randn((K, xb.shape[0], Z), generator=gen)
                total += float(bench.torch_bound(torch, enc, dec, arch, xb, e, bound, kl).sum())
        torch.save({"enc": enc.state_dict(), "dec": dec.state_dict(), "adam": opt.state_dict()}, out / "torch_last.pt")
        return time.perf_counter() - t

    return epoch


def jax_epochs(jax, workload, arch, params, dataset, out: Path, lr=1e-3, betas=(0.9, 0.999), adam_eps=1e-8):
    """epoch() -> seconds of one epoch of the same work in JAX (jit step with jax.random noise, jit validation)."""
    from jax_model import _bound_fn, adam

    from npvae import flatten

    jnp = jax.numpy
    _, _, bound, kl, K = workload
    value = _bound_fn(jax, arch, bound, kl)
    Z = arch.latent_dim

    @jax.jit
    def step(ps, m, v, t, xb, key):
        e = jax.random.normal(key, (K, xb.shape[0], Z), dtype=jnp.float32)
        g = jax.grad(lambda q: -value(q, xb.astype(jnp.float32), e).mean())(ps)
        return adam(jnp, ps, m, v, t, g, lr, betas, adam_eps)

    @jax.jit
    def valid_sum(ps, xb, key):
        e = jax.random.normal(key, (K, xb.shape[0], Z), dtype=jnp.float32)
        return value(ps, xb.astype(jnp.float32), e).sum()

    p = [jnp.asarray(a) for a in flatten(params)]
    state = {"p": p, "m": [jnp.zeros_like(a) for a in p], "v": [jnp.zeros_like(a) for a in p],
             "t": jnp.asarray(0.0, dtype=jnp.float32), "key": jax.random.PRNGKey(0)}
    x_train, x_valid = dataset.train, dataset.valid
    rng = np.random.default_rng(0)

    def epoch():
        t0 = time.perf_counter()
        p, m, v, t, key = (state[n] for n in ("p", "m", "v", "t", "key"))
        order = rng.permutation(x_train.shape[0])
        for i in range(0, x_train.shape[0], BATCH):
            key, sub = jax.random.split(key)
            p, m, v, t = step(p, m, v, t, x_train[order[i:i + BATCH]], sub)
        total = 0.0
        for i in range(0, x_valid.shape[0], BATCH):
            key, sub = jax.random.split(key)
            total += float(valid_sum(p, x_valid[i:i + BATCH], sub))
        np.savez(out / "jax_last.npz", *[np.asarray(a) for a in (*p, *m, *v)])
        state.update(p=p, m=m, v=v, t=t, key=key)
        return time.perf_counter() - t0

    return epoch


def time_end_to_end(bench, name: str, frameworks, dataset, rounds: int) -> dict:
    """samples/s per framework: training points / the median of rounds - 1 epoch times (the first round not counted)."""
    from npvae import Likelihood, models

    workload = bench.WORKLOADS[name]
    spec, act = workload[:2]
    arch = models.parse(spec, activation=act, likelihood=Likelihood("bernoulli"))
    params = models.init_params(arch, np.random.default_rng(0), np.float32)
    tmp = Path(tempfile.mkdtemp(prefix="npvae-e2e-"))
    try:
        epochs = {}
        for f in frameworks:
            if f in ("numpy", "numba"):
                epochs[f] = npvae_epochs(workload, dataset, f, tmp / f)
            elif f == "torch":
                epochs[f] = torch_epochs(bench._torch(), bench, workload, arch, params, dataset, tmp)
            elif f == "jax":
                epochs[f] = jax_epochs(bench._jax(), workload, arch, params, dataset, tmp)
        times = {f: [] for f in epochs}
        for r in range(rounds):
            for f, epoch in epochs.items():
                s = epoch()
                if r > 0:
                    times[f].append(s)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    n = dataset.train.shape[0]
    return {f: {"samples_per_s": n / statistics.median(ts), "epoch_s": ts} for f, ts in times.items()}


def table(e2e: dict, inner: dict) -> str:
    """Markdown: end-to-end samples/s per framework, numba's inner loop beside it (same run), and the ratios."""
    fw = [f for f in ("numba", "numpy", "torch", "jax") if any(f in r for r in e2e.values())]
    head = ("| workload | " + " | ".join(f"{f} end to end" for f in fw) + " | numba inner loop | numba end to end / inner"
            " | end to end numba / torch | numba / jax | inner numba / torch |")
    lines = [head, "|" + "---|" * (len(fw) + 5)]

    def ratio(r, a, b):
        return f"{r[a]['samples_per_s'] / r[b]['samples_per_s']:.2f}x" if a in r and b in r else "-"

    for name, r in e2e.items():
        i = inner.get(name, {})
        cells = [f"{r[f]['samples_per_s']:,.0f}/s" if f in r else "-" for f in fw]
        inner_n = f"{i['numba']['samples_per_s']:,.0f}/s" if "numba" in i else "-"
        frac = f"{r['numba']['samples_per_s'] / i['numba']['samples_per_s']:.0%}" if "numba" in i and "numba" in r else "-"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {inner_n} | {frac} | {ratio(r, 'numba', 'torch')} | "
                     f"{ratio(r, 'numba', 'jax')} | {ratio(i, 'numba', 'torch')} |")
    return "\n".join(lines)
