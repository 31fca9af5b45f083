/**
 * Conv gradients for the wasm backend (see `wasm-kernels.ts`), each one XNNPACK conv:
 * - dW of a conv is a Conv2D over the batch: input xᵀ [Cin, H, W, N], "filter" dyᵀ
 *   [Ho, Wo, N, Cout], dilation = the forward stride, output [Cin, fh, fw, Cout] transposed back.
 * - dX of a conv is a stride-1 Conv2D of dy (zero-dilated by the forward stride) with the
 *   spatially flipped filter whose in/out channels are swapped.
 */
import type * as tf from "@tensorflow/tfjs";
import type { KernelFunc, TensorInfo } from "@tensorflow/tfjs";
import {
  assertChannelsLast,
  composed,
  cropNegative,
  dilateRows,
  explicit,
  forwardInfo,
  inputGradPads,
  type Shape4,
  type WasmBackend,
} from "./wasm-kernels-compose.js";

/** dW = conv(xᵀ, dyᵀ, dilation = stride): a conv over the batch dimension. */
export const conv2DBackpropFilter: KernelFunc = ({ inputs, backend, attrs }) => {
  const { x, dy } = inputs as { x: TensorInfo; dy: TensorInfo };
  const a = attrs as unknown as tf.Conv2DBackpropFilterAttrs;
  assertChannelsLast("Conv2DBackpropFilter", a.dataFormat);
  const info = forwardInfo(x.shape, a.filterShape, a, false);
  const { filterHeight: fh, filterWidth: fw, strideHeight: sh, strideWidth: sw } = info;
  return composed(backend as WasmBackend, (run) => {
    const xT = run("Transpose", { x }, { perm: [3, 1, 2, 0] });
    const dyT = run("Transpose", { x: dy }, { perm: [1, 2, 0, 3] });
    // Output rows = H + top + bottom − ((Ho − 1)·s + 1) + 1 must equal fh.
    const bottom = fh - info.inHeight - info.padInfo.top + (info.outHeight - 1) * sh;
    const right = fw - info.inWidth - info.padInfo.left + (info.outWidth - 1) * sw;
    const [input, pads] = cropNegative(run, xT, [
      [info.padInfo.top, bottom],
      [info.padInfo.left, right],
    ]);
    const dw = run(
      "Conv2D",
      { x: input, filter: dyT },
      { strides: [1, 1], pad: explicit(pads), dilations: [sh, sw], dataFormat: "NHWC" },
    );
    return run("Transpose", { x: dw }, { perm: [1, 2, 0, 3] });
  });
};

/** dX = conv(dilate(dy, stride), flip(W)ᵀ) at stride 1, through XNNPACK. */
export const conv2DBackpropInput: KernelFunc = ({ inputs, backend, attrs }) => {
  const { dy, filter } = inputs as { dy: TensorInfo; filter: TensorInfo };
  const a = attrs as unknown as tf.Conv2DBackpropInputAttrs;
  assertChannelsLast("Conv2DBackpropInput", a.dataFormat);
  const info = forwardInfo(a.inputShape, filter.shape, a, false);
  return composed(backend as WasmBackend, (run) => {
    const flipped = run("Reverse", { x: filter }, { dims: [0, 1] });
    const swapped = run("Transpose", { x: flipped }, { perm: [0, 1, 3, 2] });
    const dilated = dilateRows(run, dy, info.strideHeight, info.strideWidth);
    const [input, pads] = cropNegative(run, dilated, inputGradPads(info));
    return run(
      "Conv2D",
      { x: input, filter: swapped },
      { strides: [1, 1], pad: explicit(pads), dilations: [1, 1], dataFormat: "NHWC" },
    );
  });
};

function assertUnitDilation(kernel: string, dilations: [number, number] | number): void {
  const [dh, dw] = typeof dilations === "number" ? [dilations, dilations] : dilations;
  if (dh !== 1 || dw !== 1)
    throw new Error(`wasm ${kernel}: dilations must be 1, got ${dilations}`);
}

