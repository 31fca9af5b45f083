/**
 * Partitions of a dataset over a population of virtual devices, stored compactly so a device's
 * examples are materialised only when it is sampled: memory is O(dataset + devices).
 */
import { createRng, shuffleInPlace, type Rng } from "../aggregation/random.js";
import { datasetSize, isClassIds, labelSize, type Dataset } from "../protocol/dataset.js";
import { CohortError } from "../protocol/errors.js";

/** Which examples each device holds. */
export interface Partition {
  readonly devices: number;
  /** Indices into the dataset of device `d`'s examples. */
  indicesOf(device: number): Uint32Array;
  /** Number of examples of device `d`. */
  sizeOf(device: number): number;
  /** Every example some device holds (each once), for a centralised baseline. */
  pooledIndices(): Uint32Array;
}

/** The partitions a simulation can ask for. */
export type PartitionSpec =
  | { kind: "iid" }
  | { kind: "shards"; shardsPerDevice: number }
  | { kind: "dirichlet"; alpha: number }
  /** The dataset's natural groups (`Dataset.groups`): one device per group id. */
  | { kind: "groups" };

/** Parse `iid`, `shards`, `shards:K`, `dirichlet:α` or `groups`. */
export function parsePartitionSpec(text: string): PartitionSpec {
  if (typeof text !== "string") {
    throw new CohortError("INVALID_OPTION", `partition must be a string, got ${typeof text}`);
  }
  const [kind, arg] = text.split(":");
  if (kind === "iid" && arg === undefined) return { kind: "iid" };
  if (kind === "groups" && arg === undefined) return { kind: "groups" };
  if (kind === "shards") {
    const k = arg === undefined ? 2 : Number(arg);
    if (Number.isInteger(k) && k >= 1) return { kind: "shards", shardsPerDevice: k };
  }
  if (kind === "dirichlet") {
    const alpha = Number(arg);
    if (Number.isFinite(alpha) && alpha > 0) return { kind: "dirichlet", alpha };
  }
  throw new CohortError(
    "INVALID_OPTION",
    `partition must be iid, shards[:K], dirichlet:α (α > 0) or groups, got "${text}"`,
  );
}

/** Devices' slices of one permutation of (a subset of) the dataset: a CSR layout. */
class SlicedPartition implements Partition {
  constructor(
    private readonly order: Uint32Array,
    private readonly offsets: Uint32Array,
  ) {}
  get devices(): number {
    return this.offsets.length - 1;
  }
  indicesOf(device: number): Uint32Array {
    return this.order.subarray(this.offsets[device]!, this.offsets[device + 1]!);
  }
  sizeOf(device: number): number {
    return this.offsets[device + 1]! - this.offsets[device]!;
  }
  pooledIndices(): Uint32Array {
    return this.order;
  }
}

/** Each device draws its examples uniformly with replacement, on demand, from its own seed. */
class SampledPartition implements Partition {
  constructor(
    readonly devices: number,
    private readonly perDevice: number,
    private readonly datasetSize: number,
    private readonly seed: number,
  ) {}
  indicesOf(device: number): Uint32Array {
    const rng = createRng((this.seed ^ Math.imul(device + 1, 0x9e3779b1)) >>> 0);
    return Uint32Array.from({ length: this.perDevice }, () => Math.floor(rng() * this.datasetSize));
  }
  sizeOf(): number {
    return this.perDevice;
  }
  pooledIndices(): Uint32Array {
    // Devices sample the whole dataset.
    return Uint32Array.from({ length: this.datasetSize }, (_, i) => i);
  }
}

function checkDevices(devices: number): void {
  if (!Number.isInteger(devices) || devices < 1) {
    throw new CohortError("INVALID_OPTION", `devices must be a positive integer, got ${devices}`);
  }
}

/** How a partition may treat a population that needs more examples than the dataset has. */
export interface PartitionOptions {
  /**
   * Let each IID device draw its examples with replacement when devices × examples per device
   * exceed the dataset (devices then share examples); otherwise that is an `INVALID_OPTION`
   * error. @default false
   */
  allowOversampling?: boolean;
}

/**
 * IID: a seeded permutation cut into equal slices of `perDevice` examples. A population that
 * needs more examples than the dataset has is refused, unless `allowOversampling` lets each
 * device sample with replacement instead.
 */
