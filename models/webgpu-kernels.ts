/**
 * Cohort's conv-gradient kernels for tfjs-backend-webgpu 4.22.
 *
 * Why. tfjs-webgpu's `Conv2DBackpropFilter` gives each output element one thread that loops over
 * the whole batch and image (no shared memory, no reuse), and its `Conv2DBackpropInput` is a
 * small-tile GEMM; on an H200 they run at ~0.3 TFLOP/s and bound McMahan's CNN. Ours are tiled
 * GEMMs with workgroup-shared tiles, 4×4 outputs per thread, and split-K for dW
 * (`webgpu-kernels-conv.ts`); `test/webgpu-kernels.test.ts` checks them against the cpu backend.
 *
 * What falls back to tfjs's own kernel (kept before it is replaced): NCHW, non-float32 inputs,
 * and shapes too large for one dispatch or for i32 indices. tfjs's Conv2D gradients never pass
 * dilations above 1 (its gradient asserts dilation 1) and tfjs has no grouped Conv2D, so neither
 * reaches these kernels.
 */
import * as tf from "@tensorflow/tfjs";
import type { DataType, KernelConfig, KernelFunc, TensorInfo } from "@tensorflow/tfjs";
import createDebug from "debug";
import { CohortError } from "../protocol/errors.js";
import {
  filterGradient,
  gemmFits,
  inputGradient,
  type WebGpuBackend,
} from "./webgpu-kernels-conv.js";

const debug = createDebug("cohort:models:webgpu-kernels");
const BACKEND = "webgpu";
const MARK = Symbol.for("cohort.webgpuConvKernel");

type Shape4 = [number, number, number, number];

/** The kernels this module replaces. */
export const WEBGPU_CONV_KERNELS = ["Conv2DBackpropFilter", "Conv2DBackpropInput"] as const;
type Name = (typeof WEBGPU_CONV_KERNELS)[number];

/** tfjs-webgpu's own kernels, kept when ours replace them. */
const native = new Map<Name, KernelConfig>();

function nativeKernel(name: Name): KernelConfig {
  const kernel = native.get(name) ?? tf.getKernel(name, BACKEND);
  if (kernel === undefined) {
    throw new CohortError("BACKEND_UNAVAILABLE", `the webgpu backend has no ${name} kernel`);
  }
  return kernel;
}

/** Arguments common to both gradients, as tfjs passes them. */
export interface ConvGradientCase {
  xShape: number[];
  filterShape: number[];
  strides: number | [number, number];
  pad: tf.Conv2DBackpropFilterAttrs["pad"];
  dataFormat?: string;
  dimRoundingMode?: "floor" | "round" | "ceil";
  dtypes: DataType[];
}

/**
 * Why Cohort's kernel does not take this case, or `null` when it does and the geometry to use.
 * Exported so tests can name the cases that fall back.
 */
export function convGradientPlan(
  c: ConvGradientCase,
): { fallback: string } | { info: tf.backend_util.Conv2DInfo } {
  if (c.dataFormat !== undefined && c.dataFormat !== "NHWC" && c.dataFormat !== "channelsLast")
    return { fallback: `dataFormat ${c.dataFormat}` };
  if (c.dtypes.some((d) => d !== "float32")) return { fallback: `dtype ${c.dtypes.join(",")}` };
  if (c.xShape.length !== 4 || c.filterShape.length !== 4) return { fallback: "rank" };
  const info = tf.backend_util.computeConv2DInfo(
    c.xShape as Shape4,
    c.filterShape as Shape4,
    c.strides,
    1,
    c.pad,
    c.dimRoundingMode,
    false,
    "channelsLast",
  );
  if (info.dilationHeight !== 1 || info.dilationWidth !== 1) return { fallback: "dilation" };
  const x = tf.util.sizeFromShape(info.inShape);
  const dy = tf.util.sizeFromShape(info.outShape);
  const taps = info.filterHeight * info.filterWidth;
  const dw = gemmFits(taps * info.inChannels, info.outChannels, dy / info.outChannels, [x, dy]);
  const dx = gemmFits(x / info.inChannels, info.inChannels, taps * info.outChannels, [x, dy]);
  if (!dw || !dx) return { fallback: "too large for one dispatch" };
  return { info };
}

