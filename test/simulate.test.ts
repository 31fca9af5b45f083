import { readFile } from "node:fs/promises";
import { join } from "node:path";
import * as tf from "@tensorflow/tfjs";
import { describe, expect, it } from "vitest";
import { simulate } from "../simulations/index.js";
import { tempRunDir } from "./helpers/federation.js";
import { runCli } from "./helpers/cli.js";
import { expectRejectsCode } from "./helpers/errors.js";
import { tabularDataset, tabularRows, writeCsv } from "./helpers/tabular.js";

const TIMING = new Set([
  "durationMs",
  "aggregationMs",
  "evaluationMs",
  "trainMs",
  "encodeMs",
  "decodeMs",
  "timestamp",
]);

/** metrics.jsonl without wall-clock fields, which no seed can fix. */
async function deterministicMetrics(runDir: string): Promise<unknown[]> {
  const text = await readFile(join(runDir, "metrics.jsonl"), "utf8");
  return text
    .trim()
    .split("\n")
    .map((line) => JSON.parse(line, (key, value) => (TIMING.has(key) ? undefined : value)));
}

const small = {
  devices: 50,
  fractionFit: 0.2,
  rounds: 3,
  model: "mlp",
  dataset: "mnist",
  examplesPerDevice: 80,
  evalSize: 1000,
  baselineEpochs: 0,
};

