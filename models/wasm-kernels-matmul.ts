/** Matmul kernels for the wasm backend (see `wasm-kernels.ts`): the Dense layer's training path. */
import * as tf from "@tensorflow/tfjs";
import type { KernelFunc, TensorInfo } from "@tensorflow/tfjs";
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
  return ({ inputs, backend, attrs }) => {
    const a = attrs as unknown as tf._FusedMatMulAttrs;
    const kernel = nativeKernel(name);
    const { a: left, b: right, bias, preluActivationWeights: prelu } = inputs;
    const batch = tf.util.sizeFromShape(
      tf.broadcast_util.assertAndGetBroadcastShape(
        left!.shape.slice(0, -2),
        right!.shape.slice(0, -2),
      ),
    );
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
}
