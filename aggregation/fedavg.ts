/** What a round's updates and failures are: the types every aggregator and the round collector share. */
import { CohortError } from "../protocol/errors.js";
import { meanOf } from "./aggregator.js";
import { weightedMean } from "./aggregators/mean.js";
import type { Weights } from "./weights.js";

/** One client's contribution to a round. */
export interface WeightedUpdate {
  clientId: string;
  /** `w_local − w_global`. */
  delta: Weights;
  numExamples: number;
}

/** A client that did not contribute: late, disconnected or rejected. Dropouts are data. */
export interface RoundFailure {
  clientId: string;
  code: string;
  message: string;
}

/**
 * Example-weighted mean of deltas: `Σ nᵢ Δᵢ / Σ nᵢ`, accumulated in float64.
 * Throws `ROUND_FAILED` on an empty list and `SHAPE_MISMATCH` on differing layouts.
 */
export function weightedAverage(updates: readonly WeightedUpdate[]): Float32Array[] {
  const first = updates[0];
  if (first === undefined) throw new CohortError("ROUND_FAILED", "no updates to average");
  const acc = weightedMean.begin(first.delta.map((t) => t.length));
  for (const u of updates) acc.add(u);
  return meanOf(acc.finish()!);
}
