/** The two halves a dataset is loaded as, and the runtime check for them. */

import { CohortError } from "../../protocol/errors.js";

/** Every split name, in canonical order. */
export const DATASET_SPLITS = ["train", "test"] as const;

/** Which half of a dataset to load. */
export type DatasetSplit = (typeof DATASET_SPLITS)[number];

/**
 * Check a split name that may come from a CLI or config file.
 *
 * @throws CohortError `INVALID_OPTION` unless `split` is `"train"` or `"test"`.
 */
export function assertSplit(split: unknown): asserts split is DatasetSplit {
  if (!(DATASET_SPLITS as readonly unknown[]).includes(split)) {
    throw new CohortError(
      "INVALID_OPTION",
      `dataset split must be one of ${DATASET_SPLITS.join(", ")}, got ${String(split)}`,
    );
  }
}
