/**
 * The wasm training kernels (models/wasm-kernels.ts) against the cpu backend's reference
 * results, and CNN training on wasm with real MNIST digits.
 */
import { beforeAll, describe, expect, it } from "vitest";
import * as tf from "@tensorflow/tfjs";
import {
  buildBuiltinModel,
  evaluateModel,
  registerWasmTrainingKernels,
  selectBackend,
  toTensors,
  trainLocal,
  WASM_TRAINING_KERNELS,
} from "../models/index.js";
import type { Dataset } from "../protocol/dataset.js";
import { loadMnistDigits, takeExamples } from "../models/datasets/index.js";

/**
 * Every kernel must match the cpu backend within this bound on
 * max|wasm − cpu| / (max|cpu| + 1e-6): float32 sums in a different order differ by a few ulps
 * per term (measured ≤ 1e-6 on these shapes); a wrong index or padding is off by O(1).
 */
const REL_TOL = 1e-5;

type Shape4 = [number, number, number, number];
type Pad =
  "same" | "valid" | [[number, number], [number, number], [number, number], [number, number]];

/** Deterministic values in [-1, 1), identical on both backends. */
function values(n: number, seed: number): Float32Array {
  let s = seed >>> 0 || 1;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    out[i] = ((s >>> 0) / 2 ** 32) * 2 - 1;
  }
  return out;
}

function random(shape: number[], seed: number): tf.Tensor {
  return tf.tensor(values(tf.util.sizeFromShape(shape), seed), shape);
}

interface Outcome {
  shapes: number[][];
  data: Float32Array[];
}

/** Run `f` on a backend and read its outputs; on wasm, check nothing is left allocated. */
async function runOn(backend: "cpu" | "wasm", f: () => tf.Tensor[]): Promise<Outcome> {
  await tf.setBackend(backend);
  const buffersBefore = tf.backend().numDataIds();
  const outs = tf.tidy(f);
  const data = await Promise.all(outs.map(async (t) => (await t.data()) as Float32Array));
  const shapes = outs.map((t) => t.shape);
  tf.dispose(outs);
  if (backend === "wasm") expect(tf.backend().numDataIds()).toBe(buffersBefore);
  return { shapes, data };
}

function relativeError(actual: Float32Array, expected: Float32Array): number {
  let maxDiff = 0;
  let maxRef = 0;
  for (let i = 0; i < expected.length; i++) {
    maxDiff = Math.max(maxDiff, Math.abs(actual[i]! - expected[i]!));
    maxRef = Math.max(maxRef, Math.abs(expected[i]!));
  }
  return maxDiff / (maxRef + 1e-6);
}

/** `f` on wasm (with the training kernels) matches `f` on cpu. */
async function expectMatchesCpu(f: () => tf.Tensor[]): Promise<void> {
  const cpu = await runOn("cpu", f);
  const wasm = await runOn("wasm", f);
  expect(wasm.shapes).toEqual(cpu.shapes);
  for (let i = 0; i < cpu.data.length; i++) {
    expect(wasm.data[i]!.some(Number.isNaN)).toBe(false);
    expect(relativeError(wasm.data[i]!, cpu.data[i]!)).toBeLessThan(REL_TOL);
  }
}

/** Gradients of Σ conv(x, w) ⊙ dy: dX through Conv2DBackpropInput, dW through …Filter. */
function convGrads(xShape: Shape4, wShape: Shape4, strides: number | [number, number], pad: Pad) {
  return (): tf.Tensor[] => {
    const x = random(xShape, 1) as tf.Tensor4D;
    const w = random(wShape, 2) as tf.Tensor4D;
    const outShape = tf.conv2d(x, w, strides, pad).shape;
    const dy = random(outShape, 3);
    const g = tf.grads((a, b) =>
      tf.sum(tf.mul(tf.conv2d(a as tf.Tensor4D, b as tf.Tensor4D, strides, pad), dy)),
    );
    return g([x, w]);
  };
}

function depthwiseGrads(xShape: Shape4, wShape: Shape4, strides: number, pad: "same" | "valid") {
  return (): tf.Tensor[] => {
    const x = random(xShape, 4) as tf.Tensor4D;
    const w = random(wShape, 5) as tf.Tensor4D;
    const dy = random(tf.depthwiseConv2d(x, w, strides, pad).shape, 6);
    const g = tf.grads((a, b) =>
      tf.sum(tf.mul(tf.depthwiseConv2d(a as tf.Tensor4D, b as tf.Tensor4D, strides, pad), dy)),
    );
    return g([x, w]);
  };
}

