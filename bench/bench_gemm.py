"""The GEMM floor of a training step: the matrix products of each workload, timed alone on this machine's BLAS.

A step of bench_train.py's workloads is a fixed list of products (forward, then the backward's dW and dX);
their time alone, with nothing else in the step, is the floor no backend that keeps products on BLAS can
beat. Run once per OpenBLAS kernel choice, each in its own process (OPENBLAS_CORETYPE is read when the
library loads), so the table shows what the kernel choice is worth for these shapes:

    python bench/bench_gemm.py                                  # this process's BLAS, as the environment set it
    python bench/bench_gemm.py --coretypes env,Haswell,SkylakeX # one child process per OPENBLAS_CORETYPE
    python bench/bench_gemm.py --device cuda --batch 1024       # cuBLAS through torch, on an NVIDIA GPU
    python bench/bench_gemm.py --device torch-cpu               # torch's own CPU GEMM (MKL or oneDNN), one thread

Where numba loses to torch on a heavy-GEMM workload (B-k50, eval: ~90% of numba's step is these products), run it
with and without --device torch-cpu on that machine: the difference between the two floors is what BLAS, not npvae,
costs there.

The row "eval" is the whole evaluation of bench_train.py (1000 points, k = 5000): GFLOP and ms in all,
samples/s of the decoder's products alone.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

BATCH = 128
WORKLOADS = {"A": ([784, 400, 20], 1), "B-k1": ([784, 200, 200, 50], 1), "B-k50": ([784, 200, 200, 50], 50)}
EVAL = (1000, 5000, 5300)  # the importance-sampled log p(x): points, samples per point, decoder rows per product


def step_products(dims: list[int], K: int, N: int = BATCH) -> list[tuple[int, int, int]]:
    """(M, K, N) of every product of one step: encoder D-...-2Z on N rows, decoder Z-...-D on K N rows."""
    enc = dims[:-1] + [2 * dims[-1]]
    dec = dims[::-1]
    out = []
    for layers, rows in ((enc, N), (dec, K * N)):
        for i in range(len(layers) - 1):
            a, b = layers[i], layers[i + 1]
            out.append((rows, a, b))  # forward: h @ W
            out.append((a, rows, b))  # backward: dW = h.T @ d
            if i > 0 or layers is dec:
                out.append((rows, b, a))  # backward: dh = d @ W.T (not needed for the encoder's input)
    return out


def time_product_cuda(m: int, k: int, n: int, repeats: int) -> float:
    """As time_product, float32 on the GPU with torch's cuBLAS, the device synchronised around each timing."""
    import torch

    a, b = torch.randn(m, k, device="cuda"), torch.randn(k, n, device="cuda")
    c = torch.empty(m, n, device="cuda")
    torch.matmul(a, b, out=c)
    reps = max(10, int(2e10 / (2 * m * k * n)))
    ts = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(reps):
            torch.matmul(a, b, out=c)
        torch.cuda.synchronize()
        ts.append((time.perf_counter() - t) / reps)
    return statistics.median(ts)


def time_product_torch_cpu(m: int, k: int, n: int, repeats: int) -> float:
    """As time_product, float32 with torch.matmul on the CPU, one thread (torch's GEMM: MKL or oneDNN, not OpenBLAS)."""
    import torch

    torch.set_num_threads(1)
    return time_product(m, k, n, repeats, np.float32, lambda a, b, c: torch.matmul(a, b, out=c), torch.from_numpy)


def time_product(m: int, k: int, n: int, repeats: int, dtype, matmul=np.matmul, convert=lambda a: a) -> float:
    """Median seconds of one (m, k) @ (k, n) product into a preallocated output (numpy's, or `matmul` on `convert`ed arrays)."""
    rng = np.random.default_rng(0)
    a, b = (convert(rng.standard_normal(shape).astype(dtype)) for shape in ((m, k), (k, n)))
    c = convert(np.empty((m, n), dtype))
    matmul(a, b, c)
    reps = max(1, int(2e8 / (2 * m * k * n)))  # ~0.2 GFLOP per timing
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(reps):
            matmul(a, b, c)
        ts.append((time.perf_counter() - t) / reps)
    return statistics.median(ts)


