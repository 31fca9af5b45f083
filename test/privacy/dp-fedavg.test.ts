/** DP-FedAvg: clipping, noise of the stated variance, the fixed denominator, ε every round, the budget stop. */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { createRng } from "../../aggregation/random.js";
import { resolveStrategy } from "../../aggregation/strategies/index.js";
import { aggregateRound, serverStep } from "../../aggregation/server-step.js";
import { emptyState } from "../../aggregation/state.js";
import { currentClip, releasedRounds, withDpFedAvg } from "../../aggregation/privacy/dp-fedavg.js";
import { addGaussian, clipL2, l2Norm, secureUniform } from "../../aggregation/privacy/noise.js";
import { planEpsilon, TINY_SIMULATION } from "../helpers/privacy.js";
import { dpClipMod } from "../../client/fit-handler.js";
import { resolveOptions } from "../../coordinator/options.js";
import { exposition, StatusTracker, statusFamilies } from "../../coordinator/http/index.js";
import { simulate } from "../../simulations/index.js";
import { mnistShards, startClients, startCoordinator, tempRunDir } from "../helpers/federation.js";
import { expectCohortError } from "../helpers/errors.js";
import type { FitIns } from "../../client/fit-handler.js";

const vec = (...v: number[]) => [Float32Array.from(v)];

describe("clipping and noise", () => {
  it("clipping bounds every update's norm, scales one far outside, and leaves one inside alone", () => {
    const far = clipL2(vec(300, 400), 5);
    expect(far.clipped).toBe(true);
    expect(l2Norm(far.delta)).toBeCloseTo(5, 5);
    expect(Array.from(far.delta[0]!)).toEqual([3, 4]);
    const inside = clipL2(vec(0.3, 0.4), 5);
    expect(inside.clipped).toBe(false);
    expect(Array.from(inside.delta[0]!)).toEqual(Array.from(vec(0.3, 0.4)[0]!));
  });

  it("Gaussian noise has mean 0 and the stated variance (99.9 % intervals over 200,000 draws)", () => {
    const n = 200_000;
    const std = 2.5;
    for (const uniform of [secureUniform(), createRng(3)]) {
      const x = [new Float64Array(n)];
      addGaussian(x, std, uniform);
      const mean = x[0]!.reduce((a, b) => a + b, 0) / n;
      const variance = x[0]!.reduce((a, b) => a + (b - mean) ** 2, 0) / (n - 1);
      // mean: ± 3.29 σ/√n; variance: ± 3.29 σ²·√(2/n)
      expect(Math.abs(mean)).toBeLessThan((3.29 * std) / Math.sqrt(n));
      expect(Math.abs(variance - std * std)).toBeLessThan(3.29 * std * std * Math.sqrt(2 / n));
    }
  });

  it("the client mod sends the update clipped and weighted as one example", async () => {
    const ins = {
      request: { round: 1, weights: vec(0, 0), config: { dpClip: 1 } },
    } as unknown as FitIns;
    const out = await dpClipMod(ins, async () => ({
      result: {
        round: 1,
        numExamples: 600,
        delta: vec(30, 40),
        metrics: { loss: 1, accuracy: null, trainMs: 1, backend: "cpu" },
      },
      stats: { loss: 1, accuracy: null, trainMs: 1 },
    }));
    expect(out.result.numExamples).toBe(1);
    expect(l2Norm(out.result.delta)).toBeCloseTo(1, 5);
  });
});

