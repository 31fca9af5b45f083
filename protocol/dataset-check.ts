/**
 * Checking a user's dataset before anything trains on it: a name, finite features (named by
 * example), labels that are class ids below `numClasses` or finite float targets, and sizes
 * that agree, and one group id per example where it has groups. Float64 arrays and plain number
 * arrays are converted; other arrays are refused saying what to convert to.
 */
import { featureSize, isClassIds, labelSize, type Dataset, type Labels } from "./dataset.js";
import { CohortError } from "./errors.js";

/** What a value is, for an error message: its class name, or its type. */
export function typeName(v: unknown): string {
  if (v === null || v === undefined) return String(v);
  if (Array.isArray(v)) return "a plain array";
  const ctor = (v as { constructor?: { name?: unknown } }).constructor?.name;
  return typeof ctor === "string" ? ctor : typeof v;
}

const isNumberList = (v: unknown): v is readonly number[] =>
  Array.isArray(v) && v.every((x) => typeof x === "number");

function shapeOf(raw: unknown, what: string, key: string, mayBeEmpty: boolean): number[] {
  if (
    !Array.isArray(raw) ||
    (!mayBeEmpty && raw.length === 0) ||
    !raw.every((d) => Number.isInteger(d) && d > 0)
  ) {
    throw new CohortError(
      "DATASET_INVALID",
      `${what}: ${key} must be ${mayBeEmpty ? "an" : "a non-empty"} array of positive integers, got ${JSON.stringify(raw)}`,
    );
  }
  return raw as number[];
}

function features(raw: unknown, what: string, size: number): Float32Array {
  let values: Float32Array;
  if (raw instanceof Float32Array) values = raw;
  else if (raw instanceof Float64Array || isNumberList(raw)) {
    const first = Array.prototype.findIndex.call(raw, (v: number) => !Number.isFinite(v));
    if (first >= 0) throw nonFinite(what, first, size, (raw as ArrayLike<number>)[first]!);
    values = Float32Array.from(raw);
  } else {
    throw new CohortError(
      "DATASET_INVALID",
      `${what}: features must be a Float32Array (Float64Array and number arrays are converted), got ${typeName(raw)}`,
    );
  }
  const first = values.findIndex((v) => !Number.isFinite(v));
  if (first >= 0) throw nonFinite(what, first, size, values[first]!);
  return values;
}

function nonFinite(what: string, at: number, size: number, v: number): CohortError {
  return new CohortError(
    "DATASET_INVALID",
    `${what}: example ${Math.floor(at / size)} holds ${v} (feature ${at % size})`,
  );
}

function labels(raw: unknown, what: string, classIds: boolean): Labels {
  if (raw instanceof Uint8Array || raw instanceof Uint16Array || raw instanceof Int32Array) {
    return raw;
  }
  if (classIds && (raw instanceof Float32Array || raw instanceof Float64Array)) {
    // Class ids in a float array (numClasses says they are ids): whole numbers, as Int32.
    const bad = raw.findIndex((y) => !Number.isInteger(y));
    if (bad >= 0) {
      throw new CohortError(
        "DATASET_INVALID",
        `${what}: numClasses is given but label ${bad} is ${raw[bad]}, not a class id (give no numClasses for float targets)`,
      );
    }
    return Int32Array.from(raw);
  }
  if (raw instanceof Float32Array) return raw;
  if (raw instanceof Float64Array) return Float32Array.from(raw);
  if (isNumberList(raw)) {
    if (!classIds) return Float32Array.from(raw);
    const bad = raw.findIndex((y) => !Number.isInteger(y));
    if (bad >= 0) {
      throw new CohortError(
        "DATASET_INVALID",
        `${what}: label ${bad} is ${raw[bad]}, not a class id (give no numClasses for float targets)`,
      );
    }
    return Int32Array.from(raw);
  }
  throw new CohortError(
    "DATASET_INVALID",
    `${what}: labels must be class ids in a Uint8Array, Uint16Array or Int32Array, or float targets in a Float32Array, got ${typeName(raw)} (convert it with Int32Array.from or Float32Array.from)`,
  );
}

