/**
 * Plumbing of the wasm training kernels (see `wasm-kernels.ts`): calling the backend's own
 * kernels on TensorInfos with every intermediate freed, and the geometry of conv gradients.
 */
import * as tf from "@tensorflow/tfjs";
import type {
  DataType,
  KernelBackend,
  KernelConfig,
  NamedAttrMap,
  NamedTensorInfoMap,
  TensorInfo,
} from "@tensorflow/tfjs";
import { CohortError } from "../protocol/errors.js";

export const BACKEND = "wasm";

/** The parts of tfjs-backend-wasm's `BackendWasm` these kernels use. */
export interface WasmBackend extends KernelBackend {
  makeOutput(shape: number[], dtype: DataType): TensorInfo;
  typedArrayFromHeap(info: TensorInfo): Float32Array | Int32Array | Uint8Array;
}

export type Pads = [[number, number], [number, number]];
export type Shape4 = [number, number, number, number];
/** Run one of the backend's own kernels; its output is freed when the kernel being built ends. */
export type Run = (
  name: string,
  inputs: NamedTensorInfoMap | TensorInfo[],
  attrs?: object,
) => TensorInfo;

/** The wasm backend's own kernels that a registered kernel replaced. */
const native = new Map<string, KernelConfig>();

/** Keep the backend's own `kernel` reachable after it is unregistered. */
export function rememberNative(name: string, kernel: KernelConfig): void {
  native.set(name, kernel);
}

/** The backend's own kernel `name`, even where this module replaced it. */
export function nativeKernel(name: string): KernelConfig {
  const kernel = native.get(name) ?? tf.getKernel(name, BACKEND);
  if (kernel === undefined) {
    throw new CohortError("BACKEND_UNAVAILABLE", `the wasm backend has no ${name} kernel`);
  }
  return kernel;
}

/**
 * Run `body` with a helper that calls the backend's kernels on TensorInfos; every intermediate
 * it made is freed afterwards except the returned one (reshapes share data by reference count,
 * so freeing their source is safe).
 */
export function composed(backend: WasmBackend, body: (run: Run) => TensorInfo): TensorInfo {
  const temps: TensorInfo[] = [];
  const run: Run = (name, inputs, attrs = {}) => {
    const out = nativeKernel(name).kernelFunc({
      inputs: inputs as NamedTensorInfoMap,
      backend,
      attrs: attrs as NamedAttrMap,
    }) as TensorInfo;
    temps.push(out);
    return out;
  };
  let result: TensorInfo | undefined;
  try {
    result = body(run);
    return result;
  } finally {
    for (const t of temps) if (t !== result) backend.disposeData(t.dataId);
  }
}

export function assertChannelsLast(kernel: string, dataFormat: unknown): void {
  if (dataFormat !== undefined && dataFormat !== "NHWC" && dataFormat !== "channelsLast") {
    throw new Error(`wasm ${kernel} supports dataFormat NHWC only, got ${String(dataFormat)}`);
  }
}

/**
 * Crop (negative amounts) then return the padding still to add (non-negative) to rows/columns of
 * an NHWC tensor, so a caller can crop once and pad inside the conv itself.
 */
export function cropNegative(run: Run, x: TensorInfo, pads: Pads): [TensorInfo, Pads] {
  const [[top, bottom], [left, right]] = pads;
  if (top >= 0 && bottom >= 0 && left >= 0 && right >= 0) return [x, pads];
  const [n, h, w, c] = x.shape as Shape4;
  const t = Math.max(0, -top);
  const l = Math.max(0, -left);
  const size = [n, h - t - Math.max(0, -bottom), w - l - Math.max(0, -right), c];
  if (size[1]! <= 0 || size[2]! <= 0) throw new Error(`conv gradient: empty crop of [${x.shape}]`);
  const cropped = run("Slice", { x }, { begin: [0, t, l, 0], size });
  const kept: Pads = [
    [Math.max(0, top), Math.max(0, bottom)],
    [Math.max(0, left), Math.max(0, right)],
  ];
  return [cropped, kept];
}

/** Insert `stride − 1` zeros after every row and column of an NHWC tensor (transposed conv). */
export function dilateRows(run: Run, x: TensorInfo, sh: number, sw: number): TensorInfo {
  if (sh === 1 && sw === 1) return x;
  const [n, h, w, c] = x.shape as Shape4;
  const six = run("Reshape", { x }, { shape: [n, h, 1, w, 1, c] });
  const padded = run(
    "PadV2",
    { x: six },
    {
      paddings: [
        [0, 0],
        [0, 0],
        [0, sh - 1],
        [0, 0],
        [0, sw - 1],
        [0, 0],
      ],
      constantValue: 0,
    },
  );
  return run("Reshape", { x: padded }, { shape: [n, h * sh, w * sw, c] });
}

/** Geometry of the forward conv a gradient belongs to. */
export function forwardInfo(
  xShape: number[],
  filterShape: number[],
  a: Pick<tf.Conv2DBackpropFilterAttrs, "strides" | "pad" | "dimRoundingMode">,
  depthwise: boolean,
): tf.backend_util.Conv2DInfo {
  return tf.backend_util.computeConv2DInfo(
    xShape as Shape4,
    filterShape as Shape4,
    a.strides,
    1,
    a.pad,
    a.dimRoundingMode,
    depthwise,
    "channelsLast",
  );
}

/** Padding of the stride-1 conv that maps dy (zero-dilated, [Ho·s, Wo·s]) back onto x. */
export function inputGradPads(info: tf.backend_util.Conv2DInfo): Pads {
  const { filterHeight: fh, filterWidth: fw, inHeight, inWidth, padInfo } = info;
  const dilatedH = info.outHeight * info.strideHeight;
  const dilatedW = info.outWidth * info.strideWidth;
  const top = fh - 1 - padInfo.top;
  const left = fw - 1 - padInfo.left;
  return [
    [top, inHeight + fh - 1 - dilatedH - top],
    [left, inWidth + fw - 1 - dilatedW - left],
  ];
}

export function explicit(
  p: Pads,
): [[number, number], [number, number], [number, number], [number, number]] {
  return [[0, 0], p[0], p[1], [0, 0]];
}
