/** The tfjs model adapter: topology ↔ model, weights ↔ typed arrays, data ↔ tensors, evaluation. */
import * as tf from "@tensorflow/tfjs";
import { datasetSize, type Dataset } from "../protocol/dataset.js";
import type { LossName } from "../protocol/task.js";
import { targetTensor } from "./task.js";
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

/**
 * A dataset as tensors, kept for many rounds; call `dispose()` when done. Label tensors are
 * made per loss on first use (one-hot class ids for sparse cross-entropy, floats otherwise).
 */
export interface TensorData {
  readonly x: tf.Tensor;
  /**
   * The labels as the loss trains against them (one-hot over `classes` when the model spans
   * more classes than the data holds).
   */
  targets(loss: LossName, classes?: number): tf.Tensor;
  size: number;
  /** The examples the tensors were made from, for seeded shuffles done in JS. */
  source?: Dataset;
  dispose(): void;
}

/**
 * A dataset as tensors made on first use: seeded training copies rows in JS and never needs
 * the unshuffled tensors, so a device that trains once (the simulator) skips making them.
 */
export function toTensors(data: Dataset): TensorData {
  let x: tf.Tensor | null = null;
  const targets = new Map<string, tf.Tensor>();
  return {
    get x() {
      return (x ??= tf.tensor(data.features, [datasetSize(data), ...data.sampleShape]));
    },
    targets(loss, classes) {
      const key = `${loss}:${classes ?? ""}`;
      let y = targets.get(key);
      if (y === undefined) {
        y = targetTensor(data.labels, data, loss, classes);
        targets.set(key, y);
      }
      return y;
    },
    size: datasetSize(data),
    source: data,
    dispose: () => {
      tf.dispose([...(x === null ? [] : [x]), ...targets.values()]);
      x = null;
      targets.clear();
    },
  };
}

export { evaluateModel, type EvalStats } from "./task.js";
