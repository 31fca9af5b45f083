/** Cohort sampling: how many clients a round trains, and which, reproducibly from a seed. */
import { sampleWithoutReplacement, type Rng } from "../aggregation/random.js";

/** Cohort size: `max(minFitClients, ⌈fractionFit · available⌉)`, at most `available`. */
export function cohortSize(available: number, fractionFit: number, minFitClients: number): number {
  // The epsilon keeps float error from rounding e.g. 0.07 · 100 = 7.000000000000001 up to 8.
  const wanted = Math.ceil(fractionFit * available - 1e-9);
  return Math.min(available, Math.max(minFitClients, wanted));
}

/**
 * Sample a cohort. Ids are sorted first so the result depends only on the set of available
 * clients and the generator's state, never on connection order.
 */
export function sampleCohort(
  available: readonly string[],
  fractionFit: number,
  minFitClients: number,
  rng: Rng,
): string[] {
  const sorted = [...available].sort();
  return sampleWithoutReplacement(
    sorted,
    cohortSize(sorted.length, fractionFit, minFitClients),
    rng,
  );
}

/**
 * Poisson sampling: each available client independently with probability `q` (ids sorted
 * first, as above). The cohort may be empty; its size is not fixed.
 */
export function samplePoisson(available: readonly string[], q: number, rng: Rng): string[] {
  return [...available].sort().filter(() => rng() < q);
}
