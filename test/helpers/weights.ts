/** Comparing weight lists in tests. */

/** The largest absolute difference between two weight lists of the same shapes. */
export function maxDiff(a: readonly Float32Array[], b: readonly Float32Array[]): number {
  let d = 0;
  a.forEach((t, i) => t.forEach((v, j) => (d = Math.max(d, Math.abs(v - b[i]![j]!)))));
  return d;
}
