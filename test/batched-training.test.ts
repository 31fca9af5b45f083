/** Cohort-batched local training equals device-by-device `trainLocal` within float tolerance. */
import { beforeAll, describe, expect, it } from "vitest";
import * as tf from "@tensorflow/tfjs";
import {
  batchPlan,
  readWeights,
  selectBackend,
  toTensors,
  trainBatched,
  trainLocal,
  writeWeights,
  type BatchedDevice,
  type LocalTraining,
} from "../models/index.js";
import { createRng } from "../aggregation/random.js";
import type { Dataset } from "../protocol/dataset.js";
import type { LossName } from "../protocol/task.js";
import { maxDiff } from "./helpers/weights.js";

const FEATURES = 12;
const CLASSES = 4;

function dataset(n: number, seed: number, loss: LossName): Dataset {
  const rng = createRng(seed);
  const features = Float32Array.from({ length: n * FEATURES }, () => rng() * 2 - 1);
  const ids = Int32Array.from({ length: n }, () => Math.floor(rng() * CLASSES));
  if (loss === "categorical-crossentropy") {
    const labels = new Float32Array(n * CLASSES);
    ids.forEach((c, i) => (labels[i * CLASSES + c] = 1));
    return { name: `d${seed}`, features, labels, sampleShape: [FEATURES], labelShape: [CLASSES] };
  }
  if (loss === "mse") {
    const labels = Float32Array.from(ids, (c) => c / CLASSES);
    return { name: `d${seed}`, features, labels, sampleShape: [FEATURES] };
  }
  return { name: `d${seed}`, features, labels: ids, sampleShape: [FEATURES], numClasses: CLASSES };
}

function model(activations: string[], head: string, outputs: number): tf.LayersModel {
  const m = tf.sequential();
  activations.forEach((activation, i) =>
    m.add(
      tf.layers.dense({
        units: 8,
        activation: activation as "relu",
        useBias: i % 2 === 0,
        ...(i === 0 ? { inputShape: [FEATURES] } : {}),
      }),
    ),
  );
  m.add(tf.layers.dense({ units: outputs, activation: head as "softmax" }));
  return m;
}

/** Per-device and batched runs of the same devices; their weights' largest difference. */
async function compare(m: tf.LayersModel, devices: BatchedDevice[]) {
  const plan = batchPlan(m, devices[0]!.config);
  if (typeof plan === "string") throw new Error(plan);
  const batched = await trainBatched(plan, devices);
  let worst = 0;
  for (const [k, d] of devices.entries()) {
    writeWeights(m, d.weights);
    const data = toTensors(d.data);
    const stats = await trainLocal(m, data, d.config, d.shuffleSeed);
    data.dispose();
    worst = Math.max(worst, maxDiff(await readWeights(m), batched[k]!.weights));
    expect(batched[k]!.stats.loss).toBeCloseTo(stats.loss, 4);
    if (stats.accuracy !== null) expect(batched[k]!.stats.accuracy).toBeCloseTo(stats.accuracy, 5);
  }
  return worst;
}

async function devicesOf(
  m: tf.LayersModel,
  sizes: number[],
  config: LocalTraining,
  perDevice: (k: number) => Partial<LocalTraining> = () => ({}),
): Promise<BatchedDevice[]> {
  const start = await readWeights(m);
  return sizes.map((n, k) => ({
    // Devices start from different weights, as a compressed downlink can leave them.
    weights: start.map((w) => w.map((v) => v * (1 + 0.01 * k))),
    data: dataset(n, 100 + k, config.loss ?? "sparse-categorical-crossentropy"),
    config: { ...config, ...perDevice(k) },
    shuffleSeed: 7 + k * 13,
  }));
}

const sgd: LocalTraining = {
  optimizer: "sgd",
  learningRate: 0.1,
  localEpochs: 2,
  batchSize: 10,
  loss: "sparse-categorical-crossentropy",
};

describe("batched training", () => {
  beforeAll(async () => {
    await selectBackend("wasm");
  });

  it("dense layers with relu, sigmoid, tanh, linear and a softmax head, unequal devices and a short last batch", async () => {
    const m = model(["relu", "sigmoid", "tanh", "linear"], "softmax", CLASSES);
    const devices = await devicesOf(m, [37, 10, 64, 5], sgd, (k) => ({
      learningRate: 0.05 + 0.05 * k,
    }));
    expect(await compare(m, devices)).toBeLessThan(1e-5);
  });

  it("one-hot labels with categorical cross-entropy", async () => {
    const m = model(["relu"], "softmax", CLASSES);
    const config: LocalTraining = { ...sgd, loss: "categorical-crossentropy", batchSize: 7 };
    expect(await compare(m, await devicesOf(m, [20, 33, 9], config))).toBeLessThan(1e-5);
  });

  it("a regression head (linear, mse)", async () => {
    const m = model(["tanh"], "linear", 1);
    const config: LocalTraining = { ...sgd, loss: "mse", localEpochs: 1 };
    expect(await compare(m, await devicesOf(m, [25, 14], config))).toBeLessThan(1e-5);
  });

  it("FedProx's proximal term, μ per device (0 included)", async () => {
    const m = model(["relu"], "softmax", CLASSES);
    const devices = await devicesOf(m, [30, 18, 41], sgd, (k) => ({ proximalMu: [0.5, 0, 2][k] }));
    expect(await compare(m, devices)).toBeLessThan(1e-5);
  });

  it("says why a model or optimizer cannot be batched", () => {
    const dropout = tf.sequential({
      layers: [
        tf.layers.dense({ units: 4, inputShape: [FEATURES] }),
        tf.layers.dropout({ rate: 0.5 }),
        tf.layers.dense({ units: CLASSES, activation: "softmax" }),
      ],
    });
    expect(batchPlan(dropout, sgd)).toMatch(/dropout/);
    expect(batchPlan(model(["relu"], "softmax", CLASSES), { ...sgd, optimizer: "adam" })).toMatch(
      /adam/,
    );
    const conv = tf.sequential({
      layers: [
        tf.layers.conv2d({ inputShape: [4, 4, 1], filters: 2, kernelSize: 3 }),
        tf.layers.flatten(),
        tf.layers.dense({ units: CLASSES, activation: "softmax" }),
      ],
    });
    expect(batchPlan(conv, sgd)).toMatch(/Conv2D/);
  });
});
