/**
 * The task's loss and metrics in tfjs: label tensors for a loss, per-position loss and metric
 * values, the model/data/loss contract, and evaluation. Names come from `protocol/task.ts`.
 */
import * as tf from "@tensorflow/tfjs";
import {
  datasetSize,
  isClassIds,
  labelSize,
  type Dataset,
  type Labels,
} from "../protocol/dataset.js";
import { CohortError } from "../protocol/errors.js";
import { flatten } from "../aggregation/codecs/layout.js";
import { DEFAULT_LOSS, defaultMetrics, type LossName } from "../protocol/task.js";

/**
 * A user's metric: one value per example (or per example and output); Cohort takes the mean
 * over every value of the evaluation set.
 *
 * @example const within1: MetricFn = (y, p) => tf.cast(tf.lessEqual(tf.abs(tf.sub(y, p)), 1), "float32");
 */
export type MetricFn = (yTrue: tf.Tensor, yPred: tf.Tensor) => tf.Tensor;

/** What a model learns: the loss, the metrics to report, and the user's metric functions. */
export interface Objective {
  loss: LossName;
  metrics: readonly string[];
  /** Metric functions by name, for names that are not built in. */
  custom?: Readonly<Record<string, MetricFn>>;
}

/** The objective of a task that names nothing: softmax classification with accuracy. */
export const DEFAULT_OBJECTIVE: Objective = {
  loss: DEFAULT_LOSS,
  metrics: defaultMetrics(DEFAULT_LOSS),
};

/** Shape of one example's target as the model outputs it (`[]` labels become `[1]`). */
function targetShape(data: Pick<Dataset, "labelShape">): number[] {
  const shape = [...(data.labelShape ?? [])];
  return shape.length === 0 ? [1] : shape;
}

/**
 * The label tensor a loss trains against, for `n` examples' labels: one-hot class ids for
 * sparse cross-entropy (`[n, ...labelShape, classes]`, `classes` the model's when it has more
 * than the data holds), the values as float32 otherwise.
 */
export function targetTensor(
  labels: Labels,
  meta: Pick<Dataset, "labelShape" | "numClasses">,
  loss: LossName,
  modelClasses?: number,
): tf.Tensor {
  const n = labels.length / labelSize(meta);
  if (loss === "sparse-categorical-crossentropy") {
    if (!isClassIds(labels) || meta.numClasses === undefined) {
      throw new CohortError("INVALID_MODEL", `${loss} needs class-id labels and numClasses`);
    }
    const classes = Math.max(meta.numClasses, modelClasses ?? 0);
    const ids = labels instanceof Int32Array ? labels : Int32Array.from(labels);
    return tf.tidy(() =>
      tf.oneHot(tf.tensor(ids, [n, ...(meta.labelShape ?? [])], "int32"), classes),
    );
  }
  const values = labels instanceof Float32Array ? labels : Float32Array.from(labels);
  const shape =
    loss === "categorical-crossentropy" ? [...(meta.labelShape ?? [])] : targetShape(meta);
  return tf.tensor(values, [n, ...shape], "float32");
}

/** Huber loss with δ = 1, averaged over the last axis like tfjs's own losses. */
function huber(yTrue: tf.Tensor, yPred: tf.Tensor): tf.Tensor {
  return tf.tidy(() => {
    const d = tf.abs(tf.sub(yTrue, yPred));
    const quadratic = tf.minimum(d, 1);
    return tf.mean(tf.add(tf.mul(0.5, tf.square(quadratic)), tf.sub(d, quadratic)), -1);
  });
}

/** What `model.compile` is given for a loss (tfjs's own names where it has the loss). */
export function compiledLoss(loss: LossName): string | MetricFn {
  switch (loss) {
    case "sparse-categorical-crossentropy":
    case "categorical-crossentropy":
      return "categoricalCrossentropy";
    case "binary-crossentropy":
      return "binaryCrossentropy";
    case "mse":
      return "meanSquaredError";
    case "mae":
      return "meanAbsoluteError";
    case "huber":
      return huber;
    default: {
      const exhaustive: never = loss;
      throw new CohortError("INVALID_OPTION", `unknown loss ${String(exhaustive)}`);
    }
  }
}

/** The loss of each example (and timestep): the last axis reduced. */
export function lossValues(loss: LossName, yTrue: tf.Tensor, yPred: tf.Tensor): tf.Tensor {
  switch (loss) {
    case "sparse-categorical-crossentropy":
    case "categorical-crossentropy":
      return tf.metrics.categoricalCrossentropy(yTrue, yPred);
    case "binary-crossentropy":
      return tf.metrics.binaryCrossentropy(yTrue, yPred);
    case "mse":
      return tf.metrics.meanSquaredError(yTrue, yPred);
    case "mae":
      return tf.metrics.meanAbsoluteError(yTrue, yPred);
    case "huber":
      return huber(yTrue, yPred);
    default: {
      const exhaustive: never = loss;
      throw new CohortError("INVALID_OPTION", `unknown loss ${String(exhaustive)}`);
    }
  }
}