def measure(repeats: int, device: str = "cpu") -> dict:
    from threadpoolctl import threadpool_info, threadpool_limits

    threadpool_limits(1)
    if device == "cuda":
        import torch

        blas = [{"internal_api": "cuBLAS (torch)", "version": torch.version.cuda, "architecture": torch.cuda.get_device_name()}]
    elif device == "torch-cpu":
        import torch

        config = torch.__config__.show()
        lib = "MKL" if "USE_MKL=ON" in config else "oneDNN/other"
        blas = [{"internal_api": f"torch {torch.__version__} ({lib})", "version": torch.__version__, "architecture": lib}]
    else:
        blas = [{k: d.get(k) for k in ("internal_api", "version", "architecture")} for d in threadpool_info()]
    res = {"OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE", "(unset)"), "blas": blas, "workloads": {}}

    def timer(m, k, n):
        if device == "cuda":
            return time_product_cuda(m, k, n, repeats)
        if device == "torch-cpu":
            return time_product_torch_cpu(m, k, n, repeats)
        return time_product(m, k, n, repeats, np.float32)

    for name, (dims, K) in WORKLOADS.items():
        prods = step_products(dims, K, BATCH)
        secs = [timer(*p) for p in prods]
        flops = sum(2 * m * k * n for m, k, n in prods)
        res["workloads"][name] = {"gflop_per_step": flops / 1e9, "gemm_ms_per_step": 1e3 * sum(secs),
                                  "gflops": flops / sum(secs) / 1e9, "floor_samples_per_s": BATCH / sum(secs)}
    n, k, rows = EVAL  # model B's decoder forward on rows samples at a time; n k samples in all
    prods = [(rows, 50, 200), (rows, 200, 200), (rows, 200, 784)]
    secs = sum(timer(*p) for p in prods)
    flops = sum(2 * m * a * b for m, a, b in prods)
    res["workloads"]["eval"] = {"gflop_per_step": flops * n * k / rows / 1e9, "gemm_ms_per_step": 1e3 * secs * n * k / rows,
                                "gflops": flops / secs / 1e9, "floor_samples_per_s": rows / secs}
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--coretypes", default="env", help="comma-separated OPENBLAS_CORETYPE values; 'env' = as inherited")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--device", choices=("cpu", "torch-cpu", "cuda"), default="cpu")
    p.add_argument("--batch", type=int, default=BATCH)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    globals()["BATCH"] = args.batch
    if args.child:
        print(json.dumps(measure(args.repeats, args.device)))
        return 0
    print(f"float32, {'cuBLAS' if args.device == 'cuda' else 'one BLAS thread'}, batch {args.batch}; "
          "floor = batch / (time of the step's products alone)")
    print("| OPENBLAS_CORETYPE | kernel | workload | GFLOP/step | GEMM ms/step | GFLOP/s | floor samples/s |")
    print("|---|---|---|---:|---:|---:|---:|")
    for ct in args.coretypes.split(","):
        env = dict(os.environ)
        if ct != "env":
            env["OPENBLAS_CORETYPE"] = ct
        out = subprocess.run([sys.executable, __file__, "--child", "--repeats", str(args.repeats), "--device", args.device,
                              "--batch", str(args.batch)], env=env,
                             capture_output=True, text=True, check=True).stdout
        r = json.loads(out)
        for name, w in r["workloads"].items():
            print(f"| {r['OPENBLAS_CORETYPE']} | {r['blas'][0]['architecture']} | {name} | {w['gflop_per_step']:.3f} | "
                  f"{w['gemm_ms_per_step']:.2f} | {w['gflops']:.0f} | {w['floor_samples_per_s']:,.0f} |", flush=True)
    print(f"load average: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
