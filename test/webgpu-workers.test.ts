/**
 * The simulator's worker threads with `backend: "webgpu"`: each worker starts its own Dawn
 * device and trains batched groups on it. Here the device is SwiftShader (a CPU Vulkan driver
 * shipped with Debian's chromium); on a GPU machine the same code runs on the hardware.
 */
import { existsSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { simulate, type SimulationInput } from "../simulations/index.js";
import { tempRunDir } from "./helpers/federation.js";
import { maxDiff } from "./helpers/weights.js";

const SWIFTSHADER = "/usr/lib/chromium/vk_swiftshader_icd.json";
if (process.env.VK_ICD_FILENAMES === undefined && existsSync(SWIFTSHADER)) {
  process.env.VK_ICD_FILENAMES = SWIFTSHADER;
}

const run: SimulationInput = {
  dataset: "mnist",
  model: "mlp",
  devices: 4,
  fractionFit: 1,
  examplesPerDevice: 20,
  rounds: 1,
  evalSize: 200,
  baselineEpochs: 0,
  backend: "webgpu",
  seed: 2,
};

describe("webgpu workers", () => {
  it("two workers, each with its own Dawn device, train batched groups as this thread does", async () => {
    const pooled = await simulate(
      { ...run, workers: 2, batchGroup: 2, runDir: await tempRunDir("cohort-wgw-") },
      { progress: null },
    );
    const inThread = await simulate(
      { ...run, runDir: await tempRunDir("cohort-wgt-") },
      { progress: null },
    );
    expect(pooled.summary.training.batched).toBe(true);
    expect(pooled.summary.backend).toMatch(/^webgpu/);
    const clients = pooled.rounds[0]!.clients;
    expect(clients).toHaveLength(4);
    expect(clients.every((c) => c.backend === "webgpu")).toBe(true);
    expect(maxDiff(pooled.weights, inThread.weights)).toBeLessThan(1e-4);
  });
});
