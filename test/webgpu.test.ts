/**
 * WebGPU through Dawn in Node. Here it runs on SwiftShader (a CPU Vulkan driver shipped with
 * Debian's chromium), which is correct but slow; on a GPU machine the same code runs on hardware.
 */
import { existsSync } from "node:fs";
import { describe, expect, it } from "vitest";
import * as tf from "@tensorflow/tfjs";
import {
  instantiate,
  resolveModel,
  probeWebGpuAdapter,
  selectBackend,
  useBackend,
} from "../models/index.js";
import { loadMnistDigits, takeExamples } from "../models/datasets/index.js";
import { describeAdapter } from "../models/webgpu.js";

const SWIFTSHADER = "/usr/lib/chromium/vk_swiftshader_icd.json";
if (process.env.VK_ICD_FILENAMES === undefined && existsSync(SWIFTSHADER)) {
  process.env.VK_ICD_FILENAMES = SWIFTSHADER;
}

/** Two SGD steps of the CNN on the same 5 digits; returns the loss after each. */
async function cnnSteps(): Promise<number[]> {
  const { spec, weights } = await resolveModel("cnn", { seed: 5 });
  const model = await instantiate(spec, weights);
  model.compile({ optimizer: tf.train.sgd(0.05), loss: "categoricalCrossentropy" });
  const data = takeExamples(await loadMnistDigits("train"), 5);
  const x = tf.tensor(data.features, [5, 28, 28, 1]);
  const y = tf.oneHot(tf.tensor1d(Int32Array.from(data.labels), "int32"), 10);
  const losses: number[] = [];
  for (let i = 0; i < 3; i++) losses.push((await model.trainOnBatch(x, y)) as number);
  tf.dispose([x, y]);
  model.dispose();
  return losses;
}

describe("webgpu backend (Dawn)", () => {
  it("flags software adapters", () => {
    expect(describeAdapter({ vendor: "google", architecture: "swiftshader" }).software).toBe(true);
    expect(
      describeAdapter({ vendor: "mesa", description: "llvmpipe (LLVM 15.0.6, 256 bits)" }).software,
    ).toBe(true);
    expect(
      describeAdapter({ vendor: "nvidia", architecture: "hopper", description: "NVIDIA H200" })
        .software,
    ).toBe(false);
    expect(describeAdapter({ vendor: "x" }, true).software).toBe(true);
  });

  it("finds the SwiftShader adapter, and auto selection skips it", async () => {
    const adapter = await probeWebGpuAdapter();
    expect(adapter.software).toBe(true);
    const auto = await selectBackend("auto");
    expect(auto.name).not.toBe("webgpu");
  });

  it("trains the CNN with the same losses as the wasm backend (relative error < 1e-3)", async () => {
    const gpu = await useBackend("webgpu");
    expect(gpu.tfBackend).toBe("webgpu");
    expect(gpu.adapter?.software).toBe(true);
    const onGpu = await cnnSteps();
    await useBackend("wasm");
    const onWasm = await cnnSteps();
    expect(onGpu[2]!).toBeLessThan(onGpu[0]!);
    for (let i = 0; i < onWasm.length; i++) {
      expect(Math.abs(onGpu[i]! - onWasm[i]!) / Math.abs(onWasm[i]!)).toBeLessThan(1e-3);
    }
  });
});

describe("hardware Vulkan driver detection", () => {
  it("does not count software ICDs", async () => {
    const { hasHardwareVulkanDriver } = await import("../models/webgpu.js");
    expect(
      hasHardwareVulkanDriver({ VK_ICD_FILENAMES: "/usr/lib/chromium/vk_swiftshader_icd.json" }),
    ).toBe(false);
    expect(
      hasHardwareVulkanDriver({ VK_DRIVER_FILES: "/usr/share/vulkan/icd.d/lvp_icd.x86_64.json" }),
    ).toBe(false);
  });
});