/** Whether outputs are one softmax over classes (argmax decides) rather than sigmoids. */
function isSoftmaxLoss(loss: LossName): boolean {
  return loss === "sparse-categorical-crossentropy" || loss === "categorical-crossentropy";
}

/** 1 where a prediction is right, 0 where not: argmax for softmax tasks, 0.5 thresholds else. */
export function hits(loss: LossName, yTrue: tf.Tensor, yPred: tf.Tensor): tf.Tensor {
  return tf.tidy(() =>
    isSoftmaxLoss(loss)
      ? tf.cast(tf.equal(tf.argMax(yTrue, -1), tf.argMax(yPred, -1)), "float32")
      : binaryHits(yTrue, yPred),
  );
}

function binaryHits(yTrue: tf.Tensor, yPred: tf.Tensor): tf.Tensor {
  return tf.cast(tf.equal(tf.greaterEqual(yTrue, 0.5), tf.greaterEqual(yPred, 0.5)), "float32");
}

/** Per-value metric tensors of the metrics that average (all but AUC). */
function meanMetric(
  name: string,
  objective: Objective,
  yTrue: tf.Tensor,
  yPred: tf.Tensor,
): tf.Tensor {
  switch (name) {
    case "accuracy":
      return hits(objective.loss, yTrue, yPred);
    case "binary-accuracy":
      return binaryHits(yTrue, yPred);
    case "mae":
      return tf.abs(tf.sub(yTrue, yPred));
    case "mse":
      return tf.square(tf.sub(yTrue, yPred));
    default: {
      const fn = objective.custom?.[name];
      if (fn === undefined) throw new CohortError("INVALID_OPTION", `unknown metric ${name}`);
      return fn(yTrue, yPred);
    }
  }
}

/**
 * Area under the ROC curve of scores against 0/1 targets, by ranks (ties share their mean
 * rank); every output of every example counts (micro average). NaN without both classes.
 */
export function rocAuc(targets: Float32Array, scores: Float32Array): number {
  // A diverged model's NaN scores have no order.
  if (scores.some((v) => Number.isNaN(v))) return Number.NaN;
  const order = Array.from({ length: scores.length }, (_, i) => i).sort(
    (a, b) => scores[a]! - scores[b]!,
  );
  let positives = 0;
  let rankSum = 0;
  for (let i = 0; i < order.length;) {
    let j = i;
    while (j + 1 < order.length && scores[order[j + 1]!] === scores[order[i]!]) j++;
    const rank = (i + j) / 2 + 1;
    for (let k = i; k <= j; k++) {
      if (targets[order[k]!]! >= 0.5) {
        positives++;
        rankSum += rank;
      }
    }
    i = j + 1;
  }
  const negatives = order.length - positives;
  if (positives === 0 || negatives === 0) return Number.NaN;
  return (rankSum - (positives * (positives + 1)) / 2) / (positives * negatives);
}

/** Loss and metrics of a model on a dataset. */
export interface EvalStats {
  loss: number;
  /** The `accuracy` (else `binary-accuracy`) metric, or null when the task has neither. */
  accuracy: number | null;
  /** Every metric of the objective, by name. */
  metrics: Record<string, number>;
  numExamples: number;
}

/**
 * The classes a model's softmax spans under sparse cross-entropy (its last output axis), which
 * the one-hot labels must match; undefined for other losses.
 */
export function outputClasses(model: tf.LayersModel, loss: LossName): number | undefined {
  if (loss !== "sparse-categorical-crossentropy") return undefined;
  const last = model.outputs[0]?.shape.at(-1);
  return typeof last === "number" ? last : undefined;
}

/** Mean loss and the objective's metrics over a dataset, in batches to bound memory. */
export async function evaluateModel(
  model: tf.LayersModel,
  data: Dataset,
  objective: Objective = DEFAULT_OBJECTIVE,
  batchSize = 500,
): Promise<EvalStats> {
  const n = datasetSize(data);
  if (n === 0) throw new CohortError("DATASET_INVALID", `evaluation set ${data.name} is empty`);
  const rowSize = data.features.length / n;
  const width = labelSize(data);
  const averaged = objective.metrics.filter((m) => m !== "auc");
  const wantsAuc = objective.metrics.includes("auc");
  const sums = new Array<number>(averaged.length + 1).fill(0);
  const aucTargets: Float32Array[] = [];
  const aucScores: Float32Array[] = [];
  const classes = outputClasses(model, objective.loss);
  for (let start = 0; start < n; start += batchSize) {
    const end = Math.min(n, start + batchSize);
    const y = targetTensor(
      data.labels.subarray(start * width, end * width),
      data,
      objective.loss,
      classes,
    );
    let outs: tf.Tensor[] = [];
    try {
      outs = tf.tidy(() => {
        const x = tf.tensor(data.features.subarray(start * rowSize, end * rowSize), [
          end - start,
          ...data.sampleShape,
        ]);
        const p = model.predict(x) as tf.Tensor;
        const values = [
          lossValues(objective.loss, y, p),
          ...averaged.map((m) => meanMetric(m, objective, y, p)),
        ];
        const means = values.map((v) => tf.mul(tf.mean(v), end - start));
        return wantsAuc
          ? [...means, aucValues(objective.loss, p), aucValues(objective.loss, y)]
          : means;
      });
      for (let i = 0; i < sums.length; i++) sums[i]! += (await outs[i]!.data())[0]!;
      if (wantsAuc) {
        aucScores.push((await outs[sums.length]!.data()) as Float32Array);
        aucTargets.push((await outs[sums.length + 1]!.data()) as Float32Array);
      }
    } finally {
      // Freed also when a user's metric function or the model throws.
      y.dispose();
      tf.dispose(outs);
    }
  }
  const metrics: Record<string, number> = {};
  averaged.forEach((m, i) => (metrics[m] = sums[i + 1]! / n));
  if (wantsAuc) metrics.auc = rocAuc(flatten(aucTargets), flatten(aucScores));
  return {
    loss: sums[0]! / n,
    accuracy: metrics.accuracy ?? metrics["binary-accuracy"] ?? null,
    metrics,
    numExamples: n,
  };
}

