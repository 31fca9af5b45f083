/** The RDP accountant against the values the reference libraries publish in their tests. */
import { describe, expect, it } from "vitest";
import {
  compose,
  epsilonOf,
  logErfc,
  logGamma,
  newAccountant,
  noiseFor,
  spent,
  stepRdp,
} from "../../aggregation/privacy/rdp.js";

const relative = (got: number, want: number) => Math.abs(got - want) / Math.abs(want);

function epsilon(q: number, sigma: number, steps: number, delta: number) {
  const state = compose(newAccountant(), {
    sampling: { kind: "poisson", q },
    noiseMultiplier: sigma,
    rounds: steps,
  });
  return spent(state, delta);
}

describe("RDP accountant: reference values", () => {
  it("DP-SGD on 60,000 examples, batches of 150 (Poisson), σ = 1.3, 15 epochs, δ = 1e-5 → ε = 0.7242234 at order 19", () => {
    const { epsilon: e, order } = epsilon(150 / 60_000, 1.3, 15 * (60_000 / 150), 1e-5);
    expect(relative(e, 0.7242234)).toBeLessThan(1e-6);
    expect(order).toBe(19);
  });

  it("σ = 1.5, q = 0.04, 2,250 steps, δ = 1e-5 → ε = 7.3291112 (a fractional order: the series with its signs)", () => {
    const { epsilon: e, order } = epsilon(0.04, 1.5, 2250, 1e-5);
    expect(relative(e, 7.3291112)).toBeLessThan(1e-6);
    expect(order).toBe(3.9);
  });

  it("a population of 1,000, 10 sampled per round (Poisson), z = 1.2, 100 rounds, δ = 1e-6 → ε = 0.9758925", () => {
    const { epsilon: e } = epsilon(10 / 1000, 1.2, 100, 1e-6);
    expect(relative(e, 0.9758925)).toBeLessThan(1e-6);
  });
});

describe("RDP accountant: properties", () => {
  it("a Gaussian without sampling has RDP α/2σ² at every order", () => {
    const orders = [1.5, 2, 7.5, 64];
    expect(stepRdp({ kind: "poisson", q: 1 }, 2, orders)).toEqual(orders.map((a) => a / 8));
    const fixed = stepRdp({ kind: "fixed", q: 1 }, 2, orders);
    fixed.forEach((r, i) => expect(r).toBeCloseTo(orders[i]! / 8, 12));
  });

  it("composes by addition, and more noise or less sampling spends less", () => {
    const poisson = { kind: "poisson" as const, q: 0.01 };
    const a = compose(newAccountant(), { sampling: poisson, noiseMultiplier: 1, rounds: 40 });
    const b = compose(
      compose(newAccountant(), { sampling: poisson, noiseMultiplier: 1, rounds: 15 }),
      {
        sampling: poisson,
        noiseMultiplier: 1,
        rounds: 25,
      },
    );
    a.rdp.forEach((r, i) => expect(b.rdp[i]).toBeCloseTo(r, 10));
    expect(b.rounds).toBe(40);
    const e = (z: number, q: number) =>
      spent(
        compose(newAccountant(), {
          sampling: { kind: "poisson", q },
          noiseMultiplier: z,
          rounds: 100,
        }),
        1e-5,
      ).epsilon;
    expect(e(2, 0.01)).toBeLessThan(e(1, 0.01));
    expect(e(1, 0.005)).toBeLessThan(e(1, 0.01));
  });

  it("fixed-size sampling (replace one) is accounted too, and costs more than Poisson's add-or-remove bound", () => {
    const run = (kind: "poisson" | "fixed") =>
      spent(
        compose(newAccountant(), {
          sampling: { kind, q: 0.01 },
          noiseMultiplier: 1.2,
          rounds: 100,
        }),
        1e-6,
      ).epsilon;
    const fixed = run("fixed");
    expect(Number.isFinite(fixed)).toBe(true);
    expect(fixed).toBeGreaterThan(run("poisson"));
  });

  it("no noise is infinite ε; δ = 0 is infinite unless nothing was spent", () => {
    expect(epsilon(0.01, 0, 1, 1e-5).epsilon).toBe(Infinity);
    expect(epsilonOf([0, 0], 0, [2, 3]).epsilon).toBe(0);
    expect(epsilonOf([0.1, 0.2], 0, [2, 3]).epsilon).toBe(Infinity);
  });

  it("finds the noise multiplier for a target ε over the planned rounds", () => {
    const sampling = { kind: "poisson" as const, q: 10 / 1000 };
    const z = noiseFor(0.9758925, 1e-6, sampling, 100);
    expect(z).toBeCloseTo(1.2, 4);
    const e = spent(compose(newAccountant(), { sampling, noiseMultiplier: z, rounds: 100 }), 1e-6);
    expect(e.epsilon).toBeLessThanOrEqual(0.9758925);
  });

  it("its special functions are accurate", () => {
    expect(logGamma(4.9)).toBeCloseTo(Math.log(20.66738596), 7);
    expect(logGamma(0.4)).toBeCloseTo(0.7966778177017837, 12);
    expect(Math.exp(logErfc(1))).toBeCloseTo(0.157299207050285, 14);
    // The asymptotic series: log erfc(x) ≈ −x² − log(x√π) − 1/(2x²) + 5/(8x⁴).
    expect(logErfc(30)).toBeCloseTo(
      -900 - Math.log(30 * Math.sqrt(Math.PI)) - 1 / 1800 + 5 / (8 * 30 ** 4),
      7, // the next term of the series is about 2e-9
    );
  });
});
