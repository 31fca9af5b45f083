/** Strategies: every server optimizer against hand-computed steps, robust aggregators against attackers, the registry's checks. */
import { describe, expect, it } from "vitest";
import {
  aggregateRound,
  checkStrategy,
  resolveStrategy,
  serverStep,
  strategyDefinitions,
  type ClientDelta,
  type StateRecord,
  type Strategy,
} from "../aggregation/index.js";
import { createRng } from "../aggregation/random.js";
import { expectCohortError } from "./helpers/errors.js";

const f32 = (...v: number[]) => Float32Array.from(v);
const values = (w: readonly Float32Array[]) => w.map((t) => Array.from(t));
const update = (clientId: string, numExamples: number, ...delta: Float32Array[]): ClientDelta => ({
  clientId,
  numExamples,
  delta,
});

/** Run `rounds` server steps of `strategy` from `w`, each with the single update `delta`. */
function steps(strategy: Strategy, w: Float32Array[], deltas: Float32Array[][]) {
  let state = strategy.optimizer.init(w);
  let weights = w;
  deltas.forEach((delta, i) => {
    const agg = aggregateRound(strategy, weights, [update("a", 1, ...delta)])!;
    ({ weights, state } = serverStep(strategy, weights, state, agg, i + 1));
  });
  return { weights, state };
}

describe("server optimizers against hand-computed steps", () => {
  it("fedavg: w + η·Δ̄ with the example-weighted mean (η = 0.5)", () => {
    const s = resolveStrategy({ name: "fedavg", params: { serverLearningRate: 0.5 } });
    const w = [f32(1, 2), f32(3)];
    const agg = aggregateRound(s, w, [
      update("a", 1, f32(1, -1), f32(2)),
      update("b", 3, f32(3, 1), f32(-2)),
    ])!;
    // mean: 0.25·1 + 0.75·3 = 2.5, 0.25·(−1) + 0.75·1 = 0.5, 0.25·2 + 0.75·(−2) = −1
    const { weights } = serverStep(s, w, s.optimizer.init(w), agg, 1);
    expect(values(weights)).toEqual([[2.25, 2.25], [2.5]]);
    expect(values(w)).toEqual([[1, 2], [3]]); // inputs untouched
  });

  it("fedavgm: v ← 0.9v + Δ̄, w ← w + v; Nesterov w ← w + (0.9v + Δ̄)", () => {
    const plain = steps(resolveStrategy({ name: "fedavgm" }), [f32(0)], [[f32(1)], [f32(1)]]);
    // round 1: v = 1, w = 1; round 2: v = 1.9, w = 2.9
    expect(plain.weights[0]![0]).toBeCloseTo(2.9, 6);
    expect(plain.state.arrays.momentum![0]![0]).toBeCloseTo(1.9, 6);
    const nesterov = steps(
      resolveStrategy({ name: "fedavgm", params: { nesterov: true } }),
      [f32(0)],
      [[f32(1)], [f32(1)]],
    );
    // round 1: v = 1, w = 0.9 + 1 = 1.9; round 2: v = 1.9, w = 1.9 + 0.9·1.9 + 1 = 4.61
    expect(nesterov.weights[0]![0]).toBeCloseTo(4.61, 5);
  });

  const adaptive = { serverLearningRate: 1, beta1: 0.9, beta2: 0.99, tau: 0.1 };
  it.each([
    // m = 0.1·1 = 0.1 in every case; v starts at τ² = 0.01
    ["fedadam", 0.99 * 0.01 + 0.01 * 1, 0.1 / (Math.sqrt(0.0199) + 0.1)],
    ["fedadagrad", 0.01 + 1, 0.1 / (Math.sqrt(1.01) + 0.1)],
    ["fedyogi", 0.01 + 0.01 * 1, 0.1 / (Math.sqrt(0.02) + 0.1)], // sign(0.01 − 1) = −1
  ])("%s: one step with Δ̄ = 1 gives v = %f and w = %f", (name, v, w) => {
    const s = resolveStrategy({ name, params: adaptive });
    const out = steps(s, [f32(0)], [[f32(1)]]);
    expect(out.state.arrays.m![0]![0]).toBeCloseTo(0.1, 6);
    expect(out.state.arrays.v![0]![0]).toBeCloseTo(v, 6);
    expect(out.weights[0]![0]).toBeCloseTo(w, 5);
  });

  it("fedadam: a second step uses the first step's moments", () => {
    const s = resolveStrategy({ name: "fedadam", params: adaptive });
    const out = steps(s, [f32(0)], [[f32(1)], [f32(-2)]]);
    const m1 = 0.1;
    const v1 = 0.0199;
    const m2 = 0.9 * m1 + 0.1 * -2;
    const v2 = 0.99 * v1 + 0.01 * 4;
    const w1 = m1 / (Math.sqrt(v1) + 0.1);
    expect(out.weights[0]![0]).toBeCloseTo(w1 + m2 / (Math.sqrt(v2) + 0.1), 5);
  });
});

