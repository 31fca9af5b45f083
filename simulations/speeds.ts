/** Simulated device speeds: a seeded heavy-tailed (log-normal) spread of training rates. */
import { createRng } from "../aggregation/random.js";
import { CohortError } from "../protocol/errors.js";

/** How fast simulated devices train. */
export interface DeviceSpeed {
  /** The median device's training rate, in examples per simulated second. */
  samplesPerSecond: number;
  /** The 95th percentile's rate over the 5th's (1: every device alike). */
  spread: number;
}

/** The standard normal quantile at 0.95. */
const Z95 = 1.6448536269514722;

/** Check a `deviceSpeed` setting; `INVALID_OPTION` names what is wrong. */
export function checkDeviceSpeed(raw: unknown): DeviceSpeed {
  const o = raw as Partial<Record<keyof DeviceSpeed, unknown>> | null;
  const sps = o?.samplesPerSecond;
  const spread = o?.spread ?? 1;
  if (typeof sps !== "number" || !Number.isFinite(sps) || sps <= 0) {
    throw new CohortError("INVALID_OPTION", "deviceSpeed.samplesPerSecond must be a number > 0");
  }
  if (typeof spread !== "number" || !Number.isFinite(spread) || spread < 1) {
    throw new CohortError("INVALID_OPTION", "deviceSpeed.spread must be a number ≥ 1");
  }
  return { samplesPerSecond: sps, spread };
}

/**
 * Each device's rate: median × exp(σ·z), z standard normal drawn from (seed, device), with
 * σ = ln(spread) / (2 · Φ⁻¹(0.95)) so the 95th percentile is `spread` times the 5th.
 */
export function deviceRates(speed: DeviceSpeed, devices: number, seed: number): Float64Array {
  const sigma = Math.log(speed.spread) / (2 * Z95);
  const rates = new Float64Array(devices);
  for (let d = 0; d < devices; d++) {
    const rng = createRng(
      (Math.imul(seed ^ 0x5bd1e995, 0x27d4eb2d) + Math.imul(d + 1, 0x165667b1)) | 0,
    );
    // Box–Muller from two uniforms in (0, 1].
    const u = 1 - rng();
    const v = rng();
    const z = Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
    rates[d] = speed.samplesPerSecond * Math.exp(sigma * z);
  }
  return rates;
}
