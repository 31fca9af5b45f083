/** Numeric CSV: one row of numbers a line, an optional header, errors that name the line and column. */
import { CohortError } from "../../protocol/errors.js";

/** A parsed numeric CSV. */
export interface NumericTable {
  /** The header's cells, when the first line has no number in it. */
  header: string[] | null;
  columns: number;
  /** Row-major values: `rows × columns`. */
  values: Float64Array;
  /** The 1-based line of the file each row came from. */
  lines: number[];
}

const NUMBER = /^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$/;

/** How cells of a line are separated. */
export type CsvSeparator = "comma" | "whitespace";

function cellsOf(line: string, separator: CsvSeparator): string[] {
  const cells = separator === "comma" ? line.split(",") : line.trim().split(/\s+/);
  return cells.map((cell) => {
    const trimmed = cell.trim();
    return trimmed.length >= 2 && trimmed.startsWith('"') && trimmed.endsWith('"')
      ? trimmed.slice(1, -1).trim()
      : trimmed;
  });
}

/**
 * Parse comma-separated numbers (decimal, with an optional exponent; a cell may be quoted, but a
 * quoted comma is not supported), or with `separator: "whitespace"` numbers separated by runs
 * of spaces and tabs (as NumPy's `savetxt` writes them). Blank lines are skipped. The first line is a header when none
 * of its cells is a number. A cell that is not a finite number, or a row with another number of
 * columns than the first, is a `DATASET_INVALID` naming `source`, the line and the column.
 */
export function parseNumericCsv(
  text: string,
  source: string,
  options: { separator?: CsvSeparator } = {},
): NumericTable {
  const separator = options.separator ?? "comma";
  const all = text.replace(/^\uFEFF/, "").split(/\r?\n/);
  let header: string[] | null = null;
  let columns = 0;
  let firstLine = 0;
  const values: number[] = [];
  const lines: number[] = [];
  for (let i = 0; i < all.length; i++) {
    const line = all[i]!;
    if (line.trim() === "") continue;
    const cells = cellsOf(line, separator);
    const n = i + 1;
    if (firstLine === 0) {
      firstLine = n;
      columns = cells.length;
      if (!cells.some((c) => NUMBER.test(c))) {
        header = cells;
        continue;
      }
    }
    if (cells.length !== columns) {
      throw new CohortError(
        "DATASET_INVALID",
        `${source} line ${n} has ${cells.length} column${cells.length === 1 ? "" : "s"}; ` +
          `line ${firstLine} has ${columns}`,
      );
    }
    cells.forEach((cell, c) => {
      const value = NUMBER.test(cell) ? Number(cell) : NaN;
      if (!Number.isFinite(value)) {
        const what = cell === "" ? "is empty" : `"${cell.slice(0, 40)}" is not a finite number`;
        throw new CohortError("DATASET_INVALID", `${source} line ${n}, column ${c + 1} ${what}`);
      }
      values.push(value);
    });
    lines.push(n);
  }
  if (lines.length === 0) {
    throw new CohortError("DATASET_INVALID", `${source} holds no rows of numbers`);
  }
  return { header, columns, values: Float64Array.from(values), lines };
}
