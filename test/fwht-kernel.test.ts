/** The rotation's Walsh–Hadamard kernel: WebAssembly SIMD and its JavaScript fallback agree bit for bit. */
import { describe, expect, it } from "vitest";
import { createRng } from "../aggregation/random.js";
import {
  fwhtScalar,
  kernelFloats,
  simdKernel,
  transformChunks,
} from "../aggregation/codecs/fwht-kernel.js";
import { chunksOf, rotate, unrotate } from "../aggregation/codecs/rotation.js";

/** The transform by its definition: H[i][j] = (−1)^popcount(i & j), in float64. */
function hadamard(x: ArrayLike<number>): Float64Array {
  const n = x.length;
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (let j = 0; j < n; j++) {
      let bits = i & j;
      let sign = 1;
      while (bits !== 0) {
        sign = -sign;
        bits &= bits - 1;
      }
      s += sign * x[j]!;
    }
    out[i] = s;
  }
  return out;
}

describe("the Walsh–Hadamard kernel", () => {
  it("runs as WebAssembly SIMD in Node", () => {
    expect(simdKernel).toBe(true);
  });

  it("is the normalised Hadamard transform, and SIMD and JavaScript give the same bits for every size", () => {
    const rng = createRng(12);
    for (const n of [4, 8, 16, 64, 256, 1024, 4096]) {
      const x = Float32Array.from({ length: n }, () => (rng() - 0.5) * 10 ** (rng() * 6 - 3));
      const scalar = Float32Array.from(x);
      fwhtScalar(scalar, 0, n, 1 / Math.sqrt(n));
      const view = kernelFloats(n)!;
      view.set(x);
      transformChunks(view, 1, n, n);
      const simd = view.slice();
      expect(Buffer.from(simd.buffer).equals(Buffer.from(scalar.buffer))).toBe(true);
      if (n <= 256) {
        const exact = hadamard(x).map((v) => v / Math.sqrt(n));
        const scale = Math.max(...exact.map(Math.abs));
        for (let i = 0; i < n; i++)
          expect(Math.abs(simd[i]! - exact[i]!)).toBeLessThan(scale * 1e-5);
      }
    }
  });

  it("transforms chunk by chunk, a short last chunk in JavaScript, and rotation round-trips", () => {
    const rng = createRng(13);
    for (const n of [1, 2, 3, 5, 17, 1000, 1025, 3 * 1024 + 2, 100_003]) {
      const chunks = chunksOf(n, 1024);
      const x = Float32Array.from({ length: n }, () => rng() - 0.5);
      const y = rotate(x, chunks, 99);
      expect(y.length).toBe(chunks.padded);
      // Orthonormal: the norm is kept.
      const norm = (v: Float32Array) => Math.sqrt(v.reduce((s, a) => s + a * a, 0));
      expect(norm(y)).toBeCloseTo(norm(x), 3);
      const back = unrotate(y, chunks, 99);
      for (let i = 0; i < n; i++) expect(Math.abs(back[i]! - x[i]!)).toBeLessThan(1e-5);
    }
  });
});
