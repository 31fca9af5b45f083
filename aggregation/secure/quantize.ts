/** Fixed-point encoding of weighted updates as `[w, w·Δ]` in Z/2^32, with a bit budget no cohort sum can wrap. */
import { CohortError } from "../../protocol/errors.js";
import type { Rng } from "../random.js";
import type { Weights } from "../weights.js";
import { addSkellam, skellamMultiplier, skellamVarianceFor } from "../privacy/skellam.js";
import { l2Norm } from "../privacy/noise.js";
import { SHAMIR_MAX_SHARES } from "./shamir.js";

/** Largest cohort the secure aggregation supports (bounded by the Shamir field, GF(2^16)). */
export const MAX_COHORT = SHAMIR_MAX_SHARES;
/** Every coordinate of a sum of the whole cohort stays strictly inside ±2^31. */
const HALF_RANGE = 2 ** 31 - 1;
/**
 * Standard deviations of the summed noise kept free above the signal, so the sum does not wrap:
 * a Gaussian-like tail past 12σ has probability about 4·10⁻³³ per coordinate.
 */
const NOISE_TAIL = 12;

/**
 * Distributed DP (the Skellam mechanism): every member clips its update to L2 norm `clip`
 * and adds its share of Skellam noise in the integer domain, sized so that any `minContributors`
 * members' noise together has multiplier `noise` (a sum with more carries more).
 */
export interface DistributedNoise {
  /** L2 norm every update is clipped to, in model units. */
  clip: number;
  /** The noise multiplier z of a sum of `minContributors` members. */
  noise: number;
  /** The fewest contributors a round may release with; members refuse to unmask fewer. */
  minContributors: number;
}

/** What `secureParams` needs: public, identical on every client and on the server. */
export interface SecureParamsInput {
  /** Cohort size (2 … 65,535). */
  n: number;
  /** Each delta coordinate is clipped to `[−clip, clip]` before encoding. */
  clip: number;
  /** FedAvg weights are `min(numExamples, maxWeight)`: a positive integer. */
  maxWeight: number;
  /** Distributed DP noise (then `maxWeight` must be 1 and `tensorSizes` given). */
  dp?: DistributedNoise;
  /** Values per tensor: the dimension the rounding's effect on sensitivity depends on. */
  tensorSizes?: readonly number[];
}

/** The integer-domain view of distributed noise: what each member adds and what it protects. */
export interface NoiseParams extends DistributedNoise {
  /** Skellam variance each member adds to every coordinate (integer units). */
  variance: number;
  /** L2 sensitivity of one member's encoded update: clip·scale plus √d for the rounding. */
  l2: number;
  /** L1 sensitivity: √d · l2. */
  l1: number;
}

/** The fixed-point parameters of a round. */
export interface SecureParams extends SecureParamsInput {
  /** Largest |value| one client may put in a coordinate: `floor((2^31 − 1) / n)`. */
  bound: number;
  /** Fixed-point scale of `w·Δ`: `bound / (maxWeight · clip)`, so `|w·Δ·scale| ≤ bound`. */
  scale: number;
  /** Distributed DP noise in integer units, when the round has it. */
  noise?: NoiseParams;
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
  if (input.dp !== undefined) return noisyParams(input, input.dp);
  return { n, clip, maxWeight, bound, scale: bound / (maxWeight * clip) };
}

/**
 * Fixed point with room for distributed noise: the signal of n members (each coordinate at most
 * `min(clip, dp.clip)·scale`) plus NOISE_TAIL standard deviations of the noise of all n stays
 * inside ±2^31, and each member's noise share is the minimum contributors' variance over their
 * number.
 */
function noisyParams(input: SecureParamsInput, dp: DistributedNoise): SecureParams {
  const { n, clip, maxWeight } = input;
  const bad = (why: string) => new CohortError("INVALID_OPTION", `distributed noise: ${why}`);
  if (!(dp.clip > 0) || !Number.isFinite(dp.clip)) throw bad(`clip ${dp.clip} must be > 0`);
  if (!(dp.noise >= 0) || !Number.isFinite(dp.noise)) throw bad(`noise ${dp.noise} must be ≥ 0`);
  if (!Number.isInteger(dp.minContributors) || dp.minContributors < 1 || dp.minContributors > n) {
    throw bad(`minContributors ${dp.minContributors} must be an integer in 1…${n}`);
  }
  if (maxWeight !== 1) throw bad(`every update weighs one: maxWeight is ${maxWeight}`);
  const sizes = input.tensorSizes;
  if (sizes === undefined) throw bad("the tensor sizes are needed");
  const d = sizes.reduce((a, b) => a + b, 0);
  const coordinate = Math.min(clip, dp.clip);
  const rootD = Math.sqrt(d);
  // The noise of all n members, relative to the minimum contributors' (z in units of l2).
  const zAll = dp.noise * Math.sqrt(n / dp.minContributors) * (1 + 1e-9);
  let scale =
    (HALF_RANGE - n - NOISE_TAIL * zAll * rootD) / (n * coordinate + NOISE_TAIL * zAll * dp.clip);
  for (let attempt = 0; attempt < 20 && scale > 0; attempt++) {
    const l2 = dp.clip * scale + rootD;
    const l1 = rootD * l2;
    const variance = skellamVarianceFor(dp.noise, l2, l1) / dp.minContributors;
    const bound = Math.floor((HALF_RANGE - NOISE_TAIL * Math.sqrt(n * variance)) / n);
    if (bound >= Math.ceil(coordinate * scale) && bound >= 1) {
      return {
        n,
        clip: coordinate,
        maxWeight,
        bound,
        scale,
        noise: { ...dp, variance, l2, l1 },
      };
    }
    scale *= 1 - 1e-6;
  }
  throw bad(
    `noise multiplier ${dp.noise} over ${dp.minContributors} of ${n} members leaves no room in 32 bits`,
  );
}

/**
 * The noise multiplier a sum of `contributors` members carries under `noise`, as the accountant
 * counts it: `sensitivity` 1 where neighbours add or remove a member (Poisson sampling), 2 where
 * they replace one (fixed-size sampling).
 */
export function sumMultiplier(noise: NoiseParams, contributors: number, sensitivity = 1): number {
  return skellamMultiplier(
    contributors * noise.variance,
    sensitivity * noise.l2,
    sensitivity * noise.l1,
  );
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
  const { clip, scale, bound, noise } = params;
  const factor = w * scale;
  // Distributed DP: the update is clipped to L2 norm C here, whatever the caller did.
  let shrink = 1;
  if (noise !== undefined) {
    // A non-finite norm leaves shrink at 1 or 0; the loop below then refuses the value itself.
    const norm = l2Norm(delta);
    if (norm > noise.clip) shrink = noise.clip / norm;
  }
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
      const y = v * shrink;
      const x = (y > clip ? clip : y < -clip ? -clip : y) * factor;
      const floor = Math.floor(x);
      let q = floor + (rng() < x - floor ? 1 : 0);
      // Float rounding could push |x| a hair past the bound; the budget must hold exactly.
      if (q > bound) q = bound;
      else if (q < -bound) q = -bound;
      out[offset++] = q; // a negative q is stored as 2^32 + q: two's complement for free
    }
  }
  // The member's share of the round's noise, from the cryptographic generator, mod 2^32.
  if (noise !== undefined) addSkellam(out, 1, noise.variance);
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