export function iidPartition(
  datasetSize: number,
  devices: number,
  perDevice: number,
  seed: number,
  options: PartitionOptions = {},
): Partition {
  checkDevices(devices);
  if (!Number.isInteger(perDevice) || perDevice < 1) {
    throw new CohortError(
      "INVALID_OPTION",
      `examplesPerDevice must be a positive integer, got ${perDevice}`,
    );
  }
  if (devices * perDevice > datasetSize) {
    if (options.allowOversampling !== true) {
      throw new CohortError(
        "INVALID_OPTION",
        `iid: ${devices} devices × ${perDevice} examples need ${devices * perDevice} examples; ` +
          `the dataset has ${datasetSize}. Ask for fewer devices or examplesPerDevice, or set ` +
          `allowOversampling (--allow-oversampling) to let each device draw with replacement`,
      );
    }
    return new SampledPartition(devices, perDevice, datasetSize, seed);
  }
  const order = shuffleInPlace(
    Uint32Array.from({ length: datasetSize }, (_, i) => i),
    createRng(seed),
  );
  const offsets = Uint32Array.from({ length: devices + 1 }, (_, d) => d * perDevice);
  return new SlicedPartition(order.subarray(0, devices * perDevice), offsets);
}

/**
 * McMahan et al.'s pathological non-IID split: sort by label, cut into `devices · k` shards of
 * equal size, give each device k random shards (k = 2: most devices see two digits).
 */
export function shardPartition(
  labels: ArrayLike<number>,
  devices: number,
  perDevice: number,
  shardsPerDevice: number,
  seed: number,
): Partition {
  checkDevices(devices);
  const shardSize = Math.floor(perDevice / shardsPerDevice);
  const shards = devices * shardsPerDevice;
  if (shardSize < 1 || shards * shardSize > labels.length) {
    throw new CohortError(
      "INVALID_OPTION",
      `shards: ${devices} devices × ${perDevice} examples need ${devices * perDevice} examples; the dataset has ${labels.length}`,
    );
  }
  const rng = createRng(seed);
  // Sort by label; ties in a seeded random order so equal labels are not in file order.
  const byLabel = shuffleInPlace(
    Array.from({ length: labels.length }, (_, i) => i),
    rng,
  ).sort((a, b) => labels[a]! - labels[b]!);
  const shardOrder = shuffleInPlace(
    Array.from({ length: shards }, (_, i) => i),
    rng,
  );
  const order = new Uint32Array(shards * shardSize);
  let at = 0;
  for (const shard of shardOrder) {
    for (let j = 0; j < shardSize; j++) order[at++] = byLabel[shard * shardSize + j]!;
  }
  const offsets = Uint32Array.from(
    { length: devices + 1 },
    (_, d) => d * shardsPerDevice * shardSize,
  );
  return new SlicedPartition(order, offsets);
}

/** A Gamma(α, 1) draw (Marsaglia–Tsang, with the α < 1 boost). */
function gamma(alpha: number, rng: Rng): number {
  if (alpha < 1) return gamma(alpha + 1, rng) * Math.pow(rng() || Number.MIN_VALUE, 1 / alpha);
  const d = alpha - 1 / 3;
  const c = 1 / Math.sqrt(9 * d);
  for (;;) {
    let x: number;
    let v: number;
    do {
      // Box–Muller normal.
      x = Math.sqrt(-2 * Math.log(rng() || Number.MIN_VALUE)) * Math.cos(2 * Math.PI * rng());
      v = 1 + c * x;
    } while (v <= 0);
    v = v * v * v;
    const u = rng();
    if (u < 1 - 0.0331 * x ** 4 || Math.log(u) < 0.5 * x * x + d * (1 - v + Math.log(v)))
      return d * v;
  }
}

/**
 * Label skew: for each class, the share of its examples each device gets is drawn from
 * Dirichlet(α). Small α gives devices few classes; large α approaches IID. Every example is
 * used once; device sizes vary.
 */