describe("simulate", () => {
  it("trains 50 virtual devices for 3 rounds in seconds; accuracy rises", async () => {
    const runDir = await tempRunDir("cohort-sim-");
    const { summary, rounds } = await simulate(
      { ...small, runDir, baselineEpochs: 1 },
      { progress: null },
    );
    expect(rounds).toHaveLength(3);
    expect(rounds.every((r) => r.participants === 10)).toBe(true);
    expect(summary.finalAccuracy!).toBeGreaterThan(summary.initialAccuracy! + 0.4);
    expect(summary.baseline!.accuracy).toBeGreaterThan(0.8);
    expect(summary.baseline!.examples).toBe(50 * 80);
    const files = JSON.parse(await readFile(join(runDir, "summary.json"), "utf8"));
    expect(files.roundsToTarget).toHaveProperty("0.9");
    const svg = await readFile(join(runDir, "accuracy.svg"), "utf8");
    expect(svg).toMatch(/^<svg[^>]*xmlns="http:\/\/www.w3.org\/2000\/svg"/);
    expect(svg).toContain("centralised");
    expect((svg.match(/<path /g) ?? []).length).toBe(5);
  });

  it("is deterministic: the same seed gives identical metrics and weights", async () => {
    const a = await tempRunDir("cohort-sim-a-");
    const b = await tempRunDir("cohort-sim-b-");
    const c = await tempRunDir("cohort-sim-c-");
    const ra = await simulate({ ...small, seed: 9, runDir: a }, { progress: null });
    const rb = await simulate({ ...small, seed: 9, runDir: b }, { progress: null });
    const rc = await simulate({ ...small, seed: 10, runDir: c }, { progress: null });
    expect(await deterministicMetrics(a)).toEqual(await deterministicMetrics(b));
    expect(ra.weights).toEqual(rb.weights);
    expect(await deterministicMetrics(a)).not.toEqual(await deterministicMetrics(c));
  });

  it("trains devices in worker threads with the same results as in this thread", async () => {
    const a = await tempRunDir("cohort-sim-w0-");
    const b = await tempRunDir("cohort-sim-w2-");
    const inThread = await simulate(
      { ...small, rounds: 2, seed: 3, runDir: a },
      { progress: null },
    );
    const pooled = await simulate(
      { ...small, rounds: 2, seed: 3, workers: 2, runDir: b },
      { progress: null },
    );
    expect(pooled.weights).toEqual(inThread.weights);
    expect(await deterministicMetrics(b)).toEqual(await deterministicMetrics(a));
  });

  it("completes with dropouts, disconnects and stragglers, recording each failure", async () => {
    const { rounds } = await simulate(
      {
        ...small,
        rounds: 3,
        fractionFit: 0.4,
        runDir: await tempRunDir("cohort-sim-faults-"),
        // The deadline is real time too: room for slow training on a loaded machine, with the
        // simulated latencies scaled alike so that some devices still miss it.
        roundTimeoutMs: 3000,
        faults: {
          dropoutBeforeFit: 0.15,
          dropoutAfterFit: 0.15,
          disconnect: 0.1,
          stragglerMeanMs: 900,
        },
      },
      { progress: null },
    );
    expect(rounds).toHaveLength(3);
    const failures = rounds.flatMap((r) => r.failureReasons);
    expect(failures.length).toBeGreaterThan(3);
    expect(rounds.every((r) => r.participants + r.failures === r.cohortSize)).toBe(true);
    const messages = failures.map((f) => f.message).join("\n");
    expect(messages).toMatch(/before training/);
    expect(messages).toMatch(/after training/);
    expect(messages).toMatch(/straggler/);
    expect(failures.map((f) => f.code)).toContain("CLIENT_DISCONNECTED");
    expect(rounds.at(-1)!.accuracy!).toBeGreaterThan(0.5);
  });

  it("runs secure rounds with dropouts at every phase, matching plain FedAvg when nobody drops", async () => {
    const faults = {
      dropoutBeforeFit: 0.1,
      dropoutAfterFit: 0.1,
      disconnect: 0.1,
      stragglerMeanMs: 0,
    };
    const secure = await simulate(
      {
        ...small,
        fractionFit: 0.3,
        secure: true,
        faults,
        runDir: await tempRunDir("cohort-sim-sec-"),
      },
      { progress: null },
    );
    expect(secure.rounds).toHaveLength(3);
    expect(secure.rounds.every((r) => r.secure && !r.aborted)).toBe(true);
    expect(secure.rounds.some((r) => r.failures > 0)).toBe(true);
    expect(secure.summary.finalAccuracy!).toBeGreaterThan(secure.summary.initialAccuracy! + 0.3);
    const clean = { ...small, rounds: 1, fractionFit: 0.1 };
    const plain = await simulate(
      { ...clean, runDir: await tempRunDir("cohort-sim-p-") },
      { progress: null },
    );
    const masked = await simulate(
      { ...clean, secure: true, runDir: await tempRunDir("cohort-sim-s-") },
      { progress: null },
    );
    let diff = 0;
    plain.weights.forEach((w, j) =>
      w.forEach((v, k) => (diff = Math.max(diff, Math.abs(v - masked.weights[j]![k]!)))),
    );
    expect(diff).toBeLessThanOrEqual(masked.rounds[0]!.secureErrorBound! + 1e-6);
  });

  it("runs over real socket.io on loopback", async () => {
    const { rounds, summary } = await simulate(
      {
        ...small,
        devices: 6,
        fractionFit: 0.5,
        rounds: 2,
        transport: "socket",
        runDir: await tempRunDir("cohort-sim-sock-"),
      },
      { progress: null },
    );
    expect(rounds.map((r) => r.participants)).toEqual([3, 3]);
    expect(rounds[0]!.bytesUp).toBeGreaterThan(3 * 199_210 * 4);
    expect(summary.finalAccuracy!).toBeGreaterThan(summary.initialAccuracy!);
  });

  it("rejects bad configs with a clear error", async () => {
    await expect(simulate({ devices: 0 }, { progress: null })).rejects.toMatchObject({
      code: "INVALID_OPTION",
    });
    await expect(simulate({ partition: "zipf" }, { progress: null })).rejects.toThrow(
      /partition must be/,
    );
    await expect(simulate(JSON.parse('{ "roundz": 3 }'), { progress: null })).rejects.toThrow(
      /unknown config keys: roundz/,
    );
    await expect(simulate({ faults: { dropoutBeforeFit: 2 } }, { progress: null })).rejects.toThrow(
      /probability/,
    );
  });

  it("refuses more examples than the dataset holds unless oversampling is allowed", async () => {
    const runDir = await tempRunDir("cohort-sim-over-");
    const args = [
      "simulate",
      ...["--devices", "200", "--examples-per-device", "50", "--fraction-fit", "0.02"],
      ...["--rounds", "1", "--eval-size", "200", "--baseline-epochs", "0", "--run-dir", runDir],
    ];
    const refused = await runCli(args);
    expect(refused.code).toBe(1);
    expect(refused.output).toMatch(
      /error INVALID_OPTION: iid: 200 devices × 50 examples need 10000 examples; the dataset has 8000\. .*--allow-oversampling/,
    );
    const allowed = await runCli([...args, "--allow-oversampling"]);
    expect(allowed.code, allowed.output).toBe(0);
    const summary = JSON.parse(await readFile(join(runDir, "summary.json"), "utf8"));
    expect(summary.config.allowOversampling).toBe(true);
    expect(summary.rounds).toBe(1);
  });

  it("runs a shipped experiment from the CLI with overrides", async () => {
    const runDir = await tempRunDir("cohort-sim-cli-");
    const { code, output } = await runCli([
      "simulate",
      "--config",
      "simulations/experiments/digits-2nn-iid.json",
      "--rounds",
      "2",
      "--eval-size",
      "500",
      "--baseline-epochs",
      "0",
      "--run-dir",
      runDir,
    ]);
    expect(code).toBe(0);
    expect(output).toMatch(/round 2\/2 +accuracy/);
    const summary = JSON.parse(await readFile(join(runDir, "summary.json"), "utf8"));
    expect(summary.config.devices).toBe(100);
    expect(summary.rounds).toBe(2);
    const { rm } = await import("node:fs/promises");
    await rm(join(runDir, "accuracy.svg"));
    const plot = await runCli(["plot", "--run-dir", runDir]);
    expect(plot.code).toBe(0);
    const svg = await readFile(join(runDir, "accuracy.svg"), "utf8");
    expect(svg).toContain("2NN IID MNIST digits: accuracy");
    const missing = await runCli(["plot", "--run-dir", "/nonexistent"]);
    expect(missing.output).toMatch(/INVALID_OPTION: no metrics.jsonl/);
  });

  it("trains on a user's Dataset object, one device per natural group; the loss falls", async () => {
    const runDir = await tempRunDir("cohort-sim-groups-");
    const data = tabularDataset(tabularRows(60, 4), "clinics");
    const { summary, rounds } = await simulate(
      {
        dataset: data,
        partition: "groups",
        fractionFit: 1,
        rounds: 3,
        learningRate: 0.1,
        baselineEpochs: 0,
        runDir,
      },
      { progress: null },
    );
    expect(summary.devices).toBe(4);
    expect(rounds.map((r) => r.participants)).toEqual([4, 4, 4]);
    // A seeded fifth of the 240 examples is the evaluation set; the devices share the rest.
    expect(rounds[0]!.totalExamples).toBe(192);
    expect(summary.finalLoss!).toBeLessThan(summary.initialLoss! * 0.8);
    expect(summary.finalAccuracy!).toBeGreaterThan(0.7);
    const written = JSON.parse(await readFile(join(runDir, "summary.json"), "utf8"));
    expect(written.config.dataset).toBe("clinics");
    expect(written.config.model).toBe("mlp");
    const run = JSON.parse(await readFile(join(runDir, "run.json"), "utf8"));
    expect(run.simulation.dataset).toBe("clinics");
    expect(run.simulation.partition).toBe("groups");
    expect(run.model.numParameters).toBe(4 * 64 + 64 + 64 * 3 + 3);
  });

  it("takes a tf.LayersModel and a test Dataset, and records both by name", async () => {
    const runDir = await tempRunDir("cohort-sim-model-");
    const rows = tabularRows(40, 3);
    const model = tf.sequential({
      name: "tiny",
      layers: [tf.layers.dense({ inputShape: [4], units: 3, activation: "softmax" })],
    });
    const { summary } = await simulate(
      {
        dataset: tabularDataset(rows.slice(0, 90), "mine"),
        testDataset: tabularDataset(rows.slice(90), "held"),
        model,
        devices: 3,
        fractionFit: 1,
        rounds: 2,
        baselineEpochs: 0,
        runDir,
      },
      { progress: null },
    );
    const written = JSON.parse(await readFile(join(runDir, "summary.json"), "utf8"));
    expect(written.config.model).toBe("tiny (in memory)");
    expect(written.config.testDataset).toBe("held");
    expect(summary.examplesPerDevice).toBe(30);
    const run = JSON.parse(await readFile(join(runDir, "run.json"), "utf8"));
    expect(run.simulation.model).toBe("tiny (in memory)");
    expect(JSON.stringify(run).length).toBeLessThan(20_000);
    model.dispose();
  });

  it("refuses groups without group ids, a devices count that is not theirs, and non-datasets", async () => {
    const data = tabularDataset(tabularRows(20, 3), "three");
    await expectRejectsCode(
      simulate({ dataset: data, partition: "groups", devices: 5 }, { progress: null }),
      "INVALID_OPTION",
      /each of the 3 groups of three\[train 48\] a device; devices is 5/,
    );
    await expectRejectsCode(
      simulate({ dataset: "mnist", partition: "groups" }, { progress: null }),
      "INVALID_OPTION",
      /needs a group id per example; mnist:train has none/,
    );
    await expectRejectsCode(
      simulate({ dataset: { ...data, labels: new Int32Array(2) } }, { progress: null }),
      "DATASET_INVALID",
    );
    await expectRejectsCode(
      simulate(JSON.parse('{ "dataset": 7 }'), { progress: null }),
      "INVALID_OPTION",
      /dataset must be a dataset spec .* or a Dataset object/,
    );
  });

  it("runs a csv:FILE dataset from the CLI with its natural groups", async () => {
    const runDir = await tempRunDir("cohort-sim-csv-");
    const csv = join(runDir, "patients.csv");
    await writeCsv(csv, tabularRows(50, 3), ["a", "b", "c", "d", "outcome", "site"]);
    const { code, output } = await runCli([
      "simulate",
      ...["--dataset", `csv:${csv}?group=site`, "--partition", "groups"],
      ...["--rounds", "3", "--fraction-fit", "1", "--baseline-epochs", "0"],
      ...["--run-dir", join(runDir, "run")],
    ]);
    expect(code, output).toBe(0);
    expect(output).toMatch(/3 devices × ≈40 examples \(groups\)/);
    const summary = JSON.parse(await readFile(join(runDir, "run", "summary.json"), "utf8"));
    expect(summary.devices).toBe(3);
    expect(summary.rounds).toBe(3);
    expect(summary.config.dataset).toBe(`csv:${csv}?group=site`);
    expect(summary.finalLoss).toBeLessThan(summary.initialLoss);
  });
});
