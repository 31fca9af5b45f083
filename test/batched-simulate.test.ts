/**
 * Cohort-batched training in the simulator: the same run batched and one by one gives the same
 * model within float tolerance, in this thread and on the worker pool; a model that does not
 * batch trains one by one and says why.
 */
import { Writable } from "node:stream";
import { describe, expect, it } from "vitest";
import { simulate, type SimulationInput } from "../simulations/index.js";
import { tempRunDir } from "./helpers/federation.js";
import { expectRejectsCode } from "./helpers/errors.js";
import { maxDiff } from "./helpers/weights.js";

const small: SimulationInput = {
  devices: 30,
  fractionFit: 1 / 3,
  rounds: 3,
  model: "mlp",
  dataset: "mnist",
  examplesPerDevice: 47,
  batchSize: 10,
  evalSize: 500,
  baselineEpochs: 0,
  seed: 5,
};

/** A stream that keeps what is written to it. */
function captured(): { stream: NodeJS.WriteStream; text: () => string } {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      chunks.push(chunk.toString());
      done();
    },
  });
  return { stream: stream as unknown as NodeJS.WriteStream, text: () => chunks.join("") };
}

async function run(input: SimulationInput, progress: NodeJS.WriteStream | null = null) {
  return simulate({ ...input, runDir: await tempRunDir("cohort-batched-") }, { progress });
}

describe("cohort-batched simulation", () => {
  it("gives one-by-one training's model and accuracy curve, in groups smaller than the cohort", async () => {
    // FedProx's term and a short last batch (47 examples) are in every device's run.
    const cfg = { ...small, strategy: { name: "fedprox", params: { proximalMu: 0.05 } } };
    const one = await run({ ...cfg, batched: "off" });
    const batched = await run({ ...cfg, batchGroup: 4 });
    expect(one.summary.training).toEqual({ batched: false, reason: "batched training is off" });
    expect(batched.summary.training).toEqual({ batched: true, reason: null });
    expect(maxDiff(batched.weights, one.weights)).toBeLessThan(1e-4);
    batched.rounds.forEach((r, i) => {
      expect(r.participants).toBe(10);
      expect(Math.abs(r.accuracy! - one.rounds[i]!.accuracy!)).toBeLessThanOrEqual(0.004);
      expect(r.trainLoss).toBeCloseTo(one.rounds[i]!.trainLoss!, 4);
    });
    expect(batched.summary.finalAccuracy!).toBeGreaterThan(one.summary.initialAccuracy! + 0.3);
  });

  it("trains batched groups on the worker pool with the same results as in this thread", async () => {
    const inThread = await run(small);
    const pooled = await run({ ...small, workers: 2, batchGroup: 3 });
    expect(pooled.summary.training.batched).toBe(true);
    expect(maxDiff(pooled.weights, inThread.weights)).toBeLessThan(1e-5);
  });

  it("runs secure rounds batched, equal to plain rounds", async () => {
    const plain = await run({ ...small, rounds: 1 });
    const secure = await run({ ...small, rounds: 1, secure: true });
    expect(secure.summary.training.batched).toBe(true);
    expect(secure.rounds[0]!.participants).toBe(10);
    // The masked sum is quantized: equal within the round's error bound, not bit for bit.
    const bound = secure.rounds[0]!.secureErrorBound!;
    expect(bound).toBeLessThan(1e-3);
    expect(maxDiff(secure.weights, plain.weights)).toBeLessThanOrEqual(bound + 1e-6);
  });

  it("a model that does not batch trains one by one, saying so once", async () => {
    const out = captured();
    const { summary } = await run(
      { ...small, devices: 6, fractionFit: 0.5, rounds: 2, model: "cnn", examplesPerDevice: 20 },
      out.stream,
    );
    expect(summary.training.batched).toBe(false);
    expect(summary.training.reason).toMatch(/Conv2D/);
    const said = out.text().match(/devices train one by one/g) ?? [];
    expect(said).toHaveLength(1);
  });

  it("refuses a bad batched setting", async () => {
    await expectRejectsCode(
      run({ ...small, batched: "yes" as "auto" }),
      "INVALID_OPTION",
      /batched must be "auto" or "off"/,
    );
    await expectRejectsCode(run({ ...small, batchGroup: 0 }), "INVALID_OPTION", /batchGroup/);
  });
});
