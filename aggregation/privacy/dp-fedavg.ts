/**
 * DP-FedAvg with user-level privacy (McMahan et al. 2018), as a wrapper around a linear
 * strategy: every update clipped to L2 norm C and weighted alike, Gaussian noise of standard
 * deviation z·C on the sum, and a fixed denominator (the expected cohort size) for the average,
 * as the analysis of the subsampled Gaussian mechanism requires. The wrapped strategy's server
 * optimizer then moves the model. Rounds released so far are counted in the strategy state, so
 * the ledger carries them and a resumed run reports the same ε.
 */
import { CohortError } from "../../protocol/errors.js";
import type { Aggregator, WeightedSum } from "../aggregator.js";
import { checkLayout } from "../aggregator.js";
import type { StateRecord } from "../state.js";
import type { Strategy } from "../strategy.js";
import { addGaussian, clipL2, secureUniform } from "./noise.js";

/** What DP-FedAvg needs, resolved. */
export interface DpFedAvgSettings {
  /** L2 norm C every update is clipped to. */
  clip: number;
  /** z: the noise on the sum has standard deviation z·C. */
  noiseMultiplier: number;
  /** The fixed denominator of the average: the expected number of sampled clients, q·N. */
  expectedCohort: number;
  /** Uniform (0, 1) source of the noise. @default the platform's cryptographic generator */
  uniform?: () => number;
}

/** The state key counting the rounds whose noisy aggregate was released. */
export const RELEASED_ROUNDS = "dp.releasedRounds";
/** The state key counting, in the last round, the updates the coordinator had to clip. */
export const CLIPPED_UPDATES = "dp.clippedUpdates";

/** Rounds released so far, from a strategy state. */
export function releasedRounds(state: StateRecord): number {
  const v = state.values[RELEASED_ROUNDS];
  return typeof v === "number" ? v : 0;
}

/** Updates clipped in the last released round, from a strategy state. */
export function clippedUpdates(state: StateRecord): number {
  const v = state.values[CLIPPED_UPDATES];
  return typeof v === "number" ? v : 0;
}

/** Throw `INVALID_OPTION` unless DP-FedAvg can wrap `inner`. */
export function checkDpInner(inner: Strategy): void {
  if (!inner.aggregator.linear) {
    throw new CohortError(
      "INVALID_OPTION",
      `differential privacy needs a linear strategy: ${inner.name} aggregates with ${inner.aggregator.name}, ` +
        "whose output depends on individual updates, so the Gaussian mechanism's sensitivity bound does not hold",
    );
  }
}

/** `inner` with DP-FedAvg's clipping, noise and fixed denominator. */
export function withDpFedAvg(inner: Strategy, dp: DpFedAvgSettings): Strategy {
  checkDpInner(inner);
  if (!(dp.clip > 0) || !(dp.noiseMultiplier >= 0) || !(dp.expectedCohort > 0)) {
    throw new CohortError(
      "INVALID_OPTION",
      `DP-FedAvg needs clip > 0, noise ≥ 0 and an expected cohort > 0 (got ${dp.clip}, ${dp.noiseMultiplier}, ${dp.expectedCohort})`,
    );
  }
  const uniform = dp.uniform ?? secureUniform();
  let clippedThisRound = 0;
  const aggregator: Aggregator = {
    name: "clipped-sum",
    linear: true,
    begin(layout) {
      const weighted = layout.map((n) => new Float64Array(n));
      let count = 0;
      clippedThisRound = 0;
      const accumulate = (delta: readonly (Float32Array | Float64Array)[]) => {
        delta.forEach((t, i) => {
          const out = weighted[i]!;
          for (let j = 0; j < t.length; j++) out[j]! += t[j]!;
        });
      };
      return {
        add(u) {
          checkLayout(u.delta, layout, u.clientId);
          // Clients clip before sending; the coordinator clips again so no update is trusted.
          const c = clipL2(u.delta, dp.clip);
          if (c.clipped) clippedThisRound++;
          accumulate(c.delta);
          count++;
        },
        addSum(s) {
          // A secure round's sum: clients clipped and weighted their updates alike.
          accumulate(s.weighted);
          count += s.count;
        },
        finish() {
          return count === 0 ? null : { weighted, weight: count, count };
        },
      };
    },
  };
  return {
    name: `dp-${inner.name}`,
    ref: inner.ref,
    aggregator,
    optimizer: inner.optimizer,
    configureFit(ctx, base) {
      const chosen = inner.configureFit?.(ctx, base) ?? base;
      return { ...chosen, dpClip: dp.clip };
    },
    afterAggregate(agg, state, ctx) {
      const noisy: WeightedSum = {
        weighted: agg.weighted.map((t) => Float64Array.from(t)),
        // The fixed denominator: dividing by how many arrived would leak that number.
        weight: dp.expectedCohort,
        count: agg.count,
      };
      addGaussian(noisy.weighted, dp.noiseMultiplier * dp.clip, uniform);
      const next: StateRecord = {
        arrays: state.arrays,
        values: {
          ...state.values,
          [RELEASED_ROUNDS]: releasedRounds(state) + 1,
          [CLIPPED_UPDATES]: clippedThisRound,
        },
      };
      return inner.afterAggregate?.(noisy, next, ctx) ?? { agg: noisy, state: next };
    },
  };
}
