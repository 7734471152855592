"""Training and evaluation throughput of npvae's backends (numpy, numba) beside PyTorch, in one run on one machine.

Workloads (binarised MNIST, float32, one thread everywhere; jax through XLA_FLAGS, see jax_model.py):
  A      784-400-20 ReLU, Bernoulli, ELBO (analytic KL), batch 128: the pytorch/examples VAE
  B-k    784-200-200-50 tanh, IWAE with k = 1, 5, 50, batch 128 (Burda et al. 2016)
  eval   importance-sampled log p(x) of --eval-n test points with k = --eval-k, model B

A training step is what npvae.training.loop does per batch: the backend's stepper (the bound and its gradient,
then Adam: numpy's adam_update, numba's in-place kernel, cuda's device-resident trainer; torch: autograd +
torch.optim.Adam). Every backend
starts from the same parameters (torch's are copied from npvae's), sees the same batches and the
same noise eps, drawn before the clock starts. Warm-up steps (numba's compilation included) are
not timed. Each figure is the median of --repeats timed runs of --steps steps, in samples/s.

    python bench/bench_train.py                                # full: ~10 minutes, eval k=5000 on 1000 points
    python bench/bench_train.py --quick                        # < 2 minutes
    python bench/bench_train.py --data-dir DIR --json runs/bench.json
    python bench/bench_train.py --backends numba,cuda,torch --torch-device cuda   # on an NVIDIA GPU
    taskset -c 0 python bench/bench_train.py --end-to-end --workloads A,B-k1,B-k50 --backends numba,torch,jax   # bench/end_to_end.py

--end-to-end adds, for each training workload, epochs of npvae.training.loop.train beside torch and jax loops doing the same
per epoch (bench/end_to_end.py), and reports both ratios: end to end, and the inner loop timed in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from npvae import Likelihood, log_px, models, objective
from npvae.backends import get as get_backend
from npvae.store.data import subset_indices
from npvae.cli.data import search as data_search
from npvae.store.data import load
from npvae.nn.optim import adam_init

WORKLOADS = {  # name: (arch spec, activation, bound, kl, K)
    "A": ("784-400-20", "relu", "elbo", "analytic", 1),
    "B-k1": ("784-200-200-50", "tanh", "iwae", "mc", 1),
    "B-k5": ("784-200-200-50", "tanh", "iwae", "mc", 5),
    "B-k50": ("784-200-200-50", "tanh", "iwae", "mc", 50),
    "T-k5": ("784-200-200-100:100-100-50", "tanh", "iwae", "mc", 5),  # Burda et al.'s two stochastic layers (npvae only)
}
BATCH = 128


def machine() -> dict:
    """CPU, versions and thread settings, recorded beside every figure."""
    cpu = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            k, _, v = line.partition(":")
            k = k.strip()
            if k in ("model name", "cpu family", "model", "flags") and k not in cpu:
                cpu[k] = v.strip()
    except OSError:
        pass
    flags = set(cpu.pop("flags", "").split())
    info = {
        "cpu": cpu.get("model name", platform.processor()),
        "cpu_family_model": f"{cpu.get('cpu family', '?')}/{cpu.get('model', '?')}",
        "simd": " ".join(f for f in ("avx2", "fma", "avx512f") if f in flags),
        "cores": os.cpu_count(),
        "load_average_1_5_15min": os.getloadavg(),  # other processes on a small machine move every figure
        "python": platform.python_version(),
        "numpy": np.__version__,
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE", "(unset)"),
        "blas": [{k: d.get(k) for k in ("internal_api", "version", "architecture", "num_threads")} for d in threadpool_info()],
    }
    try:
        import llvmlite
        import numba

        info.update(numba=numba.__version__, llvmlite=llvmlite.__version__, numba_svml=bool(numba.config.USING_SVML),
                    numba_threads=numba.config.NUMBA_NUM_THREADS)
    except ImportError:
        pass
    torch = _torch()
    if torch is not None:
        info.update(torch=torch.__version__, torch_threads=torch.get_num_threads())
    jax = _jax()
    if jax is not None:
        info.update(jax=jax.__version__, jax_devices=[str(d) for d in jax.devices()], XLA_FLAGS=os.environ.get("XLA_FLAGS"))
    return info


def _jax():
    """jax on one CPU thread (XLA_FLAGS must be set before jax is first imported), or None if it does not import."""
    os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
    try:
        import jax
    except ImportError:
        return None
    return jax


def _torch():
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(1)
    return torch


def problem(name, x_train, steps, seed=0):
    """(arch, initial params, batches, eps per step): identical for every backend."""
    spec, act, bound, kl, K = WORKLOADS[name]
    arch = models.parse(spec, activation=act, likelihood=Likelihood("bernoulli"))
    params = models.init_params(arch, np.random.default_rng(seed), np.float32)
    rng = np.random.default_rng(seed + 1)
    order = rng.permutation(x_train.shape[0])
    batches = [np.ascontiguousarray(x_train[order[(i * BATCH) % len(order):][:BATCH]]) for i in range(steps)]
    eps = [rng.standard_normal((K, BATCH, arch.noise_dim), dtype=np.float32) for _ in range(steps)]
    return arch, params, batches, eps, dict(bound=bound, kl=kl, estimator="reparam")


def npvae_steps(backend, arch, params, batches, eps, options):
    """A function run(i0, i1) taking training steps i0..i1-1 of (batches, eps) as npvae.training.loop does: the backend's stepper
    (npvae.backends.get(backend).stepper), the data checked once, before the clock; state carried across calls."""
    flat = [a.copy() for a in models.flatten(params)]
    b = get_backend(backend)
    stepper = b.stepper(b, arch, flat, adam_init(flat), batch_size=BATCH, free_bits=0.0, betas=(0.9, 0.999),
                        adam_eps=1e-8, **options)
    x = np.concatenate(batches)
    stepper.start_epoch(x, np.arange(x.shape[0]))

    def run(i0, i1):
        for i in range(i0, i1):  # on cuda each step reads back its summary: the clock stops after the device did the work
            stepper.step(i * BATCH, (i + 1) * BATCH, eps[i], 1.0, 1e-3)

    return run


def torch_model(torch, arch, params, device="cpu"):
    """The same VAE in PyTorch, with npvae's initial parameters (W transposed to torch's (out, in))."""
    nn = torch.nn

    def mlp(layers, act):
        mods = []
        for i, layer in enumerate(layers):
            lin = nn.Linear(*layer.W.shape)
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(layer.W.T.copy()))
                lin.bias.copy_(torch.from_numpy(layer.b))
            mods.append(lin)
            if i < len(layers) - 1:
                mods.append(nn.ReLU() if act == "relu" else nn.Tanh())
        return nn.Sequential(*mods).to(device)

    return mlp(params.encoder, arch.activation), mlp(params.decoder, arch.activation)


def torch_bound(torch, enc, dec, arch, x, eps, bound, kl):
    """Per-point bound (N,): ELBO with analytic KL, or IWAE's LME of the log-weights; eps: (K, N, Z)."""
    F = torch.nn.functional
    Z = arch.latent_dim
    h = enc(x)
    mu, log_var = h[:, :Z], h[:, Z:]
    z = mu + torch.exp(0.5 * log_var) * eps  # (K, N, Z)
    logits = dec(z)
    log_px_z = -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)  # (K, N)
    if kl == "analytic":
        return log_px_z.mean(0) - 0.5 * (mu * mu + torch.expm1(log_var) - log_var).sum(-1)
    log_pz = -0.5 * (z * z).sum(-1)
    log_qz = -0.5 * (log_var + eps * eps).sum(-1)  # the log 2pi terms cancel
    a = log_px_z + log_pz - log_qz
    return torch.logsumexp(a, 0) - np.log(a.shape[0])


