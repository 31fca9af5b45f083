/**
 * Server momentum (FedAvgM, Hsu et al. 2019): `v ← β v + Δ̄`, then `w ← w + η v`, or with
 * Nesterov `w ← w + η (β v + Δ̄)`.
 */
import type { ServerOptimizer } from "../optimizer.js";
import { filledLike, stateArrays } from "../state.js";

/** Momentum `beta` with server learning rate `eta`. */
export function serverMomentum(eta: number, beta: number, nesterov: boolean): ServerOptimizer {
  return {
    name: "avgm",
    init: (w) => ({ arrays: { momentum: filledLike(w) }, values: {} }),
    step(w, delta, s) {
      const prev = stateArrays(s, "momentum", w);
      const momentum: Float32Array[] = [];
      const weights = w.map((t, i) => {
        const d = delta[i]!;
        const p = prev[i]!;
        const v = new Float32Array(t.length);
        const out = new Float32Array(t.length);
        for (let j = 0; j < t.length; j++) {
          v[j] = beta * p[j]! + d[j]!;
          out[j] = t[j]! + eta * (nesterov ? beta * v[j]! + d[j]! : v[j]!);
        }
        momentum.push(v);
        return out;
      });
      return { weights, state: { arrays: { ...s.arrays, momentum }, values: s.values } };
    },
  };
}
