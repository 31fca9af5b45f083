/**
 * A Rényi-DP accountant for the subsampled Gaussian mechanism (Mironov 2017; Mironov, Talwar
 * and Zhang 2019): the RDP of one round at each order, composed over rounds by addition, and
 * converted to (ε, δ) with the conversion of Balle et al. 2020 (Prop. 12; also Asoodeh et al.
 * 2020, eq. 20), as the reference libraries do. Pure arithmetic on numbers: no I/O, no tensors.
 */
import { CohortError } from "../../protocol/errors.js";

/**
 * The orders the accountant tracks: 1.1 … 10.9 in steps of 0.1, 11 … 63, and 128, 256, 512,
 * 1,024 (the set the reference accountants use by default, so the ε agree).
 */
export const DEFAULT_ORDERS: readonly number[] = [
  ...Array.from({ length: 99 }, (_, i) => 1 + (i + 1) / 10),
  ...Array.from({ length: 53 }, (_, i) => 11 + i),
  128,
  256,
  512,
  1024,
];

/** How clients are sampled each round, as the analysis needs it. */
export type Sampling =
  /** Each of the population's members independently with probability q (add/remove one). */
  | { kind: "poisson"; q: number }
  /** A fixed-size sample of m of the population's n, without replacement (replace one). */
  | { kind: "fixed"; q: number };

/** log(exp(a) + exp(b)), exact for −∞ arguments. */
function logAdd(a: number, b: number): number {
  const hi = Math.max(a, b);
  const lo = Math.min(a, b);
  if (lo === -Infinity) return hi;
  return hi + Math.log1p(Math.exp(lo - hi));
}

// Lanczos approximation (g = 7, n = 9): log Γ(x) to about 15 digits for x > 0.
const LANCZOS = [
  0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313,
  -176.61502916214059, 12.507343278686905, -0.13857109526572012, 9.9843695780195716e-6,
  1.5056327351493116e-7,
];

/** log Γ(x) for x > 0. */
export function logGamma(x: number): number {
  if (x < 0.5) return Math.log(Math.PI / Math.abs(Math.sin(Math.PI * x))) - logGamma(1 - x);
  const z = x - 1;
  let a = LANCZOS[0]!;
  const t = z + 7.5;
  for (let i = 1; i < 9; i++) a += LANCZOS[i]! / (z + i);
  return 0.5 * Math.log(2 * Math.PI) + (z + 0.5) * Math.log(t) - t + Math.log(a);
}

/** log of the binomial coefficient C(n, k), for real n ≥ k ≥ 0. */
function logComb(n: number, k: number): number {
  return logGamma(n + 1) - logGamma(k + 1) - logGamma(n - k + 1);
}

/**
 * erfc(x) for |x| < 6 by its continued fraction / series (W. J. Cody's rational approximations
 * would do as well); relative error about 1e-15 where it matters here.
 */
function erfc(x: number): number {
  if (x < 0) return 2 - erfc(-x);
  if (x < 0.5) {
    // erf by its Taylor series, then 1 − erf.
    let term = x;
    let sum = x;
    const x2 = x * x;
    for (let n = 1; n < 60; n++) {
      term *= -x2 / n;
      const add = term / (2 * n + 1);
      sum += add;
      if (Math.abs(add) < 1e-17 * Math.abs(sum)) break;
    }
    return 1 - (2 / Math.sqrt(Math.PI)) * sum;
  }
  return Math.exp(-x * x) / (Math.sqrt(Math.PI) * erfcFraction(x));
}

/**
 * The continued fraction f(x) of erfc(x) = exp(−x²)/(√π f(x)), f = x + (1/2)/(x + 1/(x +
 * (3/2)/(x + …))), by Lentz's method (x ≥ 0.5).
 */
function erfcFraction(x: number): number {
  const tiny = 1e-300;
  let f = x;
  let c = x;
  let d = 0;
  for (let n = 1; n < 500; n++) {
    const an = n / 2;
    d = x + an * d;
    d = Math.abs(d) < tiny ? tiny : d;
    c = x + an / c;
    c = Math.abs(c) < tiny ? tiny : c;
    d = 1 / d;
    const delta = c * d;
    f *= delta;
    if (Math.abs(delta - 1) < 1e-16) break;
  }
  return f;
}

/** log erfc(x), accurate for large x (where erfc underflows). */
export function logErfc(x: number): number {
  if (x < 5) return Math.log(erfc(x));
  return -x * x - 0.5 * Math.log(Math.PI) - Math.log(erfcFraction(x));
}

/** log A_α for integer α (Mironov et al. 2019, §3.2). */
function logAInt(q: number, sigma: number, alpha: number): number {
  let logA = -Infinity;
  const log1mq = Math.log1p(-q);
  const logq = Math.log(q);
  for (let i = 0; i <= alpha; i++) {
    const coef = logComb(alpha, i) + i * logq + (alpha - i) * log1mq;
    logA = logAdd(logA, coef + (i * i - i) / (2 * sigma * sigma));
  }
  return logA;
}

/** A signed number in log space: sign · exp(log). */
interface Signed {
  positive: boolean;
  log: number;
}

