/** The quantizers' secure form: narrow words that still sum under masks, linear and unbiased within the bound. */
import { flatten } from "../../aggregation/codecs/layout.js";
import { describe, expect, it } from "vitest";
import { createRng } from "../../aggregation/random.js";
import {
  addMasked,
  decodeSum,
  encodedWords,
  maxQuantizationError,
  packMasked,
  packedBytes,
  parseSecAggSetup,
  quantizeUpdate,
  secureParams,
  signedBits,
  type SecureParams,
} from "../../aggregation/secure/index.js";
import { chunksOf, rotate, unrotate } from "../../aggregation/codecs/rotation.js";
import { checkCodec, resolveCodec } from "../../aggregation/codecs/index.js";
import { expectCohortError } from "../helpers/errors.js";
import { nextSecureRange } from "../../coordinator/engine.js";
import { CLIP_PER_RMS, WEIGHT_CAP_PER_MEAN } from "../../coordinator/secure-round.js";

const SEED = 0xc0ffee;

function params(n: number, bits: number, clip: number, maxWeight: number, sizes: number[]) {
  return secureParams({
    n,
    clip,
    maxWeight,
    tensorSizes: sizes,
    quantizer: { bits, chunk: 64, seed: SEED },
  });
}

/** n members' encodings, each masked by a random vector, the masks summing to 0 mod 2^32. */
function maskedSum(encoded: Uint32Array[], p: SecureParams): Uint32Array {
  const rng = createRng(99);
  const length = encoded[0]!.length;
  const total = new Uint32Array(length);
  const sum = new Uint32Array(length);
  encoded.forEach((e, i) => {
    const masked = Uint32Array.from(e);
    const mask = new Uint32Array(length);
    if (i < encoded.length - 1) {
      for (let j = 0; j < length; j++) mask[j] = Math.floor(rng() * 2 ** 32);
      for (let j = 0; j < length; j++) total[j]! += mask[j]!;
    } else {
      for (let j = 0; j < length; j++) mask[j] = -total[j]!;
    }
    for (let j = 0; j < length; j++) masked[j]! += mask[j]!;
    addMasked(sum, packMasked(masked, p), p, `member ${i}`);
  });
  return sum;
}

/** Σ wᵢ·clip(R·Δᵢ) / Σ wᵢ in the rotated domain (float64). */
function rotatedMean(deltas: Float32Array[][], weights: number[], p: SecureParams): Float64Array {
  const chunks = p.chunks!;
  const mean = new Float64Array(chunks.padded);
  const total = weights.reduce((a, b) => a + b, 0);
  deltas.forEach((d, i) => {
    const y = rotate(flatten(d), chunks, SEED);
    for (let j = 0; j < y.length; j++) {
      const c = Math.max(-p.clip, Math.min(p.clip, y[j]!));
      mean[j]! += (weights[i]! / total) * c;
    }
  });
  return mean;
}

function rotatedOf(tensors: Float32Array[], p: SecureParams): Float32Array {
  return rotate(flatten(tensors), p.chunks!, SEED);
}

describe("the quantizers' secure parameters", () => {
  it("give each member 2^(bits−1) − 1 levels and words of just enough bits for the cohort's sum", () => {
    for (const bits of [2, 4, 8]) {
      for (const n of [2, 3, 10, 100, 1000, 65_535]) {
        const p = params(n, bits, 0.1, 600, [100]);
        expect(p.bound).toBe(2 ** (bits - 1) - 1);
        // The whole cohort's sum fits the signed word, and one bit fewer would not.
        expect(n * p.bound).toBeLessThan(2 ** (p.wordBits - 1));
        expect(n * p.bound).toBeGreaterThanOrEqual(2 ** (p.wordBits - 2));
      }
    }
    // q8 in a cohort of 10: 12-bit words, 2.7× fewer bytes than 32-bit fixed point.
    const q8 = params(10, 8, 0.1, 600, [199_210]);
    expect(q8.wordBits).toBe(12);
    const words = encodedWords(q8, [199_210]);
    expect((4 * (1 + 199_210)) / packedBytes(q8, words)).toBeGreaterThan(2.6);
    // 32 bits: the calibrating round keeps today's budget.
    const wide = params(10, 32, 1, 600, [100]);
    expect(wide.wordBits).toBe(32);
    expect(wide.bound).toBe(Math.floor((2 ** 31 - 1) / 10));
    expect(signedBits(1)).toBe(2);
    expect(signedBits(127)).toBe(8);
    expect(signedBits(128)).toBe(9);
  });

  it("refuse a quantizer they cannot serve, and distributed noise with one", () => {
    const base = { n: 10, clip: 1, maxWeight: 1, tensorSizes: [100] };
    const q = { bits: 8, chunk: 64, seed: 1 };
    expectCohortError(
      () => secureParams({ ...base, quantizer: { ...q, bits: 1 } }),
      "INVALID_OPTION",
    );
    expectCohortError(
      () => secureParams({ ...base, quantizer: { ...q, chunk: 100 } }),
      "INVALID_OPTION",
      /power of two/,
    );
    expectCohortError(
      () =>
        secureParams({
          ...base,
          quantizer: q,
          dp: { clip: 1, noise: 1, minContributors: 5 },
        }),
      "INVALID_OPTION",
      /32-bit/,
    );
    expectCohortError(
      () => checkCodec(resolveCodec("topk:0.1"), { secure: true }),
      "INVALID_OPTION",
    );
    expectCohortError(() => checkCodec(resolveCodec("f16"), { secure: true }), "INVALID_OPTION");
    expectCohortError(
      () => checkCodec(resolveCodec("q8"), { secure: true, dp: true }),
      "INVALID_OPTION",
      /float32/,
    );
    expect(() => checkCodec(resolveCodec("q4"), { secure: true })).not.toThrow();
  });

  it("travel in the setup and are checked there", () => {
    const setup = {
      session: "s",
      round: 1,
      n: 3,
      k: 2,
      t: 2,
      graphSeed: 1,
      clip: 0.5,
      maxWeight: 10,
      tensorSizes: [5],
    };
    const q = { bits: 4, chunk: 16, seed: 7 };
    expect(parseSecAggSetup({ ...setup, quantizer: q }).quantizer).toEqual(q);
    expect(parseSecAggSetup(setup).quantizer).toBeUndefined();
    for (const bad of [{ ...q, bits: 33 }, { ...q, seed: -1 }, { ...q, chunk: "16" }, 5]) {
      expectCohortError(() => parseSecAggSetup({ ...setup, quantizer: bad }), "INVALID_MESSAGE");
    }
  });
});