describe("the DP-FedAvg strategy", () => {
  it("sums clipped updates alike, adds noise of std z·C, divides by the expected cohort, and counts the release", () => {
    const fedavg = resolveStrategy("fedavg");
    const global = vec(0, 0);
    const updates = [
      { clientId: "a", delta: vec(3, 4), numExamples: 1000 },
      { clientId: "b", delta: vec(0.3, 0.4), numExamples: 1 },
    ];
    const noiseless = withDpFedAvg(fedavg, { clip: 1, noiseMultiplier: 0, expectedCohort: 4 });
    const agg = aggregateRound(noiseless, global, updates)!;
    expect(agg.count).toBe(2);
    const next = serverStep(noiseless, global, emptyState(), agg, 1);
    // (0.6, 0.8) + (0.3, 0.4) over the expected 4, not the 2 that arrived, nor by examples.
    expect(next.weights[0]![0]).toBeCloseTo(0.225, 6);
    expect(next.weights[0]![1]).toBeCloseTo(0.3, 6);
    expect(releasedRounds(next.state)).toBe(1);
    expect(next.state.values["dp.clippedUpdates"]).toBe(1);
    // With noise: over many rounds the model moves by N(mean, (zC/4)²) per coordinate.
    const noisy = withDpFedAvg(fedavg, {
      clip: 1,
      noiseMultiplier: 2,
      expectedCohort: 4,
      uniform: createRng(5),
    });
    const draws = Array.from({ length: 4000 }, () => {
      const a = aggregateRound(noisy, global, updates)!;
      return serverStep(noisy, global, emptyState(), a, 1).weights[0]![0]! - 0.225;
    });
    const sd = Math.sqrt(draws.reduce((s, d) => s + d * d, 0) / draws.length);
    expect(sd).toBeGreaterThan(0.5 * 0.95);
    expect(sd).toBeLessThan(0.5 * 1.05);
  });

  it("is refused with a strategy that needs updates in the clear", () => {
    expectCohortError(
      () =>
        resolveOptions(
          { strategy: "median", dpClip: 1, dpNoise: 1, dpPopulation: 100 },
          () => undefined,
        ),
      "INVALID_OPTION",
      /differential privacy needs a linear strategy: median/,
    );
  });

  it("refuses settings that make no sense, naming why", () => {
    const o = (extra: Record<string, unknown>) => () => resolveOptions(extra, () => undefined);
    expectCohortError(o({ dpNoise: 1 }), "INVALID_OPTION", /needs dpClip/);
    expectCohortError(
      o({ dpClip: 1, dpPopulation: 10 }),
      "INVALID_OPTION",
      /exactly one of dpNoise/,
    );
    expectCohortError(
      o({ dpClip: 1, dpNoise: 1, dpTargetEpsilon: 2, dpPopulation: 10 }),
      "INVALID_OPTION",
      /exactly one of dpNoise/,
    );
    expectCohortError(
      o({ dpClip: 1, dpNoise: 1 }),
      "INVALID_OPTION",
      /dpPopulation .* is required/,
    );
  });
});

describe("adaptive clipping (Andrew et al. 2021)", () => {
  it("the clip follows the target quantile of the update norms", () => {
    const n = 50;
    // Norms spread evenly over (0, 2]: the median is 1.
    const updates = Array.from({ length: n }, (_, i) => ({
      clientId: `c${i}`,
      delta: vec(((i + 1) * 2) / n, 0),
      numExamples: 1,
    }));
    const dp = withDpFedAvg(resolveStrategy("fedavg"), {
      clip: 0.1,
      noiseMultiplier: 0.01,
      expectedCohort: n,
      uniform: createRng(8),
      adaptive: { targetQuantile: 0.5, learningRate: 0.2, countNoise: 0.5 },
    });
    let state = emptyState();
    const global = vec(0, 0);
    const clips: number[] = [];
    for (let round = 1; round <= 150; round++) {
      const config = dp.configureFit!({ round, rounds: 150 }, {} as never, state);
      // Clients send raw updates: the coordinator needs each norm to count it.
      expect(config.dpClip).toBeUndefined();
      clips.push(currentClip(state, 0.1));
      const agg = aggregateRound(dp, global, updates)!;
      state = serverStep(dp, global, state, agg, round).state;
    }
    expect(clips[0]).toBe(0.1);
    const settled = clips.slice(-30);
    expect(Math.min(...settled)).toBeGreaterThan(0.85);
    expect(Math.max(...settled)).toBeLessThan(1.15);
  });

  it("refuses a count noise that would spend the whole budget, and adaptive clipping in secure rounds", () => {
    const o = (extra: Record<string, unknown>) => () =>
      resolveOptions(
        { dpClip: 1, dpNoise: 1, dpPopulation: 100, dpClipQuantile: 0.5, ...extra },
        () => undefined,
      );
    expectCohortError(o({ dpCountNoise: 0.4 }), "INVALID_OPTION", /must exceed z\/2/);
    expectCohortError(o({ secure: true }), "INVALID_OPTION", /secure rounds hide/);
    expect(o({ dpCountNoise: 5 })).not.toThrow();
  });
});