/** a + b for signed numbers in log space. */
function signedAdd(a: Signed, b: Signed): Signed {
  if (a.log === -Infinity) return b;
  if (b.log === -Infinity) return a;
  if (a.positive === b.positive) return { positive: a.positive, log: logAdd(a.log, b.log) };
  const big: Signed = a.log >= b.log ? a : b;
  const small: Signed = a.log >= b.log ? b : a;
  if (big.log === small.log) return { positive: true, log: -Infinity };
  return { positive: big.positive, log: big.log + Math.log1p(-Math.exp(small.log - big.log)) };
}

/**
 * log A_α for fractional α: the two series of Mironov et al. 2019, §3.3, whose terms carry the
 * signs of the generalised binomial coefficients C(α, i) (negative in turn once i > α + 1).
 */
function logAFrac(q: number, sigma: number, alpha: number): number {
  let a0: Signed = { positive: true, log: -Infinity };
  let a1: Signed = { positive: true, log: -Infinity };
  const z0 = sigma * sigma * Math.log(1 / q - 1) + 0.5;
  const log1mq = Math.log1p(-q);
  const logq = Math.log(q);
  const floor = Math.floor(alpha);
  let last0 = -Infinity;
  let last1 = -Infinity;
  for (let i = 0; i < 1000; i++) {
    const coef = logComb(alpha, i); // log |C(α, i)|
    const positive = i <= floor + 1 || (i - floor - 1) % 2 === 0;
    const j = alpha - i;
    const t0 = coef + i * logq + j * log1mq;
    const t1 = coef + j * logq + i * log1mq;
    const e0 = Math.log(0.5) + logErfc((i - z0) / (Math.SQRT2 * sigma));
    const e1 = Math.log(0.5) + logErfc((z0 - j) / (Math.SQRT2 * sigma));
    const s0 = t0 + (i * i - i) / (2 * sigma * sigma) + e0;
    const s1 = t1 + (j * j - j) / (2 * sigma * sigma) + e1;
    a0 = signedAdd(a0, { positive, log: s0 });
    a1 = signedAdd(a1, { positive, log: s1 });
    const total = signedAdd(a0, a1);
    if (s0 < last0 && s1 < last1 && Math.max(s0, s1) < total.log - 30) {
      // A_α is a moment of a likelihood ratio: positive; a negative total means lost precision.
      return total.positive ? total.log : Infinity;
    }
    last0 = s0;
    last1 = s1;
  }
  return Infinity; // did not converge: this order is left out of the conversion
}

/** RDP at order α of one Poisson-subsampled Gaussian step with noise multiplier σ. */
function poissonRdp(q: number, sigma: number, alpha: number): number {
  if (q === 0) return 0;
  if (sigma === 0 || !Number.isFinite(alpha)) return Infinity;
  if (q === 1) return alpha / (2 * sigma * sigma);
  const logA = Number.isInteger(alpha) ? logAInt(q, sigma, alpha) : logAFrac(q, sigma, alpha);
  return logA / (alpha - 1);
}

/**
 * RDP at integer order α of one step of the Gaussian mechanism on a fixed-size sample without
 * replacement: the bound of Wang, Balle and Kasiviswanathan 2019, Thm. 27, for a mechanism
 * with ε(∞) = ∞ (replace-one neighbours, the population size public). The reference library
 * tightens its j ≥ 3 terms with forward differences; this is the plain bound, so its ε is a
 * valid upper bound a little above theirs.
 */
function fixedRdpInt(q: number, sigma: number, alpha: number): number {
  if (alpha === 1) return 0;
  const eps = (a: number) => a / (2 * sigma * sigma); // the Gaussian's RDP at order a
  // log(e^{ε(2)} − 1) and log of forward differences of exp((j − 1)·ε(j)) = exp(j(j − 1)/2σ²).
  const logF2m1 = eps(2) + Math.log1p(-Math.exp(-eps(2)));
  const cgf = (j: number) => (j * (j - 1)) / (2 * sigma * sigma);
  let logA = 0; // log 1
  for (let j = 2; j <= alpha; j++) {
    let s: number;
    if (j === 2) {
      s =
        2 * Math.log(q) + logComb(alpha, 2) + Math.min(Math.log(4) + logF2m1, eps(2) + Math.log(2));
    } else {
      s = j * Math.log(q) + logComb(alpha, j) + Math.log(2) + cgf(j);
    }
    logA = logAdd(logA, s);
  }
  return logA / (alpha - 1);
}

/** RDP of one fixed-size-sampled Gaussian step at order α (interpolated between integers). */
function fixedRdp(q: number, sigma: number, alpha: number): number {
  if (q === 0) return 0;
  if (sigma === 0 || !Number.isFinite(alpha)) return Infinity;
  if (q === 1) return alpha / (2 * sigma * sigma);
  if (Number.isInteger(alpha)) return fixedRdpInt(q, sigma, alpha);
  const lo = Math.floor(alpha);
  const hi = Math.ceil(alpha);
  const t = alpha - lo;
  // Corollary 10 of the same paper: the CGF (α − 1)·RDP is convex in α.
  const x = (lo - 1) * fixedRdpInt(q, sigma, lo);
  const y = (hi - 1) * fixedRdpInt(q, sigma, hi);
  return ((1 - t) * x + t * y) / (alpha - 1);
}

