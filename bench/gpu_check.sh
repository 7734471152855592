#!/usr/bin/env bash
# One prepared run on a lent NVIDIA GPU (issue 5): the CUDA tests on the real target, then the GPU benchmarks.
#
# Once, so that the data travel with the working tree (only tracked and carried files reach the device):
#     echo /.devdata/ >> .git/info/exclude && mkdir -p .devdata && cp DIR/binarized_mnist.npz .devdata/
# then, through the device tool:  run(command="bash bench/gpu_check.sh", carry=[".devdata"], timeout_s=600)
#
# The device image has python3 with numba, numba-cuda, CuPy, PyTorch, scipy, scikit-learn, matplotlib, pytest
# and hypothesis, and no network: npvae runs from the working tree (PYTHONPATH), nothing is installed.
# Each stage has its own time limit, so a slow one cannot eat the others; logs and JSON go to $OUT.
set -u -o pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD" PYTHONUNBUFFERED=1
OUT="${OUT:-/tmp/npvae-gpu}"
mkdir -p "$OUT"
DATA="${NPVAE_DATA_DIR:-.devdata}"

stage() {  # stage NAME SECONDS COMMAND...: run, log to $OUT/NAME.log, and report the exit status and time
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  printf '%-12s rc=%-3s %4ds  %s\n' "$name" "$rc" $((SECONDS - t0)) "$(tail -n 1 "$OUT/$name.log" | cut -c1-150)" | tee -a "$OUT/summary.txt"
}

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv > "$OUT/device.txt" 2>&1
python3 - >> "$OUT/device.txt" 2>&1 <<'EOF'
import platform, numpy, numba, torch
from numba import cuda
try:
    import cupy; cp = cupy.__version__
except Exception as e:
    cp = f"not usable ({type(e).__name__})"
print("python", platform.python_version(), "numpy", numpy.__version__, "numba", numba.__version__,
      "numba-cuda", getattr(__import__("numba_cuda"), "__version__", "?"), "cupy", cp, "torch", torch.__version__)
print("cuda.is_available", cuda.is_available(), cuda.get_current_device().name if cuda.is_available() else "")
EOF
cat "$OUT/device.txt"

# 1. The CUDA tests on the GPU itself (tiled GEMM kernel and cuBLAS through CuPy), then the whole suite.
stage cuda_tests 240 python3 -m pytest -q -p no:cacheprovider tests/cuda_sim -rs
stage all_tests 300 python3 -m pytest -q -p no:cacheprovider -x tests -k "not test_cuda_backend_on_the_simulator"

# 2. The GEMM floor on the GPU (cuBLAS through torch), batch 128 and 1024.
stage gemm_128 60 python3 bench/bench_gemm.py --device cuda --batch 128
stage gemm_1024 60 python3 bench/bench_gemm.py --device cuda --batch 1024

# 3. Training and evaluation: npvae's device-resident trainer beside torch on the same GPU, in one run.
stage train_128 150 python3 bench/bench_train.py --data-dir "$DATA" --backends cuda,torch --torch-device cuda \
  --workloads A,B-k50,eval --json "$OUT/bench_128.json"
stage train_1024 90 python3 bench/bench_train.py --data-dir "$DATA" --backends cuda,torch --torch-device cuda \
  --workloads A --batch 1024 --steps 50 --json "$OUT/bench_1024.json"

echo "--- tables"
for f in gemm_128 gemm_1024 train_128 train_1024; do grep -E '^\|' "$OUT/$f.log"; done
echo "--- summary"
cat "$OUT/summary.txt"