def torch_steps(torch, arch, params, batches, eps, options, device="cpu"):
    """run(i0, i1) as npvae_steps, with autograd and torch.optim.Adam; on a GPU the data are moved there first."""
    enc, dec = torch_model(torch, arch, params, device)
    opt = torch.optim.Adam(list(enc.parameters()) + list(dec.parameters()), lr=1e-3)
    xs, es = [torch.from_numpy(x).to(device) for x in batches], [torch.from_numpy(e).to(device) for e in eps]

    def run(i0, i1):
        for xb, e in zip(xs[i0:i1], es[i0:i1]):
            opt.zero_grad(set_to_none=True)
            loss = -torch_bound(torch, enc, dec, arch, xb, e, options["bound"], options["kl"]).mean()
            loss.backward()
            opt.step()
        if device != "cpu":
            torch.cuda.synchronize()

    return run


def time_training(name, backends, x_train, steps, warmup, repeats, torch_device="cpu"):
    """samples/s per backend: the median of `repeats` runs of `steps` steps, backends interleaved."""
    arch, params, batches, eps, options = problem(name, x_train, warmup + steps)
    torch = _torch() if "torch" in backends else None
    if arch.FAMILY != "one-layer" and {"torch", "jax"} & set(backends):
        raise ValueError(f"workload {name} ({arch.spec}) has {arch.L} stochastic layers: npvae's backends only, not torch or jax")
    runs = {}
    for b in backends:
        if b == "torch":
            runs[b] = torch_steps(torch, arch, params, batches, eps, options, torch_device)
            # The same model: torch's bound at step 0 equals npvae's.
            ref = objective(params, arch, batches[0], eps[0], **options)[0]
            enc, dec = torch_model(torch, arch, params)
            with torch.no_grad():
                got = torch_bound(torch, enc, dec, arch, torch.from_numpy(batches[0]), torch.from_numpy(eps[0]),
                                  options["bound"], options["kl"]).numpy()
            assert np.allclose(got, ref, rtol=1e-4, atol=1e-3), f"torch model differs: {got[:3]} vs {ref[:3]}"
        elif b == "jax":
            from jax_model import jax_bound, jax_steps

            jax = _jax()
            runs[b] = jax_steps(jax, arch, params, batches, eps, options)
            ref = objective(params, arch, batches[0], eps[0], **options)[0]
            got = jax_bound(jax, arch, params, batches[0], eps[0], options["bound"], options["kl"])
            assert np.allclose(got, ref, rtol=1e-4, atol=1e-3), f"jax model differs: {got[:3]} vs {ref[:3]}"
        else:
            runs[b] = npvae_steps(b, arch, params, batches, eps, options)
    for b in backends:  # warm-up (compilation, caches, allocator)
        runs[b](0, warmup)
    times = {b: [] for b in backends}
    for _ in range(repeats):  # every repeat trains on through the same `steps` batches
        for b in backends:
            t = time.perf_counter()
            runs[b](warmup, warmup + steps)
            times[b].append(time.perf_counter() - t)
    return {b: {"samples_per_s": BATCH * steps / statistics.median(ts), "runs_s": ts} for b, ts in times.items()}