describe("packing masked words", () => {
  it("round-trips the low wordBits bits of every word, for every width and odd lengths", () => {
    const rng = createRng(5);
    for (let bits = 2; bits <= 31; bits++) {
      const p = { ...params(10, 8, 1, 1, [10]), wordBits: bits };
      for (const length of [2, 3, 9, 67]) {
        const words = Uint32Array.from({ length }, () => Math.floor(rng() * 2 ** 32));
        const packed = packMasked(words, p);
        expect(packed).toBeInstanceOf(Uint8Array);
        expect(packed.byteLength).toBe(packedBytes(p, length));
        const sum = new Uint32Array(length);
        addMasked(sum, packed, p, "test");
        expect(sum[0]).toBe(words[0]); // the header keeps 32 bits
        expect(sum[1]).toBe(words[1]);
        for (let i = 2; i < length; i++) expect(sum[i]).toBe(words[i]! % 2 ** bits);
      }
    }
  });

  it("refuses a vector of another type or length (SHAPE_MISMATCH)", () => {
    const p = params(10, 8, 1, 1, [100]);
    const words = new Uint32Array(encodedWords(p, [100]));
    const sum = new Uint32Array(words.length);
    const packed = packMasked(words, p) as Uint8Array;
    expectCohortError(() => addMasked(sum, words, p, "m"), "SHAPE_MISMATCH", /bytes/);
    expectCohortError(() => addMasked(sum, packed.subarray(1), p, "m"), "SHAPE_MISMATCH");
    const wide = params(10, 32, 1, 1, [100]);
    expectCohortError(() => addMasked(sum, packed, wide, "m"), "SHAPE_MISMATCH", /32-bit/);
  });
});

