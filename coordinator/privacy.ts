/**
 * The run's privacy plan, from its options: DP-FedAvg's settings and the accountant's view of
 * the sampling (q = expected cohort / population), and ε of the rounds released, each at its own
 * noise and sampling rate.
 */
import { CohortError } from "../protocol/errors.js";
import {
  DEFAULT_ORDERS,
  epsilonOf,
  noiseFor,
  stepRdp,
  type Sampling,
} from "../aggregation/privacy/rdp.js";
import {
  checkDpInner,
  spentRounds,
  sumNoiseMultiplier,
  type DpFedAvgSettings,
} from "../aggregation/privacy/dp-fedavg.js";
import type { StateRecord } from "../aggregation/state.js";
import type { Strategy } from "../aggregation/strategy.js";
import { cohortSize } from "./sampling.js";
import type { SharedOptions } from "./option-schema.js";

/** What DP-FedAvg runs with, and how its spending is counted. */
export interface PrivacyPlan {
  settings: DpFedAvgSettings;
  sampling: Sampling;
  population: number;
  delta: number;
  maxEpsilon: number | undefined;
  /** Where the noise is added. */
  mode: "central" | "distributed";
  /** The accountant's multiplier per plan multiplier: 1 (Poisson: add/remove one) or 2 (fixed: replace one). */
  sensitivity: number;
  /** ε at `delta` after the rounds released so far (each at the multiplier it was released with). */
  epsilonOf(state: StateRecord): number;
  /**
   * ε at `delta` should one more round be released at the planned multiplier (its worst case),
   * at sampling rate `samplingRate` (default the plan's).
   */
  epsilonAfterNext(state: StateRecord, samplingRate?: number): number;
  /**
   * The sampling rate a fixed-size round of `cohort` drawn from `available` clients is counted
   * at: the plan's, or m/available where that is higher. Undefined where it is the plan's.
   */
  roundRate(cohort: number, available: number): number | undefined;
}

/**
 * The orders distributed noise is accounted at: the integers ≥ 2 of the default set, where the
 * Skellam mechanism's RDP bound holds.
 */
export const INTEGER_ORDERS: readonly number[] = DEFAULT_ORDERS.filter(
  (a) => Number.isInteger(a) && a >= 2,
);

/** The round options DP depends on (every one of them is a shared option). */
type PrivacyOptions = SharedOptions;

/**
 * The plan, or null when DP is off. Throws `INVALID_OPTION` for settings that make no sense:
 * noise without a clip, both or neither of `dpNoise` and `dpTargetEpsilon`, no population, a
 * non-linear strategy.
 */
export function resolvePrivacy(o: PrivacyOptions, strategy: Strategy): PrivacyPlan | null {
  const asked = o.dpNoise !== undefined || o.dpTargetEpsilon !== undefined;
  if (o.dpClip === 0) {
    if (asked || o.dpMaxEpsilon !== undefined) {
      throw new CohortError(
        "INVALID_OPTION",
        "differential privacy needs dpClip (--dp-clip) > 0: the noise is scaled to it",
      );
    }
    return null;
  }
  checkDpInner(strategy);
  if (o.dpMode === "distributed" && !o.secure) {
    throw new CohortError(
      "INVALID_OPTION",
      "distributed DP noise is added by the members of secure rounds: add --secure, or use --dp-mode central",
    );
  }
  if ((o.dpNoise === undefined) === (o.dpTargetEpsilon === undefined)) {
    throw new CohortError(
      "INVALID_OPTION",
      "give exactly one of dpNoise (--dp-noise) and dpTargetEpsilon (--dp-target-epsilon)",
    );
  }
  const population = o.dpPopulation;
  if (population === undefined) {
    throw new CohortError(
      "INVALID_OPTION",
      "dpPopulation (--dp-population) is required with differential privacy: the accountant's sampling rate is the cohort over the population",
    );
  }
  const expectedCohort =
    o.sampling === "poisson"
      ? o.fractionFit * population
      : cohortSize(population, o.fractionFit, o.minFitClients);
  const q = Math.min(1, expectedCohort / population);
  const sampling: Sampling = { kind: o.sampling === "poisson" ? "poisson" : "fixed", q };
  const delta = o.dpDelta;
  if (!(delta < 1)) {
    throw new CohortError("INVALID_OPTION", `dpDelta must be below 1, got ${delta}`);
  }
  // Replacing one client (fixed-size sampling's neighbours) moves the clipped sum by up to 2C,
  // adding or removing one (Poisson's) by C: the multiplier the accountant sees is z/2 or z.
  const sensitivity = sampling.kind === "fixed" ? 2 : 1;
  const orders = o.dpMode === "distributed" ? INTEGER_ORDERS : DEFAULT_ORDERS;
  const noise =
    o.dpNoise ?? sensitivity * noiseFor(o.dpTargetEpsilon!, delta, sampling, o.rounds, orders);
  // One round's RDP per multiplier, computed once: central rounds all share one, distributed
  // ones take a few (their survivors' noise).
  const steps = new Map<string, number[]>();
  const step = (z: number, q: number) => {
    const key = `${z} ${q}`;
    let r = steps.get(key);
    if (r === undefined) {
      r = stepRdp({ kind: sampling.kind, q }, z / sensitivity, orders);
      steps.set(key, r);
    }
    return r;
  };
  const epsilonWith = (state: StateRecord, next?: { samplingRate: number | undefined }) => {
    const spent = spentRounds(state, noise);
    if (next !== undefined) spent.push({ noise, samplingRate: next.samplingRate, rounds: 1 });
    if (spent.length === 0) return 0;
    const total = orders.map(() => 0);
    for (const s of spent) {
      step(s.noise, s.samplingRate ?? q).forEach((r, i) => (total[i]! += r * s.rounds));
    }
    return epsilonOf(total, delta, orders).epsilon;
  };
  let adaptive: DpFedAvgSettings["adaptive"];
  if (o.dpClipQuantile !== undefined) {
    if (o.secure) {
      throw new CohortError(
        "INVALID_OPTION",
        "adaptive clipping counts the updates within the clip, which secure rounds hide from the coordinator; use a fixed --dp-clip with --secure",
      );
    }
    adaptive = {
      targetQuantile: o.dpClipQuantile,
      learningRate: o.dpClipLearningRate,
      countNoise: o.dpCountNoise ?? expectedCohort / 20,
    };
    sumNoiseMultiplier(noise, adaptive.countNoise); // refuses a count noise that leaves nothing
  }
  return {
    settings: {
      clip: o.dpClip,
      noiseMultiplier: noise,
      expectedCohort,
      ...(adaptive === undefined ? {} : { adaptive }),
      ...(o.dpMode === "distributed" ? { distributed: true } : {}),
    },
    sampling,
    population,
    delta,
    maxEpsilon: o.dpMaxEpsilon,
    mode: o.dpMode,
    sensitivity,
    epsilonOf: (state) => epsilonWith(state),
    epsilonAfterNext: (state, samplingRate) => epsilonWith(state, { samplingRate }),
    roundRate: (cohort, available) =>
      sampling.kind === "fixed" && available > 0 && cohort / available > q
        ? cohort / available
        : undefined,
  };
}
