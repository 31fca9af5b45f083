/** Seeded pseudo-random numbers (mulberry32) for reproducible sampling and shuffles; not for cryptography. */

import { CohortError } from "../protocol/errors.js";

/** A generator of uniform numbers in [0, 1). */
export type Rng = () => number;

/** A seeded generator whose state can be saved and restored (crash-safe runs). */
export interface StatefulRng extends Rng {
  /** The 32-bit state: `restoreRng(rng.state())` continues the same sequence. */
  state(): number;
}

/** Anything indexable and writable: plain arrays and every typed array. */
export interface MutableArrayLike<T> {
  readonly length: number;
  [index: number]: T;
}

/**
 * Create a deterministic generator of uniform numbers in `[0, 1)` (mulberry32: 32-bit state,
 * fast, good enough for shuffling and sampling; not for cryptography).
 *
 * @param seed any finite number; only its low 32 bits (after truncation) matter.
 * @throws CohortError `INVALID_OPTION` when `seed` is not finite.
 */
export function createRng(seed: number): StatefulRng {
  if (!Number.isFinite(seed)) {
    throw new CohortError("INVALID_OPTION", `seed must be a finite number, got ${String(seed)}`);
  }
  return restoreRng(Math.trunc(seed) >>> 0);
}

/** A generator continuing from a saved `state()`. */
export function restoreRng(savedState: number): StatefulRng {
  let state = savedState >>> 0;
  const next = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return Object.assign(next, { state: () => state });
}

/**
 * Shuffle `items` in place (Fisher–Yates) with the given generator and return it.
 * The same generator state always yields the same permutation.
 */
export function shuffleInPlace<A extends MutableArrayLike<unknown>>(
  items: A,
  rng: () => number,
): A {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(rng() * (i + 1));
    const tmp = items[i];
    items[i] = items[j];
    items[j] = tmp;
  }
  return items;
}

/** A random permutation of 0 … n − 1 drawn with `rng` (seeded: the same one every time). */
export function permutation(n: number, rng: () => number): Int32Array {
  return shuffleInPlace(
    Int32Array.from({ length: n }, (_, i) => i),
    rng,
  );
}

/** `k` distinct items drawn uniformly without replacement, in draw order. */
export function sampleWithoutReplacement<T>(items: readonly T[], k: number, rng: Rng): T[] {
  const pool = [...items];
  const n = Math.max(0, Math.min(Math.floor(k), pool.length));
  for (let i = 0; i < n; i++) {
    const j = i + Math.floor(rng() * (pool.length - i));
    [pool[i], pool[j]] = [pool[j]!, pool[i]!];
  }
  return pool.slice(0, n);
}