def time_eval(backends, x_test, n, k, seed=0, batch=100, torch_device="cpu"):
    """Seconds for the importance-sampled log p(x) of n test points, a seeded random subset (model B, untrained: the cost is the same)."""
    arch, params, _, _, _ = problem("B-k1", x_test, 0)
    x = np.ascontiguousarray(x_test[subset_indices(n, x_test.shape[0], np.random.default_rng(seed))])
    out = {}
    for b in backends:
        t = time.perf_counter()
        if b == "torch":
            lp = _torch_log_px(_torch(), arch, params, x, k, np.random.default_rng(seed), batch, device=torch_device)
        elif b == "jax":
            from jax_model import jax_log_px
            from npvae.vae.importance import _chunk_size

            def chunk_of(n):
                return _chunk_size(arch, n, 1 << 22)

            jax_log_px(_jax(), arch, params, x[:batch], k, batch, chunk_of)  # compile every chunk shape outside the clock
            t = time.perf_counter()
            lp = jax_log_px(_jax(), arch, params, x, k, batch, chunk_of)
        else:
            log_px(params, arch, x[:2], 2, np.random.default_rng(0), backend=b)  # compile outside the clock
            t = time.perf_counter()
            lp = np.concatenate([log_px(params, arch, x[i:i + batch], k, np.random.default_rng((seed, i)), backend=b)
                                 for i in range(0, n, batch)])
        out[b] = {"seconds": time.perf_counter() - t, "mean_log_px": float(np.mean(lp))}
    return out