describe("the secure form is linear", () => {
  it("decodes the masked sum of n encodings to the weighted mean of the clipped rotated deltas within the bound, n = 3 … 1,000", () => {
    const rng = createRng(17);
    const sizes = [150, 7];
    for (const [n, bits] of [
      [3, 8],
      [10, 4],
      [100, 2],
      [1000, 8],
    ] as const) {
      const clip = 0.6;
      const p = params(n, bits, clip, 600, sizes);
      const deltas = Array.from({ length: n }, () =>
        sizes.map((s) => Float32Array.from({ length: s }, () => (rng() - 0.5) * 2 * clip)),
      );
      const weights = Array.from({ length: n }, () => 1 + Math.floor(rng() * 600));
      const encoded = deltas.map((d, i) => quantizeUpdate(d, weights[i]!, p, sizes, rng));
      const decoded = decodeSum(maskedSum(encoded, p), p, sizes);
      const sumWeights = weights.reduce((a, b) => a + b, 0);
      expect(decoded.sumWeights).toBe(sumWeights);
      const bound = maxQuantizationError(p, { contributors: n, sumWeights });
      // Rotated back, each chunk's L2 error is at most √size times the per-coordinate bound.
      const chunks = p.chunks!;
      const expected = unrotate(Float32Array.from(rotatedMean(deltas, weights, p)), chunks, SEED);
      const got = flatten(decoded.weightedMeanDelta);
      for (let c = 0; c < chunks.count; c++) {
        const size = c === chunks.count - 1 ? chunks.lastSize : chunks.size;
        let squares = 0;
        for (let j = c * chunks.size; j < Math.min(c * chunks.size + size, chunks.n); j++)
          squares += (got[j]! - expected[j]!) ** 2;
        expect(Math.sqrt(squares), `n = ${n}, ${bits} bits, chunk ${c}`).toBeLessThanOrEqual(
          Math.sqrt(size) * bound + 1e-5,
        );
      }
      // The bound is not vacuous at 8 bits (at 2 bits a member's quantum is the whole clip).
      if (bits === 8) expect(bound).toBeLessThan(clip / 20);
      // The header's RMS: the mean of the members' RMS.
      const rms = deltas.map((d) => {
        const y = rotatedOf(d, p);
        return Math.sqrt(y.reduce((s, v) => s + v * v, 0) / 157);
      });
      expect(decoded.rmsSum! / n).toBeCloseTo(rms.reduce((a, b) => a + b, 0) / n, 4);
    }
  });

  it("is unbiased: the mean of 1,000 two-bit encodings of one delta converges to it", () => {
    const rng = createRng(3);
    const sizes = [64];
    const p = params(2, 2, 1, 1, sizes);
    const delta = [Float32Array.from({ length: 64 }, () => (rng() - 0.5) * 0.8)];
    const target = rotatedOf(delta, p);
    const mean = new Float64Array(p.chunks!.padded);
    const runs = 1000;
    for (let r = 0; r < runs; r++) {
      const decoded = decodeSum(quantizeUpdate(delta, 1, p, sizes, rng), p, sizes);
      const y = rotatedOf(decoded.weightedMeanDelta, p);
      for (let j = 0; j < y.length; j++) mean[j]! += y[j]! / runs;
    }
    // One 2-bit rounding of y ∈ [−1, 1] has a standard deviation ≤ 0.5; 1,000 of them ≤ 0.016.
    let worst = 0;
    let single = 0;
    const once = rotatedOf(
      decodeSum(quantizeUpdate(delta, 1, p, sizes, rng), p, sizes).weightedMeanDelta,
      p,
    );
    for (let j = 0; j < target.length; j++) {
      worst = Math.max(worst, Math.abs(mean[j]! - Math.max(-1, Math.min(1, target[j]!))));
      single = Math.max(single, Math.abs(once[j]! - target[j]!));
    }
    expect(worst).toBeLessThan(5 * 0.016);
    expect(single).toBeGreaterThan(worst * 3);
  });

  it("is the float32 fixed point unchanged without a quantizer (32-bit words, no header RMS)", () => {
    const p = secureParams({ n: 5, clip: 1, maxWeight: 10, tensorSizes: [4] });
    expect(p.wordBits).toBe(32);
    expect(p.headerWords).toBe(1);
    const words = quantizeUpdate([Float32Array.of(0.1, -0.2, 0.3, 0)], 3, p, [4], createRng(1));
    expect(words.length).toBe(5);
    expect(packMasked(words, p)).toBe(words);
    expect(chunksOf(4, 64).padded).toBe(4);
  });
});

describe("the next secure round's range", () => {
  const opts = { secureClip: 1, secureMaxWeight: 10_000 };
  const mean = (rms: number) => [
    Float32Array.from({ length: 100 }, (_, i) => (i % 2 ? rms : -rms)),
  ];

  it("follows the members' mean RMS and weight", () => {
    const r = nextSecureRange(
      {
        meanRms: 0.01,
        sumWeights: 3000,
        contributors: [0, 1, 2, 3, 4],
        weightedMeanDelta: mean(0.005),
      },
      opts,
    );
    expect(r!.clip).toBeCloseTo(CLIP_PER_RMS * 0.01, 12);
    expect(r!.maxWeight).toBe(WEIGHT_CAP_PER_MEAN * 600);
  });

  it("holds a lying member between the decoded mean's own RMS and --secure-clip, the cap at --secure-max-weight", () => {
    const huge = nextSecureRange(
      { meanRms: 1e6, sumWeights: 5e9, contributors: [0, 1], weightedMeanDelta: mean(0.005) },
      opts,
    );
    expect(huge).toEqual({ clip: 1, maxWeight: 10_000 });
    const tiny = nextSecureRange(
      { meanRms: 1e-12, sumWeights: 2, contributors: [0, 1], weightedMeanDelta: mean(0.005) },
      opts,
    );
    expect(tiny!.clip).toBeCloseTo(CLIP_PER_RMS * 0.005, 9);
    // Nothing usable: no RMS, or none above zero (a member subtracted it away).
    for (const meanRms of [undefined, 0, -5]) {
      expect(
        nextSecureRange(
          {
            ...(meanRms === undefined ? {} : { meanRms }),
            sumWeights: 2,
            contributors: [0, 1],
            weightedMeanDelta: mean(0),
          },
          opts,
        ),
      ).toBeNull();
    }
  });
});