export function dirichletPartition(
  labels: ArrayLike<number>,
  devices: number,
  alpha: number,
  seed: number,
): Partition {
  checkDevices(devices);
  const rng = createRng(seed);
  let numClasses = 0;
  for (let i = 0; i < labels.length; i++) numClasses = Math.max(numClasses, labels[i]! + 1);
  const byClass: number[][] = Array.from({ length: numClasses }, () => []);
  for (let i = 0; i < labels.length; i++) byClass[labels[i]!]!.push(i);
  const buckets: number[][] = Array.from({ length: devices }, () => []);
  for (const members of byClass) {
    shuffleInPlace(members, rng);
    const weights = Array.from({ length: devices }, () => gamma(alpha, rng));
    const total = weights.reduce((a, b) => a + b, 0);
    let start = 0;
    let cumulative = 0;
    for (let d = 0; d < devices; d++) {
      cumulative += weights[d]! / total;
      const end = d === devices - 1 ? members.length : Math.round(cumulative * members.length);
      for (let j = start; j < end; j++) buckets[d]!.push(members[j]!);
      start = Math.max(start, end);
    }
  }
  const offsets = new Uint32Array(devices + 1);
  buckets.forEach((b, d) => (offsets[d + 1] = offsets[d]! + b.length));
  const order = new Uint32Array(offsets[devices]!);
  buckets.forEach((b, d) => order.set(b, offsets[d]!));
  return new SlicedPartition(order, offsets);
}

/**
 * The natural partition: one device per distinct group id, devices in ascending id order, each
 * holding every example of its group (in dataset order). Device sizes are the groups' sizes.
 *
 * @throws CohortError `INVALID_OPTION` when `devices` is not the number of distinct groups.
 */
export function groupPartition(groups: ArrayLike<number>, devices: number): Partition {
  const ids = [...new Set(Array.from(groups))].sort((a, b) => a - b);
  if (devices !== ids.length) {
    throw new CohortError(
      "INVALID_OPTION",
      `the groups partition gives each of the dataset's ${ids.length} groups a device; devices is ${devices} (leave it unset, or set it to ${ids.length})`,
    );
  }
  const device = new Map(ids.map((id, d) => [id, d]));
  const offsets = new Uint32Array(devices + 1);
  for (let i = 0; i < groups.length; i++) offsets[device.get(groups[i]!)! + 1]!++;
  for (let d = 0; d < devices; d++) offsets[d + 1]! += offsets[d]!;
  const next = offsets.slice(0, devices);
  const order = new Uint32Array(groups.length);
  for (let i = 0; i < groups.length; i++) order[next[device.get(groups[i]!)!]!++] = i;
  return new SlicedPartition(order, offsets);
}

/** One class id per example, for partitions that split by label. */
function classOfEach(data: Dataset, kind: string): ArrayLike<number> {
  if (!isClassIds(data.labels) || labelSize(data) !== 1) {
    throw new CohortError(
      "INVALID_OPTION",
      `the ${kind} partition splits by class and needs one class id per example; ${data.name} has ${isClassIds(data.labels) ? `labels of shape [${(data.labelShape ?? []).join(", ")}]` : "float targets"} (use iid)`,
    );
  }
  return data.labels;
}

/**
 * Build a partition of a dataset's examples from its spec (only IID can oversample; shards and
 * Dirichlet never do).
 */
export function makePartition(
  spec: PartitionSpec,
  data: Dataset,
  devices: number,
  perDevice: number,
  seed: number,
  options: PartitionOptions = {},
): Partition {
  switch (spec.kind) {
    case "iid":
      return iidPartition(datasetSize(data), devices, perDevice, seed, options);
    case "shards":
      return shardPartition(
        classOfEach(data, "shards"),
        devices,
        perDevice,
        spec.shardsPerDevice,
        seed,
      );
    case "dirichlet":
      return dirichletPartition(classOfEach(data, "dirichlet"), devices, spec.alpha, seed);
    case "groups":
      if (data.groups === undefined) {
        throw new CohortError(
          "INVALID_OPTION",
          `the groups partition needs a group id per example; ${data.name} has none (give the Dataset \`groups\`, or a csv: spec ?group=N)`,
        );
      }
      return groupPartition(data.groups, devices);
    default: {
      const exhaustive: never = spec;
      throw new CohortError("INVALID_OPTION", `unknown partition ${JSON.stringify(exhaustive)}`);
    }
  }
}
