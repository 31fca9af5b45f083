import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import * as tf from "@tensorflow/tfjs";
import {
  evaluateModel,
  instantiate,
  resolveModel,
  modelFromSpec,
  parseBackendRequest,
  readWeights,
  selectBackend,
  toTensors,
  trainLocal,
  writeModelFiles,
} from "../models/index.js";
import type { Dataset } from "../protocol/dataset.js";
import { CohortError } from "../protocol/errors.js";

/** Two linearly separable classes on 28×28 inputs: bright top half vs bright bottom half. */
function toyDataset(n: number, seed = 1): Dataset {
  let s = seed;
  const rand = () => (s = (s * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  const features = new Float32Array(n * 784);
  const labels = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    const label = i % 2;
    labels[i] = label;
    for (let p = 0; p < 784; p++) {
      const top = p < 392;
      features[i * 784 + p] = (top === (label === 0) ? 0.6 : 0.1) + 0.3 * rand();
    }
  }
  return { name: "toy", features, labels, sampleShape: [28, 28, 1], numClasses: 10 };
}

describe("models", () => {
  beforeAll(async () => {
    await selectBackend("wasm");
  });

  it("builds McMahan's 2NN and CNN with the published parameter counts", async () => {
    expect((await resolveModel("mlp")).spec.numParameters).toBe(199_210);
    const cnn = await resolveModel("cnn");
    expect(cnn.spec.numParameters).toBe(1_663_370);
    expect(cnn.weights.reduce((n, w) => n + w.byteLength, 0)).toBe(1_663_370 * 4);
  });

  it("is reproducible from a seed and rebuilds from its topology", async () => {
    const a = await resolveModel("mlp", { seed: 7 });
    const b = await resolveModel("mlp", { seed: 7 });
    const c = await resolveModel("mlp", { seed: 8 });
    expect(a.weights[0]).toEqual(b.weights[0]);
    expect(a.weights[0]).not.toEqual(c.weights[0]);
    const model = await instantiate(a.spec, a.weights);
    expect(await readWeights(model)).toEqual(a.weights);
    model.dispose();
  });

  it("rejects a topology whose weights differ from the spec", async () => {
    const { spec } = await resolveModel("mlp");
    const wrong = { ...spec, weightSpecs: spec.weightSpecs.slice(1) };
    await expect(modelFromSpec(wrong)).rejects.toMatchObject({ code: "INVALID_MODEL" });
  });

  it("writes checkpoints that tfjs and resolveModel read back", async () => {
    const dir = await mkdtemp(join(tmpdir(), "cohort-model-"));
    const { spec, weights } = await resolveModel("mlp", { seed: 3 });
    await writeModelFiles(dir, spec, weights);
    const reloaded = await resolveModel(join(dir, "model.json"));
    expect(reloaded.weights).toEqual(weights);
    const { readFile } = await import("node:fs/promises");
    const json = JSON.parse(await readFile(join(dir, "model.json"), "utf8"));
    const bin = await readFile(join(dir, "weights.bin"));
    const model = await tf.loadLayersModel(
      tf.io.fromMemory({
        modelTopology: json.modelTopology,
        weightSpecs: json.weightsManifest[0].weights,
        weightData: bin.buffer.slice(bin.byteOffset, bin.byteOffset + bin.byteLength),
      }),
    );
    expect(await readWeights(model)).toEqual(weights);
    model.dispose();
  });

  it("refuses an unreadable model file with INVALID_MODEL", async () => {
    await expect(resolveModel("/nonexistent/model.json")).rejects.toBeInstanceOf(CohortError);
    await expect(resolveModel("/nonexistent/model.json")).rejects.toMatchObject({
      code: "INVALID_MODEL",
    });
  });

  it("trains: loss falls and accuracy rises, without leaking tensors", async () => {
    const data = toyDataset(200);
    const { spec, weights } = await resolveModel("mlp");
    const model = await instantiate(spec, weights);
    const before = await evaluateModel(model, data);
    const tensors = toTensors(data);
    const config = { optimizer: "sgd", learningRate: 0.05, localEpochs: 1, batchSize: 10 } as const;
    await trainLocal(model, tensors, config);
    const count = tf.memory().numTensors;
    for (let i = 0; i < 2; i++) await trainLocal(model, tensors, config);
    expect(tf.memory().numTensors).toBe(count);
    const after = await evaluateModel(model, data);
    expect(after.loss).toBeLessThan(before.loss);
    expect(after.accuracy).toBeGreaterThan(0.9);
    tensors.dispose();
    model.dispose();
  });

  it("parses backend requests", () => {
    expect(parseBackendRequest("wasm")).toBe("wasm");
    expect(() => parseBackendRequest("quantum")).toThrow(/unknown backend/);
  });
});
