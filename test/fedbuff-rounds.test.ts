/** Asynchronous rounds (FedBuff) over real socket.io: buffers, staleness, refusals. */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { stalenessWeight } from "../coordinator/fedbuff.js";
import type { CoordinatorOptions } from "../coordinator/options.js";
import { CohortClient } from "../client/index.js";
import { takeExamples } from "../models/datasets/index.js";
import { generateIdentity, toBase64 } from "../aggregation/secure/index.js";
import {
  closeAfterEach,
  mnistShards,
  startClients,
  startCoordinator,
  tempRunDir,
} from "./helpers/federation.js";
import { connectRaw, constantUpdate, type RawClient } from "./helpers/raw-client.js";
import { expectRejectsCode } from "./helpers/errors.js";
import { until } from "./helpers/wait.js";

const started = closeAfterEach();

/** An asynchronous coordinator of the mlp without a run directory, with `options` on top. */
const startAsync = (options: Partial<CoordinatorOptions>) =>
  startCoordinator({ model: "mlp", mode: "async", minFitClients: 1, runDir: null, ...options });

describe("FedBuff over socket.io", () => {
  it("a client whose connection dropped mid-fit is sent the version again when it is back", async () => {
    started.coordinator = await startAsync({
      buffer: 1,
      asyncConcurrency: 1,
      rounds: 1,
      minAvailableClients: 1,
      roundTimeoutMs: 5000,
    });
    const gone = await connectRaw(started.coordinator.url, "phone");
    started.raws.push(gone);
    const firstFit = gone.nextFit();
    const running = started.coordinator.run();
    const first = await firstFit;
    gone.close();
    const back = await connectRaw(started.coordinator.url, "phone");
    started.raws.push(back);
    const again = await back.nextFit();
    expect(again.round).toBe(first.round);
    expect(await back.send(constantUpdate(again, 1e-3))).toMatchObject({ ok: true });
    const summary = await running;
    expect(summary.rounds[0]!.failureReasons.map((f) => f.code)).toEqual(["CLIENT_DISCONNECTED"]);
  });

  it("a client that joins while others train is sent the version without waiting for an arrival", async () => {
    started.coordinator = await startAsync({
      buffer: 1,
      asyncConcurrency: 2,
      rounds: 1,
      minAvailableClients: 1,
    });
    const first = await connectRaw(started.coordinator.url, "first");
    started.raws.push(first);
    const firstFit = first.nextFit();
    const running = started.coordinator.run();
    // The first client holds its fit: no arrival comes while the second one joins.
    const held = await firstFit;
    const late = await connectRaw(started.coordinator.url, "late");
    started.raws.push(late);
    const lateFit = await late.nextFit();
    expect(lateFit.round).toBe(held.round);
    expect(await late.send(constantUpdate(lateFit, 1e-3))).toMatchObject({ ok: true });
    const summary = await running;
    expect(summary.rounds[0]!.cohortSize).toBe(1);
  });

  it("a buffer larger than the clients that can send it fails after roundTimeoutMs, saying why, instead of waiting forever", async () => {
    const { shards } = await mnistShards(2, 40, 50);
    const lines: string[] = [];
    started.coordinator = await startAsync({
      buffer: 3,
      asyncConcurrency: 3,
      rounds: 2,
      minAvailableClients: 2,
      roundTimeoutMs: 1500,
      log: (line) => lines.push(line),
    });
    started.clients = await startClients(started.coordinator!.url, shards);
    await expectRejectsCode(
      started.coordinator!.run(),
      "ROUND_FAILED",
      /version 1: 2 of 3 updates and no client to send it to \(2 connected, 2 of them already sent this version; a client trains each version once\) for 1500 ms/,
    );
    expect(
      lines.filter((l) => /waiting up to 1500 ms for clients to connect/.test(l)),
    ).toHaveLength(1);
  });

  it("keeps clients training, makes a version every K updates, and records staleness", async () => {
    const { shards, evalSet } = await mnistShards(4, 150, 300);
    const runDir = await tempRunDir();
    started.coordinator = await startCoordinator({
      model: "mlp",
      mode: "async",
      buffer: 2,
      asyncConcurrency: 3,
      rounds: 5,
      minAvailableClients: 4,
      minFitClients: 1,
      evalDataset: evalSet,
      runDir,
    });
    started.clients = await startClients(started.coordinator!.url, shards);
    const summary = await started.coordinator!.run();
    expect(summary.rounds).toHaveLength(5);
    for (const r of summary.rounds) {
      expect(r.mode).toBe("async");
      expect(r.participants).toBe(2);
      expect(r.staleness!.reduce((a, b) => a + b, 0)).toBe(2);
      expect(r.totalExamples).toBe(300);
    }
    // Three in flight, two per step: some updates were trained on an older version.
    expect(summary.rounds.some((r) => r.staleness!.slice(1).some((n) => n > 0))).toBe(true);
    expect(summary.rounds.at(-1)!.accuracy!).toBeGreaterThan(summary.initial!.accuracy! + 0.2);
    const lines = (await readFile(join(runDir, "metrics.jsonl"), "utf8")).trim().split("\n");
    expect(lines.map((l) => (JSON.parse(l) as { round: number }).round)).toEqual([1, 2, 3, 4, 5]);
    const index = JSON.parse(await readFile(join(runDir, "versions", "index.json"), "utf8")) as {
      versions: { version: number; parent: number | null; contributors: string[] }[];
    };
    expect(index.versions.map((v) => v.version)).toEqual([0, 1, 2, 3, 4, 5]);
    expect(index.versions.slice(1).every((v, i) => v.parent === i)).toBe(true);
    expect(index.versions.slice(1).every((v) => v.contributors.length === 2)).toBe(true);
  });

  it("clients with identities sign each update for the round they were sent, stale ones too", async () => {
    // The third client holds six times the data: the two others make steps while it trains.
    const { shards: full } = await mnistShards(3, 600, 100);
    const shards = [takeExamples(full[0]!, 100), takeExamples(full[1]!, 100), full[2]!];
    const keys = shards.map(() => generateIdentity());
    started.coordinator = await startCoordinator({
      model: "mlp",
      mode: "async",
      buffer: 2,
      asyncConcurrency: 3,
      rounds: 8,
      minAvailableClients: 3,
      minFitClients: 1,
      auth: { allowedKeys: keys.map((k) => toBase64(k.publicKey)) },
      runDir: null,
    });
    started.clients = shards.map(
      (data, i) =>
        new CohortClient({
          url: started.coordinator!.url,
          data,
          backend: "wasm",
          identity: keys[i]!,
          log: () => undefined,
        }),
    );
    await Promise.all(started.clients.map((c) => c.start()));
    const summary = await started.coordinator.run();
    expect(summary.rounds).toHaveLength(8);
    expect(summary.rounds.flatMap((r) => r.failureReasons)).toEqual([]);
    // The big client's update came steps after the model it was sent, and verified.
    const big = started.clients[2]!.options.clientId;
    const stale = summary.rounds.filter((r) => r.staleness!.slice(1).some((n) => n > 0));
    expect(stale.length).toBeGreaterThan(0);
    expect(stale.some((r) => r.clients.some((c) => c.clientId === big))).toBe(true);
  });

  it("a stale update shrinks the step by (1 + s)^-a: a step is the example-weighted mean of scaled deltas", async () => {
    started.coordinator = await startCoordinator({
      model: "mlp",
      mode: "async",
      buffer: 1,
      asyncConcurrency: 2,
      maxStaleness: 2,
      rounds: 2,
      minAvailableClients: 2,
      minFitClients: 1,
      runDir: null,
    });
    const initial = started.coordinator.weights().map((w) => Float32Array.from(w));
    const slow = await connectRaw(started.coordinator.url, "slow");
    const fast = await connectRaw(started.coordinator.url, "fast");
    started.raws.push(slow, fast);
    const slowFit = slow.nextFit();
    const fastFit = fast.nextFit();
    const running = started.coordinator.run();
    const [old, fresh] = await Promise.all([slowFit, fastFit]);
    expect(await fast.send(constantUpdate(fresh, 1e-3))).toMatchObject({ ok: true });
    await until(() => fast.received.length >= 2);
    // Sent at version 0, arriving after version 1: one step stale, scaled by 1/√2.
    expect(await slow.send(constantUpdate(old, 1e-3))).toMatchObject({ ok: true });
    const summary = await running;
    expect(summary.rounds.map((r) => r.staleness!.slice(0, 2))).toEqual([
      [1, 0],
      [0, 1],
    ]);
    const step = 1e-3 + 1e-3 / Math.SQRT2;
    summary.weights.forEach((w, i) => {
      for (let j = 0; j < w.length; j += 97) expect(w[j]).toBeCloseTo(initial[i]![j]! + step, 6);
    });
  });

  it("refuses an update trained on a version more than maxStaleness steps old (STALE_UPDATE)", async () => {
    started.coordinator = await startCoordinator({
      model: "mlp",
      mode: "async",
      buffer: 1,
      asyncConcurrency: 2,
      maxStaleness: 1,
      rounds: 3,
      minAvailableClients: 2,
      minFitClients: 1,
      runDir: null,
    });
    const slow = await connectRaw(started.coordinator!.url, "slow");
    const fast = await connectRaw(started.coordinator!.url, "fast");
    started.raws.push(slow, fast);
    const slowFit = slow.nextFit();
    let fastFit = fast.nextFit();
    const running = started.coordinator!.run();
    const old = await slowFit;
    expect(old.round).toBe(1);
    // The fast one makes versions 1 and 2 alone.
    for (const round of [1, 2]) {
      const request = await fastFit;
      expect(request.round).toBe(round);
      fastFit = fast.nextFit();
      expect(await fast.send(constantUpdate(request, 1e-4))).toMatchObject({ ok: true });
    }
    const third = await fastFit;
    expect(third.round).toBe(3);
    // Two steps were taken since the slow one's model: one more than allowed.
    expect(await slow.send(constantUpdate(old, 1e-4))).toMatchObject({
      ok: false,
      code: "STALE_UPDATE",
    });
    expect(await fast.send(constantUpdate(third, 1e-4))).toMatchObject({ ok: true });
    const summary = await running;
    expect(summary.rounds.map((r) => r.staleness)).toEqual([
      [1, 0],
      [1, 0],
      [1, 0],
    ]);
    expect(summary.rounds[2]!.failureReasons).toEqual([
      expect.objectContaining({ clientId: "slow", code: "STALE_UPDATE" }),
    ]);
  });

  it("an update naming a fresher version than it was sent, or a second one, is refused", async () => {
    const { shards } = await mnistShards(2, 100, 100);
    started.coordinator = await startCoordinator({
      model: "mlp",
      mode: "async",
      buffer: 2,
      asyncConcurrency: 3,
      // More steps than the honest two can make before the liar has answered.
      rounds: 6,
      minAvailableClients: 3,
      minFitClients: 1,
      runDir: null,
    });
    const liar = await connectRaw(started.coordinator!.url, "liar");
    started.raws.push(liar);
    const fit = liar.nextFit();
    started.clients = await startClients(started.coordinator!.url, shards);
    const running = started.coordinator!.run();
    const request = await fit;
    // A fresher base than it was sent: the coordinator knows what it sent.
    expect(
      await liar.send(constantUpdate({ ...request, round: request.round + 1 }, 1e-4)),
    ).toMatchObject({
      ok: false,
      code: "FUTURE_ROUND",
    });
    // Its real update still counts, once.
    expect(await liar.send(constantUpdate(request, 1e-4))).toMatchObject({ ok: true });
    // A replay: refused whether or not it has been sent a newer request since.
    const replay = await liar.send(constantUpdate(request, 1e-4));
    expect(replay.ok).toBe(false);
    expect(["NOT_IN_COHORT", "STALE_ROUND"]).toContain((replay as { code: string }).code);
    const summary = await running;
    expect(summary.rounds).toHaveLength(6);
    const contributors = summary.rounds.flatMap((r) => r.clients.map((c) => c.clientId));
    expect(contributors.filter((id) => id === "liar")).toHaveLength(1);
  });

  it("refuses, at start, secure aggregation and differential privacy in async mode", async () => {
    await expectRejectsCode(
      startCoordinator({ model: "mlp", mode: "async", secure: true, runDir: null }),
      "INVALID_OPTION",
      /mode async with secure/,
    );
    await expectRejectsCode(
      startCoordinator({
        model: "mlp",
        mode: "async",
        dpClip: 1,
        dpNoise: 1,
        dpPopulation: 100,
        runDir: null,
      }),
      "INVALID_OPTION",
      /mode async with differential privacy/,
    );
  });
});

describe("staleness weights", () => {
  it("are 1/√(1+s) by default, constant at exponent 0, and fall with s", () => {
    expect(stalenessWeight(0, 0.5)).toBe(1);
    expect(stalenessWeight(3, 0.5)).toBeCloseTo(0.5, 12);
    expect(stalenessWeight(8, 0.5)).toBeCloseTo(1 / 3, 12);
    expect(stalenessWeight(5, 0)).toBe(1);
    expect(stalenessWeight(1, 1)).toBe(0.5);
    for (let s = 0; s < 10; s++) {
      expect(stalenessWeight(s + 1, 0.5)).toBeLessThan(stalenessWeight(s, 0.5));
    }
  });
});
