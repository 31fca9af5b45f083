/**
 * Cohort's webgpu conv-gradient kernels (models/webgpu-kernels.ts) against the cpu backend, on
 * SwiftShader here (slow: shapes are small) and on hardware where a GPU is present.
 */
import { existsSync } from "node:fs";
import { beforeAll, describe, expect, it } from "vitest";
import * as tf from "@tensorflow/tfjs";
import {
  convGradientPlan,
  hasHardwareVulkanDriver,
  useBackend,
  webGpuConvFallbacks,
} from "../models/index.js";
import { planGemm } from "../models/webgpu-kernels-conv.js";
import { CohortError } from "../protocol/errors.js";

const SWIFTSHADER = "/usr/lib/chromium/vk_swiftshader_icd.json";
if (process.env.VK_ICD_FILENAMES === undefined && existsSync(SWIFTSHADER)) {
  process.env.VK_ICD_FILENAMES = SWIFTSHADER;
}
/** Whether this machine has a Vulkan driver WebGPU can use (SwiftShader counts). */
const VULKAN = existsSync(SWIFTSHADER) || hasHardwareVulkanDriver();

/** max|gpu − cpu| / (max|cpu| + 1e-6): a few ulps from summation order; a wrong index is O(1). */
const REL_TOL = 1e-4;

type Pad = tf.Conv2DBackpropFilterAttrs["pad"];

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

function relativeError(actual: Float32Array, expected: Float32Array): number {
  let maxDiff = 0;
  let maxRef = 0;
  for (let i = 0; i < expected.length; i++) {
    maxDiff = Math.max(maxDiff, Math.abs(actual[i]! - expected[i]!));
    maxRef = Math.max(maxRef, Math.abs(expected[i]!));
  }
  return maxDiff / (maxRef + 1e-6);
}

interface Outcome {
  shapes: number[][];
  data: Float32Array[];
}

async function runOn(backend: "cpu" | "webgpu", f: () => tf.Tensor[]): Promise<Outcome> {
  if (!(await tf.setBackend(backend))) throw new Error(`backend ${backend} did not start`);
  const outs = tf.tidy(f);
  const data = await Promise.all(outs.map(async (t) => (await t.data()) as Float32Array));
  const shapes = outs.map((t) => t.shape);
  tf.dispose(outs);
  return { shapes, data };
}

async function expectMatchesCpu(f: () => tf.Tensor[]): Promise<void> {
  const cpu = await runOn("cpu", f);
  const gpu = await runOn("webgpu", f);
  expect(gpu.shapes).toEqual(cpu.shapes);
  for (let i = 0; i < cpu.data.length; i++) {
    expect(gpu.data[i]!.some(Number.isNaN)).toBe(false);
    expect(relativeError(gpu.data[i]!, cpu.data[i]!)).toBeLessThan(REL_TOL);
  }
}

interface Case {
  name: string;
  x: [number, number, number, number];
  filter: [number, number, number, number];
  strides: number | [number, number];
  pad: Pad;
  dataFormat?: "NHWC" | "NCHW";
}

const CASES: Case[] = [
  {
    name: "the CNN's first layer",
    x: [2, 28, 28, 1],
    filter: [5, 5, 1, 32],
    strides: 1,
    pad: "same",
  },
  {
    name: "the CNN's second layer",
    x: [2, 14, 14, 32],
    filter: [5, 5, 32, 64],
    strides: 1,
    pad: "same",
  },
  { name: "odd sizes", x: [3, 9, 7, 3], filter: [3, 2, 3, 5], strides: 1, pad: "same" },
  { name: "stride 2, same", x: [2, 11, 10, 4], filter: [3, 3, 4, 6], strides: 2, pad: "same" },
  {
    name: "strides [2, 1], valid",
    x: [2, 9, 9, 3],
    filter: [3, 3, 3, 4],
    strides: [2, 1],
    pad: "valid",
  },
  {
    name: "explicit padding",
    x: [1, 8, 8, 2],
    filter: [3, 3, 2, 3],
    strides: 1,
    pad: [
      [0, 0],
      [1, 2],
      [2, 0],
      [0, 0],
    ],
  },
];

/** dW and dX of one case through the kernels, as tfjs's conv2d gradient calls them. */
function gradients(c: Case): tf.Tensor[] {
  const dataFormat = c.dataFormat ?? "NHWC";
  const x = random(c.x, 7);
  const filter = random(c.filter, 11);
  const forward = tf.conv2d(x as tf.Tensor4D, filter as tf.Tensor4D, c.strides, c.pad, dataFormat);
  const dy = random(forward.shape, 13);
  const attrs = { strides: c.strides, pad: c.pad, dataFormat };
  const dw = tf.engine().runKernel(
    "Conv2DBackpropFilter",
    { x, dy },
    {
      ...attrs,
      filterShape: c.filter,
    },
  ) as tf.Tensor;
  const dx = tf.engine().runKernel(
    "Conv2DBackpropInput",
    { dy, filter },
    {
      ...attrs,
      inputShape: c.x,
    },
  ) as tf.Tensor;
  return [dw, dx];
}