describe("DP-FedAvg in the simulator", () => {
  const base = {
    devices: 60,
    fractionFit: 0.2,
    model: "mlp",
    dataset: "mnist",
    examplesPerDevice: 20,
    evalSize: 200,
    baselineEpochs: 0,
    dpClip: 1,
    dpNoise: 1,
    dpDelta: 1e-5,
  };

  it("a rejected version's rollback keeps the privacy it spent: ε rises every round", async () => {
    // Noise of z = 5 on a cohort of 12 wrecks each round's model, and a gate that rejects any
    // drop rolls training back to the initial model; each round was released all the same.
    const { rounds } = await simulate(
      {
        ...base,
        rounds: 4,
        dpNoise: 5,
        rollbackDrop: 1e-6,
        runDir: await tempRunDir("cohort-dp-rollback-"),
      },
      { progress: null },
    );
    const rejected = rounds.filter((r) => r.versionStatus === "rejected");
    expect(rejected.length).toBeGreaterThan(0);
    for (const r of rejected) expect(r.rollback).toMatchObject({ from: r.modelVersion });
    rounds.forEach((r, i) => {
      // Fixed-size cohorts: replace-one sensitivity, the noise multiplier halved.
      expect(r.epsilon).toBeCloseTo(planEpsilon({ kind: "fixed", q: 0.2 }, 5 / 2, i + 1), 8);
      if (i > 0) expect(r.epsilon!).toBeGreaterThan(rounds[i - 1]!.epsilon!);
    });
  });

  it("refuses simulated attackers under DP, which DP-FedAvg's aggregation would drop", async () => {
    await expect(
      simulate({ ...base, attack: { devices: 5 }, runDir: await tempRunDir("cohort-dp-attack-") }),
    ).rejects.toMatchObject({
      code: "INVALID_OPTION",
      message: expect.stringMatching(/not simulated under differential privacy/),
    });
  });

  it("reports ε after every round, as the accountant composes it, and in summary.json", async () => {
    const runDir = await tempRunDir("cohort-dp-");
    const { summary, rounds } = await simulate(
      { ...base, rounds: 3, sampling: "poisson", minFitClients: 2, runDir },
      { progress: null },
    );
    const q = 0.2;
    rounds.forEach((r, i) => {
      const want = planEpsilon({ kind: "poisson", q }, 1, i + 1);
      expect(r.epsilon).toBeCloseTo(want, 10);
      expect(r.noiseMultiplier).toBe(1);
    });
    expect(summary.epsilon).toBe(rounds.at(-1)!.epsilon);
    const written = JSON.parse(await readFile(join(runDir, "summary.json"), "utf8"));
    expect(written).toMatchObject({ epsilon: summary.epsilon, delta: 1e-5, stopReason: null });
    const lines = (await readFile(join(runDir, "metrics.jsonl"), "utf8")).trim().split("\n");
    expect(lines.map((l) => JSON.parse(l).epsilon)).toEqual(rounds.map((r) => r.epsilon));
    const svg = await readFile(join(runDir, "accuracy.svg"), "utf8");
    expect(svg).toContain("privacy spent");
    expect(svg).toContain("ε at δ = 0.00001");
  });

  it("in secure rounds clients clip and weight their updates alike, and the noise goes on the unmasked sum", async () => {
    const runDir = await tempRunDir("cohort-dp-secure-");
    const { rounds } = await simulate(
      { ...base, devices: 20, rounds: 2, secure: true, runDir },
      { progress: null },
    );
    for (const r of rounds) {
      expect(r.secure).toBe(true);
      expect(r.aborted).toBeUndefined();
      // Every update weighs one: the secure sum's weight is the number of contributors.
      expect(r.totalExamples).toBe(r.participants);
      expect(r.epsilon).toBeGreaterThan(0);
    }
  });

  it("ends the run cleanly before the round that would pass dpMaxEpsilon", async () => {
    const runDir = await tempRunDir("cohort-dp-budget-");
    // Replace-one: the sum moves by up to 2C, so the accountant sees z/2.
    const plan = (r: number) => planEpsilon({ kind: "fixed", q: 12 / 60 }, 1 / 2, r);
    // A budget between ε after 2 and after 3 rounds: exactly 2 rounds run.
    const budget = (plan(2) + plan(3)) / 2;
    const { summary, rounds } = await simulate(
      { ...base, rounds: 6, dpMaxEpsilon: budget, runDir },
      { progress: null },
    );
    expect(rounds).toHaveLength(2);
    expect(rounds.every((r) => r.epsilon! <= budget)).toBe(true);
    expect(summary.stopReason).toMatch(/round 3 would take ε to .* past dpMaxEpsilon/);
  });
});

