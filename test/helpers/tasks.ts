/**
 * Small synthetic tasks, one per loss and label type, each learnable in a few epochs: the
 * test suites train them locally, federated (plain and secure) and in a browser page.
 */
import * as tf from "@tensorflow/tfjs";
import { createRng } from "../../aggregation/random.js";
import type { Dataset } from "../../protocol/dataset.js";
import type { LossName } from "../../protocol/task.js";
import type { CoordinatorOptions } from "../../coordinator/index.js";

/** A task: its loss and metrics, data for clients and evaluation, and its model. */
export interface SyntheticTask {
  name: string;
  loss: LossName;
  metrics: string[];
  /** Data of one client (`part` picks a disjoint slice of the same distribution). */
  data(part: number, n?: number): Dataset;
  /** A built-in model name sized from the data, or a layers model built in memory. */
  model(): string | tf.LayersModel;
}

/**
 * A coordinator for `task` with three clients a round: the task's model, loss and metrics,
 * 150 held-out examples, Adam at 0.02, E = 4, B = 20, nothing on disk.
 */
export function taskCoordinatorOptions(
  task: SyntheticTask,
  run: Pick<CoordinatorOptions, "rounds" | "secure" | "seed">,
): Partial<CoordinatorOptions> {
  return {
    model: task.model(),
    loss: task.loss,
    metrics: task.metrics,
    evalDataset: task.data(99, 150),
    minAvailableClients: 3,
    minFitClients: 3,
    optimizer: "adam",
    learningRate: 0.02,
    localEpochs: 4,
    batchSize: 20,
    runDir: null,
    ...run,
  };
}

const FEATURES = 6;

/** Gaussian features with a fixed linear map `w`: the signal every task reads. */
function base(part: number, n: number, seed: number) {
  const rng = createRng(seed * 1000 + part);
  const gauss = () => Math.sqrt(-2 * Math.log(rng() || 1e-12)) * Math.cos(2 * Math.PI * rng());
  const x = Float32Array.from({ length: n * FEATURES }, gauss);
  const score = (i: number, k: number) => {
    let s = 0;
    for (let j = 0; j < FEATURES; j++) s += x[i * FEATURES + j]! * Math.sin(1 + j * (k + 1) * 0.7);
    return s;
  };
  return { x, score, gauss };
}

const argmax = (v: number[]) => v.indexOf(Math.max(...v));

/** A three-class problem: the class is the argmax of three linear scores. */
function classes(part: number, n: number, seed: number) {
  const { x, score } = base(part, n, seed);
  const ids = Array.from({ length: n }, (_, i) => argmax([0, 1, 2].map((k) => score(i, k))));
  return { x, ids, score };
}

const tabular = (
  name: string,
  x: Float32Array,
  labels: Dataset["labels"],
  extra: Partial<Dataset>,
) => ({ name, features: x, labels, sampleShape: [FEATURES], ...extra }) as Dataset;

/** A per-timestep sequence model: embedding, a small LSTM, a softmax at every step. */
function sequenceModel(steps: number, vocab: number): tf.LayersModel {
  let seed = 40;
  return tf.sequential({
    name: "seq",
    layers: [
      tf.layers.embedding({
        inputDim: vocab,
        outputDim: 4,
        inputShape: [steps],
        embeddingsInitializer: tf.initializers.randomUniform({
          minval: -0.5,
          maxval: 0.5,
          seed: ++seed,
        }),
      }),
      tf.layers.lstm({
        units: 12,
        returnSequences: true,
        kernelInitializer: tf.initializers.glorotUniform({ seed: ++seed }),
        recurrentInitializer: tf.initializers.orthogonal({ gain: 1, seed: ++seed }),
      }),
      tf.layers.timeDistributed({
        layer: tf.layers.dense({
          units: vocab,
          activation: "softmax",
          kernelInitializer: tf.initializers.glorotUniform({ seed: ++seed }),
        }),
      }),
    ],
  });
}