def _torch_log_px(torch, arch, params, x, k, rng, batch, max_elements=1 << 22, device="cpu"):
    """The same estimator in torch, same noise (drawn by numpy's Generator in the same chunks as npvae)."""
    from npvae.vae.importance import _chunk_size

    enc, dec = torch_model(torch, arch, params, device)
    Z = arch.latent_dim
    res = []
    with torch.no_grad():
        for i in range(0, x.shape[0], batch):
            xb = torch.from_numpy(x[i:i + batch]).to(device)
            g = np.random.default_rng((0, i))
            chunk = _chunk_size(arch, xb.shape[0], max_elements)
            h = enc(xb)
            mu, log_var = h[:, :Z], h[:, Z:]
            parts, done = [], 0
            while done < k:
                kc = min(chunk, k - done)
                e = torch.from_numpy(g.standard_normal((kc, xb.shape[0], Z), dtype=np.float32)).to(device)
                z = mu + torch.exp(0.5 * log_var) * e
                logits = dec(z)
                lpx = -torch.nn.functional.binary_cross_entropy_with_logits(logits, xb.expand_as(logits), reduction="none").sum(-1)
                parts.append(lpx - 0.5 * (z * z).sum(-1) + 0.5 * (log_var + e * e).sum(-1))
                done += kc
            res.append((torch.logsumexp(torch.cat(parts), 0) - np.log(k)).cpu().numpy())
    return np.concatenate(res)


def table(results, backends) -> str:
    """A markdown table: samples/s (training) or seconds (evaluation) per backend, and ratios to torch and numpy."""
    head = "| workload | " + " | ".join(backends) + " | numba / numpy | numba / torch | numba / jax |"
    lines = [head, "|" + "---|" * (len(backends) + 4)]
    for name, r in results.items():
        if name == "eval":
            cells = [f"{r[b]['seconds']:.1f} s" for b in backends]
            ratio = lambda a, b: f"{r[b]['seconds'] / r[a]['seconds']:.2f}x" if a in r and b in r else "-"
        else:
            cells = [f"{r[b]['samples_per_s']:,.0f}/s" for b in backends]
            ratio = lambda a, b: f"{r[a]['samples_per_s'] / r[b]['samples_per_s']:.2f}x" if a in r and b in r else "-"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {ratio('numba', 'numpy')} | {ratio('numba', 'torch')} | {ratio('numba', 'jax')} |")
    return "\n".join(lines)


def described_as(doc: str, prog: str | None) -> str:
    """The module docstring for --help, its examples run as `prog` (npvae bench) when given, and what `prog` runs."""
    if prog is None:
        return doc
    return doc.replace("python bench/bench_train.py", prog) + f"\n{prog} runs bench/bench_train.py of the source checkout.\n"


