/**
 * A tabular regression: Efron et al.'s diabetes data (442 patients, 10 baseline variables, the
 * disease progression a year later) as Debian's `python3-sklearn` installs it, trained with MSE
 * and reported as MAE, spread IID over a few devices.
 *
 * Run: `npm run build && node dist/simulations/experiments/diabetes.js [--rounds N]
 * [--run-dir DIR] [--figure FILE]` (the options of `diabetes-regression.json`).
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import type { Dataset } from "../../protocol/dataset.js";
import { CohortError } from "../../protocol/errors.js";
import { parseNumericCsv } from "../../models/datasets/csv.js";
import { isMain, runExperiment } from "./run-experiment.js";

/** Where `python3-sklearn` installs its bundled data sets; `COHORT_SKLEARN_DATA_DIR` overrides it. */
export const DEFAULT_SKLEARN_DATA_DIR = "/usr/lib/python3/dist-packages/sklearn/datasets/data";

/** The columns of the raw data file, in order. */
export const DIABETES_FEATURES = [
  "age",
  "sex",
  "bmi",
  "bp",
  "s1",
  "s2",
  "s3",
  "s4",
  "s5",
  "s6",
] as const;

/**
 * Targets are the disease progression divided by this (so they lie in 0.25–3.46): SGD on the raw
 * scale (25–346, squared in the loss) diverges at any useful learning rate. MAE × 100 is in the
 * data's own units.
 */
export const DIABETES_TARGET_SCALE = 100;

/** The data directory in effect. */
export function sklearnDataDirectory(): string {
  const env = process.env["COHORT_SKLEARN_DATA_DIR"];
  return env !== undefined && env !== "" ? env : DEFAULT_SKLEARN_DATA_DIR;
}

async function readTable(dir: string, file: string) {
  const path = join(dir, file);
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch (cause) {
    throw new CohortError(
      "DATASET_NOT_FOUND",
      `${path} is missing: the diabetes data comes with Debian's python3-sklearn (apt-get install python3-sklearn), or set COHORT_SKLEARN_DATA_DIR to a directory holding diabetes_data_raw.csv.gz and diabetes_target.csv.gz`,
      { cause },
    );
  }
  const text = (file.endsWith(".gz") ? gunzipSync(bytes) : bytes).toString("utf8");
  return parseNumericCsv(text, path, { separator: "whitespace" });
}

/**
 * The diabetes data as a Dataset: 442 examples of the 10 variables of
 * {@link DIABETES_FEATURES}, each standardised to mean 0 and variance 1 over the 442 (as
 * scikit-learn's `load_diabetes` centres and scales them), and float targets, the disease
 * progression (25–346) divided by {@link DIABETES_TARGET_SCALE}.
 *
 * @throws CohortError `DATASET_NOT_FOUND` saying how to install the data when it is absent.
 */
export async function loadDiabetes(dir = sklearnDataDirectory()): Promise<Dataset> {
  const x = await readTable(dir, "diabetes_data_raw.csv.gz");
  const y = await readTable(dir, "diabetes_target.csv.gz");
  const n = x.lines.length;
  const d = DIABETES_FEATURES.length;
  if (x.columns !== d || y.columns !== 1 || y.lines.length !== n) {
    throw new CohortError(
      "DATASET_INVALID",
      `${dir}: expected ${d} feature columns and one target per row, got ${x.columns} columns × ${n} rows and ${y.columns} × ${y.lines.length}`,
    );
  }
  const features = new Float32Array(n * d);
  for (let c = 0; c < d; c++) {
    let mean = 0;
    for (let i = 0; i < n; i++) mean += x.values[i * d + c]! / n;
    let variance = 0;
    for (let i = 0; i < n; i++) variance += (x.values[i * d + c]! - mean) ** 2 / n;
    const sd = Math.sqrt(variance) || 1;
    for (let i = 0; i < n; i++) features[i * d + c] = (x.values[i * d + c]! - mean) / sd;
  }
  return {
    name: "diabetes",
    features,
    labels: Float32Array.from(y.values, (v) => v / DIABETES_TARGET_SCALE),
    sampleShape: [d],
  };
}

if (isMain(import.meta.url)) {
  let data: Dataset | null = null;
  try {
    data = await loadDiabetes();
  } catch (error) {
    if (!(error instanceof CohortError)) throw error;
    process.stderr.write(`${error.code}: ${error.message}\n`);
    process.exitCode = 1;
  }
  if (data !== null) {
    process.exitCode = await runExperiment("diabetes-regression.json", data, process.argv.slice(2));
  }
}
