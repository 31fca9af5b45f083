/** The tfjs model adapter: topology ↔ model, weights ↔ typed arrays, data ↔ tensors, evaluation. */
import * as tf from "@tensorflow/tfjs";
import type { Dataset } from "../protocol/dataset.js";
import { CohortError } from "../protocol/errors.js";
import type { Json, ModelSpec, TensorSpec } from "../protocol/messages.js";
import { checkWeights, countParameters, type Weights } from "../aggregation/weights.js";

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

/**
 * A dataset as tensors made on first use: seeded training copies rows in JS and never needs
 * the unshuffled tensors, so a device that trains once (the simulator) skips making them.
 */
export function lazyTensors(data: Dataset): TensorData {
  let made: TensorData | null = null;
  const get = () => (made ??= toTensors(data));
  return {
    get x() {
      return get().x;
    },
    get y() {
      return get().y;
    },
    size: data.labels.length,
    source: data,
    dispose: () => made?.dispose(),
  };
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
