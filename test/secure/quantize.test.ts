/** Fixed-point encoding: the derived bit budget never wraps, and decoding stays within the stated bound. */
import { describe, expect, it } from "vitest";
import { createRng } from "../../aggregation/random.js";
import {
  decodeSum,
  encodedLength,
  MAX_COHORT,
  maxQuantizationError,
  quantizeUpdate,
  secureParams,
} from "../../aggregation/secure/quantize.js";
import { expectCohortError } from "../helpers/errors.js";

function sumOf(vectors: Iterable<Uint32Array>, length: number): Uint32Array {
  const sum = new Uint32Array(length);
  for (const v of vectors) for (let i = 0; i < length; i++) sum[i]! += v[i]!;
  return sum;
}

describe("secureParams", () => {
  it("gives each client floor((2^31 − 1)/n) and scales w·clip to exactly that", () => {
    for (const n of [2, 3, 10, 100, 500, 10_000, MAX_COHORT]) {
      const p = secureParams({ n, clip: 0.25, maxWeight: 7 });
      expect(p.bound).toBe(Math.floor((2 ** 31 - 1) / n));
      expect(n * p.bound).toBeLessThan(2 ** 31);
      expect(p.maxWeight * p.clip * p.scale).toBeCloseTo(p.bound, 6);
    }
  });

  it("rejects cohorts, clips and weight caps it cannot serve", () => {
    expectCohortError(() => secureParams({ n: 1, clip: 1, maxWeight: 1 }), "INVALID_OPTION");
    expectCohortError(
      () => secureParams({ n: MAX_COHORT + 1, clip: 1, maxWeight: 1 }),
      "INVALID_OPTION",
      /65535/,
    );
    expectCohortError(() => secureParams({ n: 5, clip: 0, maxWeight: 1 }), "INVALID_OPTION");
    expectCohortError(() => secureParams({ n: 5, clip: NaN, maxWeight: 1 }), "INVALID_OPTION");
    expectCohortError(() => secureParams({ n: 5, clip: 1, maxWeight: 1.5 }), "INVALID_OPTION");
    // n · maxWeight must fit too: the weights are summed in the same 31 bits
    expectCohortError(
      () => secureParams({ n: MAX_COHORT, clip: 1, maxWeight: 40_000 }),
      "INVALID_OPTION",
      /maxWeight/,
    );
  });
});

describe("quantize and decode", () => {
  it("stays within maxQuantizationError of the exact weighted mean of clipped deltas", () => {
    const rng = createRng(11);
    for (const [n, clip, maxWeight] of [
      [3, 1, 10],
      [20, 0.05, 600],
      [200, 2, 1],
    ] as const) {
      const params = secureParams({ n, clip, maxWeight });
      const sizes = [50, 3];
      const deltas = Array.from({ length: n }, () =>
        sizes.map((s) => Float32Array.from({ length: s }, () => (rng() * 2 - 1) * 1.5 * clip)),
      );
      const counts = Array.from({ length: n }, () => 1 + Math.floor(rng() * 2 * maxWeight));
      const encoded = deltas.map((d, i) => quantizeUpdate(d, counts[i]!, params, sizes, rng));
      const decoded = decodeSum(sumOf(encoded, encodedLength(sizes)), params, sizes);
      const weights = counts.map((c) => Math.min(c, maxWeight));
      const sumWeights = weights.reduce((a, b) => a + b, 0);
      expect(decoded.sumWeights).toBe(sumWeights);
      const bound = maxQuantizationError(params, { contributors: n, sumWeights });
      expect(bound).toBeLessThanOrEqual(maxQuantizationError(params));
      let worst = 0;
      sizes.forEach((size, t) => {
        for (let j = 0; j < size; j++) {
          let exact = 0;
          deltas.forEach((d, i) => {
            const v = Math.max(-clip, Math.min(clip, d[t]![j]!));
            exact += (weights[i]! * v) / sumWeights;
          });
          worst = Math.max(worst, Math.abs(decoded.weightedMeanDelta[t]![j]! - exact));
        }
      });
      expect(worst).toBeLessThanOrEqual(bound);
    }
  });

  it("rounds stochastically without bias", () => {
    const params = secureParams({ n: MAX_COHORT, clip: 1, maxWeight: 32768 }); // scale = 1: coarse
    const value = 0.3 / params.scale; // 0.3 of a quantum
    const rng = createRng(5);
    let total = 0;
    const trials = 20_000;
    for (let i = 0; i < trials; i++) {
      total += quantizeUpdate([Float32Array.of(value)], 1, params, [1], rng)[1]!;
    }
    expect(total / trials).toBeCloseTo(Math.fround(value) * params.scale, 1); // σ ≈ 0.003
  });

  it("rejects wrong layouts, NaN and bad example counts", () => {
    const params = secureParams({ n: 3, clip: 1, maxWeight: 10 });
    const rng = createRng(1);
    const ok = [new Float32Array(4)];
    expectCohortError(() => quantizeUpdate(ok, 1, params, [5], rng), "SHAPE_MISMATCH");
    expectCohortError(() => quantizeUpdate(ok, 1, params, [4, 1], rng), "SHAPE_MISMATCH");
    expectCohortError(
      () => quantizeUpdate([Float32Array.of(0, NaN, 0, 0)], 1, params, [4], rng),
      "NON_FINITE",
    );
    expectCohortError(() => quantizeUpdate(ok, 0, params, [4], rng), "BAD_NUM_EXAMPLES");
    expectCohortError(() => decodeSum(new Uint32Array(5), params, [4]), "ROUND_FAILED");
  });
});

describe("overflow at the largest supported cohort", () => {
  it(`${MAX_COHORT} clients at the weight cap with deltas at ±clip (and beyond) never wrap`, () => {
    const n = MAX_COHORT;
    const params = secureParams({ n, clip: 3, maxWeight: Math.floor((2 ** 31 - 1) / n) });
    const sizes = [3];
    const rng = createRng(2);
    const extremes = [Float32Array.of(3, -3, 1e30)];
    const opposite = [Float32Array.of(-3, 3, -1e30)];
    const sum = new Uint32Array(encodedLength(sizes));
    const mixed = new Uint32Array(encodedLength(sizes));
    for (let i = 0; i < n; i++) {
      const q = quantizeUpdate(extremes, 10 ** 9, params, sizes, rng);
      const r = quantizeUpdate(i % 2 === 0 ? extremes : opposite, 10 ** 9, params, sizes, rng);
      for (let j = 0; j < q.length; j++) {
        sum[j]! += q[j]!;
        mixed[j]! += r[j]!;
      }
    }
    // The exact integer sums, and the largest one still inside the signed 32-bit range.
    expect(sum[0]).toBe(n * params.maxWeight);
    expect(sum[1]! | 0).toBe(n * params.bound);
    expect(sum[2]! | 0).toBe(-n * params.bound);
    expect(n * params.bound).toBeLessThan(2 ** 31);
    const decoded = decodeSum(sum, params, sizes);
    expect(Array.from(decoded.weightedMeanDelta[0]!)).toEqual([3, -3, 3]);
    const alternating = decodeSum(mixed, params, sizes).weightedMeanDelta[0]!;
    expect(Math.abs(alternating[0]! - 3 / n)).toBeLessThanOrEqual(maxQuantizationError(params));
  });
});
