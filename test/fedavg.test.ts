/** Tests of the aggregation maths: weight checks and arithmetic, weightedAverage and FedAvg. */
import { describe, expect, it } from "vitest";

import { weightedAverage, type WeightedUpdate } from "../aggregation/fedavg.js";
import { aggregateRound, resolveStrategy, serverStep } from "../aggregation/index.js";
import { createRng } from "../aggregation/random.js";
import { addScaled, checkWeights, subtract } from "../aggregation/weights.js";
import { expectCohortError } from "./helpers/errors.js";
import type { TensorSpec } from "../protocol/messages.js";

function f32(...values: number[]): Float32Array {
  return Float32Array.from(values);
}

/** Random Float32 values in [-1, 1). */
function randomTensor(length: number, rng: () => number): Float32Array {
  const out = new Float32Array(length);
  for (let i = 0; i < length; i++) out[i] = rng() * 2 - 1;
  return out;
}

const specs: TensorSpec[] = [
  { name: "dense/kernel", shape: [2, 3] },
  { name: "dense/bias", shape: [3] },
];

describe("weightedAverage", () => {
  it("weights each delta by its share of the examples (1 and 3 → 0.25 and 0.75)", () => {
    const updates: WeightedUpdate[] = [
      { clientId: "a", numExamples: 1, delta: [f32(1, 2), f32(10)] },
      { clientId: "b", numExamples: 3, delta: [f32(5, 6), f32(-2)] },
    ];
    const mean = weightedAverage(updates);
    // 0.25·1 + 0.75·5 = 4, 0.25·2 + 0.75·6 = 5, 0.25·10 + 0.75·(−2) = 1
    expect(mean).toHaveLength(2);
    expect(mean[0]).toBeInstanceOf(Float32Array);
    expect(Array.from(mean[0]!)).toEqual([4, 5]);
    expect(Array.from(mean[1]!)).toEqual([1]);
  });

  it("is not the unweighted mean when example counts differ", () => {
    const mean = weightedAverage([
      { clientId: "a", numExamples: 9, delta: [f32(0)] },
      { clientId: "b", numExamples: 1, delta: [f32(10)] },
    ]);
    expect(mean[0]![0]).toBeCloseTo(1, 6);
  });

  it("matches a float64 reference Σ nᵢΔᵢ / Σ nᵢ on random data for 2..10 clients", () => {
    const rng = createRng(20240501);
    for (let n = 2; n <= 10; n++) {
      const lengths = [1 + Math.floor(rng() * 50), 1 + Math.floor(rng() * 50), 1];
      const updates: WeightedUpdate[] = Array.from({ length: n }, (_, c) => ({
        clientId: `c${c}`,
        numExamples: 1 + Math.floor(rng() * 1000),
        delta: lengths.map((len) => randomTensor(len, rng)),
      }));
      const mean = weightedAverage(updates);
      expect(mean.map((t) => t.length)).toEqual(lengths);
      const total = updates.reduce((s, u) => s + u.numExamples, 0);
      lengths.forEach((len, i) => {
        for (let j = 0; j < len; j++) {
          let sum = 0;
          for (const u of updates) sum += u.numExamples * u.delta[i]![j]!;
          const reference = sum / total;
          const got = mean[i]![j]!;
          expect(Math.abs(got - reference)).toBeLessThanOrEqual(1e-6 * Math.abs(reference) + 1e-12);
        }
      });
    }
  });

  it("returns the delta of a single update, as new arrays", () => {
    const delta = [f32(0.1, -0.2, 3.5), f32(7)];
    const mean = weightedAverage([{ clientId: "solo", numExamples: 37, delta }]);
    expect(mean).toHaveLength(2);
    expect(Array.from(mean[0]!)).toEqual(Array.from(delta[0]!));
    expect(Array.from(mean[1]!)).toEqual(Array.from(delta[1]!));
    expect(mean[0]).not.toBe(delta[0]);
  });

  it("does not modify its inputs", () => {
    const a = [f32(1, 2), f32(3)];
    const b = [f32(5, 6), f32(7)];
    weightedAverage([
      { clientId: "a", numExamples: 2, delta: a },
      { clientId: "b", numExamples: 5, delta: b },
    ]);
    expect(Array.from(a[0]!)).toEqual([1, 2]);
    expect(Array.from(b[1]!)).toEqual([7]);
  });

  it("fails the round on an empty list", () => {
    expectCohortError(() => weightedAverage([]), "ROUND_FAILED");
  });

  it.each([
    ["a tensor of another length", [f32(1, 2, 3), f32(1)]],
    ["a missing tensor", [f32(1, 2)]],
    ["an extra tensor", [f32(1, 2), f32(1), f32(9)]],
  ])("rejects an update with %s (SHAPE_MISMATCH)", (_, delta) => {
    const updates: WeightedUpdate[] = [
      { clientId: "a", numExamples: 1, delta: [f32(1, 2), f32(1)] },
      { clientId: "odd", numExamples: 1, delta },
    ];
    expectCohortError(() => weightedAverage(updates), "SHAPE_MISMATCH", /odd/);
  });
});

