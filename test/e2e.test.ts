import { readFile, readdir } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import type { Coordinator } from "../coordinator/index.js";
import type { CohortClient } from "../client/index.js";
import { resolveModel } from "../models/index.js";
import { mnistShards, startClients, startCoordinator, tempRunDir } from "./helpers/federation.js";

describe("end to end: coordinator and 3 Node clients over socket.io on MNIST digits", () => {
  let coordinator: Coordinator | undefined;
  let clients: CohortClient[] = [];
  afterEach(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await coordinator?.close();
  });

  it("trains the 2NN with FedAvg: accuracy rises well above chance", async () => {
    const { shards, evalSet } = await mnistShards(3);
    const runDir = await tempRunDir();
    coordinator = await startCoordinator({
      model: "mlp",
      rounds: 3,
      minAvailableClients: 3,
      minFitClients: 3,
      learningRate: 0.1,
      batchSize: 10,
      evalDataset: evalSet,
      runDir,
    });
    clients = await startClients(coordinator.url, shards);
    const done = Promise.all(clients.map((c) => c.done));
    const summary = await coordinator.run();
    const finished = await done;
    expect(finished.every((d) => d.rounds === 3)).toBe(true);

    expect(summary.initial!.accuracy).toBeLessThan(0.3);
    const accuracies = summary.rounds.map((r) => r.accuracy!);
    expect(accuracies[2]).toBeGreaterThan(0.85);
    expect(summary.rounds.every((r) => r.participants === 3 && r.failures === 0)).toBe(true);
    // Backends are visible per client in the round metrics.
    expect(summary.rounds[0]!.clients.map((c) => c.backend)).toEqual(["wasm", "wasm", "wasm"]);

    // The run directory: one line per round and a tfjs-loadable checkpoint of every round.
    const lines = (await readFile(join(runDir, "metrics.jsonl"), "utf8")).trim().split("\n");
    expect(lines.map((l) => JSON.parse(l).round)).toEqual([1, 2, 3]);
    const first = JSON.parse(lines[0]!);
    for (const key of [
      "participants",
      "failures",
      "durationMs",
      "bytesUp",
      "bytesDown",
      "secure",
      "accuracy",
      "loss",
    ]) {
      expect(first).toHaveProperty(key);
    }
    expect(first.bytesUp).toBeGreaterThan(3 * 199_210 * 4);
    expect(first.bytesDown).toBeGreaterThan(3 * 199_210 * 4);
    const checkpoints = await readdir(join(runDir, "checkpoints"));
    expect(checkpoints.sort()).toEqual(["round-0000", "round-0001", "round-0002", "round-0003"]);
    const last = await resolveModel(join(runDir, "checkpoints", "round-0003", "model.json"));
    expect(last.weights).toEqual(summary.weights);
  });
});
