/**
 * Distributed DP under secure aggregation: the Skellam mechanism (Agarwal, Kairouz and Liu
 * 2021). Each client adds Skellam noise Sk(μ) = Poisson(μ/2) − Poisson(μ/2) (variance μ) to its
 * integer-encoded update; Skellam is closed under summation, so the unmasked sum of s clients
 * carries Sk(s·μ) exactly, whoever dropped out. The coordinator never sees a noiseless sum.
 *
 * Accounting: for integer orders α ≥ 2 and integer sensitivities Δ₁, Δ₂, the mechanism with
 * total variance μ satisfies (their Theorem 3.5)
 *   ε(α) ≤ α·Δ₂²/(2μ) + min{((2α − 1)·Δ₂² + 6·Δ₁)/(4μ²), 3·Δ₁/(2μ)},
 * and since (2α − 1)Δ₂² + 6Δ₁ ≤ α(2Δ₂² + 3Δ₁) for α ≥ 2, that curve lies below a Gaussian
 * mechanism's α/(2z²) with 1/z² = Δ₂²/μ + (2Δ₂² + 3Δ₁)/(2μ²): the effective multiplier z the
 * accountant composes. In the encodings used here (μ of order 10¹⁴) the surcharge moves z by
 * about one part in 10¹⁵.
 */
import { CohortError } from "../../protocol/errors.js";

/** 1/z² of the Skellam mechanism with total variance `variance` (see the module comment). */
function inverseSquare(variance: number, l2: number, l1: number): number {
  return (l2 * l2) / variance + (2 * l2 * l2 + 3 * l1) / (2 * variance * variance);
}

/**
 * The Gaussian noise multiplier whose RDP curve bounds the Skellam mechanism's with total
 * variance `variance` and sensitivities `l2`, `l1` (integer units). 0 with no noise.
 */
export function skellamMultiplier(variance: number, l2: number, l1: number): number {
  if (!(variance > 0)) return 0;
  return 1 / Math.sqrt(inverseSquare(variance, l2, l1));
}

/**
 * The smallest total variance whose effective multiplier is `z`: the positive root of
 * (2Δ₂² + 3Δ₁)/2 · x² + Δ₂² · x − 1/z² = 0 in x = 1/μ, in its cancellation-free form.
 */
export function skellamVarianceFor(z: number, l2: number, l1: number): number {
  if (!(z >= 0) || !Number.isFinite(z)) {
    throw new CohortError("INVALID_OPTION", `noise multiplier must be finite and ≥ 0, got ${z}`);
  }
  if (z === 0) return 0;
  const a = (2 * l2 * l2 + 3 * l1) / 2;
  const b = l2 * l2;
  const c = 1 / (z * z);
  const x = (2 * c) / (b + Math.sqrt(b * b + 4 * a * c));
  return 1 / x;
}

/** log k! for integers k ≥ 0 (Stirling's series past 20, exact below). */
const SMALL_LOG_FACTORIALS = (() => {
  const out = [0];
  for (let k = 1; k <= 20; k++) out.push(out[k - 1]! + Math.log(k));
  return out;
})();

/**
 * log P(X = k) for X ~ Poisson(λ), accurate to rounding even where λ is 10¹², by writing
 * k = λ(1 + t) and summing (1 + t)·log(1 + t) − t as a series when t is small.
 */