export const TASKS: SyntheticTask[] = [
  {
    name: "sparse categorical, Uint16 class ids",
    loss: "sparse-categorical-crossentropy",
    metrics: ["accuracy", "auc"],
    data: (part, n = 120) => {
      const { x, ids } = classes(part, n, 1);
      return tabular("uint16", x, Uint16Array.from(ids), { numClasses: 3 });
    },
    model: () => "mlp:16",
  },
  {
    name: "sparse categorical, Int32 class ids, logistic regression",
    loss: "sparse-categorical-crossentropy",
    metrics: ["accuracy"],
    data: (part, n = 120) => {
      const { x, ids } = classes(part, n, 2);
      return tabular("int32", x, Int32Array.from(ids), { numClasses: 3 });
    },
    model: () => "logreg",
  },
  {
    name: "dense categorical, soft class probabilities",
    loss: "categorical-crossentropy",
    metrics: ["accuracy", "mse"],
    data: (part, n = 120) => {
      const { x, score } = classes(part, n, 3);
      const y = new Float32Array(n * 3);
      for (let i = 0; i < n; i++) {
        const e = [0, 1, 2].map((k) => Math.exp(2 * score(i, k)));
        const z = e.reduce((a, b) => a + b, 0);
        e.forEach((v, k) => (y[i * 3 + k] = v / z));
      }
      return tabular("soft", x, y, { labelShape: [3] });
    },
    model: () => "mlp:16",
  },
  {
    name: "binary, one sigmoid, Uint8 0/1",
    loss: "binary-crossentropy",
    metrics: ["accuracy", "auc"],
    data: (part, n = 120) => {
      const { x, score } = base(part, n, 4);
      return tabular(
        "binary",
        x,
        Uint8Array.from({ length: n }, (_, i) => (score(i, 0) > 0 ? 1 : 0)),
        {
          numClasses: 2,
        },
      );
    },
    model: () => "mlp:16",
  },
  {
    name: "multi-label, three sigmoids",
    loss: "binary-crossentropy",
    metrics: ["binary-accuracy", "auc"],
    data: (part, n = 120) => {
      const { x, score } = base(part, n, 5);
      const y = Float32Array.from({ length: n * 3 }, (_, v) =>
        score(Math.floor(v / 3), v % 3) > 0 ? 1 : 0,
      );
      return tabular("multilabel", x, y, { labelShape: [3] });
    },
    model: () => "mlp:16",
  },
  {
    name: "regression, mean squared error",
    loss: "mse",
    metrics: ["mae", "mse"],
    data: (part, n = 120) => {
      const { x, score, gauss } = base(part, n, 6);
      return tabular(
        "linear",
        x,
        Float32Array.from({ length: n }, (_, i) => score(i, 0) + 0.1 * gauss()),
        {},
      );
    },
    model: () => "logreg",
  },
  {
    name: "multi-output regression, mean absolute error",
    loss: "mae",
    metrics: ["mae"],
    data: (part, n = 120) => {
      const { x, score } = base(part, n, 7);
      const y = Float32Array.from({ length: n * 2 }, (_, v) => score(Math.floor(v / 2), v % 2));
      return tabular("two-outputs", x, y, { labelShape: [2] });
    },
    model: () => "mlp:16",
  },
  {
    name: "regression, Huber",
    loss: "huber",
    metrics: ["mae"],
    data: (part, n = 120) => {
      const { x, score, gauss } = base(part, n, 8);
      // Heavy-tailed noise: the case Huber is for.
      const y = Float32Array.from(
        { length: n },
        (_, i) => 2 * score(i, 1) + (i % 17 === 0 ? 8 * gauss() : 0),
      );
      return tabular("huber", x, y, {});
    },
    model: () => "logreg",
  },
  {
    name: "per-timestep sequence, class ids [T]",
    loss: "sparse-categorical-crossentropy",
    metrics: ["accuracy"],
    data: (part, n = 120) => {
      const steps = 5;
      const vocab = 7;
      const rng = createRng(9000 + part);
      const x = Float32Array.from({ length: n * steps }, () => Math.floor(rng() * vocab));
      // Each step's label: the next id after this one.
      const y = Int32Array.from(x, (c) => (c + 1) % vocab);
      return {
        name: "sequence",
        features: x,
        labels: y,
        sampleShape: [steps],
        labelShape: [steps],
        numClasses: vocab,
      };
    },
    model: () => sequenceModel(5, 7),
  },
];
