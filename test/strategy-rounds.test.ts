/** Strategies in real rounds: secure and plain FedAdam agree, impossible combinations are refused at start, run.json keeps no secret. */
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { simulate } from "../simulations/index.js";
import { resolveStrategy, type Strategy } from "../aggregation/index.js";
import { generateIdentity, toBase64 } from "../aggregation/secure/index.js";
import { startCoordinator, tempRunDir } from "./helpers/federation.js";
import { expectRejectsCode } from "./helpers/errors.js";
import { until } from "./helpers/wait.js";
import { maxDiff } from "./helpers/weights.js";

const small = {
  devices: 30,
  fractionFit: 0.2,
  rounds: 2,
  model: "mlp",
  dataset: "mnist",
  examplesPerDevice: 60,
  evalSize: 500,
  baselineEpochs: 0,
};

describe("strategies in rounds", () => {
  it("secure FedAdam equals plain FedAdam within the quantization bound", async () => {
    const fedadam = { name: "fedadam", params: { serverLearningRate: 0.01, tau: 0.001 } };
    const cfg = { ...small, rounds: 1, strategy: fedadam };
    const plain = await simulate(
      { ...cfg, runDir: await tempRunDir("cohort-adam-p-") },
      { progress: null },
    );
    const masked = await simulate(
      { ...cfg, secure: true, runDir: await tempRunDir("cohort-adam-s-") },
      { progress: null },
    );
    const bound = masked.rounds[0]!.secureErrorBound!;
    // One FedAdam step is Lipschitz in the mean delta with constant η(1 − β₁)/τ = 1 here.
    expect(maxDiff(plain.weights, masked.weights)).toBeLessThanOrEqual(bound * 1 + 1e-6);
    // And FedAdam moved the model differently from FedAvg.
    const fedavg = await simulate(
      { ...cfg, strategy: "fedavg", runDir: await tempRunDir("cohort-avg-") },
      { progress: null },
    );
    expect(maxDiff(fedavg.weights, plain.weights)).toBeGreaterThan(1e-3);
  });

  it("refuses median with secure aggregation when the options are checked, before any round", async () => {
    await expectRejectsCode(
      startCoordinator({ secure: true, strategy: "median", runDir: null }),
      "INVALID_OPTION",
      /median.*in the clear/,
    );
    await expectRejectsCode(
      simulate(
        { ...small, secure: true, strategy: { name: "krum", params: { f: 1 } } },
        { progress: null },
      ),
      "INVALID_OPTION",
      /krum.*in the clear/,
    );
  });

  it("runs a user's own strategy object through the simulator", async () => {
    let steps = 0;
    const base = resolveStrategy("fedavg");
    const halfStep: Strategy = {
      name: "half-step",
      ref: { name: "half-step" },
      aggregator: base.aggregator,
      optimizer: {
        name: "half",
        init: () => ({ arrays: {}, values: { steps: 0 } }),
        step(w, delta, s) {
          steps++;
          const weights = w.map((t, i) => t.map((v, j) => v + 0.5 * delta[i]![j]!));
          return {
            weights,
            state: { arrays: {}, values: { steps: (s.values.steps as number) + 1 } },
          };
        },
      },
    };
    const runDir = await tempRunDir("cohort-own-");
    const own = await simulate({ ...small, strategy: halfStep, runDir }, { progress: null });
    expect(steps).toBe(2);
    const ledger = JSON.parse(await readFile(join(runDir, "ledger.json"), "utf8"));
    expect(ledger.strategyValues).toEqual({ steps: 2 });
    const half = await simulate(
      {
        ...small,
        strategy: { name: "fedavg", params: { serverLearningRate: 0.5 } },
        runDir: await tempRunDir("cohort-half-"),
      },
      { progress: null },
    );
    expect(maxDiff(own.weights, half.weights)).toBeLessThan(1e-6);
  });

  it("a sign flip ×10 by 2 of 10 devices wrecks FedAvg; the median and Krum keep training", async () => {
    const cfg = {
      ...small,
      devices: 10,
      fractionFit: 1,
      rounds: 3,
      examplesPerDevice: 100,
      attack: { devices: 2, kind: "sign-flip" as const, scale: 10 },
    };
    const run = async (strategy: string | { name: string; params: Record<string, number> }) =>
      (
        await simulate(
          { ...cfg, strategy, runDir: await tempRunDir("cohort-attack-") },
          { progress: null },
        )
      ).summary.finalAccuracy!;
    const clean = (
      await simulate(
        { ...cfg, attack: null, runDir: await tempRunDir("cohort-clean-") },
        { progress: null },
      )
    ).summary.finalAccuracy!;
    const fedavg = await run("fedavg");
    const median = await run("median");
    const krum = await run({ name: "krum", params: { f: 2 } });
    expect(fedavg).toBeLessThan(0.3);
    expect(median).toBeGreaterThan(clean - 0.15);
    expect(krum).toBeGreaterThan(clean - 0.15);
  });

  it("run.json records the strategy and configuration, and no key, token, API token or certificate", async () => {
    const runDir = await tempRunDir("cohort-runjson-");
    const signing = generateIdentity();
    const client = generateIdentity();
    const coordinator = await startCoordinator({
      runDir,
      strategy: { name: "fedavgm", params: { momentum: 0.5 } },
      signingKey: signing.secretKey,
      auth: { allowedKeys: [toBase64(client.publicKey)] },
      apiToken: "dashboard-token-0123456789",
    });
    const running = coordinator.run().catch(() => undefined);
    await until(() => existsSync(join(runDir, "run.json")), 10_000);
    await coordinator.close();
    await running;
    const text = await readFile(join(runDir, "run.json"), "utf8");
    const run = JSON.parse(text);
    expect(run.options.strategy).toEqual({
      name: "fedavgm",
      params: { momentum: 0.5, nesterov: false, proximalMu: 0, serverLearningRate: 1 },
    });
    expect(run.config.seed).toBe(0);
    expect(run.configHash).toMatch(/^[0-9a-f]{64}$/);
    expect(run.options.auth).toBe(true);
    expect(run.options.apiToken).toBe(true);
    expect(text).not.toContain("dashboard-token-0123456789");
    expect(text).not.toContain(toBase64(signing.secretKey));
    expect(text).not.toContain(toBase64(client.publicKey));
    expect(text).not.toMatch(/allowedKeys|secretKey|BEGIN/);
  });
});

describe("the documented custom strategy (docs/strategies.md)", () => {
  it("runs through the simulator with its round number in every client's config", async () => {
    const fedavg = resolveStrategy("fedavg");
    const seen: number[] = [];
    const decaying: Strategy = {
      name: "fedavg-decay",
      ref: { name: "fedavg-decay", params: { power: 0.5 } },
      aggregator: fedavg.aggregator,
      optimizer: {
        name: "decaying-sgd",
        init: () => ({ arrays: {}, values: {} }),
        step(w, delta, state, t) {
          seen.push(t);
          const eta = 1 / Math.sqrt(t);
          const weights = w.map((layer, i) => layer.map((v, j) => v + eta * delta[i]![j]!));
          return { weights, state };
        },
      },
      configureFit: (ctx, base) => ({ ...base, extra: { ...base.extra, round: ctx.round } }),
    };
    const { summary } = await simulate(
      {
        ...small,
        devices: 20,
        rounds: 3,
        strategy: decaying,
        runDir: await tempRunDir("cohort-doc-"),
      },
      { progress: null },
    );
    expect(seen).toEqual([1, 2, 3]);
    expect(summary.finalAccuracy!).toBeGreaterThan(summary.initialAccuracy!);
  });
});
