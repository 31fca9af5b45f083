/** Shamir t-of-n secret sharing of byte strings over GF(2^16): at most 65,535 shares, the cohort limit. */
import { CohortError } from "../../protocol/errors.js";
import { randomBytes } from "../crypto.js";

/**
 * Largest number of shares of one secret, hence the largest cohort (and neighbourhood) the
 * secure aggregation supports: the non-zero elements of GF(2^16). Share `x` is a holder's
 * cohort index + 1.
 */
export const SHAMIR_MAX_SHARES = 65535;

const ORDER = 65535; // multiplicative group order of GF(2^16)
// x^16 + x^12 + x^3 + x + 1, a primitive polynomial: powers of x enumerate every non-zero element.
const POLYNOMIAL = 0x1100b;
const EXP = new Uint16Array(2 * ORDER);
const LOG = new Uint16Array(ORDER + 1);
{
  let v = 1;
  for (let i = 0; i < ORDER; i++) {
    EXP[i] = v;
    EXP[i + ORDER] = v; // doubled so a sum of two logs needs no reduction
    LOG[v] = i;
    v <<= 1;
    if (v & 0x10000) v ^= POLYNOMIAL;
  }
}

/** Multiply two elements of GF(2^16) (exported for the field's own tests). */
export function gfMul(a: number, b: number): number {
  return a === 0 || b === 0 ? 0 : EXP[LOG[a]! + LOG[b]!]!;
}

/** One share of a secret: the evaluation point `x` (1…65535) and the value bytes. */
export interface ShamirShare {
  x: number;
  y: Uint8Array;
}

function invalid(message: string): never {
  throw new CohortError("INVALID_OPTION", message);
}

function checkPoints(xs: readonly number[]): void {
  const seen = new Set<number>();
  for (const x of xs) {
    if (!Number.isInteger(x) || x < 1 || x > SHAMIR_MAX_SHARES) {
      invalid(`share point ${x} is outside 1…${SHAMIR_MAX_SHARES}`);
    }
    if (seen.has(x)) invalid(`share point ${x} appears twice`);
    seen.add(x);
  }
}

/**
 * Split `secret` (an even number of bytes: 16-bit symbols, big-endian) into one share per point
 * of `xs`; any `threshold` of them recover it, fewer reveal nothing. Coefficients come from
 * `random` (the CSPRNG by default).
 *
 * @returns the share values, in the order of `xs`.
 */
export function split(
  secret: Uint8Array,
  xs: readonly number[],
  threshold: number,
  random: (n: number) => Uint8Array = randomBytes,
): Uint8Array[] {
  if (!(secret instanceof Uint8Array) || secret.length === 0 || secret.length % 2 !== 0) {
    invalid("secret must be a non-empty Uint8Array of even length");
  }
  checkPoints(xs);
  if (!Number.isInteger(threshold) || threshold < 1 || threshold > xs.length) {
    invalid(`threshold ${threshold} must be in 1…${xs.length} (the number of shares)`);
  }
  const symbols = secret.length / 2;
  const rand = random(2 * symbols * (threshold - 1));
  // coefficient j (1…t−1) of symbol s at coeffs[(j − 1)·symbols + s]; coefficient 0 is the secret.
  const coeffs = new Uint16Array(symbols * (threshold - 1));
  for (let i = 0; i < coeffs.length; i++) coeffs[i] = (rand[2 * i]! << 8) | rand[2 * i + 1]!;
  const constant = new Uint16Array(symbols);
  for (let s = 0; s < symbols; s++) constant[s] = (secret[2 * s]! << 8) | secret[2 * s + 1]!;

  return xs.map((x) => {
    const logX = LOG[x]!;
    const y = new Uint8Array(secret.length);
    for (let s = 0; s < symbols; s++) {
      let acc = 0;
      for (let j = threshold - 1; j >= 1; j--) {
        acc = (acc === 0 ? 0 : EXP[LOG[acc]! + logX]!) ^ coeffs[(j - 1) * symbols + s]!;
      }
      acc = (acc === 0 ? 0 : EXP[LOG[acc]! + logX]!) ^ constant[s]!;
      y[2 * s] = acc >>> 8;
      y[2 * s + 1] = acc & 0xff;
    }
    return y;
  });
}

/**
 * Lagrange basis at 0 for distinct points `xs`, as discrete logarithms: λᵢ = Πⱼ≠ᵢ xⱼ/(xⱼ − xᵢ).
 * Reusable for every secret shared at the same points (the server caches it per point set).
 */
export function lagrangeAtZero(xs: readonly number[]): Uint16Array {
  checkPoints(xs);
  let sumLog = 0;
  for (const x of xs) sumLog += LOG[x]!;
  const logs = new Uint16Array(xs.length);
  for (let i = 0; i < xs.length; i++) {
    const xi = xs[i]!;
    let denominator = 0;
    for (let j = 0; j < xs.length; j++) if (j !== i) denominator += LOG[xs[j]! ^ xi]!;
    // log λᵢ = Σⱼ≠ᵢ log xⱼ − Σⱼ≠ᵢ log(xⱼ ⊕ xᵢ)  (subtraction is XOR in characteristic 2)
    const numerator = sumLog - LOG[xi]!;
    logs[i] = (((numerator - denominator) % ORDER) + ORDER) % ORDER;
  }
  return logs;
}

/** Recover a secret from share values `ys` at the points whose basis `lagrangeAtZero` gave. */
export function combineWithBasis(basis: Uint16Array, ys: readonly Uint8Array[]): Uint8Array {
  const first = ys[0];
  if (first === undefined || ys.length !== basis.length) {
    invalid(`${ys.length} share values for a basis of ${basis.length} points`);
  }
  const out = new Uint8Array(first.length);
  for (let s = 0; s < first.length; s += 2) {
    let acc = 0;
    for (let i = 0; i < ys.length; i++) {
      const y = ys[i]!;
      const v = (y[s]! << 8) | y[s + 1]!;
      if (v !== 0) acc ^= EXP[basis[i]! + LOG[v]!]!;
    }
    out[s] = acc >>> 8;
    out[s + 1] = acc & 0xff;
  }
  return out;
}

/**
 * Recover a secret from at least `threshold` shares with distinct points (the `threshold`
 * lowest points are used). Fewer shares throw `SECAGG_THRESHOLD`; mixed lengths or repeated
 * points throw `INVALID_MESSAGE`.
 */
export function combine(shares: readonly ShamirShare[], threshold: number): Uint8Array {
  if (!Number.isInteger(threshold) || threshold < 1) invalid(`threshold ${threshold} must be ≥ 1`);
  if (shares.length < threshold) {
    throw new CohortError(
      "SECAGG_THRESHOLD",
      `only ${shares.length} of the ${threshold} shares needed to reconstruct`,
    );
  }
  const sorted = [...shares].sort((a, b) => a.x - b.x).slice(0, threshold);
  const length = sorted[0]?.y.length ?? 0;
  for (let i = 0; i < sorted.length; i++) {
    const share = sorted[i]!;
    if (share.y.length !== length || length === 0 || length % 2 !== 0) {
      throw new CohortError("INVALID_MESSAGE", "shares have different or odd lengths");
    }
    if (i > 0 && sorted[i - 1]!.x === share.x) {
      throw new CohortError("INVALID_MESSAGE", `two shares at point ${share.x}`);
    }
  }
  return combineWithBasis(
    lagrangeAtZero(sorted.map((s) => s.x)),
    sorted.map((s) => s.y),
  );
}
