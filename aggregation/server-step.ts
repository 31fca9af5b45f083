/** One round's server step, pure: aggregate what arrived, then let the optimizer move the model. */
import { meanOf, type ClientDelta, type WeightedSum } from "./aggregator.js";
import type { StateRecord } from "./state.js";
import type { Strategy } from "./strategy.js";
import type { Weights } from "./weights.js";

/**
 * Combine a round's updates (plain rounds) and pre-summed aggregates (a SecAgg+ unmasking)
 * with the strategy's aggregator; null when nothing arrived.
 */
export function aggregateRound(
  strategy: Strategy,
  global: Weights,
  updates: readonly ClientDelta[],
  sums: readonly WeightedSum[] = [],
): WeightedSum | null {
  const acc = strategy.aggregator.begin(global.map((t) => t.length));
  for (const u of updates) acc.add(u);
  for (const s of sums) {
    if (acc.addSum === undefined) {
      // checkStrategy refuses this combination when the options are checked.
      throw new TypeError(
        `aggregator ${strategy.aggregator.name} cannot take a pre-summed aggregate`,
      );
    }
    acc.addSum(s);
  }
  return acc.finish();
}

/**
 * The next global model and strategy state from round `round`'s aggregate: the strategy's
 * `afterAggregate` first (where it has one), then its server optimizer.
 */
export function serverStep(
  strategy: Strategy,
  global: Weights,
  state: StateRecord,
  aggregate: WeightedSum,
  round: number,
  rounds = round,
): { weights: Float32Array[]; state: StateRecord } {
  const seen = strategy.afterAggregate?.(aggregate, state, { round, rounds }) ?? {
    agg: aggregate,
    state,
  };
  return strategy.optimizer.step(global, meanOf(seen.agg), seen.state, round);
}