describe("webgpu conv-gradient kernels: which cases they take", () => {
  it("takes NHWC float32 and names why NCHW or int32 fall back", () => {
    const base = {
      xShape: [2, 14, 14, 32],
      filterShape: [5, 5, 32, 64],
      strides: 1,
      pad: "same" as const,
      dtypes: ["float32" as const],
    };
    expect("info" in convGradientPlan(base)).toBe(true);
    expect(convGradientPlan({ ...base, dataFormat: "NCHW" })).toEqual({
      fallback: "dataFormat NCHW",
    });
    expect(convGradientPlan({ ...base, dtypes: ["int32"] })).toEqual({ fallback: "dtype int32" });
  });

  it("splits a long reduction over workgroups and keeps every split at least 8 tiles deep", () => {
    // dW of the CNN's second layer at batch 100: M = 800, N = 64, K = 19,600.
    const plan = planGemm(800, 64, 19_600);
    expect(plan.splits).toBeGreaterThan(1);
    expect(plan.splits * plan.kPerSplit).toBeGreaterThanOrEqual(19_600);
    expect(plan.kPerSplit).toBeGreaterThanOrEqual(8 * 16);
    expect(planGemm(64, 32, 100).splits).toBe(1);
  });
});

describe.runIf(VULKAN)("webgpu conv-gradient kernels against the cpu backend", () => {
  beforeAll(async () => {
    await useBackend("webgpu");
  }, 120_000);

  for (const c of CASES) {
    it(`dW and dX match cpu: ${c.name}`, async () => {
      const before = webGpuConvFallbacks();
      await expectMatchesCpu(() => gradients(c));
      expect(webGpuConvFallbacks()).toBe(before);
    }, 60_000);
  }

  it("falls back to tfjs's own kernels for NCHW, with the same results", async () => {
    const before = webGpuConvFallbacks();
    await expectMatchesCpu(() =>
      gradients({
        name: "nchw",
        x: [1, 3, 6, 6],
        filter: [3, 3, 3, 2],
        strides: 1,
        pad: "same",
        dataFormat: "NCHW",
      }),
    );
    expect(webGpuConvFallbacks()).toBe(before + 2);
  }, 60_000);

  it("a training step of a small conv net equals the cpu backend's", async () => {
    const step = async (backend: "cpu" | "webgpu"): Promise<Float32Array[]> => {
      await tf.setBackend(backend);
      const model = tf.sequential({
        layers: [
          tf.layers.conv2d({
            inputShape: [8, 8, 2],
            filters: 4,
            kernelSize: 3,
            padding: "same",
            activation: "relu",
          }),
          tf.layers.conv2d({
            filters: 6,
            kernelSize: 3,
            strides: 2,
            padding: "valid",
            activation: "relu",
          }),
          tf.layers.flatten(),
          tf.layers.dense({ units: 3, activation: "softmax" }),
        ],
      });
      model.setWeights(
        model.getWeights().map((w, i) => tf.tensor(values(w.size, 100 + i), w.shape)),
      );
      model.compile({ optimizer: tf.train.sgd(0.5), loss: "categoricalCrossentropy" });
      const x = random([4, 8, 8, 2], 3);
      const y = tf.oneHot(tf.tensor1d([0, 1, 2, 1], "int32"), 3);
      const loss = (await model.trainOnBatch(x, y)) as number;
      const weights = await Promise.all(
        model.getWeights().map(async (w) => (await w.data()) as Float32Array),
      );
      tf.dispose([x, y]);
      model.dispose();
      return [Float32Array.of(loss), ...weights];
    };
    const cpu = await step("cpu");
    const gpu = await step("webgpu");
    expect(gpu.length).toBe(cpu.length);
    for (let i = 0; i < cpu.length; i++) {
      expect(relativeError(gpu[i]!, cpu[i]!)).toBeLessThan(REL_TOL);
    }
  }, 60_000);
});

describe.runIf(!VULKAN)("webgpu conv-gradient kernels without a Vulkan driver", () => {
  it("reports that WebGPU cannot start instead of testing the kernels", async () => {
    console.warn("no Vulkan driver (SwiftShader or hardware): webgpu kernel checks not run");
    const error = await useBackend("webgpu").catch((e: unknown) => e);
    expect(error).toBeInstanceOf(CohortError);
    expect((error as CohortError).code).toBe("BACKEND_UNAVAILABLE");
  });
});
