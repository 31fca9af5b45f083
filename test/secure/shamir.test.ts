/** Shamir sharing over GF(2^16): round trips, any t of n, threshold failure, speed at n = 500. */
import { describe, expect, it } from "vitest";
import { createRng, sampleWithoutReplacement } from "../../aggregation/random.js";
import { randomBytes } from "../../aggregation/crypto.js";
import {
  combine,
  gfMul,
  SHAMIR_MAX_SHARES,
  split,
  type ShamirShare,
} from "../../aggregation/secure/shamir.js";
import { expectCohortError } from "../helpers/errors.js";

const shares = (ys: Uint8Array[], xs: number[]): ShamirShare[] =>
  ys.map((y, i) => ({ x: xs[i]!, y }));

describe("GF(2^16)", () => {
  it("has a primitive generator: x^i runs through all 65,535 non-zero elements", () => {
    const seen = new Uint8Array(65536);
    let v = 1;
    let distinct = 0;
    for (let i = 0; i < 65535; i++) {
      if (seen[v] === 0) distinct++;
      seen[v] = 1;
      v = gfMul(v, 2);
    }
    expect(distinct).toBe(65535);
    expect(seen[0]).toBe(0);
    expect(v).toBe(1);
  });

  it("multiplies commutatively and distributively over XOR", () => {
    const rng = createRng(3);
    for (let i = 0; i < 1000; i++) {
      const [a, b, c] = [0, 0, 0].map(() => Math.floor(rng() * 65536)) as [number, number, number];
      expect(gfMul(a, b)).toBe(gfMul(b, a));
      expect(gfMul(a, b ^ c)).toBe(gfMul(a, b) ^ gfMul(a, c));
    }
  });
});

describe("split / combine", () => {
  it.each([
    [1, 1],
    [2, 3],
    [3, 5],
    [6, 10],
    [26, 50],
  ])("recovers a 32-byte secret from any %i of %i shares", (t, n) => {
    const secret = randomBytes(32);
    const xs = Array.from({ length: n }, (_, i) => 1 + i * 7);
    const all = shares(split(secret, xs, t), xs);
    const rng = createRng(t * 100 + n);
    for (let trial = 0; trial < 5; trial++) {
      expect(combine(sampleWithoutReplacement(all, t, rng), t)).toEqual(secret);
    }
    expect(combine(all, t)).toEqual(secret); // more than t is fine
  });

  it("works at the field's extremes (x = 1 and x = 65,535)", () => {
    const secret = randomBytes(32);
    const xs = [1, SHAMIR_MAX_SHARES, 40000];
    expect(combine(shares(split(secret, xs, 2), xs).slice(1), 2)).toEqual(secret);
  });

  it("t − 1 shares reconstruct something else (and the API refuses them)", () => {
    const secret = randomBytes(32);
    const xs = [1, 2, 3, 4, 5];
    const all = shares(split(secret, xs, 3), xs);
    expect(combine(all.slice(0, 2), 2)).not.toEqual(secret);
    expectCohortError(() => combine(all.slice(0, 2), 3), "SECAGG_THRESHOLD", /2 of the 3/);
  });

  it("rejects bad points, thresholds, secrets and repeated shares", () => {
    const secret = randomBytes(32);
    expectCohortError(() => split(secret, [0, 1], 1), "INVALID_OPTION", /outside/);
    expectCohortError(() => split(secret, [1, 1], 1), "INVALID_OPTION", /twice/);
    expectCohortError(() => split(secret, [1, 2], 3), "INVALID_OPTION", /threshold/);
    expectCohortError(() => split(new Uint8Array(3), [1, 2], 2), "INVALID_OPTION", /even/);
    const [y] = split(secret, [1, 2], 2);
    expectCohortError(
      () =>
        combine(
          [
            { x: 1, y: y! },
            { x: 1, y: y! },
          ],
          2,
        ),
      "INVALID_MESSAGE",
      /two shares at point 1/,
    );
  });

  it("is fast enough for 500 neighbours (t = 251)", () => {
    const secret = randomBytes(32);
    const xs = Array.from({ length: 500 }, (_, i) => i + 1);
    const t0 = performance.now();
    const ys = split(secret, xs, 251);
    const t1 = performance.now();
    expect(combine(shares(ys, xs).reverse(), 251)).toEqual(secret);
    const t2 = performance.now();
    expect(t1 - t0).toBeLessThan(500);
    expect(t2 - t1).toBeLessThan(500);
  });
});
