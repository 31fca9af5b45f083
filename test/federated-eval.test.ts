/** Federated evaluation: clients evaluate the global model on held-out data; bad replies are left out with codes. */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { CohortClient } from "../client/index.js";
import { encode } from "../protocol/codec.js";
import { simulate } from "../simulations/index.js";
import { mnistShards, startCoordinator, tempRunDir } from "./helpers/federation.js";
import { connectRaw, updateFor, type RawClient } from "./helpers/raw-client.js";

describe("federated evaluation over socket.io", () => {
  it("averages held-out accuracy by examples, leaves out malformed and lying replies, and records it", async () => {
    const runDir = await tempRunDir("cohort-fedeval-");
    const { shards } = await mnistShards(3, 200);
    const coordinator = await startCoordinator({
      rounds: 2,
      minAvailableClients: 6,
      minFitClients: 6,
      fractionEvaluate: 1,
      runDir,
    });
    const clients = shards.map(
      (data, i) =>
        new CohortClient({
          url: coordinator.url,
          data,
          clientId: `honest-${i}`,
          evalFraction: 0.25,
          seed: i,
          backend: "wasm",
          log: () => undefined,
        }),
    );
    // No held-out data: answers NO_EVAL_DATA.
    const noEval = new CohortClient({
      url: coordinator.url,
      data: shards[0]!,
      clientId: "no-eval",
      backend: "wasm",
      log: () => undefined,
    });
    const raws: RawClient[] = [];
    try {
      await Promise.all([...clients, noEval].map((c) => c.start()));
      const garbage = await connectRaw(coordinator.url, "garbage");
      const liar = await connectRaw(coordinator.url, "liar");
      raws.push(garbage, liar);
      for (const raw of raws) {
        void (async () => {
          for (;;) {
            const fit = await raw.nextFit();
            await raw.send(updateFor(fit));
          }
        })();
      }
      garbage.socket.on("round:evaluate", (_p: unknown, ack: (r: unknown) => void) =>
        ack({ ok: true, value: new Uint8Array([0xc1, 0xff]) }),
      );
      liar.socket.on("round:evaluate", (_p: unknown, ack: (r: unknown) => void) =>
        ack({ ok: true, value: encode({ round: 1, numExamples: 1e6, loss: 0, accuracy: 1.5 }) }),
      );
      const summary = await coordinator.run();
      for (const round of summary.rounds) {
        expect(round.federatedClients).toBe(3);
        // 3 × ⌈0.25 · 200⌉ held-out examples.
        expect(round.federatedExamples).toBe(150);
        expect(round.federatedAccuracy).toBeGreaterThan(0.05);
        expect(round.federatedAccuracy).toBeLessThan(1);
        expect(round.federatedLoss).toBeGreaterThan(0);
        const codes = Object.fromEntries(
          round.evaluationFailures!.map((f) => [f.clientId, f.code]),
        );
        expect(codes).toEqual({
          garbage: "MALFORMED_PAYLOAD",
          liar: "INVALID_MESSAGE",
          "no-eval": "NO_EVAL_DATA",
        });
      }
      const lines = (await readFile(join(runDir, "metrics.jsonl"), "utf8")).trim().split("\n");
      expect(JSON.parse(lines[1]!).federatedAccuracy).toBe(summary.rounds[1]!.federatedAccuracy);
      const metrics = await (await fetch(`${coordinator.url}/metrics`)).text();
      expect(metrics).toMatch(/^cohort_federated_accuracy [0-9.]+$/m);
      const status = (await (await fetch(`${coordinator.url}/api/status`)).json()) as {
        history: { federatedAccuracy: number | null }[];
      };
      expect(status.history[1]!.federatedAccuracy).toBe(summary.rounds[1]!.federatedAccuracy);
    } finally {
      for (const r of raws) r.close();
      await Promise.all([...clients, noEval].map((c) => c.close()));
      await coordinator.close();
    }
  });
});

describe("federated evaluation in the simulator", () => {
  const small = {
    devices: 20,
    fractionFit: 0.25,
    rounds: 2,
    model: "mlp",
    dataset: "mnist",
    examplesPerDevice: 60,
    evalSize: 300,
    baselineEpochs: 0,
    evalFraction: 0.2,
    fractionEvaluate: 0.5,
  };

  it("holds out a share of every device, evaluates half the devices each round, plain and secure", async () => {
    const plain = await simulate(
      { ...small, runDir: await tempRunDir("cohort-fe-p-") },
      { progress: null },
    );
    const secure = await simulate(
      { ...small, secure: true, runDir: await tempRunDir("cohort-fe-s-") },
      { progress: null },
    );
    for (const run of [plain, secure]) {
      for (const r of run.rounds) {
        expect(r.federatedClients).toBe(10);
        expect(r.federatedExamples).toBe(10 * 12);
        expect(r.federatedAccuracy).toBeGreaterThan(0.1);
      }
      expect(run.summary.finalFederatedAccuracy).toBe(run.rounds[1]!.federatedAccuracy);
    }
  });

  it("refuses federated evaluation without held-out device data", async () => {
    await expect(simulate({ ...small, evalFraction: 0 }, { progress: null })).rejects.toThrow(
      /set evalFraction/,
    );
  });
});
