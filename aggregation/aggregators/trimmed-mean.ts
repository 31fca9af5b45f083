/** Coordinate-wise trimmed mean (Yin et al. 2018): drop the ⌊βn⌋ largest and smallest values of each coordinate. */
import { CohortError } from "../../protocol/errors.js";
import { collectAll, type Aggregator } from "../aggregator.js";
import type { Weights } from "../weights.js";
import { bySortedCoordinate } from "./median.js";

/** The β-trimmed mean of each coordinate (unweighted). Throws when nothing would be left. */
export function trimmedMean(deltas: readonly Weights[], beta: number): Float32Array[] {
  const n = deltas.length;
  const k = Math.floor(beta * n);
  if (n - 2 * k < 1) {
    throw new CohortError(
      "ROUND_FAILED",
      `trimmed mean with β = ${beta} trims ${2 * k} of ${n} updates: none left`,
    );
  }
  return bySortedCoordinate(deltas, (c) => {
    let s = 0;
    for (let r = k; r < n - k; r++) s += c[r]!;
    return s / (n - 2 * k);
  });
}

/** A trimmed-mean aggregator trimming a fraction `beta` from each end. */
export function trimmedMeanAggregator(beta: number): Aggregator {
  return {
    name: "trimmed-mean",
    linear: false,
    begin: (layout) => collectAll(layout, (deltas) => trimmedMean(deltas, beta)),
  };
}