describe("every registered strategy (contract)", () => {
  const honest = (rng: () => number, id: number): ClientDelta =>
    update(
      `c${id}`,
      1 + Math.floor(rng() * 100),
      Float32Array.from({ length: 6 }, () => rng() - 0.5),
      f32(rng()),
    );

  for (const def of strategyDefinitions()) {
    describe(def.name, () => {
      const strategy = resolveStrategy({ name: def.name });
      const w = [new Float32Array(6).fill(0.25), f32(-1)];
      const updates = Array.from({ length: 7 }, (_, i) => honest(createRng(100 + i), i));

      it("aggregates nothing to null", () => {
        expect(aggregateRound(strategy, w, [])).toBeNull();
      });

      it("is deterministic and leaves its inputs untouched", () => {
        const before = values(w);
        const run = () => {
          const agg = aggregateRound(strategy, w, updates)!;
          return serverStep(strategy, w, strategy.optimizer.init(w), agg, 1);
        };
        const a = run();
        const b = run();
        expect(values(a.weights)).toEqual(values(b.weights));
        expect(values(w)).toEqual(before);
        expect(a.weights.every((t) => t.every(Number.isFinite))).toBe(true);
      });

      it("continues identically from a state that went through a copy (what the ledger keeps)", () => {
        const init = strategy.optimizer.init(w);
        const first = serverStep(
          strategy,
          w,
          init,
          aggregateRound(strategy, w, updates.slice(1))!,
          1,
        );
        const copy: StateRecord = structuredClone(first.state);
        const next = (s: StateRecord) =>
          serverStep(
            strategy,
            first.weights,
            s,
            aggregateRound(strategy, first.weights, updates)!,
            2,
          );
        expect(values(next(copy).weights)).toEqual(values(next(first.state).weights));
      });

      it("refuses an update of another layout (SHAPE_MISMATCH)", () => {
        expectCohortError(
          () => aggregateRound(strategy, w, [...updates, update("odd", 1, f32(1, 2), f32(0))]),
          "SHAPE_MISMATCH",
        );
      });

      it(`is ${def.secure ? "accepted" : "refused"} with secure aggregation`, () => {
        expect(strategy.aggregator.linear).toBe(def.secure);
        if (def.secure) checkStrategy(strategy, { secure: true });
        else
          expectCohortError(
            () => checkStrategy(strategy, { secure: true }),
            "INVALID_OPTION",
            /in the clear/,
          );
      });
    });
  }
});

describe("robust aggregators against attackers", () => {
  // 8 honest clients near Δ = (1, …, 1); 2 attackers.
  const rng = createRng(7);
  const dim = 20;
  const honest = Array.from({ length: 8 }, (_, i) =>
    update(
      `h${i}`,
      100,
      Float32Array.from({ length: dim }, () => 1 + (rng() - 0.5) * 0.2),
    ),
  );
  const honestMean = 1;
  const distance = (s: Strategy, attackers: ClientDelta[]) => {
    const w = [new Float32Array(dim)];
    const agg = aggregateRound(s, w, [...honest, ...attackers])!;
    const out = serverStep(s, w, s.optimizer.init(w), agg, 1).weights[0]!;
    return Math.max(...Array.from(out, (v) => Math.abs(v - honestMean)));
  };
  const signFlip = [0, 1].map((i) =>
    // A sign flip ×10, claiming a huge example count to dominate a weighted mean.
    update(
      `a${i}`,
      1e6,
      Float32Array.from(honest[i]!.delta[0]!, (v) => -10 * v),
    ),
  );
  // "A little is enough" (Baruch et al. 2019): μ − z·σ per coordinate, z = Φ⁻¹(0.6) ≈ 0.253 at n = 10.
  const mu = Array.from(
    { length: dim },
    (_, j) => honest.reduce((s, u) => s + u.delta[0]![j]!, 0) / 8,
  );
  const sigma = mu.map((m, j) =>
    Math.sqrt(honest.reduce((s, u) => s + (u.delta[0]![j]! - m) ** 2, 0) / 8),
  );
  const little = [0, 1].map((i) =>
    update(
      `l${i}`,
      100,
      Float32Array.from(mu, (m, j) => m - 0.253 * sigma[j]!),
    ),
  );

  it("FedAvg is dragged far from the honest mean by a sign flip ×10", () => {
    expect(distance(resolveStrategy("fedavg"), signFlip)).toBeGreaterThan(5);
  });

  it.each([
    ["median", {}],
    ["trimmed-mean", { beta: 0.2 }],
    ["krum", { f: 2 }],
    ["multi-krum", { f: 2 }],
    ["centered-clipping", { tau: 0.5, iterations: 3 }],
  ])("%s stays within 0.2 of the honest mean under a sign flip ×10", (name, params) => {
    expect(distance(resolveStrategy({ name, params }), signFlip)).toBeLessThan(0.2);
  });

  it.each(["median", "trimmed-mean", "krum", "multi-krum"])(
    "%s moves by less than the honest spread under 'a little is enough'",
    (name) => {
      expect(
        distance(resolveStrategy({ name, params: name.includes("krum") ? { f: 2 } : {} }), little),
      ).toBeLessThan(0.15);
    },
  );

  it("Krum refuses a cohort too small for f (n < 2f + 3)", () => {
    const s = resolveStrategy({ name: "krum", params: { f: 3 } });
    expectCohortError(
      () => aggregateRound(s, [new Float32Array(dim)], honest),
      "ROUND_FAILED",
      /2f \+ 3|at least 9/,
    );
  });
});