/**
 * Depthwise dW[i, j, c, m] = Σ x[n, s·y + i − top, s·x + j − left, c] · dy[n, y, x, c·M + m]:
 * one strided window of the padded input per filter tap, multiplied by dy and summed over the
 * batch and positions (channels do not mix, so no conv over the batch applies here).
 */
export const depthwiseBackpropFilter: KernelFunc = ({ inputs, backend, attrs }) => {
  const { x, dy } = inputs as { x: TensorInfo; dy: TensorInfo };
  const a = attrs as unknown as tf.DepthwiseConv2dNativeBackpropFilterAttrs;
  assertUnitDilation("DepthwiseConv2dNativeBackpropFilter", a.dilations);
  const info = forwardInfo(x.shape, a.filterShape, a, true);
  const [fh, fw, c, m] = a.filterShape;
  const { outHeight: ho, outWidth: wo, strideHeight: sh, strideWidth: sw, padInfo } = info;
  return composed(backend as WasmBackend, (run) => {
    const [cropped, pads] = cropNegative(run, x, [
      [padInfo.top, (ho - 1) * sh + fh - info.inHeight - padInfo.top],
      [padInfo.left, (wo - 1) * sw + fw - info.inWidth - padInfo.left],
    ]);
    const padded = run("PadV2", { x: cropped }, { paddings: explicit(pads), constantValue: 0 });
    const positions = info.batchSize * ho * wo;
    const grads = run("Reshape", { x: dy }, { shape: [positions, c, m] });
    const taps: TensorInfo[] = [];
    for (let i = 0; i < fh; i++) {
      for (let j = 0; j < fw; j++) {
        const window = run(
          "StridedSlice",
          { x: padded },
          {
            begin: [0, i, j, 0],
            end: [info.batchSize, i + (ho - 1) * sh + 1, j + (wo - 1) * sw + 1, c],
            strides: [1, sh, sw, 1],
            beginMask: 0,
            endMask: 0,
            ellipsisMask: 0,
            newAxisMask: 0,
            shrinkAxisMask: 0,
          },
        );
        const column = run("Reshape", { x: window }, { shape: [positions, c, 1] });
        const product = run("Multiply", { a: column, b: grads });
        taps.push(run("Sum", { x: product }, { axis: [0], keepDims: true }));
      }
    }
    const stacked = run("Concat", taps, { axis: 0 });
    return run("Reshape", { x: stacked }, { shape: [fh, fw, c, m] });
  });
};

/** Depthwise dX: a stride-1 depthwise conv of the dilated dy with the flipped filter, summed over M. */
export const depthwiseBackpropInput: KernelFunc = ({ inputs, backend, attrs }) => {
  const { dy, filter } = inputs as { dy: TensorInfo; filter: TensorInfo };
  const a = attrs as unknown as tf.DepthwiseConv2dNativeBackpropInputAttrs;
  assertUnitDilation("DepthwiseConv2dNativeBackpropInput", a.dilations);
  const info = forwardInfo(a.inputShape, filter.shape, a, true);
  const [fh, fw, c, m] = filter.shape as Shape4;
  return composed(backend as WasmBackend, (run) => {
    const flipped = run("Reverse", { x: filter }, { dims: [0, 1] });
    const perChannel = run("Reshape", { x: flipped }, { shape: [fh, fw, c * m, 1] });
    const dilated = dilateRows(run, dy, info.strideHeight, info.strideWidth);
    const [input, pads] = cropNegative(run, dilated, inputGradPads(info));
    const dx = run(
      "DepthwiseConv2dNative",
      { x: input, filter: perChannel },
      { strides: [1, 1], pad: explicit(pads), dilations: [1, 1], dataFormat: "NHWC" },
    );
    if (m === 1) return dx;
    const split = run("Reshape", { x: dx }, { shape: [...a.inputShape, m] });
    return run("Sum", { x: split }, { axis: [4], keepDims: false });
  });
};
