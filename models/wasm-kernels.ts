/**
 * Training kernels for tfjs-backend-wasm 4.22, whose kernel set is built for inference.
 *
 * Why these exist. As shipped, the wasm backend cannot train a CNN at all: it has no
 * `Conv2DBackpropFilter`, so every Conv2D layer fails with "kernel not registered"; likewise
 * depthwise/separable convs (`DepthwiseConv2dNativeBackpropFilter`/`…Input`) and embeddings
 * (`UnsortedSegmentSum`, the gradient of Gather). The cpu backend's versions are ~100× too slow
 * (87 s per 50-sample step of the McMahan CNN). Other kernels it has are pathologically slow for
 * training (measured on the CNN's shapes): `Conv2DBackpropInput` is a scalar loop, 8× slower than
 * the XNNPACK conv below; `MaxPoolGrad` takes 3× the JS pass below, longer than the conv it
 * follows; `BatchMatMul` with `transposeA` (the Dense weight gradient xᵀ·dy) is 7–24× slower than
 * Transpose + plain matmul, and with `transposeB` (dy·Wᵀ) 1.6–6×. Its `_FusedMatMul` also adds the
 * bias wrongly when the batch holds more than one matrix.
 *
 * How. Each kernel is composed from kernels the backend does have (XNNPACK Conv2D and
 * depthwise conv, Transpose, PadV2, Reverse, …), called directly on the backend with every
 * intermediate freed before it returns, or is one JS pass over the wasm heap; see
 * `wasm-kernels-conv.ts`, `-matmul.ts`, `-loops.ts`. `test/wasm-kernels.test.ts` checks each
 * against the cpu backend. With them the McMahan CNN trains at ~400 samples/s (batch 50) on one
 * core.
 */
import * as tf from "@tensorflow/tfjs";
import type { KernelConfig, KernelFunc } from "@tensorflow/tfjs";
import createDebug from "debug";
import { CohortError } from "../protocol/errors.js";
import { BACKEND, rememberNative } from "./wasm-kernels-compose.js";
import {
  conv2DBackpropFilter,
  conv2DBackpropInput,
  depthwiseBackpropFilter,
  depthwiseBackpropInput,
} from "./wasm-kernels-conv.js";
import { maxPoolGrad, unsortedSegmentSum } from "./wasm-kernels-loops.js";
import { matMul } from "./wasm-kernels-matmul.js";

const debug = createDebug("cohort:models:wasm-kernels");

/** Marks the kernel functions registered here, so registration is idempotent per tfjs instance. */
const MARK = Symbol.for("cohort.wasmTrainingKernel");

/** How a kernel is installed: added where the backend lacks it, or replacing the backend's own. */
interface TrainingKernel {
  name: string;
  policy: "add" | "replace";
  kernelFunc: KernelFunc;
}

/** Every kernel this module registers, in the order they are installed. */
export const WASM_TRAINING_KERNELS: readonly string[] = [
  "Conv2DBackpropFilter",
  "Conv2DBackpropInput",
  "DepthwiseConv2dNativeBackpropFilter",
  "DepthwiseConv2dNativeBackpropInput",
  "UnsortedSegmentSum",
  "MaxPoolGrad",
  "BatchMatMul",
  "_FusedMatMul",
];

function trainingKernels(): TrainingKernel[] {
  return [
    { name: "Conv2DBackpropFilter", policy: "add", kernelFunc: conv2DBackpropFilter },
    { name: "Conv2DBackpropInput", policy: "replace", kernelFunc: conv2DBackpropInput },
    {
      name: "DepthwiseConv2dNativeBackpropFilter",
      policy: "add",
      kernelFunc: depthwiseBackpropFilter,
    },
    {
      name: "DepthwiseConv2dNativeBackpropInput",
      policy: "add",
      kernelFunc: depthwiseBackpropInput,
    },
    { name: "UnsortedSegmentSum", policy: "add", kernelFunc: unsortedSegmentSum },
    { name: "MaxPoolGrad", policy: "replace", kernelFunc: maxPoolGrad },
    { name: "BatchMatMul", policy: "replace", kernelFunc: matMul("BatchMatMul") },
    { name: "_FusedMatMul", policy: "replace", kernelFunc: matMul("_FusedMatMul") },
  ];
}

function isOurs(kernel: KernelConfig | undefined): boolean {
  return kernel !== undefined && Reflect.get(kernel.kernelFunc, MARK) === true;
}

/**
 * Register the wasm training kernels with tfjs (idempotent). Call after
 * `@tensorflow/tfjs-backend-wasm` is imported — `selectBackend("wasm")` does — and before
 * training; registering before the backend initialises works too.
 *
 * @throws CohortError `BACKEND_UNAVAILABLE` when the wasm backend's kernels are not loaded.
 */
export function registerWasmTrainingKernels(): void {
  if (tf.getKernel("Conv2D", BACKEND) === undefined) {
    throw new CohortError(
      "BACKEND_UNAVAILABLE",
      "import @tensorflow/tfjs-backend-wasm before registering its training kernels",
    );
  }
  for (const { name, policy, kernelFunc } of trainingKernels()) {
    const existing = tf.getKernel(name, BACKEND);
    if (isOurs(existing)) continue;
    if (existing !== undefined) {
      if (policy === "add") continue; // a later tfjs ships its own: prefer it
      rememberNative(name, existing);
      tf.unregisterKernel(name, BACKEND);
    }
    Reflect.set(kernelFunc, MARK, true);
    // Keep the native setup (it binds the wasm function) for a backend not yet initialised.
    const setupFunc = existing?.setupFunc;
    tf.registerKernel({ kernelName: name, backendName: BACKEND, kernelFunc, setupFunc });
    debug("registered wasm %s (%s)", name, existing === undefined ? "added" : "replaced");
  }
}
