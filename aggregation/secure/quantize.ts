/**
 * Fixed-point encoding of weighted updates as `[w, w·Δ]` in Z/2^32, with a bit budget no cohort
 * sum can wrap; with a linear quantizer, `[w, rms, w·R(Δ)]` with the body in b-bit words.
 */
import { CohortError } from "../../protocol/errors.js";
import type { Rng } from "../random.js";
import type { Weights } from "../weights.js";
import { chunksOf, rotateBorrowed, unrotate, type Chunks } from "../codecs/rotation.js";
import { flatten } from "../codecs/layout.js";
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
  /** A linear quantizer (the task's `q8`/`q4`/`q2` codec): then `tensorSizes` must be given. */
  quantizer?: SecureQuantizer;
}

/**
 * The secure path of a quantizing codec (DDGauss-style: rotation, one shared scale, stochastic
 * rounding): every member rotates its delta with the round's seed, clips each rotated coordinate
 * to ±clip and rounds `w·y·scale` to an integer of at most `2^(bits−1) − 1`; the masked words
 * then need only `bits + log₂ n` bits, and the header carries the member's RMS so the
 * coordinator learns the cohort's mean RMS (from the sum alone) to set the next round's clip.
 */
export interface SecureQuantizer {
  /** Bits of one member's coordinate, 2 … 32 (32: as many as the cohort's sum allows). */
  bits: number;
  /** Rotation chunk, a power of two (the codec's `chunk`). */
  chunk: number;
  /** The round's rotation seed (every member rotates alike). */
  seed: number;
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
  /**
   * Largest |value| one client may put in a coordinate: `floor((2^31 − 1) / n)`, or with a
   * quantizer `2^(bits−1) − 1` (at most that).
   */
  bound: number;
  /** Fixed-point scale of `w·Δ`: `bound / (maxWeight · clip)`, so `|w·Δ·scale| ≤ bound`. */
  scale: number;
  /** Distributed DP noise in integer units, when the round has it. */
  noise?: NoiseParams;
  /** Bits of every body word on the wire (32 without a quantizer); header words are 32 bits. */
  wordBits: number;
  /** Header words: the weight, then (with a quantizer) the member's RMS. */
  headerWords: 1 | 2;
  /** The rotation's chunks, with a quantizer. */
  chunks: Chunks | null;
  /** Fixed-point scale of the RMS header word, with a quantizer. */
  rmsScale: number;
}

/** A member's RMS header is capped at this many clips (it only sets the next round's clip). */
const RMS_CAP = 64;
const MIN_CHUNK = 16;
const MAX_CHUNK = 1 << 20;

/** The fewest bits whose signed range holds ±`magnitude` (two's complement, at most 32). */
export function signedBits(magnitude: number): number {
  let bits = 2;
  while (bits < 32 && 2 ** (bits - 1) <= magnitude) bits++;
  return bits;
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
  if (input.quantizer !== undefined) return quantizedParams(input, input.quantizer, bound);
  const plain = { wordBits: 32, headerWords: 1, chunks: null, rmsScale: 0 } as const;
  if (input.dp !== undefined) return { ...noisyParams(input, input.dp), ...plain };
  return { n, clip, maxWeight, bound, scale: bound / (maxWeight * clip), ...plain };
}

