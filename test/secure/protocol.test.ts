/** SecAgg+ end to end in memory: equals plain FedAvg within the bound, survives dropouts, hides inputs. */
import { describe, expect, it } from "vitest";
import { createRng } from "../../aggregation/random.js";
import { logarithmicDegree, quantizeUpdate } from "../../aggregation/secure/index.js";
import { expectRejectsCode } from "../helpers/errors.js";
import { maxDifference, plainMean, runRound, TestRound } from "./harness.js";
import type { SecAggResult } from "../../aggregation/secure/index.js";

const range = (n: number) => Array.from({ length: n }, (_, i) => i);

function expectMatchesPlain(round: TestRound, result: SecAggResult, contributors: number[]) {
  const plain = plainMean(round.updates, contributors, round.params);
  expect(result.contributors).toEqual(contributors);
  expect(result.sumWeights).toBe(plain.sumWeights);
  expect(maxDifference(result.weightedMeanDelta, plain.mean)).toBeLessThanOrEqual(
    result.errorBound,
  );
  expect(result.weightedMeanDelta.map((t) => t.length)).toEqual(round.setup.tensorSizes);
}

describe("secure vs plain weighted FedAvg", () => {
  it.each([3, 10, 50])("agree for n = %i (complete graph: original SecAgg)", async (n) => {
    const { round, result } = await runRound({ n, seed: n });
    expect(result.dropouts).toEqual([]);
    expectMatchesPlain(round, result, range(n));
    expect(round.server.phase).toBe("done");
    expect(round.clients.every((c) => c.phase === "done")).toBe(true);
  });

  it("agree for n = 50 with a sparse SecAgg+ graph (k = O(log n))", async () => {
    const k = logarithmicDegree(50);
    expect(k).toBeLessThan(49);
    const { round, result } = await runRound({ n: 50, k, seed: 9 });
    expect(round.server.graph.degree).toBe(k);
    expectMatchesPlain(round, result, range(50));
  });

  it("agree with signed keys (clients with Ed25519 identities)", async () => {
    const { round, result } = await runRound({ n: 10, identities: true, seed: 4 });
    expectMatchesPlain(round, result, range(10));
  });
});

describe("dropouts", () => {
  it("before advertise-keys and before share-keys: the rest aggregate, nothing to recover", async () => {
    const { round, result } = await runRound(
      { n: 10, seed: 21 },
      { "advertise-keys": [5], "share-keys": [1, 4] },
    );
    expectMatchesPlain(round, result, [0, 2, 3, 6, 7, 8, 9]);
    expect(result.dropouts).toEqual([
      { index: 5, phase: "advertise-keys", reason: "absent" },
      { index: 1, phase: "share-keys", reason: "absent" },
      { index: 4, phase: "share-keys", reason: "absent" },
    ]);
  });

  it("after share-keys: the dropped clients' mask keys are rebuilt and their masks removed", async () => {
    const { round, result } = await runRound({ n: 10, seed: 22 }, { "collect-masked": [2, 7] });
    expectMatchesPlain(round, result, [0, 1, 3, 4, 5, 6, 8, 9]);
    expect(result.dropouts.map((d) => [d.index, d.phase])).toEqual([
      [2, "collect-masked"],
      [7, "collect-masked"],
    ]);
  });

  it("after the masked input: the input counts, the others reveal its self-mask", async () => {
    const { round, result } = await runRound({ n: 10, seed: 23 }, { unmask: [3, 8] });
    expectMatchesPlain(round, result, range(10));
    expect(result.dropouts.map((d) => [d.index, d.phase])).toEqual([
      [3, "unmask"],
      [8, "unmask"],
    ]);
  });

  it("at every phase at once, on a sparse graph", async () => {
    const { round, result } = await runRound(
      { n: 30, k: 10, seed: 24 },
      { "advertise-keys": [0], "share-keys": [11], "collect-masked": [12, 20], unmask: [13] },
    );
    const contributors = range(30).filter((i) => ![0, 11, 12, 20].includes(i));
    expectMatchesPlain(round, result, contributors);
  });

  it("a client whose whole neighbourhood vanished is set aside, the round goes on", async () => {
    const round = new TestRound({ n: 20, k: 4, seed: 25 });
    const lonely = 7;
    round.advertise(round.server.graph.neighbours(lonely));
    expect(round.neighbourKeys().map((m) => m.index)).not.toContain(lonely);
    await round.shareKeys();
    await round.masked();
    round.unmask();
    const result = await round.finish();
    expect(result.dropouts).toContainEqual({
      index: lonely,
      phase: "advertise-keys",
      reason: "insufficient-neighbours",
    });
    expect(result.contributors).not.toContain(lonely);
    expectMatchesPlain(round, result, result.contributors);
  });
});