let fallbacks = 0;

/** How many calls went to tfjs's own kernels since the process started (tests, benches). */
export function webGpuConvFallbacks(): number {
  return fallbacks;
}

const filterKernel: KernelFunc = (args) => {
  const { x, dy } = args.inputs as { x: TensorInfo; dy: TensorInfo };
  const a = args.attrs as unknown as tf.Conv2DBackpropFilterAttrs;
  const plan = convGradientPlan({
    xShape: x.shape,
    filterShape: a.filterShape,
    strides: a.strides,
    pad: a.pad,
    dataFormat: a.dataFormat,
    dimRoundingMode: a.dimRoundingMode,
    dtypes: [x.dtype, dy.dtype],
  });
  if ("fallback" in plan) {
    fallbacks++;
    debug("Conv2DBackpropFilter falls back: %s", plan.fallback);
    return nativeKernel("Conv2DBackpropFilter").kernelFunc(args);
  }
  return filterGradient(args.backend as WebGpuBackend, x, dy, plan.info);
};

const inputKernel: KernelFunc = (args) => {
  const { dy, filter } = args.inputs as { dy: TensorInfo; filter: TensorInfo };
  const a = args.attrs as unknown as tf.Conv2DBackpropInputAttrs;
  const plan = convGradientPlan({
    xShape: a.inputShape,
    filterShape: filter.shape,
    strides: a.strides,
    pad: a.pad,
    dataFormat: a.dataFormat,
    dimRoundingMode: a.dimRoundingMode,
    dtypes: [dy.dtype, filter.dtype],
  });
  if ("fallback" in plan) {
    fallbacks++;
    debug("Conv2DBackpropInput falls back: %s", plan.fallback);
    return nativeKernel("Conv2DBackpropInput").kernelFunc(args);
  }
  return inputGradient(args.backend as WebGpuBackend, dy, filter, plan.info);
};

const OURS: Record<Name, KernelFunc> = {
  Conv2DBackpropFilter: filterKernel,
  Conv2DBackpropInput: inputKernel,
};

/**
 * Replace tfjs-webgpu's conv-gradient kernels with Cohort's (idempotent). Call after
 * `@tensorflow/tfjs-backend-webgpu` is imported; `useBackend("webgpu")` does.
 *
 * @throws CohortError `BACKEND_UNAVAILABLE` when the webgpu backend's kernels are not loaded.
 */
export function registerWebGpuConvKernels(): void {
  for (const name of WEBGPU_CONV_KERNELS) {
    const existing = tf.getKernel(name, BACKEND);
    if (existing !== undefined && Reflect.get(existing.kernelFunc, MARK) === true) continue;
    if (existing === undefined) {
      throw new CohortError(
        "BACKEND_UNAVAILABLE",
        "import @tensorflow/tfjs-backend-webgpu before registering Cohort's webgpu kernels",
      );
    }
    native.set(name, existing);
    tf.unregisterKernel(name, BACKEND);
    const kernelFunc = OURS[name];
    Reflect.set(kernelFunc, MARK, true);
    tf.registerKernel({ kernelName: name, backendName: BACKEND, kernelFunc });
    debug("replaced webgpu %s", name);
  }
}

/** Put tfjs-webgpu's own conv-gradient kernels back (benchmarks compare the two). */
export function unregisterWebGpuConvKernels(): void {
  for (const name of WEBGPU_CONV_KERNELS) {
    const kept = native.get(name);
    if (kept === undefined) continue;
    tf.unregisterKernel(name, BACKEND);
    tf.registerKernel(kept);
    native.delete(name);
    debug("restored tfjs's webgpu %s", name);
  }
}