/**
 * The values AUC ranks (scores, or their targets): the positive class's column of a two-class
 * softmax, every output otherwise; flattened.
 */
function aucValues(loss: LossName, t: tf.Tensor): tf.Tensor {
  if (!isSoftmaxLoss(loss) || t.shape.at(-1) !== 2) return tf.reshape(t, [-1]);
  const begin = new Array<number>(t.rank - 1).fill(0).concat(1);
  return tf.reshape(tf.slice(t, begin, [...t.shape.slice(0, -1), 1]), [-1]);
}

const shapeText = (s: readonly (number | null)[]) => `[${s.map((d) => d ?? "?").join(", ")}]`;

/**
 * Throw `INVALID_MODEL` unless the model takes the data's examples and its output fits the
 * labels under the loss. `where` names the data's role in the message (e.g. `client data`).
 */
export function checkContract(
  model: tf.LayersModel,
  data: Dataset,
  loss: LossName,
  where = "data",
): void {
  const input = model.inputs[0]?.shape.slice(1) ?? [];
  const output = model.outputs[0]?.shape.slice(1) ?? [];
  const what = `model ${model.name} on ${where} ${data.name}`;
  const sample = data.sampleShape;
  if (input.length !== sample.length || input.some((d, i) => d !== null && d !== sample[i])) {
    throw new CohortError(
      "INVALID_MODEL",
      `${what}: the model takes examples of shape ${shapeText(input)} but the data's are ${shapeText(sample)}`,
    );
  }
  const labelShape = [...(data.labelShape ?? [])];
  const ids = isClassIds(data.labels);
  const kind = ids ? `class ids (${data.labels.constructor.name})` : "float targets (Float32Array)";
  const expect = (shape: readonly number[], why: string) => {
    if (output.length !== shape.length || output.some((d, i) => d !== null && d !== shape[i])) {
      throw new CohortError(
        "INVALID_MODEL",
        `${what}: the model outputs ${shapeText(output)} per example but ${loss} on labels of shape ${shapeText(labelShape)} needs ${shapeText(shape)} (${why})`,
      );
    }
  };
  switch (loss) {
    case "sparse-categorical-crossentropy": {
      if (!ids || data.numClasses === undefined) {
        throw new CohortError(
          "INVALID_MODEL",
          `${what}: ${loss} needs class-id labels with numClasses, but the labels are ${kind}; use categorical-crossentropy for class probabilities or a regression loss`,
        );
      }
      // A model may span more classes than this data holds (a client without the top class).
      const classes = output.at(-1);
      const wider = typeof classes === "number" && classes > data.numClasses ? classes : null;
      expect(
        [...labelShape, wider ?? data.numClasses],
        `a softmax over ${data.numClasses} classes or more`,
      );
      return;
    }
    case "categorical-crossentropy":
      if (ids || labelShape.length === 0) {
        throw new CohortError(
          "INVALID_MODEL",
          `${what}: ${loss} needs float class probabilities with a labelShape ending in the classes, but the labels are ${kind} of shape ${shapeText(labelShape)}; use sparse-categorical-crossentropy for class ids`,
        );
      }
      expect(labelShape, "the class probabilities' shape");
      return;
    case "binary-crossentropy":
      if (ids && (data.numClasses ?? 2) > 2) {
        throw new CohortError(
          "INVALID_MODEL",
          `${what}: ${loss} needs 0/1 targets but the labels are class ids of ${data.numClasses} classes; use sparse-categorical-crossentropy`,
        );
      }
      if (!ids) {
        const bad = data.labels.findIndex((v) => v < 0 || v > 1);
        if (bad >= 0) {
          throw new CohortError(
            "INVALID_MODEL",
            `${what}: ${loss} needs targets in [0, 1], but label value ${bad} is ${data.labels[bad]}`,
          );
        }
      }
      expect(targetShape(data), "one sigmoid per target");
      return;
    case "mse":
    case "mae":
    case "huber":
      expect(targetShape(data), "one output per target value");
      return;
    default: {
      const exhaustive: never = loss;
      throw new CohortError("INVALID_OPTION", `unknown loss ${String(exhaustive)}`);
    }
  }
}
