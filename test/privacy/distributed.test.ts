import { describe, expect, it } from "vitest";
import { createRng } from "../../aggregation/random.js";
import { epsilonOf, logGamma, stepRdp } from "../../aggregation/privacy/rdp.js";
import { planEpsilon, TINY_SIMULATION } from "../helpers/privacy.js";
import { withDpFedAvg } from "../../aggregation/privacy/dp-fedavg.js";
import { emptyState } from "../../aggregation/state.js";
import { simulate } from "../../simulations/index.js";
import {
  poissonLogPmf,
  samplePoisson,
  sampleSkellam,
  skellamMultiplier,
  skellamVarianceFor,
} from "../../aggregation/privacy/skellam.js";
import {
  cryptoRng,
  parseSecAggSetup,
  secureParams,
  sumMultiplier,
} from "../../aggregation/secure/index.js";
import { resolveOptions } from "../../coordinator/options.js";
import { INTEGER_ORDERS, resolvePrivacy } from "../../coordinator/privacy.js";
import { minContributors } from "../../coordinator/secure-round.js";
import { resolveStrategy } from "../../aggregation/strategies/index.js";
import { expectCohortError, expectRejectsCode } from "../helpers/errors.js";
import { TestRound, makeSetup, runRound } from "../secure/harness.js";
import { SecureSession } from "../../client/secure-session.js";
import { NO_SECURE_FLOORS } from "../../client/options.js";
import { encode } from "../../protocol/codec.js";

/** Sample mean and variance. */
function moments(xs: readonly number[]): { mean: number; variance: number } {
  const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
  const variance = xs.reduce((a, b) => a + (b - mean) ** 2, 0) / (xs.length - 1);
  return { mean, variance };
}

describe("Skellam noise", () => {
  it("Poisson draws have mean and variance λ, from λ = 3 to λ = 10¹²", () => {
    const uniform = cryptoRng();
    const draws = 20_000;
    for (const lambda of [3, 50, 1e4, 1e12]) {
      const xs = Array.from({ length: draws }, () => samplePoisson(lambda, uniform));
      expect(xs.every((x) => Number.isInteger(x) && x >= 0)).toBe(true);
      const { mean, variance } = moments(xs);
      // The sample mean is within 5 standard errors; the variance within 5 of its (≈ √(2/N)).
      expect(Math.abs(mean - lambda)).toBeLessThan(5 * Math.sqrt(lambda / draws));
      expect(Math.abs(variance / lambda - 1)).toBeLessThan(5 * Math.sqrt(2 / draws) + 1 / lambda);
    }
  });

  it("the Poisson log-pmf is exact where it can be checked directly, and stable at λ = 10¹²", () => {
    for (const lambda of [12, 50, 400]) {
      for (let k = 0; k < 3 * lambda; k += 7) {
        const direct = -lambda + k * Math.log(lambda) - logGamma(k + 1);
        expect(poissonLogPmf(k, lambda)).toBeCloseTo(direct, 9);
      }
    }
    // At λ = 10¹² the pmf near the mean is the normal density's: −½ log(2πλ) − x²/(2λ).
    const lambda = 1e12;
    for (const x of [-3e6, -1e6, 0, 2e6]) {
      const normal = -0.5 * Math.log(2 * Math.PI * lambda) - (x * x) / (2 * lambda);
      expect(poissonLogPmf(lambda + x, lambda)).toBeCloseTo(normal, 4);
    }
  });

  it("a Skellam draw is an integer of mean 0 and variance μ; a sum of shares has the sum of the variances", () => {
    const uniform = cryptoRng();
    const draws = 20_000;
    for (const mu of [2, 500, 4e10]) {
      const { mean, variance } = moments(
        Array.from({ length: draws }, () => sampleSkellam(mu, uniform)),
      );
      expect(Math.abs(mean)).toBeLessThan(5 * Math.sqrt(mu / draws));
      expect(Math.abs(variance / mu - 1)).toBeLessThan(5 * Math.sqrt(2 / draws));
    }
    // Ten members' shares of 1e8 each: one Sk(1e9).
    const sums = Array.from({ length: draws }, () => {
      let s = 0;
      for (let i = 0; i < 10; i++) s += sampleSkellam(1e8, uniform);
      return s;
    });
    expect(Math.abs(moments(sums).variance / 1e9 - 1)).toBeLessThan(5 * Math.sqrt(2 / draws));
  });

  it("the effective multiplier bounds the Skellam RDP at every integer order, and inverts the variance", () => {
    for (const [l2, l1] of [
      [10, 100],
      [2e7, 2e7 * 450],
    ] as const) {
      for (const z of [0.3, 1, 4]) {
        const mu = skellamVarianceFor(z, l2, l1);
        const eff = skellamMultiplier(mu, l2, l1);
        expect(eff / z).toBeCloseTo(1, 12);
        // More variance than the Gaussian of the same multiplier would need.
        expect(mu).toBeGreaterThanOrEqual((z * l2) ** 2);
        for (let alpha = 2; alpha <= 256; alpha++) {
          const skellam =
            (alpha * l2 * l2) / (2 * mu) +
            Math.min(((2 * alpha - 1) * l2 * l2 + 6 * l1) / (4 * mu * mu), (3 * l1) / (2 * mu));
          expect(skellam).toBeLessThanOrEqual((alpha / (2 * eff * eff)) * (1 + 1e-12));
        }
      }
    }
  });
});