/** Parameters with a linear quantizer: per-member levels from its bits, words from n·levels. */
function quantizedParams(
  input: SecureParamsInput,
  q: SecureQuantizer,
  maxBound: number,
): SecureParams {
  const { n, clip, maxWeight } = input;
  const bad = (why: string) => new CohortError("INVALID_OPTION", `secure quantizer: ${why}`);
  if (!Number.isInteger(q.bits) || q.bits < 2 || q.bits > 32) {
    throw bad(`bits ${q.bits} must be an integer in 2…32`);
  }
  if (
    !Number.isInteger(q.chunk) ||
    q.chunk < MIN_CHUNK ||
    q.chunk > MAX_CHUNK ||
    (q.chunk & (q.chunk - 1)) !== 0
  ) {
    throw bad(`chunk ${q.chunk} must be a power of two in ${MIN_CHUNK}…${MAX_CHUNK}`);
  }
  if (!Number.isInteger(q.seed) || q.seed < 0 || q.seed > 0xffffffff) {
    throw bad(`seed ${q.seed} must be a 32-bit unsigned integer`);
  }
  if (input.dp !== undefined) {
    throw bad("distributed noise needs the full 32-bit words; use the float32 codec with it");
  }
  if (input.tensorSizes === undefined) throw bad("the tensor sizes are needed");
  const d = input.tensorSizes.reduce((a, b) => a + b, 0);
  const chunks = chunksOf(Math.max(1, d), q.chunk);
  const bound = q.bits >= 32 ? maxBound : Math.min(maxBound, 2 ** (q.bits - 1) - 1);
  return {
    ...input,
    bound,
    scale: bound / (maxWeight * clip),
    wordBits: signedBits(n * bound),
    headerWords: 2,
    chunks,
    rmsScale: maxBound / (RMS_CAP * clip),
  };
}

/**
 * Fixed point with room for distributed noise: the signal of n members (each coordinate at most
 * `min(clip, dp.clip)·scale`) plus NOISE_TAIL standard deviations of the noise of all n stays
 * inside ±2^31, and each member's noise share is the minimum contributors' variance over their
 * number.
 */
function noisyParams(
  input: SecureParamsInput,
  dp: DistributedNoise,
): Omit<SecureParams, "wordBits" | "headerWords" | "chunks" | "rmsScale"> {
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

/** Words of an update encoded with `params`: the header, then one per (rotated) coordinate. */
export function encodedWords(params: SecureParams, tensorSizes: readonly number[]): number {
  return params.chunks === null
    ? encodedLength(tensorSizes)
    : params.headerWords + params.chunks.padded;
}

/** Check `delta` against the round's tensor sizes: `SHAPE_MISMATCH`, `NON_FINITE`. */
function checkDelta(delta: Weights, tensorSizes: readonly number[]): void {
  if (delta.length !== tensorSizes.length) {
    throw new CohortError(
      "SHAPE_MISMATCH",
      `delta has ${delta.length} tensors but the round expects ${tensorSizes.length}`,
    );
  }
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
    }
  }
}

/**
 * Round `values · shrink`, clipped to ±clip and times `factor`, into `out` from `offset`:
 * stochastically (up with probability equal to the fractional part, so unbiased), each integer
 * held to ±bound. A negative integer is stored as 2^32 + q (two's complement for free).
 */
function roundInto(
  out: Uint32Array,
  offset: number,
  values: ArrayLike<number>,
  shrink: number,
  params: SecureParams,
  factor: number,
  rng: Rng,
): number {
  const { clip, bound } = params;
  for (let j = 0; j < values.length; j++) {
    const y = values[j]! * shrink;
    const x = (y > clip ? clip : y < -clip ? -clip : y) * factor;
    const floor = Math.floor(x);
    let q = floor + (rng() < x - floor ? 1 : 0);
    // Float rounding could push |x| a hair past the bound; the budget must hold exactly.
    if (q > bound) q = bound;
    else if (q < -bound) q = -bound;
    out[offset++] = q;
  }
  return offset;
}

/**
 * Encode `[w, w·clip(Δ)·scale]` as two's-complement words mod 2^32, rounding each coordinate
 * stochastically with `rng`; with a quantizer, `[w, rms(Δ)·rmsScale, w·clip(R·Δ)·scale]`, R the
 * round's rotation. Throws `SHAPE_MISMATCH` when `delta` differs from `tensorSizes`,
 * `NON_FINITE` on NaN/±∞.
 */