const CONV_CASES: Array<[string, Shape4, Shape4, number | [number, number], Pad]> = [
  ["3×3 same, stride 1", [2, 8, 8, 3], [3, 3, 3, 4], 1, "same"],
  ["3×3 same, stride 2, odd sizes", [2, 9, 7, 3], [3, 3, 3, 5], 2, "same"],
  ["3×3 valid, stride 2", [3, 9, 9, 2], [3, 3, 2, 4], 2, "valid"],
  ["5×5 valid, stride 2", [2, 10, 10, 3], [5, 5, 3, 4], 2, "valid"],
  ["2×2 same, stride 2", [4, 8, 8, 4], [2, 2, 4, 3], 2, "same"],
  ["3×3 valid, stride 3, last row unused", [2, 7, 7, 2], [3, 3, 2, 3], 3, "valid"],
  ["4×4 same, stride 3", [2, 11, 11, 2], [4, 4, 2, 3], 3, "same"],
  ["3×2 same, strides [1, 2]", [2, 8, 9, 2], [3, 2, 2, 3], [1, 2], "same"],
  [
    "explicit padding",
    [2, 8, 8, 2],
    [3, 3, 2, 3],
    1,
    [
      [0, 0],
      [1, 2],
      [0, 3],
      [0, 0],
    ],
  ],
  ["McMahan CNN conv1", [2, 28, 28, 1], [5, 5, 1, 32], 1, "same"],
  ["McMahan CNN conv2", [2, 14, 14, 32], [5, 5, 32, 64], 1, "same"],
];

describe("wasm training kernels", () => {
  beforeAll(async () => {
    await selectBackend("wasm");
  });

  it("registers every kernel once, idempotently", () => {
    const before = WASM_TRAINING_KERNELS.map((name) => tf.getKernel(name, "wasm"));
    expect(before.every((k) => k !== undefined)).toBe(true);
    registerWasmTrainingKernels();
    const after = WASM_TRAINING_KERNELS.map((name) => tf.getKernel(name, "wasm"));
    expect(after).toEqual(before);
    after.forEach((k, i) => expect(k).toBe(before[i]));
  });

  for (const [name, x, w, strides, pad] of CONV_CASES) {
    it(`Conv2DBackpropFilter and Conv2DBackpropInput match cpu: ${name}`, async () => {
      await expectMatchesCpu(convGrads(x, w, strides, pad));
    });
  }

  it("DepthwiseConv2dNativeBackpropFilter and …Input match cpu", async () => {
    await expectMatchesCpu(depthwiseGrads([2, 8, 8, 3], [3, 3, 3, 1], 1, "same"));
    await expectMatchesCpu(depthwiseGrads([2, 9, 9, 3], [3, 3, 3, 2], 2, "same"));
    await expectMatchesCpu(depthwiseGrads([3, 9, 8, 2], [3, 3, 2, 3], 2, "valid"));
  });

  it("MaxPoolGrad matches cpu, ties going to the first maximum", async () => {
    const cases: Array<[Shape4, number, number, "same" | "valid"]> = [
      [[2, 8, 8, 3], 2, 2, "valid"],
      [[2, 9, 7, 3], 3, 2, "same"],
      [[3, 6, 6, 2], 3, 1, "same"],
      [[2, 7, 7, 4], 2, 3, "valid"],
    ];
    for (const [shape, size, stride, pad] of cases) {
      await expectMatchesCpu(() => {
        // Few distinct values: many windows hold tied maxima.
        const x = tf.round(tf.mul(random(shape, 22), 2)) as tf.Tensor4D;
        const dy = random(tf.maxPool(x, size, stride, pad).shape, 23);
        return [
          tf.grad((t) => tf.sum(tf.mul(tf.maxPool(t as tf.Tensor4D, size, stride, pad), dy)))(x),
        ];
      });
    }
  });

  it("UnsortedSegmentSum matches cpu, directly and as the gradient of Gather", async () => {
    await expectMatchesCpu(() => [
      tf.unsortedSegmentSum(random([7, 3, 2], 7), tf.tensor1d([0, 2, 2, 1, 4, 0, 1], "int32"), 5),
    ]);
    await expectMatchesCpu(() => {
      const table = random([10, 4], 8);
      const ids = tf.tensor1d([3, 1, 3, 9, 0, 3], "int32");
      const dy = random([6, 4], 9);
      return [tf.grad((t) => tf.sum(tf.mul(tf.gather(t, ids), dy)))(table)];
    });
  });

  it("BatchMatMul and _FusedMatMul match cpu for every transpose, batched and broadcast", async () => {
    for (const transposeA of [false, true]) {
      for (const transposeB of [false, true]) {
        const a = (batch: number[]) => [...batch, ...(transposeA ? [6, 5] : [5, 6])];
        const b = (batch: number[]) => [...batch, ...(transposeB ? [4, 6] : [6, 4])];
        await expectMatchesCpu(() => [
          tf.matMul(random(a([]), 10), random(b([]), 11), transposeA, transposeB),
          tf.matMul(random(a([3]), 12), random(b([3]), 13), transposeA, transposeB),
          tf.matMul(random(a([1]), 14), random(b([3]), 15), transposeA, transposeB),
          // Batched products run one 2-D product per matrix; a partial broadcast does not.
          tf.matMul(random(a([2, 3]), 28), random(b([2, 3]), 29), transposeA, transposeB),
          tf.matMul(random(a([2, 3]), 30), random(b([1, 1]), 31), transposeA, transposeB),
          tf.matMul(random(a([2, 1]), 32), random(b([2, 3]), 33), transposeA, transposeB),
          tf.fused.matMul({
            a: random(a([3]), 34) as tf.Tensor3D,
            b: random(b([3]), 35) as tf.Tensor3D,
            transposeA,
            transposeB,
          }),
          tf.fused.matMul({
            a: random(a([2]), 16) as tf.Tensor3D,
            b: random(b([2]), 17) as tf.Tensor3D,
            transposeA,
            transposeB,
            bias: random([4], 18),
            activation: "relu",
          }),
          // A few rows against a large B: computed as (B·Aᵀ)ᵀ when B is transposed.
          tf.matMul(
            random(transposeA ? [256, 3] : [3, 256], 24),
            random(transposeB ? [200, 256] : [256, 200], 25),
            transposeA,
            transposeB,
          ),
          tf.matMul(
            random(transposeA ? [2, 256, 3] : [2, 3, 256], 26),
            random(transposeB ? [2, 200, 256] : [2, 256, 200], 27),
            transposeA,
            transposeB,
          ),
          tf.fused.matMul({
            a: random(a([]), 19) as tf.Tensor2D,
            b: random(b([]), 20) as tf.Tensor2D,
            transposeA,
            transposeB,
            bias: random([4], 21),
            activation: "elu",
          }),
        ]);
      }
    }
  });

  it("gives the McMahan CNN's gradients as the cpu backend does", async () => {
    await expectMatchesCpu(() => {
      // Built inside, so each backend starts from the same seeded weights and frees them.
      const model = buildBuiltinModel("cnn", { seed: 5 });
      const x = tf.abs(random([2, 28, 28, 1], 20));
      const y = tf.oneHot(tf.tensor1d([3, 7], "int32"), 10);
      const { grads } = tf.variableGrads(() =>
        tf.losses.softmaxCrossEntropy(y, model.apply(x) as tf.Tensor).asScalar(),
      );
      const ordered = model.trainableWeights.map((w) => tf.keep(grads[w.name]!));
      model.dispose();
      return ordered;
    });
    await tf.setBackend("wasm");
  });
});