/** The RDP of one step of the subsampled Gaussian mechanism at each of `orders`. */
export function stepRdp(
  sampling: Sampling,
  noiseMultiplier: number,
  orders: readonly number[] = DEFAULT_ORDERS,
): number[] {
  const { q } = sampling;
  if (!(q >= 0 && q <= 1)) {
    throw new CohortError("INVALID_OPTION", `the sampling rate must be in [0, 1], got ${q}`);
  }
  if (!(noiseMultiplier >= 0) || !Number.isFinite(noiseMultiplier)) {
    throw new CohortError(
      "INVALID_OPTION",
      `the noise multiplier must be a finite number ≥ 0, got ${noiseMultiplier}`,
    );
  }
  const one = sampling.kind === "poisson" ? poissonRdp : fixedRdp;
  return orders.map((alpha) => one(q, noiseMultiplier, alpha));
}

/**
 * (ε, δ) from RDP values: the smallest ε over the orders, with the conversion of Balle et al.
 * 2020 and the KL bound where it already gives ε = 0. Orders at or below 1.01 are not used (the
 * bound is unstable there).
 */
export function epsilonOf(
  rdp: readonly number[],
  delta: number,
  orders: readonly number[] = DEFAULT_ORDERS,
): { epsilon: number; order: number } {
  if (!(delta >= 0 && delta < 1)) {
    throw new CohortError("INVALID_OPTION", `δ must be in [0, 1), got ${delta}`);
  }
  if (delta === 0) {
    return { epsilon: rdp.every((r) => r === 0) ? 0 : Infinity, order: 0 };
  }
  let best = { epsilon: Infinity, order: orders[0] ?? 0 };
  rdp.forEach((r, i) => {
    const a = orders[i]!;
    let epsilon: number;
    if (r < 0) throw new CohortError("INTERNAL", `a negative RDP (${r}) at order ${a}`);
    if (delta * delta + Math.expm1(-r) > 0) epsilon = 0;
    else if (a > 1.01) epsilon = r + Math.log1p(-1 / a) - Math.log(delta * a) / (a - 1);
    else epsilon = Infinity;
    if (epsilon < best.epsilon) best = { epsilon, order: a };
  });
  return { epsilon: Math.max(0, best.epsilon), order: best.order };
}

/** One kind of round the accountant composed: its mechanism, and how many of them. */
export interface RdpEvent {
  sampling: Sampling;
  noiseMultiplier: number;
  rounds: number;
}

/**
 * The accountant's state: RDP at each order, summed over the rounds composed so far. Plain
 * data, so it lives in the ledger and a resumed run reports the same ε.
 */
export interface AccountantState {
  orders: number[];
  rdp: number[];
  rounds: number;
}

/** A fresh accountant over `orders`. */
export function newAccountant(orders: readonly number[] = DEFAULT_ORDERS): AccountantState {
  return { orders: [...orders], rdp: orders.map(() => 0), rounds: 0 };
}

/** Compose `event` into `state` (a new state; the old is left alone). */
export function compose(state: AccountantState, event: RdpEvent): AccountantState {
  const step = stepRdp(event.sampling, event.noiseMultiplier, state.orders);
  return {
    orders: state.orders,
    rdp: state.rdp.map((r, i) => r + event.rounds * step[i]!),
    rounds: state.rounds + event.rounds,
  };
}

/** ε at δ after everything composed into `state`. */
export function spent(state: AccountantState, delta: number): { epsilon: number; order: number } {
  return epsilonOf(state.rdp, delta, state.orders);
}

/**
 * The smallest noise multiplier whose `rounds` rounds stay within `targetEpsilon` at `delta`
 * (bisection to a relative 1e-6). Throws `INVALID_OPTION` when no multiplier up to 1,000 does.
 */
export function noiseFor(
  targetEpsilon: number,
  delta: number,
  sampling: Sampling,
  rounds: number,
  orders: readonly number[] = DEFAULT_ORDERS,
): number {
  if (!(targetEpsilon > 0)) {
    throw new CohortError("INVALID_OPTION", `the target ε must be > 0, got ${targetEpsilon}`);
  }
  const epsilonAt = (z: number) =>
    spent(compose(newAccountant(orders), { sampling, noiseMultiplier: z, rounds }), delta).epsilon;
  let lo = 0;
  let hi = 1;
  while (epsilonAt(hi) > targetEpsilon) {
    lo = hi;
    hi *= 2;
    if (hi > 1024) {
      throw new CohortError(
        "INVALID_OPTION",
        `no noise multiplier up to 1024 keeps ${rounds} rounds within ε = ${targetEpsilon} at δ = ${delta}`,
      );
    }
  }
  while (hi - lo > 1e-6 * hi) {
    const mid = (lo + hi) / 2;
    if (epsilonAt(mid) > targetEpsilon) lo = mid;
    else hi = mid;
  }
  return hi;
}
