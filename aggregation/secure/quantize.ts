/** Fixed-point encoding of weighted updates as `[w, w·Δ]` in Z/2^32, with a bit budget no cohort sum can wrap. */
import { CohortError } from "../../protocol/errors.js";
import type { Rng } from "../random.js";
import type { Weights } from "../weights.js";
import { SHAMIR_MAX_SHARES } from "./shamir.js";

/** Largest cohort the secure aggregation supports (bounded by the Shamir field, GF(2^16)). */
export const MAX_COHORT = SHAMIR_MAX_SHARES;
/** Every coordinate of a sum of the whole cohort stays strictly inside ±2^31. */
const HALF_RANGE = 2 ** 31 - 1;

/** What `secureParams` needs: public, identical on every client and on the server. */
export interface SecureParamsInput {
  /** Cohort size (2 … 65,535). */
  n: number;
  /** Each delta coordinate is clipped to `[−clip, clip]` before encoding. */
  clip: number;
  /** FedAvg weights are `min(numExamples, maxWeight)`: a positive integer. */
  maxWeight: number;
}

/** The fixed-point parameters of a round. */
export interface SecureParams extends SecureParamsInput {
  /** Largest |value| one client may put in a coordinate: `floor((2^31 − 1) / n)`. */
  bound: number;
  /** Fixed-point scale of `w·Δ`: `bound / (maxWeight · clip)`, so `|w·Δ·scale| ≤ bound`. */
  scale: number;
}

/**
 * Derive the bit budget from cohort size, clip and weight cap. Each client's coordinates are at
 * most `bound = floor((2^31 − 1)/n)` in absolute value, so the sum of all `n` clients satisfies
 * |Σ| ≤ n·bound < 2^31 and the two's-complement sum modulo 2^32 never wraps. Throws
 * `INVALID_OPTION` when the inputs are out of range or `maxWeight` itself exceeds `bound`.
 */
export function secureParams(input: SecureParamsInput): SecureParams {
  const { n, clip, maxWeight } = input;
  if (!Number.isInteger(n) || n < 2 || n > MAX_COHORT) {
    throw new CohortError(
      "INVALID_OPTION",
      `cohort size ${n} must be an integer in 2…${MAX_COHORT}`,
    );
  }
  if (typeof clip !== "number" || !Number.isFinite(clip) || clip <= 0) {
    throw new CohortError("INVALID_OPTION", `clip must be a finite positive number, got ${clip}`);
  }
  const bound = Math.floor(HALF_RANGE / n);
  if (!Number.isInteger(maxWeight) || maxWeight < 1 || maxWeight > bound) {
    throw new CohortError(
      "INVALID_OPTION",
      `maxWeight ${maxWeight} must be an integer in 1…${bound} for a cohort of ${n} (2^31 / n)`,
    );
  }
  return { n, clip, maxWeight, bound, scale: bound / (maxWeight * clip) };
}

/**
 * Largest error of one coordinate of the decoded weighted mean against the exact weighted mean
 * of the clipped deltas: stochastic rounding moves each client's `w·Δ·scale` by less than 1, so
 * the mean moves by less than `contributors / (scale · sumWeights)`, plus float32 rounding of
 * the result (`clip · 2^−24`). With no arguments: the worst case, every weight 1 (`1/scale`).
 */
export function maxQuantizationError(
  params: SecureParams,
  sum: { contributors: number; sumWeights: number } = { contributors: 1, sumWeights: 1 },
): number {
  return sum.contributors / (params.scale * sum.sumWeights) + params.clip * 2 ** -24;
}

/** The FedAvg weight of a client: `numExamples` capped at `maxWeight`. */
export function clientWeight(numExamples: number, params: SecureParams): number {
  if (!Number.isSafeInteger(numExamples) || numExamples < 1) {
    throw new CohortError(
      "BAD_NUM_EXAMPLES",
      `numExamples must be a positive integer, got ${numExamples}`,
    );
  }
  return Math.min(numExamples, params.maxWeight);
}

