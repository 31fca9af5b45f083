/** FedProx and per-round configuration: the proximal term on every path, schedules on the wire, failures reported at once. */
import { beforeAll, describe, expect, it } from "vitest";
import { simulate } from "../simulations/index.js";
import {
  resolveModel,
  modelFromSpec,
  readWeights,
  selectBackend,
  toTensors,
  trainLocal,
  writeWeights,
} from "../models/index.js";
import { CohortClient } from "../client/index.js";
import { CohortError } from "../protocol/errors.js";
import { startCoordinator, tempRunDir, mnistShards } from "./helpers/federation.js";
import { connectRaw, updateFor, type RawClient } from "./helpers/raw-client.js";

const small = {
  devices: 20,
  fractionFit: 0.25,
  rounds: 2,
  model: "mlp",
  dataset: "mnist",
  examplesPerDevice: 50,
  evalSize: 300,
  baselineEpochs: 0,
};

function distance(a: readonly Float32Array[], b: readonly Float32Array[]): number {
  let s = 0;
  a.forEach((t, i) => t.forEach((v, j) => (s += (v - b[i]![j]!) ** 2)));
  return Math.sqrt(s);
}

describe("FedProx", () => {
  beforeAll(async () => {
    await selectBackend("wasm");
  });

  it("μ = 0 is FedAvg bit for bit", async () => {
    const fedavg = await simulate(
      { ...small, runDir: await tempRunDir("cohort-fp-a-") },
      { progress: null },
    );
    const fedprox0 = await simulate(
      {
        ...small,
        strategy: { name: "fedprox", params: { proximalMu: 0 } },
        runDir: await tempRunDir("cohort-fp-0-"),
      },
      { progress: null },
    );
    expect(fedprox0.weights).toEqual(fedavg.weights);
  });

  it("μ > 0 keeps the local model measurably closer to the global one, and μ = 1 closer than μ = 0.1", async () => {
    const { spec, weights: start } = await resolveModel("mlp", { seed: 1 });
    const { shards } = await mnistShards(1, 200);
    const tensors = toTensors(shards[0]!);
    const model = await modelFromSpec(spec);
    const train = async (mu: number) => {
      writeWeights(model, start);
      const stats = await trainLocal(
        model,
        tensors,
        { optimizer: "sgd", learningRate: 0.1, localEpochs: 2, batchSize: 10, proximalMu: mu },
        5,
      );
      return { moved: distance(await readWeights(model), start), stats };
    };
    try {
      const plain = await train(0);
      const weak = await train(0.1);
      const strong = await train(1);
      expect(weak.moved).toBeLessThan(plain.moved * 0.98);
      expect(strong.moved).toBeLessThan(weak.moved * 0.9);
      // Still training: the loss it reports is the task's cross-entropy, and it is finite and sane.
      expect(strong.stats.loss).toBeGreaterThan(0);
      expect(strong.stats.loss).toBeLessThan(plain.stats.loss * 3);
      expect(strong.stats.accuracy).toBeGreaterThan(0.3);
      // Deterministic with a seed.
      expect((await train(1)).moved).toBe(strong.moved);
    } finally {
      tensors.dispose();
      model.dispose();
    }
  });

  it("trains in worker threads with the same results as in this thread", async () => {
    const cfg = { ...small, strategy: { name: "fedprox", params: { proximalMu: 0.1 } }, seed: 4 };
    const inThread = await simulate(
      { ...cfg, runDir: await tempRunDir("cohort-fp-t-") },
      { progress: null },
    );
    const pooled = await simulate(
      { ...cfg, workers: 2, runDir: await tempRunDir("cohort-fp-w-") },
      { progress: null },
    );
    expect(pooled.weights).toEqual(inThread.weights);
    const fedavg = await simulate(
      { ...small, seed: 4, runDir: await tempRunDir("cohort-fp-v-") },
      { progress: null },
    );
    expect(distance(fedavg.weights, inThread.weights)).toBeGreaterThan(1e-4);
  });
});