describe("fewer than t survivors abort the round with SECAGG_THRESHOLD", () => {
  // n = 5, complete graph: t = 3.
  it("at share-keys", async () => {
    const round = new TestRound({ n: 5 });
    round.advertise();
    await expectRejectsCode(
      round.shareKeys([0, 1, 2]),
      "SECAGG_THRESHOLD",
      /2 of 5 clients completed share-keys/,
    );
    expect(round.server.phase).toBe("aborted");
    expect(round.server.error?.code).toBe("SECAGG_THRESHOLD");
  });

  it("at collect-masked", async () => {
    const round = new TestRound({ n: 5 });
    round.advertise();
    await round.shareKeys();
    await expectRejectsCode(round.masked([1, 2, 3]), "SECAGG_THRESHOLD");
    expect(round.server.phase).toBe("aborted");
  });

  it("at unmask", async () => {
    const round = new TestRound({ n: 5 });
    round.advertise();
    await round.shareKeys();
    await round.masked();
    round.unmask([0, 3, 4]);
    await expectRejectsCode(round.finish(), "SECAGG_THRESHOLD");
    expect(round.server.phase).toBe("aborted");
  });

  it("and the aborted machine refuses everything after", async () => {
    const round = new TestRound({ n: 5 });
    round.advertise();
    await expectRejectsCode(round.shareKeys([0, 1, 2]), "SECAGG_THRESHOLD");
    await expectRejectsCode(round.server.finish(), "SECAGG_THRESHOLD");
  });
});

describe("what the server sees", () => {
  it("a masked vector is uncorrelated with the client's quantized input (|r| < 0.05, 10k)", async () => {
    const round = new TestRound({ n: 3, tensorSizes: [9999], seed: 31 });
    round.advertise();
    await round.shareKeys();
    const sent = await round.masked();
    // the same rng seed as client 0's, and quantizing is the first thing it draws for
    const plain = quantizeUpdate(
      round.updates[0]!.delta,
      round.updates[0]!.numExamples,
      round.params,
      round.setup.tensorSizes,
      createRng(31 * 1000),
    );
    const masked = sent.get(0)!.masked;
    const x = Array.from(plain, (v) => v | 0); // signed fixed-point values
    const y = Array.from(masked);
    expect(Math.abs(pearson(x, y))).toBeLessThan(0.05);
    expect(Math.abs(pearson(Array.from(plain), y))).toBeLessThan(0.05);
    // sanity: the plaintext correlates with itself through the harness's reconstruction
    round.unmask();
    const result = await round.finish();
    expect(result.contributors).toEqual([0, 1, 2]);
  });
});

function pearson(x: number[], y: number[]): number {
  const n = x.length;
  const mx = x.reduce((a, b) => a + b, 0) / n;
  const my = y.reduce((a, b) => a + b, 0) / n;
  let sxy = 0;
  let sxx = 0;
  let syy = 0;
  for (let i = 0; i < n; i++) {
    sxy += (x[i]! - mx) * (y[i]! - my);
    sxx += (x[i]! - mx) ** 2;
    syy += (y[i]! - my) ** 2;
  }
  return sxy / Math.sqrt(sxx * syy);
}
