/**
 * Krum and Multi-Krum (Blanchard et al. 2017): score each update by the summed squared distance
 * to its n − f − 2 nearest others; keep the m best-scored (Krum: m = 1) and average them.
 */
import { CohortError } from "../../protocol/errors.js";
import { collectAll, type Aggregator } from "../aggregator.js";
import type { Weights } from "../weights.js";

function squaredDistance(a: Weights, b: Weights): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) {
    const x = a[i]!;
    const y = b[i]!;
    for (let j = 0; j < x.length; j++) {
      const d = x[j]! - y[j]!;
      s += d * d;
    }
  }
  return s;
}

/** Krum scores of the updates: lower is more central. Needs n ≥ 2f + 3. */
export function krumScores(deltas: readonly Weights[], f: number): number[] {
  const n = deltas.length;
  if (n < 2 * f + 3) {
    throw new CohortError(
      "ROUND_FAILED",
      `Krum with f = ${f} needs at least ${2 * f + 3} updates, got ${n}`,
    );
  }
  const dist = Array.from({ length: n }, () => new Float64Array(n));
  for (let a = 0; a < n; a++)
    for (let b = a + 1; b < n; b++) {
      const d = squaredDistance(deltas[a]!, deltas[b]!);
      dist[a]![b] = d;
      dist[b]![a] = d;
    }
  const nearest = n - f - 2;
  return dist.map((row, a) => {
    const others = [...row].filter((_, b) => b !== a).sort((x, y) => x - y);
    return others.slice(0, nearest).reduce((s, d) => s + d, 0);
  });
}

/** The unweighted mean of the `m` best-scored updates (ties broken by arrival order). */
export function multiKrum(deltas: readonly Weights[], f: number, m: number): Float32Array[] {
  const scores = krumScores(deltas, f);
  const chosen = scores
    .map((score, index) => ({ score, index }))
    .sort((a, b) => a.score - b.score || a.index - b.index)
    .slice(0, Math.max(1, Math.min(m, deltas.length)))
    .map((c) => deltas[c.index]!);
  return chosen[0]!.map((t, i) => {
    const out = new Float32Array(t.length);
    for (let j = 0; j < t.length; j++) {
      let s = 0;
      for (const d of chosen) s += d[i]![j]!;
      out[j] = s / chosen.length;
    }
    return out;
  });
}

/** Multi-Krum keeping `m` updates (undefined: n − f); `m = 1` is Krum. */
export function krumAggregator(f: number, m: number | undefined, name: string): Aggregator {
  return {
    name,
    linear: false,
    begin: (layout) => collectAll(layout, (deltas) => multiKrum(deltas, f, m ?? deltas.length - f)),
  };
}