describe("CNN training on wasm", () => {
  let digits: Dataset;

  beforeAll(async () => {
    await selectBackend("wasm");
    await tf.setBackend("wasm");
    digits = takeExamples(await loadMnistDigits("train"), 200);
  });

  it("a small conv net with stride, pooling, batch norm and dropout learns real digits", async () => {
    const model = tf.sequential({
      layers: [
        tf.layers.conv2d({
          inputShape: [28, 28, 1],
          filters: 8,
          kernelSize: 3,
          activation: "relu",
          kernelInitializer: tf.initializers.glorotUniform({ seed: 1 }),
        }),
        tf.layers.maxPooling2d({ poolSize: 2 }),
        tf.layers.conv2d({
          filters: 16,
          kernelSize: 3,
          strides: 2,
          padding: "same",
          kernelInitializer: tf.initializers.glorotUniform({ seed: 2 }),
        }),
        tf.layers.batchNormalization(),
        tf.layers.reLU(),
        tf.layers.flatten(),
        tf.layers.dropout({ rate: 0.2, seed: 3 }),
        tf.layers.dense({
          units: 10,
          activation: "softmax",
          kernelInitializer: tf.initializers.glorotUniform({ seed: 4 }),
        }),
      ],
    });
    const before = await evaluateModel(model, digits);
    const tensors = toTensors(digits);
    const config = {
      optimizer: "adam",
      learningRate: 0.01,
      localEpochs: 3,
      batchSize: 20,
    } as const;
    const stats = await trainLocal(model, tensors, config, 1);
    const after = await evaluateModel(model, digits);
    tensors.dispose();
    model.dispose();
    expect(Number.isFinite(stats.loss)).toBe(true);
    // Evaluation uses batch norm's moving statistics, which lag: accuracy says more than loss.
    expect(after.loss).toBeLessThan(0.7 * before.loss);
    expect(after.accuracy).toBeGreaterThan(0.8);
  });

  it("the McMahan CNN trains: its loss on the digits falls", async () => {
    const model = buildBuiltinModel("cnn", { seed: 1 });
    const before = await evaluateModel(model, digits);
    const tensors = toTensors(digits);
    const config = { optimizer: "sgd", learningRate: 0.1, localEpochs: 1, batchSize: 20 } as const;
    await trainLocal(model, tensors, config, 2);
    const after = await evaluateModel(model, digits);
    tensors.dispose();
    model.dispose();
    expect(after.loss).toBeLessThan(before.loss - 0.1);
  });
});