describe("distributed noise in the secure encoding", () => {
  const d = 199_210; // the 2NN of the benchmarks
  const dp = { clip: 0.5, noise: 1, minContributors: 90 };

  it("leaves room in 32 bits for the signal of the whole cohort and 12σ of its noise", () => {
    const p = secureParams({ n: 100, clip: 1, maxWeight: 1, dp, tensorSizes: [d] });
    const noise = p.noise!;
    expect(noise.l2).toBeCloseTo(0.5 * p.scale + Math.sqrt(d), 6);
    expect(p.clip).toBe(0.5); // coordinates never exceed the L2 clip
    expect(p.bound).toBeGreaterThanOrEqual(Math.ceil(0.5 * p.scale));
    expect(100 * p.bound + 12 * Math.sqrt(100 * noise.variance)).toBeLessThanOrEqual(2 ** 31 - 1);
    // 90 members' noise has the multiplier z; more have more.
    expect(sumMultiplier(noise, 90)).toBeCloseTo(1, 9);
    expect(sumMultiplier(noise, 100)).toBeCloseTo(Math.sqrt(100 / 90), 9);
  });

  it("refuses settings it cannot honour", () => {
    const base = { n: 100, clip: 1, tensorSizes: [d] };
    expectCohortError(
      () => secureParams({ ...base, maxWeight: 5, dp }),
      "INVALID_OPTION",
      /weighs one/,
    );
    expectCohortError(
      () => secureParams({ ...base, maxWeight: 1, dp: { ...dp, minContributors: 101 } }),
      "INVALID_OPTION",
      /minContributors/,
    );
    expectCohortError(
      () =>
        secureParams({
          ...base,
          n: 60_000,
          maxWeight: 1,
          dp: { ...dp, noise: 1e5, minContributors: 2 },
        }),
      "INVALID_OPTION",
      /no room in 32 bits/,
    );
    expectCohortError(
      () => secureParams({ n: 100, clip: 1, maxWeight: 1, dp }),
      "INVALID_OPTION",
      /tensor sizes/,
    );
  });

  it("the unmasked sum carries the survivors' noise: its variance is s·μ per coordinate, with and without dropouts", async () => {
    const n = 10;
    const tensorSizes = [3000, 1000];
    const noise = { clip: 0.5, noise: 2, minContributors: 7 };
    for (const dropped of [[], [2, 5, 8]]) {
      const { round, result } = await runRound(
        { n, tensorSizes, clip: 0.5, dp: noise, seed: 4 },
        { "collect-masked": dropped },
      );
      const { params, updates } = round;
      const survivors = result.contributors;
      expect(survivors).toHaveLength(n - dropped.length);
      // The noiseless sum, in integer units: each member's update clipped to L2 norm C.
      const residuals: number[] = [];
      const exact = tensorSizes.map((size) => new Float64Array(size));
      for (const i of survivors) {
        const u = updates[i]!.delta;
        let norm = 0;
        for (const t of u) for (const v of t) norm += v * v;
        const f = Math.min(1, 0.5 / Math.sqrt(norm));
        u.forEach((t, ti) => t.forEach((v, j) => (exact[ti]![j]! += v * f)));
      }
      result.weightedSum.forEach((t, ti) =>
        t.forEach((v, j) => residuals.push((v - exact[ti]![j]!) * params.scale)),
      );
      const { mean, variance } = moments(residuals);
      const want = survivors.length * params.noise!.variance; // plus < 1/4 per member of rounding
      const m = residuals.length;
      expect(Math.abs(mean)).toBeLessThan(5 * Math.sqrt(want / m));
      expect(Math.abs(variance / want - 1)).toBeLessThan(5 * Math.sqrt(2 / m));
      expect(sumMultiplier(params.noise!, survivors.length)).toBeGreaterThanOrEqual(2 - 1e-9);
    }
  });

  it("members clip their update to the L2 norm C themselves: a huge update moves the sum by C at most", async () => {
    const n = 5;
    const round = new TestRound({
      n,
      tensorSizes: [400],
      clip: 10,
      dp: { clip: 0.5, noise: 0, minContributors: 5 },
    });
    round.updates[0]!.delta[0]!.fill(5); // norm 100
    for (const u of round.updates.slice(1)) u.delta[0]!.fill(0);
    round.advertise();
    await round.shareKeys();
    await round.masked();
    round.unmask();
    const result = await round.finish();
    let norm = 0;
    for (const v of result.weightedSum[0]!) norm += v * v;
    expect(Math.sqrt(norm)).toBeLessThan(0.5 + (Math.sqrt(400) + 1) / round.params.scale);
    expect(Math.sqrt(norm)).toBeGreaterThan(0.49);
  });

  it("attack: a coordinator that keeps fewer survivors than the noise needs gets nothing unmasked", async () => {
    const dpOpts = { clip: 0.5, noise: 1, minContributors: 8 };
    // The server machine itself aborts below the floor…
    await expect(
      runRound({ n: 10, tensorSizes: [50], dp: dpOpts }, { "collect-masked": [1, 2, 3] }),
    ).rejects.toMatchObject({
      code: "SECAGG_THRESHOLD",
      message: expect.stringMatching(/needs 8/),
    });
    // …and a deviating one that names fewer survivors finds every member refusing.
    const round = new TestRound({ n: 10, tensorSizes: [50], dp: dpOpts });
    round.advertise();
    await round.shareKeys();
    await round.masked();
    const [request] = round.unmaskRequests();
    const fewer = {
      ...request!,
      survivors: request!.survivors.filter((v) => v < 7 || v === request!.index),
    };
    expectCohortError(
      () => round.clients[request!.index]!.unmask(fewer),
      "SECAGG_UNSAFE",
      /needs 8 contributors/,
    );
  });

  it("with the consistency check, members count the signed survivors, whatever the graph", async () => {
    const round = new TestRound({
      n: 12,
      k: 6,
      tensorSizes: [20],
      consistency: true,
      dp: { clip: 0.5, noise: 1, minContributors: 10 },
    });
    round.advertise();
    await round.shareKeys();
    await round.masked();
    const [request] = round.consistencyRequests();
    const self = request!.index;
    const others = request!.survivors.filter((v) => v !== self).slice(0, 8);
    const fewer = { ...request!, survivors: [...others, self].sort((a, b) => a - b) };
    expectCohortError(
      () => round.clients[self]!.attest(fewer),
      "SECAGG_UNSAFE",
      /9 survivors, but the round's noise needs 10 contributors/,
    );
  });
});

