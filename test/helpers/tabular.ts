/** Small learnable tabular data for the CSV and groups tests: Gaussian classes, groups that shift them. */
import { writeFile } from "node:fs/promises";
import { createRng } from "../../aggregation/random.js";
import type { Dataset } from "../../protocol/dataset.js";

/** Rows `[x0, …, x3, class, group]`: class c centred at 2·e_c (c < 3), group g shifting x3 by g/2. */
export function tabularRows(perGroup: number, groups: number, seed = 1): number[][] {
  const rng = createRng(seed);
  const normal = () => Math.sqrt(-2 * Math.log(rng() || 1e-12)) * Math.cos(2 * Math.PI * rng());
  const rows: number[][] = [];
  for (let g = 0; g < groups; g++) {
    for (let i = 0; i < perGroup; i++) {
      // Groups see the classes in different proportions: a natural, non-IID split.
      const c = Math.floor(rng() * 3 + (g % 3) * 0.5) % 3;
      const x = [0, 1, 2, 3].map((d) => (d === c ? 2 : 0) + (d === 3 ? g / 2 : 0) + normal() * 0.7);
      rows.push([...x.map((v) => Number(v.toFixed(4))), c, g]);
    }
  }
  return rows;
}

/** The rows as a Dataset with groups (features x0…x3, class ids, group ids). */
export function tabularDataset(rows: number[][], name = "tabular"): Dataset {
  return {
    name,
    features: Float32Array.from(rows.flatMap((r) => r.slice(0, 4))),
    labels: Int32Array.from(rows.map((r) => r[4]!)),
    numClasses: 3,
    sampleShape: [4],
    groups: Int32Array.from(rows.map((r) => r[5]!)),
  };
}

/** Write rows as CSV, with a header line when given. */
export async function writeCsv(path: string, rows: number[][], header?: string[]): Promise<void> {
  const lines = [...(header ? [header.join(",")] : []), ...rows.map((r) => r.join(","))];
  await writeFile(path, lines.join("\n") + "\n");
}
