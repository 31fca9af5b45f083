import { afterEach, describe, expect, it } from "vitest";
import type { Coordinator } from "../coordinator/index.js";
import type { CohortClient } from "../client/index.js";
import { resolveCodec } from "../aggregation/codecs/index.js";
import { readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { decode, encode } from "../protocol/codec.js";
import type { ErrorCode } from "../protocol/errors.js";
import type { FitRequest, TaskSpec } from "../protocol/messages.js";
import { formatRound } from "../coordinator/format.js";
import { simulate } from "../simulations/index.js";
import { runCli } from "./helpers/cli.js";
import { connectRaw, updateFor, type RawClient } from "./helpers/raw-client.js";
import { mnistShards, startClients, startCoordinator, tempRunDir } from "./helpers/federation.js";

/** An update for `request` encoded as a client of `task` would, with a zero delta, then bent. */
function codedUpdate(
  task: TaskSpec,
  request: FitRequest,
  bend: (update: Record<string, unknown>) => Record<string, unknown> = (u) => u,
  codecName = task.codec.name,
): Uint8Array {
  const codec = resolveCodec(task.codec);
  const delta = request.weights.map((w) => new Float32Array(w.length).fill(1e-4));
  const update = codec.encode(delta, { round: request.round, seed: request.seed!, noiseSeed: 1 });
  return encode({
    round: request.round,
    numExamples: 10,
    metrics: { loss: 1, accuracy: null, trainMs: 1, backend: "none", encodeMs: 1 },
    codec: codecName,
    update: bend(update as Record<string, unknown>),
  });
}

describe("compressed updates over socket.io", () => {
  let coordinator: Coordinator | undefined;
  let clients: CohortClient[] = [];
  let raws: RawClient[] = [];
  afterEach(async () => {
    raws.forEach((r) => r.close());
    await Promise.all(clients.map((c) => c.close()));
    await coordinator?.close();
    raws = [];
    clients = [];
    coordinator = undefined;
  });

  it.each(["q4", "topk:0.05"])(
    "a %s run answers every malformed compressed payload with its code and completes the round with the honest clients",
    async (codec) => {
      const { shards, evalSet } = await mnistShards(2, 300, 300);
      coordinator = await startCoordinator({
        model: "mlp",
        codec,
        rounds: 1,
        minAvailableClients: 3,
        minFitClients: 2,
        roundTimeoutMs: 30_000,
        evalDataset: evalSet,
        runDir: null,
      });
      clients = await startClients(coordinator.url, shards);
      const hostile = await connectRaw(coordinator.url, "hostile");
      raws.push(hostile);
      const task = await hostile.task;
      expect(task.codec.name).toBe(codec.split(":")[0]);
      const running = coordinator.run();
      running.catch(() => undefined);
      const fit = await hostile.nextFit();
      expect(fit.seed).toEqual(expect.any(Number));
      const common: [string, Uint8Array, ErrorCode][] = [
        ["a float32 delta in a compressed run", updateFor(fit), "INVALID_MESSAGE"],
        ["another codec's name", codedUpdate(task, fit, (u) => u, "q8"), "INVALID_MESSAGE"],
        [
          "no update",
          encode({
            round: 1,
            numExamples: 1,
            metrics: { loss: 1, accuracy: null, trainMs: 1, backend: "x" },
            codec: task.codec.name,
          }),
          "INVALID_MESSAGE",
        ],
        [
          "an update that is not an object",
          codedUpdate(task, fit, () => [1, 2] as never),
          "INVALID_MESSAGE",
        ],
      ];
      const specific: [string, Uint8Array, ErrorCode][] =
        task.codec.name === "q4"
          ? [
              [
                "another bit width",
                codedUpdate(task, fit, (u) => ({ ...u, bits: 2 })),
                "MALFORMED_PAYLOAD",
              ],
              [
                "too few scales",
                codedUpdate(task, fit, (u) => ({
                  ...u,
                  scales: (u.scales as Float32Array).subarray(1),
                })),
                "SHAPE_MISMATCH",
              ],
              [
                "a NaN scale",
                codedUpdate(task, fit, (u) => ({
                  ...u,
                  scales: (u.scales as Float32Array).map((s, i) => (i === 3 ? Number.NaN : s)),
                })),
                "NON_FINITE",
              ],
              [
                "an infinite scale",
                codedUpdate(task, fit, (u) => ({
                  ...u,
                  scales: (u.scales as Float32Array).map((s, i) => (i === 0 ? Infinity : s)),
                })),
                "NON_FINITE",
              ],
              [
                "a negative scale",
                codedUpdate(task, fit, (u) => ({
                  ...u,
                  scales: (u.scales as Float32Array).map((s) => -s),
                })),
                "MALFORMED_PAYLOAD",
              ],
              [
                "a scale so large the values overflow",
                codedUpdate(task, fit, (u) => ({
                  ...u,
                  scales: (u.scales as Float32Array).map(() => 3e38),
                })),
                "NON_FINITE",
              ],
              [
                "codes cut short",
                codedUpdate(task, fit, (u) => ({
                  ...u,
                  codes: (u.codes as Uint8Array).subarray(8),
                })),
                "SHAPE_MISMATCH",
              ],
            ]
          : [
              [
                "another k",
                codedUpdate(task, fit, (u) => ({ ...u, k: (u.k as number) + 1 })),
                "MALFORMED_PAYLOAD",
              ],
              [
                "an index out of range",
                codedUpdate(task, fit, (u) => ({
                  ...u,
                  indices: (u.indices as Uint32Array).map((v, i, a) =>
                    i === a.length - 1 ? 1e9 : v,
                  ),
                })),
                "SHAPE_MISMATCH",
              ],
              [
                "a repeated index",
                codedUpdate(task, fit, (u) => ({
                  ...u,
                  indices: (u.indices as Uint32Array).map((v, i, a) => (i === 1 ? a[0]! : v)),
                })),
                "MALFORMED_PAYLOAD",
              ],
              [
                "unsorted indices",
                codedUpdate(task, fit, (u) => ({
                  ...u,
                  indices: (u.indices as Uint32Array).slice().reverse(),
                })),
                "MALFORMED_PAYLOAD",
              ],
              [
                "a NaN value",
                codedUpdate(task, fit, (u) => ({
                  ...u,
                  values: (u.values as Float32Array).map((v, i) => (i === 2 ? Number.NaN : v)),
                })),
                "NON_FINITE",
              ],
              [
                "fewer values than indices",
                codedUpdate(task, fit, (u) => ({
                  ...u,
                  values: (u.values as Float32Array).subarray(1),
                })),
                "SHAPE_MISMATCH",
              ],
            ];
      for (const [name, payload, code] of [...common, ...specific]) {
        const reply = await hostile.send(payload);
        expect(reply, name).toMatchObject({ ok: false, code });
        if (!reply.ok) expect(reply.message.length, name).toBeGreaterThan(5);
      }
      // After all that, a well-formed encoding is accepted.
      expect(await hostile.send(codedUpdate(task, fit))).toMatchObject({ ok: true });
      const summary = await running;
      const round = summary.rounds[0]!;
      expect(round.participants).toBe(3);
      expect(round.codec).toBe(codec);
      expect(round.accuracy!).toBeGreaterThan(summary.initial!.accuracy! + 0.2);
    },
  );

  // One run per codec: each trains as it should and sends what it promises.
  it.each([
    ["float32", 0.99, 1.01],
    ["f16", 1.9, 2.01],
    ["q8", 3.8, 4],
    ["q4", 7.5, 8],
    ["q2", 14.5, 16],
    ["topk:0.05", 9, 10],
    ["topk:0.05:f16", 12.5, 13.4],
  ])(
    "a federated run with --codec %s learns, at the promised compression",
    async (codec, low, high) => {
      const { shards, evalSet } = await mnistShards(3, 300, 500);
      coordinator = await startCoordinator({
        model: "mlp",
        codec,
        rounds: 3,
        minAvailableClients: 3,
        minFitClients: 3,
        roundTimeoutMs: 60_000,
        evalDataset: evalSet,
        runDir: null,
      });
      clients = await startClients(coordinator.url, shards);
      const summary = await coordinator.run();
      const accuracies = summary.rounds.map((r) => r.accuracy!);
      expect(accuracies[2]!).toBeGreaterThan(summary.initial!.accuracy! + 0.3);
      for (const r of summary.rounds) {
        expect(r.participants).toBe(3);
        expect(r.failures).toBe(0);
        expect(r.codec).toBe(codec);
        expect(r.compressionRatio!).toBeGreaterThan(low);
        expect(r.compressionRatio!).toBeLessThan(high);
        expect(r.decodeMs).toEqual(expect.any(Number));
        if (codec === "float32") expect(r.encodeMs).toBeNull();
        else {
          expect(r.encodeMs!).toBeGreaterThan(0);
          expect(formatRound(r, 3)).toMatch(
            new RegExp(
              `${codec.replace(/\./g, "\\.")} ×[\\d.]+ \\(encode [\\d.]+ ms, decode [\\d.]+ ms\\)`,
            ),
          );
        }
      }
    },
  );
});

describe("top-k's residual in the client's state directory", () => {
  let coordinator: Coordinator | undefined;
  let clients: CohortClient[] = [];
  afterEach(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await coordinator?.close();
    clients = [];
    coordinator = undefined;
  });

  it("survives a restart of the client: the next process goes on with it, owner-only on disk", async () => {
    const { shards, evalSet } = await mnistShards(1, 200, 200);
    coordinator = await startCoordinator({
      model: "mlp",
      codec: "topk:0.05",
      rounds: 3,
      minAvailableClients: 1,
      minFitClients: 1,
      evalDataset: evalSet,
      runDir: null,
    });
    const stateDir = await tempRunDir("cohort-client-state-");
    const file = join(stateDir, "codec-memory.bin");
    const lines: string[] = [];
    const errors: string[] = [];
    const options = {
      stateDir,
      log: (l: string) => lines.push(l),
      logError: (l: string) => errors.push(l),
    };
    const first = coordinator;
    const roundOne = new Promise<void>((resolve) =>
      first.on("round", (m) => m.round === 1 && resolve()),
    );
    clients = await startClients(first.url, shards, "kept", options);
    const running = first.run();
    await roundOne;
    await Promise.all(clients.map((c) => c.close()));
    clients = [];
    const stored = decode(await readFile(file)) as { runId: string; residual: Float32Array };
    expect(stored.runId).toBe(first.runId);
    expect(stored.residual.length).toBe(first.task.model.numParameters);
    // The 95 % top-k left out of round 1's update.
    expect(stored.residual.some((v) => v !== 0)).toBe(true);
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    expect(lines.some((l) => l.startsWith("codec memory: went on"))).toBe(false);
    // A new process of the same client, same directory (the first may have logged its
    // disconnect while its last acknowledgement was in flight).
    errors.length = 0;
    clients = await startClients(first.url, shards, "kept", options);
    const summary = await running;
    expect(summary.rounds).toHaveLength(3);
    expect(lines.filter((l) => l.startsWith("codec memory: went on"))).toHaveLength(1);
    const later = decode(await readFile(file)) as { residual: Float32Array };
    expect(later.residual).not.toEqual(stored.residual);
    expect(errors, errors.join("\n")).toEqual([]);
  });

  it("starts empty, saying why, from a file it cannot read, and rounds go on", async () => {
    const { shards, evalSet } = await mnistShards(1, 200, 200);
    coordinator = await startCoordinator({
      model: "mlp",
      codec: "topk:0.05",
      rounds: 1,
      minAvailableClients: 1,
      minFitClients: 1,
      evalDataset: evalSet,
      runDir: null,
    });
    const stateDir = await tempRunDir("cohort-client-state-");
    await writeFile(join(stateDir, "codec-memory.bin"), "not msgpack of a residual");
    const errors: string[] = [];
    clients = await startClients(coordinator.url, shards, "bad", {
      stateDir,
      logError: (l: string) => errors.push(l),
    });
    const summary = await coordinator.run();
    expect(summary.rounds[0]!.participants).toBe(1);
    expect(errors.some((e) => /codec memory not restored \(MALFORMED_PAYLOAD/.test(e))).toBe(true);
  });
});

describe("--codec on the command line", () => {
  it("is listed in --help with every codec, and checked before the coordinator starts", async () => {
    const help = await runCli(["coordinator", "--help"]);
    expect(help.output).toMatch(/--codec NAME\[:ARG\].*float32.*f16.*q8.*q4.*q2.*topk/);
    const unknown = await runCli(["coordinator", "--codec", "zip"]);
    expect(unknown.code).toBe(1);
    expect(unknown.output).toMatch(/error INVALID_OPTION: unknown codec "zip"/);
    const bad = await runCli(["coordinator", "--codec", "topk:0"]);
    expect(bad.output).toMatch(/error INVALID_OPTION: codec topk: fraction/);
    const secure = await runCli(["coordinator", "--codec", "f16", "--secure"]);
    expect(secure.code).toBe(1);
    expect(secure.output).toMatch(/error INVALID_OPTION: codec f16 is not linear/);
  });
});

describe("the simulator with a codec", () => {
  it("runs q8 through the same client and coordinator code, deterministically", async () => {
    const config = {
      devices: 30,
      fractionFit: 0.2,
      rounds: 3,
      model: "mlp",
      dataset: "mnist",
      examplesPerDevice: 80,
      evalSize: 500,
      baselineEpochs: 0,
      codec: "q8",
      seed: 4,
    };
    const a = await simulate(
      { ...config, runDir: await tempRunDir("cohort-sim-q8-") },
      { progress: null },
    );
    const b = await simulate(
      { ...config, runDir: await tempRunDir("cohort-sim-q8-") },
      { progress: null },
    );
    expect(a.rounds.every((r) => r.codec === "q8" && r.compressionRatio! > 3.8)).toBe(true);
    expect(a.summary.finalAccuracy!).toBeGreaterThan(a.summary.initialAccuracy! + 0.3);
    expect(a.weights).toEqual(b.weights);
  });
});