describe("per-round configuration", () => {
  it("the fit request carries the scheduled rate, μ and the user's keys each round", async () => {
    const coordinator = await startCoordinator({
      rounds: 3,
      minAvailableClients: 1,
      minFitClients: 1,
      learningRate: 0.2,
      lrSchedule: "step:1:0.5",
      fitConfig: { tag: "exp-7", warmup: false },
      strategy: { name: "fedprox", params: { proximalMu: 0.05 } },
      runDir: null,
    });
    const raw: RawClient = await connectRaw(coordinator.url, "r1");
    try {
      const running = coordinator.run();
      const seen = [];
      for (let round = 1; round <= 3; round++) {
        const request = await raw.nextFit();
        seen.push(request.config);
        expect(await raw.send(updateFor(request))).toMatchObject({ ok: true });
      }
      await running;
      expect(seen.map((c) => c.learningRate)).toEqual([0.2, 0.1, 0.05]);
      expect(seen.every((c) => c.proximalMu === 0.05)).toBe(true);
      expect(seen[0]!.extra).toEqual({ tag: "exp-7", warmup: false });
      expect(seen[0]!.localEpochs).toBe(1);
    } finally {
      raw.close();
      await coordinator.close();
    }
  });

  it("refuses a bad schedule or a non-scalar user key when the options are checked", async () => {
    await expect(startCoordinator({ lrSchedule: "linear", runDir: null })).rejects.toThrow(
      /schedule "linear"/,
    );
    await expect(
      startCoordinator({ lrSchedule: "cosine:0.5", learningRate: 0.1, runDir: null }),
    ).rejects.toThrow(/min must be in \[0, 0.1\)/);
    await expect(
      startCoordinator({ fitConfig: { nested: { a: 1 } } as never, runDir: null }),
    ).rejects.toThrow(/extra.nested/);
  });
});

describe("a client whose fit fails", () => {
  it("ends the round's wait for it at once, with its code, while the others' updates count", async () => {
    const { shards } = await mnistShards(2, 60);
    const coordinator = await startCoordinator({
      rounds: 1,
      minAvailableClients: 2,
      minFitClients: 1,
      roundTimeoutMs: 120_000,
      runDir: null,
    });
    const lines: string[] = [];
    const good = new CohortClient({
      url: coordinator.url,
      data: shards[0]!,
      clientId: "good",
      backend: "wasm",
      log: () => undefined,
    });
    // A fit that fails in the client's own code (a mod that cannot reach its store).
    const bad = new CohortClient({
      url: coordinator.url,
      data: shards[1]!,
      clientId: "bad",
      backend: "wasm",
      log: (l) => lines.push(l),
      mods: [
        () => Promise.reject(new CohortError("ROUND_FAILED", "the local feature store is offline")),
      ],
    });
    try {
      await Promise.all([good.start(), bad.start()]);
      const summary = await coordinator.run();
      const round = summary.rounds[0]!;
      expect(round.participants).toBe(1);
      expect(round.failureReasons).toEqual([
        expect.objectContaining({
          clientId: "bad",
          code: "ROUND_FAILED",
          message: expect.stringMatching(/fit failed.*feature store is offline/),
        }),
      ]);
      // Far below the deadline: nobody waited for it.
      expect(round.durationMs).toBeLessThan(60_000);
      expect(lines.join("\n")).toMatch(/fit failed: ROUND_FAILED/);
    } finally {
      await Promise.all([good.close(), bad.close()]);
      await coordinator.close();
    }
  });

  it("gives up at the task when its data does not fit the model: run() rejects with INVALID_MODEL naming what differs", async () => {
    const { shards } = await mnistShards(2, 60);
    const coordinator = await startCoordinator({
      rounds: 1,
      minAvailableClients: 1,
      minFitClients: 1,
      runDir: null,
    });
    // 784 features, but 12 classes against the model's 10.
    const wrong = { ...shards[1]!, name: "twelve-classes", numClasses: 12 };
    const errors: string[] = [];
    const bad = new CohortClient({
      url: coordinator.url,
      data: wrong,
      clientId: "bad",
      backend: "wasm",
      log: (l) => errors.push(l),
    });
    try {
      await bad.start();
      const error = await bad.done.then(
        () => null,
        (e: unknown) => e as CohortError,
      );
      expect(error?.code).toBe("INVALID_MODEL");
      expect(error?.message).toMatch(
        /model mlp on training data twelve-classes: the model outputs \[10\] per example but sparse-categorical-crossentropy on labels of shape \[\] needs \[12\]/,
      );
      expect(errors.join("\n")).toMatch(/INVALID_MODEL: model mlp on training data twelve-classes/);
    } finally {
      await bad.close();
      await coordinator.close();
    }
  });
});
