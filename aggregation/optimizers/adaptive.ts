/**
 * Adaptive server optimizers (Reddi et al. 2021, Algorithm 2): with the aggregate Δ̄ as a
 * pseudo-gradient, `m ← β₁ m + (1 − β₁) Δ̄`, a second moment v per variant, and
 * `w ← w + η m / (√v + τ)`. v starts at τ² (the algorithm's v₋₁ ≥ τ²), m at 0; no bias correction.
 *   adagrad: v ← v + Δ̄²
 *   adam:    v ← β₂ v + (1 − β₂) Δ̄²
 *   yogi:    v ← v − (1 − β₂) Δ̄² sign(v − Δ̄²)
 */
import type { ServerOptimizer } from "../optimizer.js";
import { filledLike, stateArrays } from "../state.js";

/** Which second-moment rule. */
export type AdaptiveVariant = "adagrad" | "adam" | "yogi";

/** Hyper-parameters of an adaptive server optimizer. */
export interface AdaptiveParams {
  eta: number;
  beta1: number;
  beta2: number;
  tau: number;
}

function secondMoment(variant: AdaptiveVariant, v: number, g2: number, beta2: number): number {
  switch (variant) {
    case "adagrad":
      return v + g2;
    case "adam":
      return beta2 * v + (1 - beta2) * g2;
    case "yogi":
      return v - (1 - beta2) * g2 * Math.sign(v - g2);
    default: {
      const exhaustive: never = variant;
      return exhaustive;
    }
  }
}

/** An adaptive server optimizer of the given variant. */
export function adaptiveOptimizer(variant: AdaptiveVariant, p: AdaptiveParams): ServerOptimizer {
  const { eta, beta1, beta2, tau } = p;
  return {
    name: variant,
    init: (w) => ({ arrays: { m: filledLike(w), v: filledLike(w, tau * tau) }, values: {} }),
    step(w, delta, s) {
      const m0 = stateArrays(s, "m", w);
      const v0 = stateArrays(s, "v", w);
      const m: Float32Array[] = [];
      const v: Float32Array[] = [];
      const weights = w.map((t, i) => {
        const d = delta[i]!;
        const mi = new Float32Array(t.length);
        const vi = new Float32Array(t.length);
        const out = new Float32Array(t.length);
        const pm = m0[i]!;
        const pv = v0[i]!;
        for (let j = 0; j < t.length; j++) {
          const g = d[j]!;
          mi[j] = beta1 * pm[j]! + (1 - beta1) * g;
          vi[j] = secondMoment(variant, pv[j]!, g * g, beta2);
          out[j] = t[j]! + (eta * mi[j]!) / (Math.sqrt(vi[j]!) + tau);
        }
        m.push(mi);
        v.push(vi);
        return out;
      });
      return { weights, state: { arrays: { ...s.arrays, m, v }, values: s.values } };
    },
  };
}
