/** FedAvg (McMahan et al. 2017): the example-weighted mean of client deltas, then a server step. */
import { CohortError } from "../protocol/errors.js";
import { withDefaults } from "../protocol/options.js";
import { addScaled, type Weights } from "./weights.js";

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

/** The outcome of aggregating one round. */
export interface AggregateResult {
  /** Example-weighted mean delta. */
  delta: Float32Array[];
  totalExamples: number;
  participants: number;
}

/**
 * Example-weighted mean of deltas: `Σ nᵢ Δᵢ / Σ nᵢ`, accumulated in float64.
 * Throws `ROUND_FAILED` on an empty list and `SHAPE_MISMATCH` on differing layouts.
 */
export function weightedAverage(updates: readonly WeightedUpdate[]): Float32Array[] {
  const first = updates[0];
  if (first === undefined) throw new CohortError("ROUND_FAILED", "no updates to average");
  const total = updates.reduce((n, u) => n + u.numExamples, 0);
  if (!(total > 0)) throw new CohortError("ROUND_FAILED", "updates carry no examples");
  return first.delta.map((tensor, i) => {
    const acc = new Float64Array(tensor.length);
    for (const u of updates) {
      const d = u.delta[i];
      if (d === undefined || d.length !== tensor.length || u.delta.length !== first.delta.length) {
        throw new CohortError("SHAPE_MISMATCH", `update of ${u.clientId} has a different layout`);
      }
      const w = u.numExamples / total;
      for (let j = 0; j < d.length; j++) acc[j]! += w * d[j]!;
    }
    return Float32Array.from(acc);
  });
}

/** Options of the FedAvg strategy. */
export interface FedAvgOptions {
  /**
   * Server learning rate η applied to the mean delta: `w ← w + η Δ̄`.
   * @default 1.0 (plain FedAvg)
   */
  serverLearningRate: number;
}

/** FedAvg: aggregate deltas, and step the global model. */
export class FedAvg {
  readonly options: FedAvgOptions;

  constructor(options: Partial<FedAvgOptions> = {}) {
    this.options = withDefaults<FedAvgOptions>({ serverLearningRate: 1.0 }, options);
    const lr = this.options.serverLearningRate;
    if (!(Number.isFinite(lr) && lr > 0)) {
      throw new CohortError("INVALID_OPTION", `serverLearningRate must be > 0, got ${lr}`);
    }
  }

  /**
   * Aggregate one round. Failures do not change the result; they are reported alongside it.
   * Returns `null` when no client contributed (the caller retries the round).
   */
  aggregateFit(
    results: readonly WeightedUpdate[],
    _failures: readonly RoundFailure[],
  ): AggregateResult | null {
    if (results.length === 0) return null;
    return {
      delta: weightedAverage(results),
      totalExamples: results.reduce((n, u) => n + u.numExamples, 0),
      participants: results.length,
    };
  }

  /** The next global model: `w + η Δ̄`. */
  apply(global: Weights, delta: Weights): Float32Array[] {
    return addScaled(global, delta, this.options.serverLearningRate);
  }
}
