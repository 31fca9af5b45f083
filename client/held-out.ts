/** A client's held-out split: a seeded share of its examples kept out of training, for federated evaluation. */
import { createRng, permutation } from "../aggregation/random.js";
import { datasetSize, type Dataset } from "../protocol/dataset.js";
import { CohortError } from "../protocol/errors.js";
import { subsetDataset } from "../models/datasets/subset.js";

/**
 * Split `data` into training and evaluation parts: ⌈fraction · n⌉ examples, chosen by a
 * generator seeded with `seed`, are held out (at least one is kept for training).
 */
export function holdOut(
  data: Dataset,
  fraction: number,
  seed: number,
): { train: Dataset; evaluate: Dataset } {
  if (!(fraction > 0 && fraction < 1)) {
    throw new CohortError("INVALID_OPTION", `evalFraction must be in (0, 1), got ${fraction}`);
  }
  const n = datasetSize(data);
  const held = Math.min(n - 1, Math.ceil(fraction * n - 1e-9));
  if (held < 1) {
    throw new CohortError(
      "DATASET_INVALID",
      `dataset ${data.name} has ${n} examples: too few to hold out ${fraction} for evaluation`,
    );
  }
  const order = permutation(n, createRng(seed));
  const evalIdx = order.subarray(0, held).sort();
  const trainIdx = order.subarray(held).sort();
  return {
    train: { ...subsetDataset(data, trainIdx), name: `${data.name}[train ${n - held}]` },
    evaluate: { ...subsetDataset(data, evalIdx), name: `${data.name}[held out ${held}]` },
  };
}