describe("the registry", () => {
  it("lists the built-in strategies", () => {
    expect(strategyDefinitions().map((d) => d.name)).toEqual([
      "fedavg",
      "fedavgm",
      "fedadam",
      "fedyogi",
      "fedadagrad",
      "fedprox",
      "median",
      "trimmed-mean",
      "krum",
      "multi-krum",
      "centered-clipping",
    ]);
  });

  it("records the fully defaulted parameters in the reference", () => {
    expect(resolveStrategy({ name: "fedadam", params: { serverLearningRate: 0.1 } }).ref).toEqual({
      name: "fedadam",
      params: { beta1: 0.9, beta2: 0.99, proximalMu: 0, serverLearningRate: 0.1, tau: 0.001 },
    });
  });

  it.each([
    [{ name: "fedsgd" }, /unknown strategy "fedsgd"; known: fedavg/],
    [{ name: "fedadam", params: { beta3: 1 } }, /no parameter "beta3"/],
    [{ name: "fedadam", params: { tau: "big" } }, /tau must be a finite number/],
    [{ name: "fedadam", params: { tau: 0 } }, /tau must be > 0/],
    [{ name: "fedavgm", params: { momentum: 1 } }, /momentum must be in \[0, 1\)/],
    [{ name: "fedavgm", params: { nesterov: 1 } }, /nesterov must be true or false/],
    [{ name: "fedavg", params: { serverLearningRate: -1 } }, /serverLearningRate must be > 0/],
    [{ name: "trimmed-mean", params: { beta: 0.5 } }, /beta must be in \[0, 0.5\)/],
    [{ name: "krum", params: { f: 1.5 } }, /f must be an integer/],
  ])("refuses %j with INVALID_OPTION", (ref, message) => {
    expectCohortError(() => resolveStrategy(ref as never), "INVALID_OPTION", message);
  });

  it("runs a strategy's afterAggregate before its server step, with the state it returns", () => {
    const base = resolveStrategy("fedavg");
    const halved: Strategy = {
      ...base,
      name: "halved",
      afterAggregate: (agg, state, ctx) => ({
        agg: { ...agg, weight: agg.weight * 2 },
        state: { ...state, values: { lastRound: ctx.round } },
      }),
    };
    const w = [f32(0, 0)];
    const agg = aggregateRound(halved, w, [update("a", 1, f32(1, -2))])!;
    const out = serverStep(halved, w, halved.optimizer.init(w), agg, 3, 10);
    expect(values(out.weights)).toEqual([[0.5, -1]]);
    expect(out.state.values).toEqual({ lastRound: 3 });
  });

  it("takes a user's own strategy object as it is", () => {
    const own = resolveStrategy("fedavg");
    const mine: Strategy = { ...own, name: "mine", ref: { name: "mine" } };
    expect(resolveStrategy(mine)).toBe(mine);
  });

  it("fedprox asks clients for the proximal term; fedavg does not", () => {
    const base = { learningRate: 0.1, localEpochs: 1, batchSize: 10, proximalMu: 0, extra: {} };
    const ctx = { round: 1, rounds: 10 };
    expect(resolveStrategy("fedprox").configureFit!(ctx, base).proximalMu).toBe(0.01);
    expect(resolveStrategy("fedavg").configureFit!(ctx, base)).toBe(base);
    expect(
      resolveStrategy({ name: "fedadam", params: { proximalMu: 0.1 } }).configureFit!(ctx, base)
        .proximalMu,
    ).toBe(0.1);
  });
});
