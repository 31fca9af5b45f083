/** Cohort sampling: how many clients a round trains, and which, reproducibly from a seed. */
import { sampleWithoutReplacement, type Rng } from "../aggregation/random.js";

/** Cohort size: `max(minFitClients, ⌈fractionFit · available⌉)`, at most `available`. */
export function cohortSize(available: number, fractionFit: number, minFitClients: number): number {
  return Math.min(available, Math.max(minFitClients, Math.ceil(fractionFit * available)));
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
