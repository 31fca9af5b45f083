/**
 * The `csv:FILE` dataset spec: a numeric CSV (one example a row, the label in one column, an
 * optional group column) as a Dataset, split into train and test by a fixed seeded draw.
 */
import { readFile } from "node:fs/promises";
import { gunzipSync } from "node:zlib";

import { createRng, permutation } from "../../aggregation/random.js";
import { datasetSize, pickExamples, type Dataset, type Labels } from "../../protocol/dataset.js";
import { CohortError } from "../../protocol/errors.js";
import { parseNumericCsv, type NumericTable } from "./csv.js";
import { assertSplit, type DatasetSplit } from "./split.js";

/** What a `csv:` spec says, parsed. */
export interface CsvSpec {
  path: string;
  /**
   * The label column: a 0-based index or a header name. @default the last column (the one
   * before it when the group column is the last)
   */
  label: number | string | null;
  /** `class`: class ids (integers); `float`: float targets; `auto`: class ids when every label is an integer. @default "auto" */
  target: "auto" | "class" | "float";
  /** The group column (0-based index or header name), or null. @default null */
  group: number | string | null;
  /** Share of the rows held out as the `test` split; 0 makes both splits the whole file. @default 0.2 */
  test: number;
}

/** Seed of the train/test draw: fixed, so every process that loads a file splits it alike. */
export const CSV_SPLIT_SEED = 0x5eed_c5f;

const KEYS = ["label", "target", "group", "test"] as const;

function bad(spec: string, why: string): CohortError {
  return new CohortError(
    "INVALID_OPTION",
    `dataset ${spec}: ${why} (form: csv:FILE[?label=N][&target=float][&group=N][&test=F])`,
  );
}

function column(spec: string, key: string, value: string): number | string {
  if (value === "") throw bad(spec, `${key}= needs a column`);
  if (/^\d+$/.test(value)) return Number(value);
  return value;
}

/** Parse `csv:PATH[?label=N&target=float&group=N&test=F]`. */
export function parseCsvSpec(spec: string): CsvSpec {
  const body = spec.slice("csv:".length);
  const q = body.indexOf("?");
  const path = q < 0 ? body : body.slice(0, q);
  if (path === "") throw bad(spec, "no file named");
  const out: CsvSpec = { path, label: null, target: "auto", group: null, test: 0.2 };
  const params = new URLSearchParams(q < 0 ? "" : body.slice(q + 1));
  for (const [key, value] of params) {
    switch (key) {
      case "label":
        out.label = column(spec, key, value);
        break;
      case "group":
        out.group = column(spec, key, value);
        break;
      case "target":
        if (value !== "float" && value !== "class")
          throw bad(spec, "target must be float or class");
        out.target = value;
        break;
      case "test": {
        const f = Number(value);
        if (value === "" || !(f >= 0 && f < 1))
          throw bad(spec, "test must be a fraction in [0, 1)");
        out.test = f;
        break;
      }
      default:
        throw bad(spec, `unknown key ${JSON.stringify(key)}; known: ${KEYS.join(", ")}`);
    }
  }
  return out;
}

async function readText(path: string): Promise<string> {
  let raw: Buffer;
  try {
    raw = await readFile(path);
  } catch (cause) {
    throw new CohortError("DATASET_NOT_FOUND", `cannot read CSV file ${path}`, { cause });
  }
  if (raw[0] === 0x1f && raw[1] === 0x8b) {
    try {
      raw = gunzipSync(raw);
    } catch (cause) {
      throw new CohortError("DATASET_INVALID", `${path}: gzip decompression failed`, { cause });
    }
  }
  return raw.toString("utf8");
}

/** A column named by index or header name, as a 0-based index. */
function columnIndex(table: NumericTable, which: number | string, what: string, path: string) {
  if (typeof which === "number") {
    if (which < table.columns) return which;
    throw new CohortError(
      "INVALID_OPTION",
      `${path}: ${what} column ${which} does not exist (columns count from 0; the file has ${table.columns})`,
    );
  }
  const at = table.header?.indexOf(which) ?? -1;
  if (at >= 0) return at;
  throw new CohortError(
    "INVALID_OPTION",
    `${path}: no ${what} column named ${JSON.stringify(which)}` +
      (table.header === null ? " (the file has no header line)" : ` in ${table.header.join(", ")}`),
  );
}

