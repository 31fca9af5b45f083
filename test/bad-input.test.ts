import { afterEach, describe, expect, it } from "vitest";
import { io } from "socket.io-client";
import type { Coordinator } from "../coordinator/index.js";
import type { CohortClient } from "../client/index.js";
import { encode } from "../protocol/codec.js";
import type { ErrorCode } from "../protocol/errors.js";
import { PROTOCOL_VERSION } from "../protocol/version.js";
import { connectRaw, updateFor, type RawClient } from "./helpers/raw-client.js";
import { until } from "./helpers/wait.js";
import { mnistShards, startClients, startCoordinator } from "./helpers/federation.js";

describe("the coordinator survives bad input", () => {
  let coordinator: Coordinator | undefined;
  let clients: CohortClient[] = [];
  let raws: RawClient[] = [];
  afterEach(async () => {
    raws.forEach((r) => r.close());
    await Promise.all(clients.map((c) => c.close()));
    await coordinator?.close();
    raws = [];
    clients = [];
  });

  it("answers every malformed update with a clear code, leaves it out, and completes the round", async () => {
    const { shards, evalSet } = await mnistShards(2, 500, 500);
    coordinator = await startCoordinator({
      model: "mlp",
      rounds: 2,
      minAvailableClients: 3,
      minFitClients: 2,
      maxUploadBytes: 2 * 1024 * 1024,
      roundTimeoutMs: 30_000,
      evalDataset: evalSet,
      runDir: null,
    });
    const rejected: string[] = [];
    coordinator.on("rejected", (r) => rejected.push(r.code));
    clients = await startClients(coordinator.url, shards);
    const hostile = await connectRaw(coordinator.url, "hostile");
    raws.push(hostile);
    const running = coordinator.run();
    running.catch(() => undefined);

    const fit1 = await hostile.nextFit();
    expect(fit1.round).toBe(1);
    // Round 1: the hostile member sends garbage of every kind, then one valid (zero) update.
    const w = fit1.weights;
    const cases: [string, unknown, ErrorCode][] = [
      ["random bytes", new Uint8Array([0xc1, 0xff, 0x00, 0x13, 0x37]), "MALFORMED_PAYLOAD"],
      ["truncated msgpack", updateFor(fit1).subarray(0, 1000), "MALFORMED_PAYLOAD"],
      ["a string", "hello", "MALFORMED_PAYLOAD"],
      ["a plain object", { round: 1 }, "MALFORMED_PAYLOAD"],
      ["not an object", encode([1, 2, 3]), "INVALID_MESSAGE"],
      [
        "wrong layer count",
        updateFor(fit1, { delta: w.slice(1).map((t) => new Float32Array(t.length)) }),
        "SHAPE_MISMATCH",
      ],
      [
        "wrong shape",
        updateFor(fit1, {
          delta: w.map((t, i) => new Float32Array(i === 2 ? t.length + 1 : t.length)),
        }),
        "SHAPE_MISMATCH",
      ],
      [
        "NaN",
        updateFor(fit1, { delta: w.map((t) => new Float32Array(t.length).fill(Number.NaN)) }),
        "NON_FINITE",
      ],
      [
        "Infinity",
        updateFor(fit1, {
          delta: w.map((t, i) => {
            const a = new Float32Array(t.length);
            if (i === 1) a[3] = Infinity;
            return a;
          }),
        }),
        "NON_FINITE",
      ],
      ["stale round", updateFor(fit1, { round: 0 }), "INVALID_MESSAGE"],
      ["future round", updateFor(fit1, { round: 2 }), "FUTURE_ROUND"],
      ["zero examples", updateFor(fit1, { numExamples: 0 }), "BAD_NUM_EXAMPLES"],
      ["oversized payload", new Uint8Array(2 * 1024 * 1024 + 100), "PAYLOAD_TOO_LARGE"],
    ];
    for (const [name, payload, code] of cases) {
      const reply = await hostile.send(payload);
      expect(reply, name).toMatchObject({ ok: false, code });
      if (!reply.ok) expect(reply.message.length, name).toBeGreaterThan(5);
    }
    // A client that joins mid-round is not in the cohort.
    const late = await connectRaw(coordinator.url, "late");
    raws.push(late);
    expect(await late.send(updateFor(fit1))).toMatchObject({ ok: false, code: "NOT_IN_COHORT" });
    late.close();
    await until(() => !coordinator!.clients().includes("late"));
    // After all that, a valid update is still accepted.
    expect(await hostile.send(updateFor(fit1, { numExamples: 1 }))).toMatchObject({ ok: true });

    // Round 2: a late update for round 1 is stale; the hostile member then vanishes mid-round.
    const fit2 = await hostile.nextFit();
    expect(fit2.round).toBe(2);
    expect(await hostile.send(updateFor(fit1))).toMatchObject({ ok: false, code: "STALE_ROUND" });
    hostile.close();

    const summary = await running;
    expect(summary.rounds).toHaveLength(2);
    expect(summary.rounds[0]!.participants).toBe(3);
    expect(summary.rounds[1]!.participants).toBe(2);
    expect(summary.rounds[1]!.failureReasons).toEqual([
      expect.objectContaining({ clientId: "hostile", code: "CLIENT_DISCONNECTED" }),
    ]);
    expect(summary.rounds[1]!.accuracy!).toBeGreaterThan(summary.initial!.accuracy! + 0.3);
    expect(rejected).toContain("PAYLOAD_TOO_LARGE");
    expect(rejected.length).toBe(cases.length + 2);
  });

  it("counts a member that sends only garbage as a failure at the deadline and retries a round with too few updates", async () => {
    coordinator = await startCoordinator({
      model: "mlp",
      rounds: 1,
      minAvailableClients: 2,
      minFitClients: 2,
      roundTimeoutMs: 1500,
      maxRoundAttempts: 2,
      runDir: null,
    });
    const a = await connectRaw(coordinator.url, "a");
    const b = await connectRaw(coordinator.url, "b");
    raws.push(a, b);
    const running = coordinator.run();
    running.catch(() => undefined);
    const fitA = await a.nextFit();
    await b.nextFit();
    expect(await a.send(updateFor(fitA))).toMatchObject({ ok: true });
    expect(await a.send(updateFor(fitA))).toMatchObject({ ok: false, code: "DUPLICATE_UPDATE" });
    expect(await b.send(new Uint8Array([1, 2, 3]))).toMatchObject({
      ok: false,
      code: "MALFORMED_PAYLOAD",
    });
    // First attempt: 1 of 2 updates → retried; second attempt: both valid.
    const retryA = await a.nextFit();
    const retryB = await b.nextFit();
    expect(retryA.round).toBe(1);
    expect(await a.send(updateFor(retryA))).toMatchObject({ ok: true });
    expect(await b.send(updateFor(retryB))).toMatchObject({ ok: true });
    const summary = await running;
    expect(await a.send(updateFor(retryA))).toMatchObject({ ok: false, code: "DUPLICATE_UPDATE" });
    expect(summary.rounds[0]!.attempt).toBe(2);
    expect(summary.rounds[0]!.participants).toBe(2);
  });

  it("aborts cleanly with ROUND_FAILED after the last attempt, and keeps serving", async () => {
    coordinator = await startCoordinator({
      model: "mlp",
      rounds: 1,
      minAvailableClients: 1,
      minFitClients: 1,
      roundTimeoutMs: 300,
      maxRoundAttempts: 2,
      runDir: null,
    });
    const a = await connectRaw(coordinator.url, "silent");
    raws.push(a);
    await expect(coordinator.run()).rejects.toMatchObject({ code: "ROUND_FAILED" });
    // Still serving: a new connection gets the task.
    const b = await connectRaw(coordinator.url, "after");
    raws.push(b);
    expect((await b.task).model.name).toBe("mlp");
  });

  it("refuses a client of another protocol version with a clear message", async () => {
    coordinator = await startCoordinator({ runDir: null });
    const refusal = await new Promise<Error & { data?: { code?: string } }>((resolve) => {
      const socket = io(coordinator!.url, {
        auth: {
          protocolVersion: PROTOCOL_VERSION + 1,
          clientId: "future",
          platform: "test",
          backend: "none",
        },
        transports: ["websocket"],
        reconnection: false,
      });
      socket.once("connect_error", (err) => {
        socket.close();
        resolve(err);
      });
    });
    expect(refusal.data?.code).toBe("PROTOCOL_VERSION");
    expect(refusal.message).toContain(`speaks protocol version ${PROTOCOL_VERSION + 1}`);
    expect(refusal.message).toContain(`coordinator speaks ${PROTOCOL_VERSION}`);
  });

  it("refuses a handshake without identity", async () => {
    coordinator = await startCoordinator({ runDir: null });
    const err = await new Promise<Error & { data?: { code?: string } }>((resolve) => {
      const socket = io(coordinator!.url, { transports: ["websocket"], reconnection: false });
      socket.once("connect_error", (e) => {
        socket.close();
        resolve(e);
      });
    });
    expect(err.data?.code).toBe("INVALID_MESSAGE");
    expect(err.message).toMatch(/protocolVersion/);
  });

  it("carries a 6.65 MB CNN update over socket.io", async () => {
    coordinator = await startCoordinator({
      model: "cnn",
      rounds: 1,
      minAvailableClients: 1,
      minFitClients: 1,
      runDir: null,
    });
    const raw = await connectRaw(coordinator.url, "big");
    raws.push(raw);
    const running = coordinator.run();
    running.catch(() => undefined);
    const fit = await raw.nextFit();
    const delta = fit.weights.map((t) => new Float32Array(t.length).fill(0.001));
    const payload = updateFor(fit, { delta });
    expect(payload.byteLength).toBeGreaterThan(6_650_000);
    expect(await raw.send(payload)).toMatchObject({ ok: true });
    const summary = await running;
    expect(summary.rounds[0]!.bytesUp).toBe(payload.byteLength);
    expect(summary.weights[0]![0]).toBeCloseTo(fit.weights[0]![0]! + 0.001, 6);
  });

  it("refuses to start when the upload limit is below one model update", async () => {
    await expect(
      startCoordinator({ model: "cnn", maxUploadBytes: 1024 * 1024, runDir: null }),
    ).rejects.toMatchObject({
      code: "INVALID_OPTION",
    });
  });
});
