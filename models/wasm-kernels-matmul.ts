/** Matmul kernels for the wasm backend (see `wasm-kernels.ts`): the Dense layer's training path. */
import * as tf from "@tensorflow/tfjs";
import type { KernelFunc, NamedAttrMap, TensorInfo } from "@tensorflow/tfjs";
import { composed, nativeKernel, type Run, type WasmBackend } from "./wasm-kernels-compose.js";

type Activation = tf._FusedMatMulAttrs["activation"];

/** A fused activation as its own kernel. */
function activate(
  run: Run,
  x: TensorInfo,
  attrs: tf._FusedMatMulAttrs,
  prelu?: TensorInfo,
): TensorInfo {
  const activation: Activation = attrs.activation;
  switch (activation) {
    case "linear":
      return x;
    case "relu":
      return run("Relu", { x });
    case "relu6":
      return run("Relu6", { x });
    case "elu":
      return run("Elu", { x });
    case "sigmoid":
      return run("Sigmoid", { x });
    case "leakyrelu":
      return run("LeakyRelu", { x }, { alpha: attrs.leakyreluAlpha ?? 0.2 });
    case "prelu":
      if (prelu === undefined) throw new Error("prelu activation without its weights");
      return run("Prelu", { x, alpha: prelu });
    default: {
      const exhaustive: never = activation;
      throw new Error(`unknown fused activation ${String(exhaustive)}`);
    }
  }
}

/**
 * Whether A·Bᵀ is cheaper as (B·Aᵀ)ᵀ: XNNPACK packs its right operand on every call (the weights
 * change every step), so a large B [N, K] beside few rows of A [M, K] — the Dense input gradient
 * dy·Wᵀ — costs more in packing than in arithmetic (2–3.5× measured on the CNN's 3136×512 layer).
 */
function packsLarge(left: TensorInfo, right: TensorInfo, transposeA: boolean): boolean {
  const rank = left.shape.length;
  const m = left.shape[transposeA ? rank - 1 : rank - 2]!;
  const [n, k] = right.shape.slice(-2) as [number, number];
  return m < n && n * k >= 32_768;
}

/**
 * Matmul with a transposed operand as an explicit Transpose then a plain matmul. The backend's
 * own transposed paths are slower (measured in training, where the weights change every step):
 * 7–24× for `transposeA`, the Dense weight gradient xᵀ·dy; 1.6–6× for `transposeB`, its input
 * gradient dy·Wᵀ.
 * Also, the backend's `_FusedMatMul` adds the bias wrongly when the batch holds more than one
 * matrix; that case runs as matmul, add and activation.
 */
export function matMul(name: "BatchMatMul" | "_FusedMatMul"): KernelFunc {
  const kernelFunc: KernelFunc = ({ inputs, backend, attrs }) => {
    const a = attrs as unknown as tf._FusedMatMulAttrs;
    const kernel = nativeKernel(name);
    const { a: left, b: right, bias, preluActivationWeights: prelu } = inputs;
    const outer = tf.broadcast_util.assertAndGetBroadcastShape(
      left!.shape.slice(0, -2),
      right!.shape.slice(0, -2),
    );
    const batch = tf.util.sizeFromShape(outer);
    if (batch > 1 && splits(left!, outer) && splits(right!, outer)) {
      const wasm = backend as WasmBackend;
      const product = perMatrix(wasm, left!, right!, outer, attrs ?? {}, single);
      if (name === "BatchMatMul") return product;
      let out: TensorInfo = product;
      try {
        out = composed(wasm, (run) =>
          activate(run, bias == null ? product : run("Add", { a: product, b: bias }), a, prelu),
        );
        return out;
      } finally {
        if (out !== product) wasm.disposeData(product.dataId);
      }
    }
    const batchedBias = name === "_FusedMatMul" && bias != null && batch > 1;
    if (!a.transposeA && !a.transposeB && !batchedBias) {
      return kernel.kernelFunc({ inputs, backend, attrs });
    }
    return composed(backend as WasmBackend, (run) => {
      const swapLast = (x: TensorInfo): TensorInfo => {
        const rank = x.shape.length;
        const perm = [...Array.from({ length: rank - 2 }, (_, i) => i), rank - 1, rank - 2];
        return run("Transpose", { x }, { perm });
      };
      const untransposed = { ...attrs, transposeA: false, transposeB: false };
      if (name === "BatchMatMul" && a.transposeB && packsLarge(left!, right!, a.transposeA)) {
        // C = A·Bᵀ as (B·Aᵀ)ᵀ: B becomes the left operand, which XNNPACK does not repack.
        const leftT = a.transposeA ? left! : swapLast(left!);
        return swapLast(run("BatchMatMul", { a: right!, b: leftT }, untransposed));
      }
      const plain = {
        a: a.transposeA ? swapLast(left!) : left!,
        b: a.transposeB ? swapLast(right!) : right!,
      };
      if (!batchedBias) {
        return kernel.kernelFunc({
          inputs: { ...inputs, ...plain },
          backend,
          attrs: untransposed,
        }) as TensorInfo;
      }
      const product = run("BatchMatMul", plain, untransposed);
      return activate(run, run("Add", { a: product, b: bias }), a, prelu ?? undefined);
    });
  };
  return kernelFunc;
}