describe("DP-FedAvg across a crash", () => {
  it("a resumed run counts the rounds already released: its ε is the uninterrupted run's", async () => {
    const runDir = await tempRunDir("cohort-dp-resume-");
    const options = {
      rounds: 3,
      minAvailableClients: 2,
      minFitClients: 2,
      // 2 of a population of 10 (q = 0.2 planned), but only 2 are connected: both are sampled
      // every round, and the accountant counts q = 1.
      fractionFit: 0.2,
      dpClip: 1,
      dpNoise: 1.1,
      dpPopulation: 10,
      runDir,
    };
    const { shards } = await mnistShards(2, 20);
    const first = await startCoordinator(options);
    let clients = await startClients(first.url, shards, "a");
    const running = first.run().catch(() => undefined);
    await new Promise<void>((resolve) => first.on("round", () => resolve()));
    await first.close(); // after round 1 is committed: as good as a crash here
    await running;
    await Promise.all(clients.map((c) => c.close()));
    const second = await startCoordinator({ ...options, resume: runDir });
    clients = await startClients(second.url, shards, "b");
    const summary = await second.run();
    await Promise.all(clients.map((c) => c.close()));
    await second.close();
    // Replace-one: the sum moves by up to 2C, so the accountant sees z/2.
    const want = (r: number) => planEpsilon({ kind: "fixed", q: 1 }, 1.1 / 2, r);
    expect(summary.rounds.map((r) => r.round)).toEqual([2, 3]);
    expect(summary.rounds.map((r) => r.epsilon)).toEqual([want(2), want(3)]);
    // Resuming with other DP settings is another experiment.
    await expect(
      startCoordinator({ ...options, dpNoise: 2, resume: runDir }),
    ).rejects.toMatchObject({ code: "INVALID_OPTION", message: expect.stringMatching(/dp \(was/) });
  });
});

describe("ε where people look", () => {
  it("the dashboard's status and /metrics carry the ε of the last round", async () => {
    const runDir = await tempRunDir("cohort-dp-status-");
    const { rounds } = await simulate(
      {
        ...TINY_SIMULATION,
        devices: 20,
        fractionFit: 0.5,
        rounds: 2,
        dpClip: 1,
        dpNoise: 1,
        runDir,
      },
      { progress: null },
    );
    const status = new StatusTracker({
      runId: "r",
      model: { name: "mlp", numParameters: 1 },
      secure: false,
      strategy: "fedavg",
      rounds: 2,
    });
    for (const r of rounds) status.completed(r);
    const snapshot = status.snapshot();
    expect(snapshot.history.map((p) => p.epsilon)).toEqual(rounds.map((r) => r.epsilon));
    const text = exposition(statusFamilies(snapshot));
    expect(text).toContain(`cohort_privacy_epsilon ${rounds[1]!.epsilon}`);
  });
});