describe("the fedavg strategy", () => {
  const results: WeightedUpdate[] = [
    { clientId: "a", numExamples: 10, delta: [f32(1, -1), f32(2)] },
    { clientId: "b", numExamples: 30, delta: [f32(3, 1), f32(-2)] },
  ];
  const step = (lr: number | undefined, global: Float32Array[], updates: WeightedUpdate[]) => {
    const s = resolveStrategy({ name: "fedavg", params: { serverLearningRate: lr } });
    const agg = aggregateRound(s, global, updates);
    return agg === null ? null : serverStep(s, global, s.optimizer.init(global), agg, 1).weights;
  };

  it("steps by the example-weighted mean with a server learning rate of 1 by default", () => {
    // 0.25·1 + 0.75·3 = 2.5, 0.25·(−1) + 0.75·1 = 0.5, 0.25·2 + 0.75·(−2) = −1
    const next = step(undefined, [f32(0, 0), f32(0)], results)!;
    expect(next.map((t) => Array.from(t))).toEqual([[2.5, 0.5], [-1]]);
  });

  it("returns null for an empty round", () => {
    expect(step(1, [f32(0, 0), f32(0)], [])).toBeNull();
  });

  it("with serverLearningRate 0.5 adds half the mean delta and leaves the old model", () => {
    const global = [f32(1, 2), f32(3)];
    const next = step(0.5, global, [
      { clientId: "a", numExamples: 1, delta: [f32(0.5, -1), f32(4)] },
    ])!;
    expect(next.map((t) => Array.from(t))).toEqual([[1.25, 1.5], [5]]);
    expect(Array.from(global[0]!)).toEqual([1, 2]);
  });

  it.each([0, -0.1, Number.NaN, Number.POSITIVE_INFINITY])(
    "rejects serverLearningRate %s (INVALID_OPTION)",
    (lr) => {
      expectCohortError(() => step(lr, [f32(0)], []), "INVALID_OPTION", /serverLearningRate/);
    },
  );
});

describe("checkWeights", () => {
  const good = () => [f32(1, 2, 3, 4, 5, 6), f32(0, -1, 1e-30)];

  it("accepts weights that match the specs", () => {
    expect(() => checkWeights(good(), specs)).not.toThrow();
  });

  it("rejects a wrong tensor count", () => {
    expectCohortError(() => checkWeights([good()[0]!], specs), "SHAPE_MISMATCH", /1 tensors/);
    expectCohortError(
      () => checkWeights([...good(), f32(1)], specs),
      "SHAPE_MISMATCH",
      /3 tensors/,
    );
  });

  it("rejects a tensor of the wrong length, naming it", () => {
    expectCohortError(
      () => checkWeights([f32(1, 2, 3, 4, 5), good()[1]!], specs, "delta"),
      "SHAPE_MISMATCH",
      /delta\[0\] \(dense\/kernel\)/,
    );
    expectCohortError(
      () => checkWeights([good()[0]!, f32(1, 2, 3, 4)], specs),
      "SHAPE_MISMATCH",
      /dense\/bias/,
    );
  });

  it.each([
    ["NaN", Number.NaN],
    ["+Infinity", Number.POSITIVE_INFINITY],
    ["-Infinity", Number.NEGATIVE_INFINITY],
  ])("rejects %s (NON_FINITE), naming tensor and index", (_, bad) => {
    const weights = good();
    weights[1]![2] = bad;
    expectCohortError(() => checkWeights(weights, specs), "NON_FINITE", /\[1\].*index 2/);
  });
});

describe("subtract and addScaled", () => {
  it("compute a − b and base + s·delta element by element", () => {
    expect(subtract([f32(5, 3)], [f32(2, 4)]).map((t) => Array.from(t))).toEqual([[3, -1]]);
    expect(addScaled([f32(1, 1)], [f32(2, -4)], 0.25).map((t) => Array.from(t))).toEqual([
      [1.5, 0],
    ]);
  });

  it("round-trip: base + (local − base) recovers local", () => {
    const rng = createRng(7);
    const base = [randomTensor(100, rng), randomTensor(3, rng)];
    const local = [randomTensor(100, rng), randomTensor(3, rng)];
    const back = addScaled(base, subtract(local, base));
    back.forEach((t, i) => {
      for (let j = 0; j < t.length; j++) {
        expect(Math.abs(t[j]! - local[i]![j]!)).toBeLessThanOrEqual(1e-6);
      }
    });
  });

  it("reject differing layouts", () => {
    expectCohortError(() => subtract([f32(1)], [f32(1, 2)]), "SHAPE_MISMATCH");
    expectCohortError(() => addScaled([f32(1)], [f32(1), f32(2)]), "SHAPE_MISMATCH");
  });
});

describe("option merging", () => {
  it("keeps the default when an option is passed as undefined", async () => {
    const { resolveStrategy } = await import("../aggregation/index.js");
    const s = resolveStrategy({ name: "fedavg", params: { serverLearningRate: undefined } });
    expect(s.ref.params?.serverLearningRate).toBe(1);
  });
});