describe("distributed DP options", () => {
  const o = (extra: Record<string, unknown>) =>
    resolveOptions({ dpClip: 1, dpNoise: 1, dpPopulation: 100, ...extra }, () => undefined);

  it("needs secure rounds, and accounts at integer orders", () => {
    expectCohortError(
      () => resolvePrivacy(o({ dpMode: "distributed" }), resolveStrategy("fedavg")),
      "INVALID_OPTION",
      /--secure/,
    );
    const plan = resolvePrivacy(
      o({ dpMode: "distributed", secure: true }),
      resolveStrategy("fedavg"),
    )!;
    expect(plan.mode).toBe("distributed");
    expect(plan.settings.distributed).toBe(true);
    const state = { arrays: {}, values: { "dp.releasedRounds": 3, "dp.spent:z=2": 3 } };
    expect(plan.epsilonOf(state)).toBeGreaterThan(0);
    expect(plan.epsilonAfterNext(state)).toBeGreaterThan(plan.epsilonOf(state));
  });

  it("the fewest contributors: the cohort less the tolerance, never below t", () => {
    expect(minContributors(100, 51, 0.1)).toBe(90);
    expect(minContributors(100, 95, 0.1)).toBe(95);
    expect(minContributors(10, 6, 0)).toBe(10);
    expect(minContributors(7, 2, 0.5)).toBe(4);
  });
});

