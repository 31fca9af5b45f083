/**
 * Scatter kernels for the wasm backend (see `wasm-kernels.ts`) as single JS passes over the wasm
 * heap: the gradients of MaxPool and of Gather.
 */
import * as tf from "@tensorflow/tfjs";
import type { KernelFunc, TensorInfo } from "@tensorflow/tfjs";
import type { Shape4, WasmBackend } from "./wasm-kernels-compose.js";

/** Scatter-add of rows by segment id (the gradient of Gather, e.g. of an Embedding layer). */
export const unsortedSegmentSum: KernelFunc = ({ inputs, backend, attrs }) => {
  const { x, segmentIds } = inputs as { x: TensorInfo; segmentIds: TensorInfo };
  const { numSegments } = attrs as unknown as tf.UnsortedSegmentSumAttrs;
  const b = backend as WasmBackend;
  const rowShape = x.shape.slice(segmentIds.shape.length);
  const rowSize = tf.util.sizeFromShape(rowShape);
  const rows = tf.util.sizeFromShape(segmentIds.shape);
  const out = b.makeOutput([numSegments, ...rowShape], x.dtype);
  // Views after the allocation: growing the wasm heap detaches earlier ones.
  const sums = b.typedArrayFromHeap(out);
  const values = b.typedArrayFromHeap(x);
  const ids = b.typedArrayFromHeap(segmentIds);
  sums.fill(0);
  for (let r = 0; r < rows; r++) {
    const id = ids[r]!;
    if (id < 0 || id >= numSegments) continue; // TensorFlow drops out-of-range ids
    const from = r * rowSize;
    const to = id * rowSize;
    for (let k = 0; k < rowSize; k++) sums[to + k]! += values[from + k]!;
  }
  return out;
};

/**
 * MaxPool's gradient: each window's dy goes to its first maximum (row-major), as on the cpu
 * backend. One pass over the windows in JS is ~5× faster than the backend's own kernel, which
 * takes longer than the conv it follows in the McMahan CNN.
 */
export const maxPoolGrad: KernelFunc = ({ inputs, backend, attrs }) => {
  const { dy, input } = inputs as { dy: TensorInfo; input: TensorInfo };
  const a = attrs as unknown as tf.MaxPoolGradAttrs;
  const b = backend as WasmBackend;
  const info = tf.backend_util.computePool2DInfo(
    input.shape as Shape4,
    a.filterSize,
    a.strides,
    1,
    a.pad,
    a.dimRoundingMode,
  );
  const { batchSize, inHeight: h, inWidth: w, inChannels: c, outHeight: ho, outWidth: wo } = info;
  const { strideHeight: sh, strideWidth: sw, padInfo } = info;
  const { effectiveFilterHeight: fh, effectiveFilterWidth: fw } = info;
  const out = b.makeOutput(input.shape, "float32");
  // Views after the allocation: growing the wasm heap detaches earlier ones.
  const dx = b.typedArrayFromHeap(out);
  const x = b.typedArrayFromHeap(input);
  const g = b.typedArrayFromHeap(dy);
  dx.fill(0);
  const best = new Float32Array(c);
  const where = new Int32Array(c);
  for (let n = 0; n < batchSize; n++) {
    for (let yr = 0; yr < ho; yr++) {
      const r0 = yr * sh - padInfo.top;
      for (let yc = 0; yc < wo; yc++) {
        const c0 = yc * sw - padInfo.left;
        best.fill(-Infinity);
        where.fill(-1);
        for (let r = Math.max(0, r0); r < Math.min(h, r0 + fh); r++) {
          for (let col = Math.max(0, c0); col < Math.min(w, c0 + fw); col++) {
            const base = ((n * h + r) * w + col) * c;
            for (let d = 0; d < c; d++) {
              const v = x[base + d]!;
              if (v > best[d]!) {
                best[d] = v;
                where[d] = base + d;
              }
            }
          }
        }
        const gBase = ((n * ho + yr) * wo + yc) * c;
        for (let d = 0; d < c; d++) if (where[d]! >= 0) dx[where[d]!]! += g[gBase + d]!;
      }
    }
  }
  return out;
};
