/**
 * What a task learns: its loss and the metrics evaluation reports. Names only, so Node, browsers,
 * workers and the coordinator agree on them over the wire; `models/task.ts` gives them meaning.
 */
import { CohortError } from "./errors.js";

/**
 * The built-in losses.
 * - `sparse-categorical-crossentropy`: class-id labels, a softmax over the classes (per
 *   timestep for sequences).
 * - `categorical-crossentropy`: float labels that are class probabilities (one-hot or soft).
 * - `binary-crossentropy`: sigmoid outputs against 0/1 targets, one (binary) or several
 *   (multi-label).
 * - `mse`, `mae`, `huber` (δ = 1): float targets of any shape (regression).
 */
export const LOSSES = [
  "sparse-categorical-crossentropy",
  "categorical-crossentropy",
  "binary-crossentropy",
  "mse",
  "mae",
  "huber",
] as const;
export type LossName = (typeof LOSSES)[number];

/** The built-in metrics; a task may also name metrics that users register as functions. */
export const BUILTIN_METRICS = ["accuracy", "binary-accuracy", "auc", "mae", "mse"] as const;
export type BuiltinMetric = (typeof BUILTIN_METRICS)[number];

/** The loss of a task that names none: softmax classification over class ids. */
export const DEFAULT_LOSS: LossName = "sparse-categorical-crossentropy";

/** Whether a loss trains a classifier (so accuracy means something). */
export function isClassification(loss: LossName): boolean {
  return (
    loss === "sparse-categorical-crossentropy" ||
    loss === "categorical-crossentropy" ||
    loss === "binary-crossentropy"
  );
}

/** The metrics of a task that names none: accuracy for classifiers, MAE for regressions. */
export function defaultMetrics(loss: LossName): string[] {
  return isClassification(loss) ? ["accuracy"] : ["mae"];
}

/** Narrow a loss name. */
export function isLossName(v: unknown): v is LossName {
  return typeof v === "string" && (LOSSES as readonly string[]).includes(v);
}

/** Whether a metric is built in. */
export function isBuiltinMetric(v: string): v is BuiltinMetric {
  return (BUILTIN_METRICS as readonly string[]).includes(v);
}

const METRIC_NAME = /^[A-Za-z][\w.-]{0,63}$/;

/**
 * Check a task's metric list against its loss: names well formed and not repeated; accuracy and
 * AUC only for classifiers. `custom` are the names of the user's own metric functions.
 *
 * @throws CohortError `INVALID_OPTION` naming the metric.
 */
export function checkMetrics(
  loss: LossName,
  metrics: readonly string[],
  custom: readonly string[] = [],
): string[] {
  const seen = new Set<string>();
  for (const m of metrics) {
    if (!METRIC_NAME.test(m)) {
      throw new CohortError("INVALID_OPTION", `metric name ${JSON.stringify(m)} is not a name`);
    }
    if (seen.has(m)) throw new CohortError("INVALID_OPTION", `metric ${m} is listed twice`);
    seen.add(m);
    if (!isBuiltinMetric(m) && !custom.includes(m)) {
      throw new CohortError(
        "INVALID_OPTION",
        `unknown metric ${m}: built in are ${BUILTIN_METRICS.join(", ")}${custom.length > 0 ? `; given as functions: ${custom.join(", ")}` : ""}`,
      );
    }
    if ((m === "accuracy" || m === "binary-accuracy" || m === "auc") && !isClassification(loss)) {
      throw new CohortError(
        "INVALID_OPTION",
        `metric ${m} needs a classification loss, not ${loss}`,
      );
    }
    if (m === "binary-accuracy" && loss !== "binary-crossentropy") {
      // Thresholding each softmax output at 0.5 scores ~0.9 for a random 10-class model.
      throw new CohortError(
        "INVALID_OPTION",
        `metric binary-accuracy is for sigmoid outputs (binary-crossentropy), not ${loss}: use accuracy`,
      );
    }
  }
  return [...metrics];
}

/** Parse `--loss NAME`. */
export function parseLoss(text: string): LossName {
  if (isLossName(text)) return text;
  throw new CohortError("INVALID_OPTION", `unknown loss ${text}: one of ${LOSSES.join(", ")}`);
}

/** Parse `--metrics a,b`: names, comma-separated (empty: none). */
export function parseMetricList(text: string): string[] {
  return text
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
}
