/**
 * Centered clipping (Karimireddy, He and Jaggi 2021): starting from a center v, repeat
 * `v ← v + mean(clip_τ(Δᵢ − v))`, so no update moves the aggregate by more than τ/n per
 * iteration. The paper starts from the previous round's momentum; without server momentum the
 * coordinate-wise median is the robust start used here.
 */
import { collectAll, type Aggregator } from "../aggregator.js";
import { coordinateMedian } from "./median.js";
import type { Weights } from "../weights.js";

/** `iterations` rounds of centered clipping with radius `tau`, from the coordinate-wise median. */
export function centeredClip(
  deltas: readonly Weights[],
  tau: number,
  iterations: number,
): Float32Array[] {
  const n = deltas.length;
  const v = coordinateMedian(deltas).map((t) => Float64Array.from(t));
  for (let it = 0; it < iterations; it++) {
    const step = v.map((t) => new Float64Array(t.length));
    for (const d of deltas) {
      let norm2 = 0;
      for (let i = 0; i < d.length; i++) {
        const x = d[i]!;
        const c = v[i]!;
        for (let j = 0; j < x.length; j++) norm2 += (x[j]! - c[j]!) ** 2;
      }
      const norm = Math.sqrt(norm2);
      const scale = norm > tau ? tau / norm : 1;
      for (let i = 0; i < d.length; i++) {
        const x = d[i]!;
        const c = v[i]!;
        const s = step[i]!;
        for (let j = 0; j < x.length; j++) s[j]! += (scale * (x[j]! - c[j]!)) / n;
      }
    }
    v.forEach((t, i) => {
      const s = step[i]!;
      for (let j = 0; j < t.length; j++) t[j]! += s[j]!;
    });
  }
  return v.map((t) => Float32Array.from(t));
}

/** The centered-clipping aggregator. */
export function centeredClippingAggregator(tau: number, iterations: number): Aggregator {
  return {
    name: "centered-clipping",
    linear: false,
    begin: (layout) => collectAll(layout, (deltas) => centeredClip(deltas, tau, iterations)),
  };
}