describe("DP-FedAvg with distributed noise", () => {
  const sum = (v: number, noiseMultiplier?: number) => ({
    weighted: [Float64Array.from([v, v])],
    weight: 2,
    count: 2,
    ...(noiseMultiplier === undefined ? {} : { noiseMultiplier }),
  });
  const strategy = () =>
    withDpFedAvg(resolveStrategy("fedavg"), {
      clip: 1,
      noiseMultiplier: 1,
      expectedCohort: 4,
      distributed: true,
    });

  it("adds no noise of its own and counts the round at the noise its sum carried", () => {
    const s = strategy();
    const acc = s.aggregator.begin([2]);
    acc.addSum!(sum(0.75, 1.2));
    const agg = acc.finish()!;
    const { agg: out, state } = s.afterAggregate!(agg, emptyState(), { round: 1, rounds: 1 });
    expect([...out.weighted[0]!]).toEqual([0.75, 0.75]);
    expect(out.weight).toBe(4); // the fixed denominator
    expect(state.values["dp.spent:z=1.2"]).toBe(1);
    expect(state.values["dp.lastNoise"]).toBe(1.2);
  });

  it("refuses to release a sum that carries no members' noise", () => {
    const s = strategy();
    const acc = s.aggregator.begin([2]);
    acc.addSum!(sum(0.75));
    expectCohortError(
      () => s.afterAggregate!(acc.finish()!, emptyState(), { round: 1, rounds: 1 }),
      "INTERNAL",
      /no members' noise/,
    );
  });

  it("in the simulator: members add the noise, every round is accounted at its survivors' noise", async () => {
    const { rounds } = await simulate(
      {
        ...TINY_SIMULATION,
        devices: 20,
        fractionFit: 0.5,
        rounds: 2,
        secure: true,
        dpClip: 1,
        dpNoise: 0.8,
        dpMode: "distributed",
        dpDropoutTolerance: 0.2,
      },
      { progress: null },
    );
    const spentSoFar = new Map<number, number>();
    for (const r of rounds) {
      expect(r.secure).toBe(true);
      expect(r.aborted).toBeUndefined();
      // Ten sampled, at least eight needed: the noise of all ten is √(10/8) the planned.
      expect(r.noiseMultiplier).toBeCloseTo(0.8 * Math.sqrt(r.participants / 8), 6);
      spentSoFar.set(r.noiseMultiplier!, (spentSoFar.get(r.noiseMultiplier!) ?? 0) + 1);
      const rdp = INTEGER_ORDERS.map(() => 0);
      for (const [z, n] of spentSoFar) {
        stepRdp({ kind: "fixed", q: 0.5 }, z / 2, INTEGER_ORDERS).forEach(
          (x, i) => (rdp[i]! += n * x),
        );
      }
      expect(r.epsilon).toBeCloseTo(epsilonOf(rdp, 1e-5, INTEGER_ORDERS).epsilon, 9);
    }
  });
});

