/** Copying slices of a dataset: contiguous shards, a prefix, or an arbitrary index subset. */

import {
  datasetSize,
  featureSize,
  labelSize,
  pickExamples,
  type Dataset,
} from "../../protocol/dataset.js";
import { CohortError } from "../../protocol/errors.js";

function copyRange(data: Dataset, start: number, end: number, name: string): Dataset {
  const size = featureSize(data);
  const width = labelSize(data);
  return {
    ...data,
    name,
    features: data.features.slice(start * size, end * size),
    labels: data.labels.slice(start * width, end * width),
    ...(data.groups === undefined ? {} : { groups: data.groups.slice(start, end) }),
  };
}

/**
 * Shard `index` of `count` contiguous, near-equal shards: sizes differ by at most one (the first
 * `size % count` shards get the extra example) and the shards cover every example exactly once.
 * With fewer examples than shards, the trailing shards are empty.
 *
 * @returns a copy named `<name>[<index>/<count>]`, e.g. `mnist:train[1/3]`.
 * @throws CohortError `INVALID_OPTION` unless `count ≥ 1` and `0 ≤ index < count` are integers.
 */
export function shardDataset(data: Dataset, index: number, count: number): Dataset {
  if (!Number.isInteger(count) || count < 1) {
    throw new CohortError("INVALID_OPTION", `shard count must be an integer ≥ 1, got ${count}`);
  }
  if (!Number.isInteger(index) || index < 0 || index >= count) {
    throw new CohortError(
      "INVALID_OPTION",
      `shard index must be an integer in [0, ${count}), got ${index}`,
    );
  }
  const n = datasetSize(data);
  const base = Math.floor(n / count);
  const extra = n % count;
  const start = index * base + Math.min(index, extra);
  const end = start + base + (index < extra ? 1 : 0);
  return copyRange(data, start, end, `${data.name}[${index}/${count}]`);
}

/**
 * The first `n` examples (all of them when `n` exceeds the size), copied.
 *
 * @returns a copy named `<name>[:<n>]`.
 * @throws CohortError `INVALID_OPTION` unless `n` is a non-negative integer.
 */
export function takeExamples(data: Dataset, n: number): Dataset {
  if (!Number.isInteger(n) || n < 0) {
    throw new CohortError("INVALID_OPTION", `example count must be an integer ≥ 0, got ${n}`);
  }
  const end = Math.min(n, datasetSize(data));
  return copyRange(data, 0, end, `${data.name}[:${end}]`);
}

/**
 * The examples at `indices`, in that order (repeats allowed), copied.
 *
 * @returns a copy named `<name>[subset of <k>]`.
 * @throws CohortError `INVALID_OPTION` when an index is not an integer in `[0, size)`.
 */
export function subsetDataset(data: Dataset, indices: ArrayLike<number>): Dataset {
  const n = datasetSize(data);
  for (let k = 0; k < indices.length; k++) {
    const i = indices[k] ?? Number.NaN;
    if (!Number.isInteger(i) || i < 0 || i >= n) {
      throw new CohortError(
        "INVALID_OPTION",
        `subset index ${i} at position ${k} is outside [0, ${n}) of ${data.name}`,
      );
    }
  }
  return pickExamples(data, indices, `${data.name}[subset of ${indices.length}]`);
}
