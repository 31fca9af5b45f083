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
import { addGaussian, clipFactor, secureUniform } from "./noise.js";

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
  /**
   * Adaptive clipping (Andrew et al. 2021): C follows the `targetQuantile` of the update norms,
   * C ← C·exp(−η (b̄ − γ)) with b̄ the noisy share of updates within C (its own noise `countNoise`
   * on the count). The noise multiplier z stays the whole mechanism's: the sum gets
   * z_Δ = (z⁻² − (2σ_b)⁻²)^(−1/2), so both together compose as one Gaussian of multiplier z.
   * @default undefined (a fixed C)
   */
  adaptive?: { targetQuantile: number; learningRate: number; countNoise: number };
  /**
   * Distributed noise: the members of secure rounds add it in the integer domain, and each sum
   * says how much it carries (`WeightedSum.noiseMultiplier`); the coordinator adds none.
   * @default false (central: the coordinator adds the noise)
   */
  distributed?: boolean;
}

/** The state key of the current clip, where clipping adapts. */
export const CURRENT_CLIP = "dp.clip";

/** The clip of the next round: the adapted one in `state`, or the initial `clip`. */
export function currentClip(state: StateRecord | undefined, clip: number): number {
  const v = state?.values[CURRENT_CLIP];
  return typeof v === "number" ? v : clip;
}

/**
 * The noise multiplier of the sum when a share of the privacy goes to the count of adaptive
 * clipping; throws `INVALID_OPTION` when the count's noise leaves nothing for the sum.
 */
export function sumNoiseMultiplier(z: number, countNoise: number | undefined): number {
  if (countNoise === undefined) return z;
  const rest = z ** -2 - (2 * countNoise) ** -2;
  if (!(rest > 0)) {
    throw new CohortError(
      "INVALID_OPTION",
      `adaptive clipping's count noise ${countNoise} must exceed z/2 = ${z / 2}: otherwise it spends the whole budget`,
    );
  }
  return rest ** -0.5;
}

/** The state key counting the rounds whose noisy aggregate was released. */
export const RELEASED_ROUNDS = "dp.releasedRounds";
/** The state key counting, in the last round, the updates the coordinator had to clip. */
export const CLIPPED_UPDATES = "dp.clippedUpdates";

/**
 * State keys `dp.spent:z=<z>` count the rounds released with noise multiplier z at the plan's
 * sampling rate, `dp.spent:z=<z>,q=<q>` those at another rate (central rounds all at the
 * planned z; distributed ones at what their survivors' noise came to).
 */
export const SPENT_PREFIX = "dp.spent:";
/** The prefix of every state key DP-FedAvg keeps. */
const DP_PREFIX = "dp.";

/**
 * `restored`, a state a rollback returns to, with `current`'s privacy bookkeeping (every `dp.`
 * key: rounds released and spent, the clip, the last noise): a rollback restores the model and
 * the optimizer, never the privacy budget spent since — the rejected rounds were released to
 * the coordinator all the same.
 */
export function keepPrivacySpent(restored: StateRecord, current: StateRecord): StateRecord {
  const values = Object.fromEntries(
    Object.entries(restored.values).filter(([key]) => !key.startsWith(DP_PREFIX)),
  );
  for (const [key, v] of Object.entries(current.values)) {
    if (key.startsWith(DP_PREFIX)) values[key] = v;
  }
  return { arrays: restored.arrays, values };
}

/** The state key of the last released round's noise multiplier. */
export const LAST_NOISE = "dp.lastNoise";

/** Rounds released with one noise multiplier and sampling rate (undefined: the plan's). */
export interface SpentRounds {
  noise: number;
  samplingRate: number | undefined;
  rounds: number;
}

/** The state key counting releases at `noise` and `samplingRate`. */
export function spentKey(noise: number, samplingRate?: number): string {
  return `${SPENT_PREFIX}z=${noise}` + (samplingRate === undefined ? "" : `,q=${samplingRate}`);
}

/**
 * The rounds released at each noise multiplier and sampling rate. Rounds of a ledger that
 * predates per-round figures count at `planned` and the plan's rate.
 */
export function spentRounds(state: StateRecord, planned: number): SpentRounds[] {
  const out: SpentRounds[] = [];
  let counted = 0;
  for (const [key, v] of Object.entries(state.values)) {
    const m = /^dp\.spent:z=([^,]+)(?:,q=(.+))?$/.exec(key);
    if (m === null || typeof v !== "number") continue;
    out.push({
      noise: Number(m[1]),
      samplingRate: m[2] === undefined ? undefined : Number(m[2]),
      rounds: v,
    });
    counted += v;
  }
  const earlier = releasedRounds(state) - counted;
  if (earlier > 0) out.push({ noise: planned, samplingRate: undefined, rounds: earlier });
  return out;
}

