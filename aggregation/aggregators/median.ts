/** Coordinate-wise median (Yin et al. 2018): robust to a minority of arbitrary updates; needs every update. */
import { collectAll, type Aggregator } from "../aggregator.js";
import type { Weights } from "../weights.js";

/** Apply `reduce` to each coordinate's values over the updates, sorted ascending. */
export function bySortedCoordinate(
  deltas: readonly Weights[],
  reduce: (sorted: Float64Array) => number,
): Float32Array[] {
  const n = deltas.length;
  const column = new Float64Array(n);
  return deltas[0]!.map((first, i) => {
    const out = new Float32Array(first.length);
    for (let j = 0; j < first.length; j++) {
      for (let c = 0; c < n; c++) column[c] = deltas[c]![i]![j]!;
      column.sort();
      out[j] = reduce(column);
    }
    return out;
  });
}

/** The median of each coordinate over the updates (unweighted: claimed example counts are ignored). */
export function coordinateMedian(deltas: readonly Weights[]): Float32Array[] {
  const n = deltas.length;
  return bySortedCoordinate(deltas, (c) =>
    n % 2 === 1 ? c[(n - 1) / 2]! : (c[n / 2 - 1]! + c[n / 2]!) / 2,
  );
}

/** The coordinate-wise median aggregator. */
export const median: Aggregator = {
  name: "median",
  linear: false,
  begin: (layout) => collectAll(layout, (deltas) => coordinateMedian(deltas)),
};
