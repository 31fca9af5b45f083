/** The in-memory labelled dataset that clients train on and coordinators evaluate on. */

/**
 * Labels of a dataset: class ids (any integer width) or float targets (regression, multi-label
 * 0/1 targets, class probabilities).
 */
export type Labels = Uint8Array | Uint16Array | Int32Array | Float32Array;

/** Label arrays that hold class ids. */
export type ClassIds = Exclude<Labels, Float32Array>;

/**
 * Labelled examples stored flat: example `i` occupies
 * `features[i * featureSize .. (i + 1) * featureSize]` where `featureSize` is the product of
 * `sampleShape`, and `labels[i * labelSize .. (i + 1) * labelSize]` where `labelSize` is the
 * product of `labelShape` (one label per example by default).
 */
export interface Dataset {
  /** Human-readable name, e.g. `mnist:train[0/3]`. */
  readonly name: string;
  readonly features: Float32Array;
  /** Class ids in `[0, numClasses)` (Uint8/Uint16/Int32), or float targets (Float32). */
  readonly labels: Labels;
  /** Shape of one example, e.g. `[28, 28, 1]`. */
  readonly sampleShape: readonly number[];
  /**
   * Shape of one example's label: `[]` (the default) is one value per example; `[T]` one per
   * timestep of a sequence; `[k]` k outputs (multi-label, multi-output regression).
   */
  readonly labelShape?: readonly number[];
  /** Number of classes of class-id labels (required for them); absent for float targets. */
  readonly numClasses?: number;
  /**
   * The natural group of each example (a speaker, a mailbox, a patient), one id per example:
   * the `groups` partition gives each group id its own device. Absent when there are none.
   */
  readonly groups?: Int32Array;
}

/** Whether labels are class ids (an integer array) rather than float targets. */
export function isClassIds(labels: Labels): labels is ClassIds {
  return !(labels instanceof Float32Array);
}

/** Number of label values of one example. */
export function labelSize(data: Pick<Dataset, "labelShape">): number {
  return (data.labelShape ?? []).reduce((a, b) => a * b, 1);
}

/** Number of examples in a dataset. */
export function datasetSize(data: Pick<Dataset, "labels" | "labelShape">): number {
  return data.labels.length / labelSize(data);
}

/** Number of feature values in one example. */
export function featureSize(data: Pick<Dataset, "sampleShape">): number {
  return data.sampleShape.reduce((a, b) => a * b, 1);
}

/** An empty label array of the same type as `like`, for `n` values. */
export function labelsLike(like: Labels, n: number): Labels {
  if (like instanceof Float32Array) return new Float32Array(n);
  if (like instanceof Int32Array) return new Int32Array(n);
  if (like instanceof Uint16Array) return new Uint16Array(n);
  return new Uint8Array(n);
}

/**
 * The dataset's examples at `order` (repeats allowed), copied with their group ids; indices are
 * not checked.
 */
export function pickExamples(data: Dataset, order: ArrayLike<number>, name: string): Dataset {
  const row = featureSize(data);
  const width = labelSize(data);
  const features = new Float32Array(order.length * row);
  const labels = labelsLike(data.labels, order.length * width);
  for (let to = 0; to < order.length; to++) {
    const from = order[to]!;
    features.set(data.features.subarray(from * row, (from + 1) * row), to * row);
    if (width === 1) labels[to] = data.labels[from]!;
    else labels.set(data.labels.subarray(from * width, (from + 1) * width), to * width);
  }
  const picked: Dataset = { ...data, name, features, labels };
  if (data.groups === undefined) return picked;
  const groups = new Int32Array(order.length);
  for (let to = 0; to < order.length; to++) groups[to] = data.groups[order[to]!]!;
  return { ...picked, groups };
}

/** The number of distinct group ids of a dataset (0 without groups). */
export function groupCount(data: Pick<Dataset, "groups">): number {
  return data.groups === undefined ? 0 : new Set(data.groups).size;
}