export function quantizeUpdate(
  delta: Weights,
  numExamples: number,
  params: SecureParams,
  tensorSizes: readonly number[],
  rng: Rng,
): Uint32Array {
  const w = clientWeight(numExamples, params);
  checkDelta(delta, tensorSizes);
  const out = new Uint32Array(encodedWords(params, tensorSizes));
  out[0] = w;
  const factor = w * params.scale;
  if (params.chunks !== null) {
    const y = rotateBorrowed(flatten(delta), params.chunks, params.quantizer!.seed);
    let squares = 0;
    for (let i = 0; i < y.length; i++) squares += y[i]! * y[i]!;
    const d = params.chunks.n;
    const rms = Math.min(Math.sqrt(squares / Math.max(1, d)), RMS_CAP * params.clip);
    out[1] = Math.round(rms * params.rmsScale);
    roundInto(out, 2, y, 1, params, factor, rng);
    return out;
  }
  const { noise } = params;
  // Distributed DP: the update is clipped to L2 norm C here, whatever the caller did.
  let shrink = 1;
  if (noise !== undefined) {
    const norm = l2Norm(delta);
    if (norm > noise.clip) shrink = noise.clip / norm;
  }
  let offset = 1;
  for (const tensor of delta) offset = roundInto(out, offset, tensor, shrink, params, factor, rng);
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
  /**
   * Σ w·Δ itself, in float64: what a linear aggregator adds up (with a quantizer, rotated back
   * in float32 first).
   */
  weightedSum: Float64Array[];
  /** With a quantizer: Σ of the contributors' RMS (over the contributors: their mean RMS). */
  rmsSum?: number;
}

/**
 * Decode an unmasked sum of encoded updates into the weighted mean delta (each body word read
 * as a signed `wordBits`-bit integer, then rotated back with a quantizer). Throws
 * `ROUND_FAILED` when the length or the weight sum is impossible (a wrong mask was removed).
 */
export function decodeSum(
  sum: Uint32Array,
  params: SecureParams,
  tensorSizes: readonly number[],
): DecodedAggregate {
  const expected = encodedWords(params, tensorSizes);
  if (sum.length !== expected) {
    throw new CohortError(
      "ROUND_FAILED",
      `aggregate has ${sum.length} words, expected ${expected}`,
    );
  }
  const sumWeights = sum[0]!;
  if (sumWeights < 1 || sumWeights > params.n * params.maxWeight) {
    throw new CohortError(
      "ROUND_FAILED",
      `aggregate weight ${sumWeights} is outside 1…${params.n * params.maxWeight}: masks did not cancel`,
    );
  }
  // Sign-extend from wordBits: the sum is only meaningful modulo 2^wordBits.
  const shift = 32 - params.wordBits;
  const body = sum.subarray(params.headerWords);
  let flat: Float32Array | Float64Array;
  if (params.chunks !== null) {
    const rotated = new Float32Array(body.length);
    for (let j = 0; j < body.length; j++)
      rotated[j] = ((body[j]! << shift) >> shift) / params.scale;
    flat = unrotate(rotated, params.chunks, params.quantizer!.seed);
  } else {
    flat = new Float64Array(body.length);
    for (let j = 0; j < body.length; j++) flat[j] = (body[j]! | 0) / params.scale;
  }
  let offset = 0;
  const weightedSum: Float64Array[] = [];
  const weightedMeanDelta = tensorSizes.map((size) => {
    const out = new Float32Array(size);
    const raw = new Float64Array(size);
    for (let j = 0; j < size; j++) {
      const v = flat[offset++]!;
      raw[j] = v;
      out[j] = v / sumWeights;
    }
    weightedSum.push(raw);
    return out;
  });
  return {
    sumWeights,
    weightedMeanDelta,
    weightedSum,
    ...(params.chunks === null ? {} : { rmsSum: (sum[1]! | 0) / params.rmsScale }),
  };
}
