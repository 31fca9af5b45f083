/** Examples to predict on, from a CSV file (a row each) or a JSON file (`[[…], …]` or `{ "inputs": [[…], …] }`). */
import { readFile } from "node:fs/promises";
import { extname } from "node:path";
import { CohortError } from "../protocol/errors.js";
import { parseNumericCsv } from "./datasets/csv.js";

/** Examples as flat rows of numbers, each with the place it came from for error messages. */
export interface Examples {
  rows: Float64Array[];
  /** Per row, e.g. `line 4 (example 3)` or `example 3`. */
  names: string[];
}

/** Parse CSV text: one example a row (see `parseNumericCsv`). */
export function examplesFromCsv(text: string, source: string): Examples {
  const table = parseNumericCsv(text, source);
  const rows = table.lines.map((_, i) =>
    table.values.subarray(i * table.columns, (i + 1) * table.columns),
  );
  return { rows, names: table.lines.map((line, i) => `line ${line} (example ${i + 1})`) };
}

/** Flatten one example's (possibly nested) arrays of numbers into `out`; returns what is wrong, or `null`. */
function flatten(value: unknown, out: number[]): string | null {
  if (typeof value === "number") {
    if (!Number.isFinite(value)) return `holds ${value}`;
    out.push(value);
    return null;
  }
  if (!Array.isArray(value)) return `holds ${JSON.stringify(value)?.slice(0, 40)}, not a number`;
  for (const item of value) {
    const wrong = flatten(item, out);
    if (wrong !== null) return wrong;
  }
  return null;
}

/**
 * Parse JSON text: a list of examples, or `{ "inputs": [...] }`; each example an array of numbers
 * (nested arrays are flattened in order). Anything else is a `DATASET_INVALID` naming the example.
 */
export function examplesFromJson(text: string, source: string): Examples {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (cause) {
    const reason = cause instanceof Error ? cause.message : String(cause);
    throw new CohortError("DATASET_INVALID", `${source} is not valid JSON: ${reason}`, { cause });
  }
  const list =
    typeof raw === "object" && raw !== null && !Array.isArray(raw) && "inputs" in raw
      ? (raw as { inputs: unknown }).inputs
      : raw;
  if (!Array.isArray(list)) {
    throw new CohortError(
      "DATASET_INVALID",
      `${source} must hold a list of examples, [[…], …], or { "inputs": [[…], …] }`,
    );
  }
  if (list.length === 0) throw new CohortError("DATASET_INVALID", `${source} holds no examples`);
  const names = list.map((_, i) => `example ${i + 1}`);
  const rows = list.map((example: unknown, i) => {
    if (!Array.isArray(example)) {
      throw new CohortError(
        "DATASET_INVALID",
        `${source}: ${names[i]} is ${JSON.stringify(example)?.slice(0, 40)}, not an array of ` +
          "numbers (write one example as [[…]])",
      );
    }
    const values: number[] = [];
    const wrong = flatten(example, values);
    if (wrong !== null) throw new CohortError("DATASET_INVALID", `${source}: ${names[i]} ${wrong}`);
    return Float64Array.from(values);
  });
  return { rows, names };
}

/**
 * Read examples from a file: `.csv` and `.json` by their extension, other names by their first
 * character (`[` or `{` is JSON). A missing file is a `DATASET_NOT_FOUND`.
 */
export async function readExamples(path: string): Promise<Examples> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (cause) {
    const reason = cause instanceof Error ? cause.message : String(cause);
    throw new CohortError("DATASET_NOT_FOUND", `cannot read ${path}: ${reason}`, { cause });
  }
  const ext = extname(path).toLowerCase();
  const json = ext === ".json" || (ext !== ".csv" && /^\s*[[{]/.test(text));
  return json ? examplesFromJson(text, path) : examplesFromCsv(text, path);
}
