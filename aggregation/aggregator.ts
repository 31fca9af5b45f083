/** The aggregator seam: how a round's accepted updates combine into one delta. */
import { CohortError } from "../protocol/errors.js";
import type { WeightedUpdate } from "./fedavg.js";
import type { Weights } from "./weights.js";

/** One client's accepted update, as the aggregator sees it. */
export type ClientDelta = WeightedUpdate;

/**
 * A (partial) aggregate: `weighted = Σ wᵢ·Δᵢ` in float64 and `weight = Σ wᵢ`, so sums from
 * several sources (a SecAgg+ unmasking, a coordinator node) add up. `weighted / weight` is the
 * aggregate delta.
 */
export interface WeightedSum {
  weighted: Float64Array[];
  weight: number;
  /** Updates in the sum. */
  count: number;
  /**
   * The noise multiplier of the DP noise the sum already carries (distributed DP: added by the
   * members of a secure round), in the privacy plan's units. @default undefined (none)
   */
  noiseMultiplier?: number;
  /**
   * The round's sampling rate as the privacy accountant counts it, where it differs from the
   * plan's (fixed-size sampling from fewer clients than the population). @default the plan's
   */
  samplingRate?: number;
}

/** One round's aggregation in progress. */
export interface Accumulation {
  add(u: ClientDelta): void;
  /** Add a pre-summed aggregate; only linear aggregators have it. */
  addSum?(s: WeightedSum): void;
  /** The round's aggregate, or null when nothing was added. */
  finish(): WeightedSum | null;
}

/**
 * Combines updates. `linear` says whether the result is a function of the sum alone: only
 * then can it run on a SecAgg+ sum (or on per-node partial sums); the others need every
 * update in the clear and are refused with secure aggregation when the options are checked.
 */
export interface Aggregator {
  readonly name: string;
  readonly linear: boolean;
  begin(layout: readonly number[]): Accumulation;
}

/** The aggregate delta `weighted / weight`, as float32. */
export function meanOf(sum: WeightedSum): Float32Array[] {
  if (!(sum.weight > 0)) throw new CohortError("ROUND_FAILED", "the aggregate carries no weight");
  return sum.weighted.map((t) => {
    const out = new Float32Array(t.length);
    for (let j = 0; j < t.length; j++) out[j] = t[j]! / sum.weight;
    return out;
  });
}

/** A weighted sum with weight 1 whose value is `delta` (what non-linear aggregators return). */
export function unitSum(delta: Weights, count: number): WeightedSum {
  return { weighted: delta.map((t) => Float64Array.from(t)), weight: 1, count };
}

/** Throw `SHAPE_MISMATCH` unless `delta` has the round's layout. */
export function checkLayout(delta: Weights, layout: readonly number[], who: string): void {
  if (delta.length !== layout.length || delta.some((t, i) => t.length !== layout[i])) {
    throw new CohortError("SHAPE_MISMATCH", `update of ${who} has a different layout`);
  }
}

/** Collects every update of a round, for aggregators that need them all (median, Krum). */
export function collectAll(
  layout: readonly number[],
  finish: (deltas: Weights[], updates: ClientDelta[]) => Float32Array[],
): Accumulation {
  const updates: ClientDelta[] = [];
  return {
    add(u) {
      checkLayout(u.delta, layout, u.clientId);
      updates.push(u);
    },
    finish() {
      if (updates.length === 0) return null;
      return unitSum(
        finish(
          updates.map((u) => u.delta),
          updates,
        ),
        updates.length,
      );
    },
  };
}
