/**
 * The shared random rotation of the quantizing codecs: a randomised Hadamard transform
 * (y = H·D·x/√n, D a diagonal of random signs) per chunk of a power-of-two length. Every client
 * of a round draws D from the round's seed, so all rotate alike; the rotation is orthonormal,
 * so errors added to y come back to x with the same L2 norm, and it spreads a chunk's energy
 * over its coordinates, which keeps the per-chunk scale (the largest |y|) small.
 */

import { isKernelView, kernelFloats, transformChunks } from "./fwht-kernel.js";

/** How a flat vector of `n` values is cut into chunks. */
export interface Chunks {
  /** The values covered. */
  n: number;
  /** Length of every chunk but the last (a power of two). */
  size: number;
  count: number;
  /** The last chunk's length: the remainder padded up to a power of two. */
  lastSize: number;
  /** Every chunk's length together (what the codes cover). */
  padded: number;
}

/** The smallest power of two ≥ `n` (n ≥ 1). */
export function nextPowerOfTwo(n: number): number {
  let p = 1;
  while (p < n) p *= 2;
  return p;
}

/** The chunks of `n` values at `size` per chunk. */
export function chunksOf(n: number, size: number): Chunks {
  const count = Math.max(1, Math.ceil(n / size));
  const rest = n - (count - 1) * size;
  const lastSize = nextPowerOfTwo(Math.max(1, rest));
  return { n, size, count, lastSize, padded: (count - 1) * size + lastSize };
}

let cached: { seed: number; words: Int32Array } | null = null;

/** One 32-bit word of signs per 32 coordinates, drawn from `seed` (mulberry32). */
function signWords(seed: number, padded: number): Int32Array {
  const need = Math.ceil(padded / 32);
  if (cached !== null && cached.seed === seed && cached.words.length >= need) return cached.words;
  const words = new Int32Array(need);
  let state = seed >>> 0;
  for (let i = 0; i < need; i++) {
    state = (state + 0x6d2b79f5) | 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    words[i] = t ^ (t >>> 14);
  }
  cached = { seed, words };
  return words;
}

/** D: flip the sign of every value whose bit of `seed`'s sign words is set (the padding too). */
function flipSigns(y: Float32Array, padded: number, seed: number): void {
  const bits = new Int32Array(y.buffer, y.byteOffset, padded);
  const words = signWords(seed, padded);
  for (let w = 0; w < words.length; w++) {
    const word = words[w]!;
    const end = Math.min((w + 1) << 5, padded);
    for (let i = w << 5; i < end; i++) bits[i]! ^= ((word >>> (i & 31)) & 1) << 31;
  }
}

/**
 * `flat` rotated chunk by chunk (`chunks.padded` values) in the SIMD kernel's memory where it
 * runs: valid until the next rotation, for a caller that reads it at once. Elsewhere a vector
 * of its own.
 */
export function rotateBorrowed(flat: Float32Array, chunks: Chunks, seed: number): Float32Array {
  const view = kernelFloats(chunks.padded);
  const y = view ?? new Float32Array(chunks.padded);
  y.set(flat.subarray(0, chunks.n));
  if (view !== null) y.fill(0, chunks.n); // the memory is reused: the padding must be zero
  flipSigns(y, chunks.padded, seed);
  transformChunks(y, chunks.count, chunks.size, chunks.lastSize);
  return y;
}

/** `flat` rotated chunk by chunk: a new vector of `chunks.padded` values. */
export function rotate(flat: Float32Array, chunks: Chunks, seed: number): Float32Array {
  const y = rotateBorrowed(flat, chunks, seed);
  return isKernelView(y) ? y.slice() : y;
}

/** The inverse of `rotate`, in place on `y`; returns the first `chunks.n` values. */
export function unrotate(y: Float32Array, chunks: Chunks, seed: number): Float32Array {
  const view = kernelFloats(chunks.padded);
  const x = view ?? y;
  if (view !== null) view.set(y.subarray(0, chunks.padded));
  transformChunks(x, chunks.count, chunks.size, chunks.lastSize);
  flipSigns(x, chunks.padded, seed);
  if (view !== null) y.set(view.subarray(0, chunks.n));
  return y.subarray(0, chunks.n);
}