/**
 * The dataset as Cohort trains on it, converted where it can be and checked.
 *
 * @throws CohortError `DATASET_INVALID` saying what is wrong, naming the example.
 */
export function checkedDataset(data: Dataset): Dataset {
  const raw = data as unknown as Record<string, unknown> | null;
  const name = typeof raw?.name === "string" ? raw.name : null;
  const what = `dataset ${name ?? "(unnamed)"}`;
  if (raw === null || typeof raw !== "object" || name === null) {
    throw new CohortError("DATASET_INVALID", `${what}: \`name\` must be a string`);
  }
  const sampleShape = shapeOf(raw.sampleShape, what, "sampleShape", false);
  const labelShape = shapeOf(raw.labelShape ?? [], what, "labelShape", true);
  const numClasses = raw.numClasses;
  if (numClasses !== undefined && !(Number.isInteger(numClasses) && (numClasses as number) >= 2)) {
    throw new CohortError(
      "DATASET_INVALID",
      `${what}: numClasses must be an integer ≥ 2, got ${JSON.stringify(numClasses)}`,
    );
  }
  const size = featureSize({ sampleShape });
  const x = features(raw.features, what, size);
  const y = labels(raw.labels, what, numClasses !== undefined);
  const width = labelSize({ labelShape });
  const n = y.length / width;
  if (n === 0) throw new CohortError("DATASET_INVALID", `${what} is empty`);
  if (!Number.isInteger(n) || x.length !== n * size) {
    throw new CohortError(
      "DATASET_INVALID",
      `${what}: ${x.length} feature values (examples of shape [${sampleShape.join(", ")}]) for ${y.length} label values (labels of shape [${labelShape.join(", ")}])`,
    );
  }
  if (isClassIds(y)) {
    if (numClasses === undefined) {
      throw new CohortError(
        "DATASET_INVALID",
        `${what}: class-id labels (${typeName(y)}) need numClasses; float targets go in a Float32Array`,
      );
    }
    const bad = y.findIndex((v) => v < 0 || v >= (numClasses as number));
    if (bad >= 0) {
      throw new CohortError(
        "DATASET_INVALID",
        `${what}: label ${y[bad]} of example ${Math.floor(bad / width)} is outside [0, numClasses ${String(numClasses)})`,
      );
    }
  } else {
    const bad = y.findIndex((v) => !Number.isFinite(v));
    if (bad >= 0) {
      throw new CohortError(
        "DATASET_INVALID",
        `${what}: the label of example ${Math.floor(bad / width)} holds ${y[bad]}`,
      );
    }
  }
  const g = raw.groups === undefined ? undefined : groups(raw.groups, what, n);
  return {
    name,
    features: x,
    labels: y,
    sampleShape,
    ...(labelShape.length > 0 ? { labelShape } : {}),
    ...(numClasses !== undefined && isClassIds(y) ? { numClasses: numClasses as number } : {}),
    ...(g === undefined ? {} : { groups: g }),
  };
}

/** Group ids: one integer per example (an Int32Array; plain integer arrays are converted). */
function groups(raw: unknown, what: string, n: number): Int32Array {
  let ids: Int32Array;
  if (raw instanceof Int32Array) ids = raw;
  else if (isNumberList(raw) && raw.every((v) => Number.isInteger(v) && Math.abs(v) < 2 ** 31)) {
    ids = Int32Array.from(raw);
  } else {
    throw new CohortError(
      "DATASET_INVALID",
      `${what}: groups must be an Int32Array of group ids (plain integer arrays are converted), got ${typeName(raw)}`,
    );
  }
  if (ids.length !== n) {
    throw new CohortError(
      "DATASET_INVALID",
      `${what}: ${ids.length} group ids for ${n} examples (one id per example)`,
    );
  }
  return ids;
}
