/**
 * Simulated Byzantine devices, for studying robust aggregators: a strategy wrapper that swaps
 * the attackers' updates for hostile ones before the real aggregator sees them.
 *   sign-flip:         −scale · (the attacker's honest delta)
 *   little-is-enough:  μ − z·σ per coordinate over the round's honest updates (Baruch et al.
 *                      2019; an omniscient, colluding attacker), z from the cohort size
 * in every server step, or in a burst of steps only.
 */
import type { ClientDelta } from "../aggregation/aggregator.js";
import type { Strategy } from "../aggregation/strategy.js";
import { CohortError } from "../protocol/errors.js";

/** What the attackers do. */
export interface AttackConfig {
  /** How many devices attack (the first ones of a seeded permutation of the population). */
  devices: number;
  kind: "sign-flip" | "little-is-enough";
  /** Sign-flip magnitude. @default 10 */
  scale: number;
  /**
   * Attack only in these server steps, `[first, last]` counted from 1 (rounds, or buffers in
   * asynchronous mode): a poisoned burst. @default null (every step)
   */
  steps: [number, number] | null;
}

/** Φ⁻¹(p) by bisection on the normal CDF (erf approximation, |error| < 1.5e-7). */
function normalQuantile(p: number): number {
  const erf = (x: number) => {
    const t = 1 / (1 + 0.3275911 * Math.abs(x));
    const y =
      1 -
      ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) *
        t *
        Math.exp(-x * x);
    return x >= 0 ? y : -y;
  };
  let lo = -10;
  let hi = 10;
  for (let i = 0; i < 100; i++) {
    const mid = (lo + hi) / 2;
    if (0.5 * (1 + erf(mid / Math.SQRT2)) < p) lo = mid;
    else hi = mid;
  }
  return (lo + hi) / 2;
}

/** Baruch et al.'s z for n updates of which f are hostile: Φ⁻¹((n − s)/n), s = ⌊n/2 + 1⌋ − f. */
export function littleIsEnoughZ(n: number, f: number): number {
  const s = Math.floor(n / 2 + 1) - f;
  return normalQuantile((n - s) / n);
}

function hostile(
  attack: AttackConfig,
  own: ClientDelta,
  honest: ClientDelta[],
  n: number,
  f: number,
): Float32Array[] {
  if (attack.kind === "sign-flip") return own.delta.map((t) => t.map((v) => -attack.scale * v));
  if (honest.length === 0) return own.delta.map((t) => Float32Array.from(t));
  const z = littleIsEnoughZ(n, f);
  return own.delta.map((t, i) => {
    const out = new Float32Array(t.length);
    for (let j = 0; j < t.length; j++) {
      let mean = 0;
      for (const u of honest) mean += u.delta[i]![j]!;
      mean /= honest.length;
      let variance = 0;
      for (const u of honest) variance += (u.delta[i]![j]! - mean) ** 2;
      out[j] = mean - z * Math.sqrt(variance / honest.length);
    }
    return out;
  });
}

/** `strategy` with the updates of `attackers` replaced by hostile ones (plain rounds only). */
export function withAttackers(
  strategy: Strategy,
  attackers: ReadonlySet<string>,
  attack: AttackConfig,
): Strategy {
  // The aggregator is begun once per server step: that count is the step.
  let step = 0;
  const active = () =>
    attack.steps === null || (step >= attack.steps[0] && step <= attack.steps[1]);
  return {
    ...strategy,
    name: strategy.name,
    ref: strategy.ref,
    aggregator: {
      name: strategy.aggregator.name,
      linear: strategy.aggregator.linear,
      begin(layout) {
        step++;
        const inner = strategy.aggregator.begin(layout);
        if (!active()) return inner;
        const held: ClientDelta[] = [];
        return {
          add: (u) => held.push(u),
          addSum: () => {
            throw new CohortError("INVALID_OPTION", "simulated attackers need plain rounds");
          },
          finish() {
            const honest = held.filter((u) => !attackers.has(u.clientId));
            const f = held.length - honest.length;
            for (const u of held) {
              inner.add(
                attackers.has(u.clientId)
                  ? { ...u, delta: hostile(attack, u, honest, held.length, f) }
                  : u,
              );
            }
            return inner.finish();
          },
        };
      },
    },
  };
}