describe("what each round is counted at", () => {
  const base = { ...TINY_SIMULATION, dpClip: 1, dpNoise: 1 };
  // Replace-one: the sum moves by up to 2C, so the accountant sees z/2.
  const want = (q: number, rounds: number) => planEpsilon({ kind: "fixed", q }, 1 / 2, rounds);

  it("fixed-size sampling from fewer clients than the population is counted at m / available", async () => {
    // A population of 100 planned, 20 connected: 3 (minFitClients) of 20 each round, q = 0.15,
    // not the planned 5 of 100.
    const { rounds } = await simulate(
      { ...base, devices: 20, dpPopulation: 100, fractionFit: 0.05, minFitClients: 3, rounds: 2 },
      { progress: null },
    );
    expect(rounds.map((r) => r.cohortSize)).toEqual([3, 3]);
    rounds.forEach((r, i) => expect(r.epsilon).toBeCloseTo(want(0.15, i + 1), 10));
    expect(rounds[1]!.epsilon).toBeGreaterThan(want(0.05, 2));
  });

  it("under Poisson sampling a round is released however few answer, even none: the noise alone", async () => {
    const { rounds } = await simulate(
      {
        ...base,
        devices: 6,
        fractionFit: 0.1,
        sampling: "poisson",
        minFitClients: 3,
        rounds: 4,
        seed: 5,
      },
      { progress: null },
    );
    // Six devices at q = 0.1: most rounds sample fewer than minFitClients; none is retried.
    expect(rounds).toHaveLength(4);
    expect(rounds.every((r) => r.attempt === 1)).toBe(true);
    expect(rounds.some((r) => r.participants < 3)).toBe(true);
    const poisson = (n: number) => planEpsilon({ kind: "poisson", q: 0.1 }, 1, n);
    rounds.forEach((r, i) => expect(r.epsilon).toBeCloseTo(poisson(i + 1), 10));
  });
});

describe("a client that requires distributed noise", () => {
  const advertise = (dp?: { clip: number; noise: number; minContributors: number }) =>
    encode({
      phase: "advertise-keys",
      setup: makeSetup({ n: 10, tensorSizes: [4], ...(dp === undefined ? {} : { dp }) }),
      index: 0,
      model: new Uint8Array(1),
    });
  const session = () =>
    new SecureSession(
      async () => {
        throw new Error("never trains: the setup is refused first");
      },
      () => {
        throw new Error("never opens the model: the setup is refused first");
      },
      { floors: NO_SECURE_FLOORS, minNoise: 1 },
    );

  it("attack: a coordinator that turns the noise off, or down, is refused before any key is sent", async () => {
    await expectRejectsCode(
      session().step(advertise()),
      "SECAGG_UNSAFE",
      /adds no distributed noise/,
    );
    await expectRejectsCode(
      session().step(advertise({ clip: 1, noise: 0.5, minContributors: 9 })),
      "SECAGG_UNSAFE",
      /z = 0.5; this client requires z ≥ 1/,
    );
  });

  it("takes part where the noise is enough", async () => {
    // Past the noise check, the session opens the round's model (here: a refusal of its own).
    await expect(
      session().step(advertise({ clip: 1, noise: 1.2, minContributors: 9 })),
    ).rejects.toThrow(/never opens the model/);
  });
});

describe("a setup's distributed noise, as members receive it", () => {
  it("is refused when malformed: no clip, a negative or non-finite noise, a floor outside t…n", () => {
    const setup = makeSetup({ n: 10, tensorSizes: [4] });
    const bad = [
      { clip: 0, noise: 1, minContributors: 8 },
      { clip: 1, noise: -1, minContributors: 8 },
      { clip: 1, noise: Number.NaN, minContributors: 8 },
      { clip: 1, noise: 1, minContributors: 11 },
      { clip: 1, noise: 1, minContributors: setup.t - 1 },
      "loud",
    ];
    for (const dp of bad) {
      expectCohortError(() => parseSecAggSetup({ ...setup, dp }), "INVALID_MESSAGE");
    }
    expect(
      parseSecAggSetup({ ...setup, dp: { clip: 1, noise: 1, minContributors: 8 } }).dp,
    ).toEqual({
      clip: 1,
      noise: 1,
      minContributors: 8,
    });
  });
});
