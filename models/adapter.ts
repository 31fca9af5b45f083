/** The tfjs model adapter: topology ↔ model, weights ↔ typed arrays, local training, evaluation. */
import * as tf from "@tensorflow/tfjs";
import type { Dataset } from "../protocol/dataset.js";
import { CohortError } from "../protocol/errors.js";
import type { Json, ModelSpec, TensorSpec, TrainingConfig } from "../protocol/messages.js";
import { checkWeights, countParameters, type Weights } from "../aggregation/weights.js";
import { createRng, shuffleInPlace } from "../aggregation/random.js";

/** Names and shapes of a model's weights, in `getWeights()` order. */
export function weightSpecsOf(model: tf.LayersModel): TensorSpec[] {
  return model.weights.map((w) => {
    const shape = w.shape.map((d) => d ?? -1);
    if (shape.some((d) => d <= 0)) {
      throw new CohortError("INVALID_MODEL", `weight ${w.originalName} has an unknown dimension`);
    }
    return { name: w.originalName, shape };
  });
}

/** Describe a built model as the wire `ModelSpec`. */
export function modelSpecOf(model: tf.LayersModel, name: string): ModelSpec {
  const topology = JSON.parse(JSON.stringify(model.toJSON(null, false))) as { [k: string]: Json };
  const weightSpecs = weightSpecsOf(model);
  return { name, topology, weightSpecs, numParameters: countParameters(weightSpecs) };
}

/** Build a model from a task's topology; its weights must match the spec. */
export async function modelFromSpec(spec: ModelSpec): Promise<tf.LayersModel> {
  let model: tf.LayersModel;
  try {
    model = await tf.models.modelFromJSON({ modelTopology: spec.topology });
  } catch (cause) {
    const reason = cause instanceof Error ? cause.message : String(cause);
    throw new CohortError("INVALID_MODEL", `cannot build model ${spec.name}: ${reason}`, { cause });
  }
  const shapes = model.weights.map((w) => w.shape.join("x")).join(",");
  const expected = spec.weightSpecs.map((s) => s.shape.join("x")).join(",");
  if (shapes !== expected) {
    model.dispose();
    throw new CohortError(
      "INVALID_MODEL",
      `model ${spec.name}: topology gives weights [${shapes}] but the spec lists [${expected}]`,
    );
  }
  return model;
}

/** Read a model's weights as typed-array copies. */
export async function readWeights(model: tf.LayersModel): Promise<Float32Array[]> {
  const tensors = model.getWeights();
  const out: Float32Array[] = [];
  for (const t of tensors) out.push((await t.data()) as Float32Array);
  return out;
}

/** Overwrite a model's weights; shapes are checked against the model. */
export function writeWeights(model: tf.LayersModel, weights: Weights): void {
  const specs = weightSpecsOf(model);
  checkWeights(weights, specs);
  tf.tidy(() => model.setWeights(weights.map((w, i) => tf.tensor(w, specs[i]!.shape))));
}

/** A dataset as tensors, kept for many rounds; call `dispose()` when done. */
export interface TensorData {
  x: tf.Tensor;
  y: tf.Tensor;
  size: number;
  /** The examples the tensors were made from, for seeded shuffles done in JS. */
  source?: Dataset;
  dispose(): void;
}

/** Turn a dataset into input and one-hot label tensors. */
export function toTensors(data: Dataset): TensorData {
  const size = data.labels.length;
  const x = tf.tensor(data.features, [size, ...data.sampleShape]);
  const y = tf.tidy(() => tf.oneHot(tf.tensor1d(data.labels, "int32"), data.numClasses));
  return { x, y, size, source: data, dispose: () => tf.dispose([x, y]) };
}

/** What one local training run measured. */
export interface TrainStats {
  loss: number;
  accuracy: number | null;
  trainMs: number;
}

function makeOptimizer(config: TrainingConfig): tf.Optimizer {
  switch (config.optimizer) {
    case "sgd":
      return tf.train.sgd(config.learningRate);
    case "adam":
      return tf.train.adam(config.learningRate);
    default: {
      const exhaustive: never = config.optimizer;
      throw new CohortError("INVALID_OPTION", `unknown optimizer ${String(exhaustive)}`);
    }
  }
}

/** Local training progress: batches done out of all batches of the call. */
export type TrainProgress = (batchesDone: number, batchesTotal: number) => void;

/**
 * Yield to the event loop with a macrotask. tfjs callbacks yield with `requestAnimationFrame` in
 * browsers, which never fires in a background tab: training there would stall.
 */
function yieldTask(): Promise<void> {
  return new Promise((resolve) => {
    if (typeof setImmediate === "function") {
      setImmediate(resolve);
      return;
    }
    const channel = new MessageChannel();
    channel.port1.onmessage = () => {
      channel.port1.close();
      resolve();
    };
    channel.port2.postMessage(null);
  });
}