/** Number of words of an encoded update: the weight, then every delta coordinate. */
export function encodedLength(tensorSizes: readonly number[]): number {
  return 1 + tensorSizes.reduce((a, b) => a + b, 0);
}

/**
 * Encode `[w, w·clip(Δ)·scale]` as two's-complement words mod 2^32, rounding each coordinate
 * stochastically (up with probability equal to its fractional part, so unbiased) with `rng`.
 * Throws `SHAPE_MISMATCH` when `delta` differs from `tensorSizes`, `NON_FINITE` on NaN/±∞.
 */
export function quantizeUpdate(
  delta: Weights,
  numExamples: number,
  params: SecureParams,
  tensorSizes: readonly number[],
  rng: Rng,
): Uint32Array {
  const w = clientWeight(numExamples, params);
  if (delta.length !== tensorSizes.length) {
    throw new CohortError(
      "SHAPE_MISMATCH",
      `delta has ${delta.length} tensors but the round expects ${tensorSizes.length}`,
    );
  }
  const out = new Uint32Array(encodedLength(tensorSizes));
  out[0] = w;
  const { clip, scale, bound } = params;
  const factor = w * scale;
  let offset = 1;
  for (let t = 0; t < delta.length; t++) {
    const tensor = delta[t]!;
    if (tensor.length !== tensorSizes[t]) {
      throw new CohortError(
        "SHAPE_MISMATCH",
        `delta[${t}] has ${tensor.length} values but the round expects ${tensorSizes[t]}`,
      );
    }
    for (let j = 0; j < tensor.length; j++) {
      const v = tensor[j]!;
      if (!Number.isFinite(v)) {
        throw new CohortError("NON_FINITE", `delta[${t}] holds ${v} at index ${j}`);
      }
      const x = (v > clip ? clip : v < -clip ? -clip : v) * factor;
      const floor = Math.floor(x);
      let q = floor + (rng() < x - floor ? 1 : 0);
      // Float rounding could push |x| a hair past the bound; the budget must hold exactly.
      if (q > bound) q = bound;
      else if (q < -bound) q = -bound;
      out[offset++] = q; // a negative q is stored as 2^32 + q: two's complement for free
    }
  }
  return out;
}

/** A decoded secure aggregate. */
export interface DecodedAggregate {
  /** Σ w over the contributors (exact). */
  sumWeights: number;
  /** Σ w·Δ / Σ w, one Float32Array per tensor in the model's layout. */
  weightedMeanDelta: Float32Array[];
  /** Σ w·Δ itself, in float64: what a linear aggregator adds up. */
  weightedSum: Float64Array[];
}

/**
 * Decode an unmasked sum of encoded updates into the weighted mean delta. Throws `ROUND_FAILED`
 * when the length or the weight sum is impossible (a wrong mask was removed).
 */
export function decodeSum(
  sum: Uint32Array,
  params: SecureParams,
  tensorSizes: readonly number[],
): DecodedAggregate {
  if (sum.length !== encodedLength(tensorSizes)) {
    throw new CohortError(
      "ROUND_FAILED",
      `aggregate has ${sum.length} words, expected ${encodedLength(tensorSizes)}`,
    );
  }
  const sumWeights = sum[0]!;
  if (sumWeights < 1 || sumWeights > params.n * params.maxWeight) {
    throw new CohortError(
      "ROUND_FAILED",
      `aggregate weight ${sumWeights} is outside 1…${params.n * params.maxWeight}: masks did not cancel`,
    );
  }
  const divisor = params.scale * sumWeights;
  let offset = 1;
  const weightedSum: Float64Array[] = [];
  const weightedMeanDelta = tensorSizes.map((size) => {
    const out = new Float32Array(size);
    const raw = new Float64Array(size);
    for (let j = 0; j < size; j++) {
      const word = sum[offset++]! | 0; // `| 0`: signed
      raw[j] = word / params.scale;
      out[j] = word / divisor;
    }
    weightedSum.push(raw);
    return out;
  });
  return { sumWeights, weightedMeanDelta, weightedSum };
}