function labelsOf(
  table: NumericTable,
  col: number,
  target: CsvSpec["target"],
  path: string,
): { labels: Labels; numClasses?: number } {
  const n = table.lines.length;
  const values = Float64Array.from({ length: n }, (_, i) => table.values[i * table.columns + col]!);
  const nonInteger = values.findIndex((v) => !Number.isInteger(v));
  if (target === "float" || (target === "auto" && nonInteger >= 0)) {
    return { labels: Float32Array.from(values) };
  }
  if (nonInteger >= 0) {
    throw new CohortError(
      "DATASET_INVALID",
      `${path} line ${table.lines[nonInteger]}: label ${values[nonInteger]} is not a class id (target=class); drop target=class for float targets`,
    );
  }
  const negative = values.findIndex((v) => v < 0);
  if (negative >= 0) {
    throw new CohortError(
      "DATASET_INVALID",
      `${path} line ${table.lines[negative]}: label ${values[negative]} is not a class id (class ids are 0, 1, …); add ?target=float for float targets`,
    );
  }
  const max = values.reduce((a, b) => Math.max(a, b), 0);
  if (max >= 2 ** 31) {
    throw new CohortError("DATASET_INVALID", `${path}: label ${max} is too large for a class id`);
  }
  return { labels: Int32Array.from(values), numClasses: Math.max(2, max + 1) };
}

function groupsOf(table: NumericTable, col: number, path: string): Int32Array {
  const n = table.lines.length;
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const v = table.values[i * table.columns + col]!;
    if (!Number.isInteger(v) || Math.abs(v) >= 2 ** 31) {
      throw new CohortError(
        "DATASET_INVALID",
        `${path} line ${table.lines[i]}, column ${col + 1}: group ${v} is not an integer id`,
      );
    }
    out[i] = v;
  }
  return out;
}

/** The whole file as a Dataset, before any split. */
export async function readCsvDataset(spec: CsvSpec, name: string): Promise<Dataset> {
  const table = parseNumericCsv(await readText(spec.path), spec.path);
  const groupCol = spec.group === null ? null : columnIndex(table, spec.group, "group", spec.path);
  // By default the label is the last column, or the one before it when that holds the groups.
  const last = groupCol === table.columns - 1 ? table.columns - 2 : table.columns - 1;
  const labelCol = spec.label === null ? last : columnIndex(table, spec.label, "label", spec.path);
  if (groupCol === labelCol) {
    throw new CohortError(
      "INVALID_OPTION",
      `${spec.path}: the label and group columns are both ${labelCol}`,
    );
  }
  const keep = Array.from({ length: table.columns }, (_, c) => c).filter(
    (c) => c !== labelCol && c !== groupCol,
  );
  if (keep.length === 0) {
    throw new CohortError("DATASET_INVALID", `${spec.path} has no feature columns`);
  }
  const n = table.lines.length;
  const features = new Float32Array(n * keep.length);
  for (let i = 0; i < n; i++) {
    keep.forEach((c, j) => (features[i * keep.length + j] = table.values[i * table.columns + c]!));
  }
  return {
    name,
    features,
    ...labelsOf(table, labelCol, spec.target, spec.path),
    sampleShape: [keep.length],
    ...(groupCol === null ? {} : { groups: groupsOf(table, groupCol, spec.path) }),
  };
}

/**
 * Load one split of a `csv:FILE` spec. The file's rows are drawn into a `test` share (the
 * spec's `test`, 0.2 by default) and `train` (the rest) by a permutation seeded with
 * {@link CSV_SPLIT_SEED}, each kept in file order: a client's `train` and a coordinator's
 * `test` of the same file never share a row. `test=0` makes both splits the whole file.
 *
 * @throws CohortError `INVALID_OPTION` for a malformed spec or a missing column,
 *   `DATASET_NOT_FOUND` for a missing file, `DATASET_INVALID` naming the line of a bad cell.
 */
export async function loadCsvDataset(spec: string, split: DatasetSplit): Promise<Dataset> {
  assertSplit(split);
  const parsed = parseCsvSpec(spec);
  const all = await readCsvDataset(parsed, `${spec}:${split}`);
  if (parsed.test === 0) return all;
  const n = datasetSize(all);
  const held = Math.ceil(parsed.test * n - 1e-9);
  if (held < 1 || held >= n) {
    throw new CohortError(
      "DATASET_INVALID",
      `${parsed.path} has ${n} rows: too few to hold out ${parsed.test} as the test split (test=0 uses the whole file for both)`,
    );
  }
  const order = permutation(n, createRng(CSV_SPLIT_SEED));
  const rows = (split === "test" ? order.subarray(0, held) : order.subarray(held)).sort();
  return pickExamples(all, rows, all.name);
}