def main(argv=None, prog=None) -> int:
    p = argparse.ArgumentParser(prog=prog, description=described_as(__doc__, prog),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", action="append", default=None, metavar="DIR",
                   help="where binarized_mnist.npz (or the three .amat files) is looked for first (repeatable); then "
                        "$NPVAE_DATA_DIR, then the user cache, as npvae train looks")
    p.add_argument("--download", action="store_true", help="fetch missing public files into the cache (sha256-verified), as npvae train does")
    p.add_argument("--workloads", default="A,B-k1,B-k5,B-k50,eval", help="comma-separated subset of A, B-k1, B-k5, B-k50, eval")
    p.add_argument("--backends", default="numpy,numba,torch,jax",
                   help="comma-separated numpy, numba, cuda (device-resident training), torch, jax; torch and jax are skipped when they do not import")
    p.add_argument("--torch-device", default="cpu", help="where torch runs: cpu (default) or cuda (beside backend cuda, on a GPU)")
    p.add_argument("--steps", type=int, default=100, help="timed steps per repeat (B-k50: a fifth of it)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--eval-n", type=int, default=1000)
    p.add_argument("--eval-k", type=int, default=5000)
    p.add_argument("--quick", action="store_true", help="steps 20, repeats 3, eval 100 points with k = 500")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=BATCH, help=f"training batch size (default {BATCH}; the issue's GPU runs also use 1024)")
    p.add_argument("--end-to-end", action="store_true", help="also time whole epochs (bench/end_to_end.py)")
    p.add_argument("--rounds", type=int, default=3, help="--end-to-end: epochs per framework, taken in turns; the first is not counted")
    p.add_argument("--json", default="runs/bench_train.json")
    args = p.parse_args(argv)
    known = {"workloads": [*WORKLOADS, "eval"], "backends": ["numpy", "numba", "cuda", "torch", "jax"]}
    for option, choices in known.items():
        bad = [v for v in getattr(args, option).split(",") if v not in choices]
        if bad:
            p.error(f"--{option}: unknown {', '.join(bad)}; choose from {', '.join(choices)}")
    globals()["BATCH"] = args.batch  # problem() and the samples/s arithmetic read the module's BATCH
    if args.quick:
        args.steps, args.repeats, args.eval_n, args.eval_k = 20, 3, 100, 500
    threadpool_limits(args.threads)
    importable = {"torch": _torch, "jax": _jax}
    asked = args.backends.split(",")
    backends = [b for b in asked if b not in importable or importable[b]() is not None]
    missing = [b for b in asked if b not in backends]
    info = machine()
    where = data_search(args)  # --data-dir, $NPVAE_DATA_DIR, the cache, and --download: what npvae train does
    d = load("binarized-mnist", dtype=np.float32, **where)
    compact = load("binarized-mnist", dtype=np.float32, compact=True, **where) if args.end_to_end else None
    results, e2e = {}, {}
    for name in args.workloads.split(","):
        if name == "eval":
            results[name] = time_eval(backends, d.test, args.eval_n, args.eval_k, torch_device=args.torch_device)
        else:
            steps = max(2, args.steps // 5) if name == "B-k50" else args.steps
            results[name] = time_training(name, backends, d.train, steps, args.warmup, args.repeats, args.torch_device)
            if args.end_to_end:
                import end_to_end

                e2e[name] = end_to_end.time_end_to_end(sys.modules[__name__], name, [b for b in backends if b != "cuda"],
                                                       compact, args.rounds)
        print(f"timed {name}", flush=True)
    print()
    for name in args.workloads.split(","):
        spec = WORKLOADS.get(name)
        what = (f"{spec[0]} {spec[1]}, {spec[2]} ({spec[3]} KL), K={spec[4]}, batch {args.batch}" if spec
                else f"log p(x) of {args.eval_n} test points, k = {args.eval_k}, model B")
        print(f"  {name}: {what}")
    for b in missing:
        print(f"  {b}: not timed, it does not import here (pip install {b})")
    print(f"float32, batch {args.batch}, {args.threads} thread(s); training in samples/s (median of {args.repeats} x {args.steps} steps),"
          f" eval = log p(x) of {args.eval_n} test points with k = {args.eval_k} (seconds)")
    print(table(results, backends))
    if e2e:
        import end_to_end

        print(f"\nend to end: binarised MNIST's {d.train.shape[0]} training points / the median epoch (of {args.rounds - 1}, "
              f"frameworks in turns), validation of {d.valid.shape[0]} points and a checkpoint included")
        print(end_to_end.table(e2e, results))
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    print(f"load average at the end: {os.getloadavg()}")
    out.write_text(json.dumps({"machine": info, "args": vars(args), "results": results, "end_to_end": e2e, "load_average_end": os.getloadavg()}, indent=1))
    print(f"\nwritten to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