export function poissonLogPmf(
  k: number,
  lambda: number,
  logTwoPiLambda = Math.log(2 * Math.PI * lambda),
): number {
  if (k < 0) return -Infinity;
  if (k <= 20) return -lambda + k * Math.log(lambda) - SMALL_LOG_FACTORIALS[k]!;
  const t = (k - lambda) / lambda;
  let h: number; // (1 + t)·log(1 + t) − t
  if (Math.abs(t) < 0.1) {
    h = 0;
    let power = t * t;
    for (let j = 2; j < 40; j++) {
      const term = power / (j * (j - 1));
      h += j % 2 === 0 ? term : -term;
      if (Math.abs(term) < 1e-18 * Math.abs(h)) break;
      power *= t;
    }
  } else {
    h = (1 + t) * Math.log1p(t) - t;
  }
  // log k! = k log k − k + ½ log(2πk) + 1/(12k) − 1/(360k³) + 1/(1260k⁵), so
  // −λ + k log λ − log k! = −λ·h − ½ log(2πk) − the series.
  const k2 = k * k;
  const series = 1 / (12 * k) - 1 / (360 * k * k2) + 1 / (1260 * k * k2 * k2);
  // log(2πk) = log(2πλ) + log(1 + t), the latter by its series where t is tiny.
  const logK =
    Math.abs(t) < 1e-4 ? logTwoPiLambda + t * (1 - t * (0.5 - t / 3)) : Math.log(2 * Math.PI * k);
  return -lambda * h - 0.5 * logK - series;
}

/**
 * One Poisson(λ) draw from `uniform` (values in [0, 1)): inversion below λ = 10, Hörmann's
 * transformed rejection with squeeze (PTRS, 1993) above it.
 */
export function samplePoisson(lambda: number, uniform: () => number): number {
  if (lambda <= 0) return 0;
  if (lambda < 10) {
    let k = 0;
    let p = Math.exp(-lambda);
    let cdf = p;
    const u = uniform();
    while (u > cdf && k < 1000) {
      k++;
      p *= lambda / k;
      cdf += p;
    }
    return k;
  }
  return poissonSampler(lambda, uniform)();
}

/** Fill `words` from the platform's cryptographic generator (64 KiB per call, as WebCrypto allows). */
export function fillRandom(words: Uint32Array): void {
  for (let at = 0; at < words.length; at += 16_384) {
    globalThis.crypto.getRandomValues(words.subarray(at, Math.min(words.length, at + 16_384)));
  }
}

/**
 * Add an independent Sk(variance) draw to each of `words[start…]`, modulo 2^32, drawing from
 * `fill` (the cryptographic generator unless a test passes another). The bulk form of
 * `sampleSkellam`: the same inversion and PTRS, with their constants computed once.
 */
export function addSkellam(
  words: Uint32Array,
  start: number,
  variance: number,
  fill: (words: Uint32Array) => void = fillRandom,
): void {
  if (!(variance > 0)) return;
  const source = new Uint32Array(16_384);
  let at = source.length;
  const uniform = () => {
    if (at === source.length) {
      fill(source);
      at = 0;
    }
    return (source[at++]! + 0.5) * 2.3283064365386963e-10; // in (0, 1)
  };
  const draw = poissonSampler(variance / 2, uniform);
  for (let i = start; i < words.length; i++) words[i]! += draw() - draw();
}

/** A Poisson(λ) sampler over `uniform`, its PTRS constants computed once. */
function poissonSampler(lambda: number, uniform: () => number): () => number {
  if (lambda < 10) return () => samplePoisson(lambda, uniform);
  const slam = Math.sqrt(lambda);
  const b = 0.931 + 2.53 * slam;
  const a = -0.059 + 0.02483 * b;
  const logInvAlpha = Math.log(1.1239 + 1.1328 / (b - 3.4));
  const vr = 0.9277 - 3.6224 / (b - 2);
  const twoA = 2 * a;
  const logTwoPiLambda = Math.log(2 * Math.PI * lambda);
  return () => {
    for (;;) {
      const u = uniform() - 0.5;
      const v = uniform();
      const us = 0.5 - Math.abs(u);
      const k = Math.floor((twoA / us + b) * u + lambda + 0.43);
      if (us >= 0.07 && v <= vr) return k;
      if (k < 0 || (us < 0.013 && v > us)) continue;
      if (
        Math.log(v) + logInvAlpha - Math.log(a / (us * us) + b) <=
        poissonLogPmf(k, lambda, logTwoPiLambda)
      ) {
        return k;
      }
    }
  };
}

/** One Sk(variance) draw: the difference of two Poisson(variance / 2). */
export function sampleSkellam(variance: number, uniform: () => number): number {
  const half = variance / 2;
  return samplePoisson(half, uniform) - samplePoisson(half, uniform);
}