/** The last released round's noise multiplier, from a strategy state. */
export function lastNoise(state: StateRecord): number | undefined {
  const v = state.values[LAST_NOISE];
  return typeof v === "number" ? v : undefined;
}

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
  const adaptive = dp.adaptive;
  const zSum = sumNoiseMultiplier(dp.noiseMultiplier, adaptive?.countNoise);
  let clippedThisRound = 0;
  let withinThisRound = 0;
  /** Σ z² of the noise the round's sums arrived with (distributed noise). */
  let carriedNoise = 0;
  /** The clip in force for the round being aggregated (set by `configureFit`). */
  let clip = dp.clip;
  const aggregator: Aggregator = {
    name: "clipped-sum",
    linear: true,
    begin(layout) {
      const weighted = layout.map((n) => new Float64Array(n));
      let count = 0;
      clippedThisRound = 0;
      withinThisRound = 0;
      carriedNoise = 0;
      const accumulate = (delta: readonly (Float32Array | Float64Array)[], factor = 1) => {
        delta.forEach((t, i) => {
          const out = weighted[i]!;
          for (let j = 0; j < t.length; j++) out[j]! += factor * t[j]!;
        });
      };
      return {
        add(u) {
          checkLayout(u.delta, layout, u.clientId);
          // Clients clip before sending; the coordinator clips again so no update is trusted.
          const c = clipFactor(u.delta, clip);
          if (c.clipped) clippedThisRound++;
          else withinThisRound++;
          accumulate(u.delta, c.factor);
          count++;
        },
        addSum(s) {
          // A secure round's sum: clients clipped and weighted their updates alike.
          accumulate(s.weighted);
          count += s.count;
          // Independent noises on one sum: their variances add.
          carriedNoise += (s.noiseMultiplier ?? 0) ** 2;
        },
        finish() {
          // Nothing arrived is still a release: the noise alone (a retry would condition the
          // sample on who answered).
          return { weighted, weight: count, count };
        },
      };
    },
  };
  return {
    name: `dp-${inner.name}`,
    ref: inner.ref,
    aggregator,
    optimizer: inner.optimizer,
    configureFit(ctx, base, state) {
      const chosen = inner.configureFit?.(ctx, base, state) ?? base;
      clip = currentClip(state, dp.clip);
      // With an adaptive clip the coordinator must see each norm to count it: clients send
      // their update as it is and the (trusted) coordinator clips. Otherwise clients clip.
      return adaptive === undefined ? { ...chosen, dpClip: clip } : chosen;
    },
    afterAggregate(agg, state, ctx) {
      clip = currentClip(state, clip);
      const noisy: WeightedSum = {
        weighted: agg.weighted.map((t) => Float64Array.from(t)),
        // The fixed denominator: dividing by how many arrived would leak that number.
        weight: dp.expectedCohort,
        count: agg.count,
      };
      let z = dp.noiseMultiplier;
      if (dp.distributed === true) {
        // The members added the noise; what their sum carries is what this round spent.
        if (carriedNoise === 0) {
          throw new CohortError(
            "INTERNAL",
            "distributed DP: the round's aggregate carries no members' noise",
          );
        }
        z = Math.sqrt(carriedNoise);
      } else {
        addGaussian(noisy.weighted, zSum * clip, uniform);
      }
      const key = spentKey(z, agg.samplingRate);
      const before = state.values[key];
      const values: StateRecord["values"] = {
        ...state.values,
        [RELEASED_ROUNDS]: releasedRounds(state) + 1,
        [CLIPPED_UPDATES]: clippedThisRound,
        [key]: (typeof before === "number" ? before : 0) + 1,
        [LAST_NOISE]: z,
      };
      if (adaptive !== undefined) {
        // The share of updates within C, with its own noise, moves C toward the quantile. The
        // centred count Σ(bᵢ − ½) has sensitivity ½, which the noise split above assumes.
        const count = [new Float64Array([(withinThisRound - clippedThisRound) / 2])];
        addGaussian(count, adaptive.countNoise, uniform);
        const within = count[0]![0]! / dp.expectedCohort + 0.5;
        values[CURRENT_CLIP] =
          clip * Math.exp(-adaptive.learningRate * (within - adaptive.targetQuantile));
      }
      const next: StateRecord = { arrays: state.arrays, values };
      return inner.afterAggregate?.(noisy, next, ctx) ?? { agg: noisy, state: next };
    },
  };
}
