/** What the privacy suites share: the accountant's ε for a plain plan, and a tiny simulation. */
import { compose, newAccountant, spent, type Sampling } from "../../aggregation/privacy/rdp.js";

/** ε at `delta` after `rounds` rounds of the subsampled Gaussian with multiplier `noise`. */
export function planEpsilon(
  sampling: Sampling,
  noise: number,
  rounds: number,
  delta = 1e-5,
): number {
  return spent(compose(newAccountant(), { sampling, noiseMultiplier: noise, rounds }), delta)
    .epsilon;
}

/** The smallest simulation that trains: the mlp on MNIST digits, 10 examples a device. */
export const TINY_SIMULATION = {
  model: "mlp",
  dataset: "mnist",
  examplesPerDevice: 10,
  evalSize: 100,
  baselineEpochs: 0,
} as const;
