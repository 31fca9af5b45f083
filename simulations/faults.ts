/** Fault injection for simulations: dropouts, stragglers and disconnects, drawn from a seed. */
import { createRng } from "../aggregation/random.js";
import { CohortError } from "../protocol/errors.js";

/** Fault rates of a simulation. Every draw depends only on (seed, round, device). */
export interface FaultConfig {
  /** Probability a sampled device drops before training (never answers). @default 0 */
  dropoutBeforeFit: number;
  /** Probability a device drops after training, before its update arrives. @default 0 */
  dropoutAfterFit: number;
  /** Probability a device disconnects during the round (its socket closes). @default 0 */
  disconnect: number;
  /**
   * Mean extra latency of a device, in ms, exponentially distributed; 0 for none. A device
   * whose latency exceeds the round deadline is a straggler and misses the round. @default 0
   */
  stragglerMeanMs: number;
}

export const NO_FAULTS: FaultConfig = {
  dropoutBeforeFit: 0,
  dropoutAfterFit: 0,
  disconnect: 0,
  stragglerMeanMs: 0,
};

/** What happens to one device in one round. */
export type DeviceFate =
  | { kind: "ok"; latencyMs: number }
  | { kind: "drop-before" }
  | { kind: "drop-after" }
  | { kind: "disconnect" }
  | { kind: "straggler"; latencyMs: number };

/** Check rates are probabilities and the latency a non-negative number. */
export function checkFaults(f: FaultConfig): FaultConfig {
  for (const key of ["dropoutBeforeFit", "dropoutAfterFit", "disconnect"] as const) {
    if (!(f[key] >= 0 && f[key] <= 1)) {
      throw new CohortError(
        "INVALID_OPTION",
        `faults.${key} must be a probability in [0, 1], got ${f[key]}`,
      );
    }
  }
  if (!(f.stragglerMeanMs >= 0 && Number.isFinite(f.stragglerMeanMs))) {
    throw new CohortError(
      "INVALID_OPTION",
      `faults.stragglerMeanMs must be ≥ 0, got ${f.stragglerMeanMs}`,
    );
  }
  return f;
}

/** Draw a device's fate for a round. */
export function drawFate(
  f: FaultConfig,
  seed: number,
  round: number,
  device: number,
  deadlineMs: number,
): DeviceFate {
  const rng = createRng(
    (seed * 0x01000193) ^ Math.imul(round, 0x85ebca6b) ^ Math.imul(device + 1, 0xc2b2ae35),
  );
  const a = rng();
  const b = rng();
  const c = rng();
  const latencyMs = f.stragglerMeanMs > 0 ? -f.stragglerMeanMs * Math.log(1 - rng()) : 0;
  if (a < f.dropoutBeforeFit) return { kind: "drop-before" };
  if (b < f.disconnect) return { kind: "disconnect" };
  if (c < f.dropoutAfterFit) return { kind: "drop-after" };
  if (latencyMs > deadlineMs) return { kind: "straggler", latencyMs };
  return { kind: "ok", latencyMs };
}