/** tfjs callbacks that report progress across epochs, or none when nobody listens. */
function progressCallbacks(
  data: TensorData,
  config: TrainingConfig,
  onProgress: TrainProgress | undefined,
): (epochOffset: number) => tf.CustomCallbackArgs | undefined {
  if (onProgress === undefined) return () => undefined;
  const perEpoch = Math.ceil(data.size / config.batchSize);
  const total = perEpoch * config.localEpochs;
  return (epochOffset) => {
    let epoch = epochOffset;
    return {
      nextFrameFunc: yieldTask,
      onEpochBegin: (e) => {
        epoch = epochOffset + e;
      },
      onBatchEnd: (batch) => onProgress(Math.min(total, epoch * perEpoch + batch + 1), total),
    };
  };
}

/**
 * Train locally for `localEpochs` epochs with batch `batchSize`, a fresh optimizer each call
 * (client optimizer state does not survive a round, as in FedAvg). With `shuffleSeed`, each
 * epoch's order comes from a seeded generator, so the same inputs give the same weights.
 * `onProgress`, when given, hears after every batch (pages show it).
 */
export async function trainLocal(
  model: tf.LayersModel,
  data: TensorData,
  config: TrainingConfig,
  shuffleSeed?: number,
  onProgress?: TrainProgress,
): Promise<TrainStats> {
  const callbacks = progressCallbacks(data, config, onProgress);
  const optimizer = makeOptimizer(config);
  model.compile({ optimizer, loss: "categoricalCrossentropy", metrics: ["accuracy"] });
  const started = performance.now();
  try {
    let history: tf.History | undefined;
    if (shuffleSeed === undefined) {
      history = await model.fit(data.x, data.y, {
        epochs: config.localEpochs,
        batchSize: config.batchSize,
        shuffle: true,
        verbose: 0,
        callbacks: callbacks(0),
      });
    } else {
      const rng = createRng(shuffleSeed);
      for (let epoch = 0; epoch < config.localEpochs; epoch++) {
        const order = shuffleInPlace(
          Int32Array.from({ length: data.size }, (_, i) => i),
          rng,
        );
        const [x, y] = permuted(data, order);
        try {
          history = await model.fit(x!, y!, {
            epochs: 1,
            batchSize: config.batchSize,
            shuffle: false,
            verbose: 0,
            callbacks: callbacks(epoch),
          });
        } finally {
          tf.dispose([x!, y!]);
        }
      }
    }
    const last = (key: string): number | null => {
      const values = history?.history[key];
      const v = values?.[values.length - 1];
      return typeof v === "number" ? v : v === undefined ? null : (v.dataSync()[0] ?? null);
    };
    const loss = last("loss");
    if (loss === null) throw new CohortError("INTERNAL", "training reported no loss");
    return {
      loss,
      accuracy: last("acc") ?? last("accuracy"),
      trainMs: performance.now() - started,
    };
  } finally {
    optimizer.dispose();
  }
}

/**
 * The examples in `order`, as new tensors. Rows are copied in JS when the source data is at hand
 * (about 10× cheaper than a wasm gather of the same rows), else gathered.
 */
function permuted(data: TensorData, order: Int32Array): [tf.Tensor, tf.Tensor] {
  const src = data.source;
  if (src === undefined) {
    const indices = tf.tensor1d(order, "int32");
    const out = tf.tidy(() => [tf.gather(data.x, indices), tf.gather(data.y, indices)]);
    indices.dispose();
    return [out[0]!, out[1]!];
  }
  const row = src.features.length / src.labels.length;
  const features = new Float32Array(order.length * row);
  const labels = new Uint8Array(order.length);
  order.forEach((from, to) => {
    features.set(src.features.subarray(from * row, (from + 1) * row), to * row);
    labels[to] = src.labels[from]!;
  });
  const t = toTensors({ ...src, features, labels });
  return [t.x, t.y];
}

/** Loss and accuracy of a model on a dataset. */
export interface EvalStats {
  loss: number;
  accuracy: number;
  numExamples: number;
}

/** Evaluate mean cross-entropy and accuracy, in batches to bound memory. */
export async function evaluateModel(
  model: tf.LayersModel,
  data: Dataset,
  batchSize = 500,
): Promise<EvalStats> {
  const n = data.labels.length;
  if (n === 0) throw new CohortError("DATASET_INVALID", `evaluation set ${data.name} is empty`);
  const rowSize = data.features.length / n;
  let lossSum = 0;
  let correct = 0;
  for (let start = 0; start < n; start += batchSize) {
    const end = Math.min(n, start + batchSize);
    const [lossT, correctT] = tf.tidy(() => {
      const x = tf.tensor(data.features.subarray(start * rowSize, end * rowSize), [
        end - start,
        ...data.sampleShape,
      ]);
      const labels = tf.tensor1d(data.labels.subarray(start, end), "int32");
      const probs = model.predict(x) as tf.Tensor;
      const y = tf.oneHot(labels, data.numClasses);
      const loss = tf.neg(tf.sum(tf.mul(y, tf.log(tf.clipByValue(probs, 1e-7, 1)))));
      const hits = tf.sum(tf.cast(tf.equal(tf.argMax(probs, -1), labels), "float32"));
      return [loss, hits];
    });
    lossSum += (await lossT.data())[0]!;
    correct += (await correctT.data())[0]!;
    tf.dispose([lossT, correctT]);
  }
  return { loss: lossSum / n, accuracy: correct / n, numExamples: n };
}
