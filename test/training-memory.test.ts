/**
 * Many training rounds in one process leak no tensors: the client's per-round path
 * (writeWeights → trainLocal → readWeights) leaves `tf.memory().numTensors` and the wasm
 * backend's buffer count exactly where they were after round 1.
 */
import { beforeAll, describe, expect, it } from "vitest";
import * as tf from "@tensorflow/tfjs";
import {
  instantiate,
  resolveModel,
  readWeights,
  selectBackend,
  toTensors,
  trainLocal,
  writeWeights,
} from "../models/index.js";
import { modelSpecOf } from "../models/adapter.js";
import type { Dataset } from "../protocol/dataset.js";
import type { LocalTraining } from "../models/training.js";
import { loadMnistDigits, takeExamples } from "../models/datasets/index.js";

const ROUNDS = 6;

interface Counts {
  tensors: number;
  buffers: number;
}

/** Run ROUNDS client rounds of FedAvg with one client; the counts after each round. */
async function countsPerRound(
  model: tf.LayersModel,
  data: Dataset,
  config: LocalTraining,
  seeded: boolean,
): Promise<Counts[]> {
  const tensors = toTensors(data);
  let global = await readWeights(model);
  const counts: Counts[] = [];
  try {
    for (let round = 1; round <= ROUNDS; round++) {
      writeWeights(model, global);
      const stats = await trainLocal(model, tensors, config, seeded ? round : undefined);
      expect(Number.isFinite(stats.loss)).toBe(true);
      global = await readWeights(model);
      counts.push({ tensors: tf.memory().numTensors, buffers: tf.backend().numDataIds() });
    }
  } finally {
    tensors.dispose();
  }
  return counts;
}

/** Rounds 2..N end with the same counts (round 1 may allocate what later rounds reuse). */
function expectStable(counts: Counts[]): void {
  const [, second, ...rest] = counts;
  for (const c of rest) expect(c).toEqual(second);
}

describe("training memory", () => {
  let digits: Dataset;

  beforeAll(async () => {
    await selectBackend("wasm");
    digits = takeExamples(await loadMnistDigits("train"), 100);
  });

  it("the 2NN: counts are identical after rounds 2..N, with tfjs's and with seeded shuffles", async () => {
    const { spec, weights } = await resolveModel("mlp", { seed: 2 });
    const model = await instantiate(spec, weights);
    const config: LocalTraining = {
      optimizer: "sgd",
      learningRate: 0.05,
      localEpochs: 1,
      batchSize: 10,
    };
    const start = tf.memory().numTensors;
    expectStable(await countsPerRound(model, digits, config, false));
    expectStable(await countsPerRound(model, digits, config, true));
    model.dispose();
    expect(tf.memory().numTensors).toBeLessThanOrEqual(start);
  });

  it("a conv net through every wasm training kernel: counts are identical after rounds 2..N", async () => {
    const built = tf.sequential({
      layers: [
        tf.layers.conv2d({ inputShape: [28, 28, 1], filters: 4, kernelSize: 3, strides: 2 }),
        tf.layers.batchNormalization(),
        tf.layers.reLU(),
        tf.layers.maxPooling2d({ poolSize: 2 }),
        tf.layers.separableConv2d({ filters: 8, kernelSize: 3, padding: "same" }),
        tf.layers.flatten(),
        tf.layers.dropout({ rate: 0.25 }),
        tf.layers.dense({ units: 16, activation: "relu" }),
        tf.layers.dense({ units: 10, activation: "softmax" }),
      ],
    });
    // Round-trip through the wire spec, as a client builds its model.
    const model = await instantiate(modelSpecOf(built, "conv"), await readWeights(built));
    built.dispose();
    const config: LocalTraining = {
      optimizer: "adam",
      learningRate: 0.01,
      localEpochs: 2,
      batchSize: 20,
    };
    expectStable(await countsPerRound(model, digits, config, true));
    model.dispose();
  });
});