/** This module's matmul of one matrix pair (the transposes above), for {@link perMatrix}. */
const single: KernelFunc = (args) => (oneMatrix ??= matMul("BatchMatMul"))(args);
let oneMatrix: KernelFunc | undefined;

/** Whether `x`'s batch dimensions are `outer`'s or all ones (no partial broadcast). */
function splits(x: TensorInfo, outer: number[]): boolean {
  const dims = x.shape.slice(0, -2);
  return (
    tf.util.sizeFromShape(dims) === 1 ||
    (dims.length === outer.length && dims.every((d, i) => d === outer[i]))
  );
}

/**
 * A batched matmul as one 2-D matmul per matrix, joined. The backend's batched kernel runs
 * outside XNNPACK: 7× slower than a 2-D product per matrix for ten [10, 784]·[784, 200] products
 * (15 ms vs 2.1 ms measured), 3.5× for their weight gradients — the shapes of cohort-batched
 * training, where every device holds its own weights.
 */
function perMatrix(
  backend: WasmBackend,
  left: TensorInfo,
  right: TensorInfo,
  outer: number[],
  attrs: NamedAttrMap,
  one: KernelFunc,
): TensorInfo {
  const batch = tf.util.sizeFromShape(outer);
  // The matrices copied out and their products, freed once joined.
  const copies: TensorInfo[] = [];
  const products: TensorInfo[] = [];
  // Matrix i copied out of the heap: the backend's Slice kernel takes 4 ms for one [784, 200]
  // matrix of a [10, 784, 200] tensor, a copy a fraction of that. A broadcast one is used as is.
  const matrices = (x: TensorInfo) => {
    const [r, c] = x.shape.slice(-2) as [number, number];
    if (tf.util.sizeFromShape(x.shape.slice(0, -2)) === 1) return () => x;
    return (i: number) => {
      const out = backend.makeOutput([r, c], x.dtype);
      copies.push(out);
      const from = i * r * c;
      backend
        .typedArrayFromHeap(out)
        .set(backend.typedArrayFromHeap(x).subarray(from, from + r * c));
      return out;
    };
  };
  try {
    const lefts = matrices(left);
    const rights = matrices(right);
    for (let i = 0; i < batch; i++) {
      products.push(one({ inputs: { a: lefts(i), b: rights(i) }, backend, attrs }) as TensorInfo);
    }
    // Joined by copies into one output: the backend's Concat walks them in JavaScript.
    const [m, n] = products[0]!.shape.slice(-2) as [number, number];
    const joined = backend.makeOutput([...outer, m, n], products[0]!.dtype);
    const into = backend.typedArrayFromHeap(joined);
    products.forEach((p, i) => into.set(backend.typedArrayFromHeap(p), i * m * n));
    return joined;
  } finally {
    for (const t of [...copies, ...products]) backend.disposeData(t.dataId);
  }
}
