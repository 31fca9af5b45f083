import { afterEach, describe, expect, it } from "vitest";
import type { Coordinator } from "../coordinator/index.js";
import type { CohortClient } from "../client/index.js";
import { createRng } from "../aggregation/random.js";
import { sizeOf } from "../aggregation/weights.js";
import { decode } from "../protocol/codec.js";
import { mnistShards, startClients, startCoordinator } from "./helpers/federation.js";
import {
  connectSecure,
  type SecureBehaviour,
  type SecureTestClient,
} from "./helpers/secure-client.js";
import { connectRaw, roundConfig, updateFor, type RawClient } from "./helpers/raw-client.js";

/** Seeded deltas in the model's layout, within ±0.5. */
function randomDelta(shapes: number[][], seed: number): Float32Array[] {
  const rng = createRng(seed);
  return shapes.map((s) => Float32Array.from({ length: sizeOf(s) }, () => rng() - 0.5));
}

/** Σ wᵢΔᵢ / Σ wᵢ in float64. */
function weightedMean(deltas: Float32Array[][], weights: number[]): Float64Array[] {
  const total = weights.reduce((a, b) => a + b, 0);
  return deltas[0]!.map((t, j) => {
    const out = new Float64Array(t.length);
    deltas.forEach((d, i) => d[j]!.forEach((v, k) => (out[k]! += (weights[i]! / total) * v)));
    return out;
  });
}

function maxAbsDiff(a: ArrayLike<number>[], b: ArrayLike<number>[]): number {
  let m = 0;
  a.forEach((t, j) => {
    for (let k = 0; k < t.length; k++) m = Math.max(m, Math.abs(t[k]! - b[j]![k]!));
  });
  return m;
}

describe("secure aggregation over socket.io", () => {
  let coordinator: Coordinator | undefined;
  let clients: CohortClient[] = [];
  let secure: SecureTestClient[] = [];
  let raws: RawClient[] = [];
  afterEach(async () => {
    secure.forEach((c) => c.close());
    raws.forEach((c) => c.close());
    await Promise.all(clients.map((c) => c.close()));
    await coordinator?.close();
    secure = [];
    raws = [];
    clients = [];
  });

  it("gives the plain FedAvg result within the quantization bound, with dropouts at every phase", async () => {
    const n = 7;
    coordinator = await startCoordinator({
      model: "mlp",
      rounds: 1,
      minAvailableClients: n,
      minFitClients: n,
      secure: true,
      secureStepTimeoutMs: 5000,
      roundTimeoutMs: 5000,
      runDir: null,
    });
    const shapes = coordinator.task.model.weightSpecs.map((s) => s.shape);
    const initial = coordinator.weights().map((w) => Float32Array.from(w));
    const deltas = Array.from({ length: n }, (_, i) => randomDelta(shapes, 100 + i));
    const weights = Array.from({ length: n }, (_, i) => 50 + 10 * i);
    const behaviours: SecureBehaviour[] = [
      { vanishAt: "share-keys" }, // drops after advertising keys
      { vanishAt: "collect-masked" }, // drops after sharing keys
      { vanishAt: "unmask" }, // drops after sending its masked input
    ];
    // Client ids sort in this order, so cohort index i is client i.
    secure = await Promise.all(
      deltas.map((d, i) =>
        connectSecure(coordinator!.url, `c${i}`, d, weights[i]!, behaviours[i] ?? {}),
      ),
    );
    const summary = await coordinator.run();
    const round = summary.rounds[0]!;
    expect(round.secure).toBe(true);
    expect(round.aborted).toBeUndefined();
    // Clients 0 and 1 left before their masked input; client 2's input arrived before it left.
    expect(round.participants).toBe(5);
    expect(round.failureReasons.map((f) => f.clientId).sort()).toEqual(["c0", "c1", "c2"]);
    const contributors = [2, 3, 4, 5, 6];
    const expected = weightedMean(
      contributors.map((i) => deltas[i]!),
      contributors.map((i) => weights[i]!),
    );
    const got = summary.weights.map((w, j) => w.map((v, k) => v - initial[j]![k]!));
    expect(maxAbsDiff(got, expected)).toBeLessThanOrEqual(round.secureErrorBound! + 1e-6);
    expect(round.totalExamples).toBe(contributors.reduce((s, i) => s + weights[i]!, 0));
  });

  it("a member advertising an all-zero X25519 key is left out as a dropout; the others' round completes", async () => {
    const n = 5;
    coordinator = await startCoordinator({
      model: "mlp",
      rounds: 1,
      minAvailableClients: n,
      minFitClients: 3,
      secure: true,
      secureStepTimeoutMs: 5000,
      runDir: null,
    });
    const shapes = coordinator.task.model.weightSpecs.map((s) => s.shape);
    const initial = coordinator.weights().map((w) => Float32Array.from(w));
    const deltas = Array.from({ length: n }, (_, i) => randomDelta(shapes, 200 + i));
    secure = await Promise.all(
      deltas.map((d, i) => connectSecure(coordinator!.url, `c${i}`, d, 10, { weakKeys: i === 0 })),
    );
    const summary = await coordinator.run();
    const round = summary.rounds[0]!;
    expect(round.aborted).toBeUndefined();
    expect(round.participants).toBe(4);
    expect(round.failureReasons).toEqual([
      expect.objectContaining({ clientId: "c0", code: "BAD_KEY" }),
    ]);
    const expected = weightedMean(deltas.slice(1), [10, 10, 10, 10]);
    const got = summary.weights.map((w, j) => w.map((v, k) => v - initial[j]![k]!));
    expect(maxAbsDiff(got, expected)).toBeLessThanOrEqual(round.secureErrorBound! + 1e-6);
  });

  it("never shows the coordinator one client's update: what a client sends does not correlate with its delta", async () => {
    const n = 3;
    coordinator = await startCoordinator({
      model: "mlp",
      rounds: 1,
      minAvailableClients: n,
      minFitClients: n,
      secure: true,
      runDir: null,
    });
    const shapes = coordinator.task.model.weightSpecs.map((s) => s.shape);
    // A delta with strong structure: easy to spot if it leaked in any form.
    const watched = shapes.map((s) =>
      Float32Array.from({ length: sizeOf(s) }, (_, k) => 0.4 * Math.sin(k / 7)),
    );
    secure = [
      await connectSecure(coordinator.url, "a-watched", watched, 100),
      await connectSecure(coordinator.url, "b", randomDelta(shapes, 2), 100),
      await connectSecure(coordinator.url, "c", randomDelta(shapes, 3), 100),
    ];
    const summary = await coordinator.run();
    expect(summary.rounds[0]!.participants).toBe(3);
    const plain = Float64Array.from(watched.flatMap((t) => Array.from(t)));
    let vectors = 0;
    for (const bytes of secure[0]!.sent) {
      let decoded: unknown;
      try {
        decoded = decode(bytes);
      } catch {
        continue; // socket.io's text frames: headers, not payloads
      }
      for (const v of numericVectors(decoded)) {
        if (v.length < plain.length) continue;
        vectors++;
        // The masked vector is [w, w·Δ…]: compare at every plausible alignment.
        for (const offset of [0, 1]) {
          const view = Array.from(
            v.subarray(offset, offset + plain.length),
            (x) => (x | 0) / 2 ** 31,
          );
          expect(Math.abs(pearson(view, plain))).toBeLessThan(0.05);
        }
      }
    }
    expect(vectors).toBeGreaterThan(0);
    // The same structure in the clear would be found by the same check.
    const leaked = Array.from(plain, (x) => x * 1000 + 3);
    expect(Math.abs(pearson(leaked, plain))).toBeGreaterThan(0.99);
  });

  it("aborts a round when fewer than t members survive, and runs the next one", async () => {
    const n = 4;
    coordinator = await startCoordinator({
      model: "mlp",
      rounds: 2,
      minAvailableClients: n,
      minFitClients: n,
      secure: true,
      secureStepTimeoutMs: 3000,
      runDir: null,
    });
    const shapes = coordinator.task.model.weightSpecs.map((s) => s.shape);
    secure = [
      await connectSecure(coordinator.url, "a", randomDelta(shapes, 1), 10, {
        vanishAt: "collect-masked",
      }),
      await connectSecure(coordinator.url, "b", randomDelta(shapes, 2), 10, {
        vanishAt: "collect-masked",
      }),
      await connectSecure(coordinator.url, "c", randomDelta(shapes, 3), 10),
      await connectSecure(coordinator.url, "d", randomDelta(shapes, 4), 10),
    ];
    // Two replacements arrive for the second round.
    const running = coordinator.run();
    const first = await new Promise<unknown>((resolve) => coordinator!.on("round", resolve));
    expect(first).toMatchObject({ round: 1, aborted: true, participants: 0 });
    expect((first as { abortReason: string }).abortReason).toMatch(/SECAGG_THRESHOLD/);
    secure.push(
      await connectSecure(coordinator.url, "e", randomDelta(shapes, 5), 10),
      await connectSecure(coordinator.url, "f", randomDelta(shapes, 6), 10),
    );
    const summary = await running;
    expect(summary.rounds[1]).toMatchObject({ round: 2, participants: 4, secure: true });
    expect(summary.rounds[1]!.aborted).toBeUndefined();
  });

  it("refuses plain updates in a secure run and survives garbage secure replies", async () => {
    coordinator = await startCoordinator({
      model: "mlp",
      rounds: 1,
      minAvailableClients: 3,
      minFitClients: 3,
      secure: true,
      secureStepTimeoutMs: 3000,
      runDir: null,
    });
    const shapes = coordinator.task.model.weightSpecs.map((s) => s.shape);
    secure = [
      await connectSecure(coordinator.url, "a", randomDelta(shapes, 1), 10),
      await connectSecure(coordinator.url, "b", randomDelta(shapes, 2), 10),
      await connectSecure(coordinator.url, "c", randomDelta(shapes, 3), 10),
    ];
    const liar = await connectRaw(coordinator.url, "liar");
    raws.push(liar);
    liar.socket.on("secagg:step", (_p: unknown, ack: (r: unknown) => void) =>
      ack({ ok: true, value: new Uint8Array([1, 2, 3]) }),
    );
    const summary = await coordinator.run();
    // The liar was sampled (4 connected, fraction 1) and dropped at its first answer.
    expect(summary.rounds[0]!.participants).toBe(3);
    expect(summary.rounds[0]!.failureReasons).toEqual([
      expect.objectContaining({ clientId: "liar", code: "MALFORMED_PAYLOAD" }),
    ]);
    expect(
      await liar.send(
        updateFor({
          round: 1,
          weights: coordinator.weights().map((w) => Float32Array.from(w)),
          config: roundConfig(),
        }),
      ),
    ).toMatchObject({ ok: false });
  });

  it("trains real clients end to end in secure mode: the same model as plain FedAvg within the bound", async () => {
    const { shards, evalSet } = await mnistShards(3, 300, 500);
    const runOnce = async (secureMode: boolean) => {
      const c = await startCoordinator({
        model: "mlp",
        rounds: 1,
        minAvailableClients: 3,
        minFitClients: 3,
        secure: secureMode,
        evalDataset: evalSet,
        runDir: null,
        seed: 4,
      });
      // Three members are below the default floors; this test accepts them knowingly.
      const cl = await startClients(c.url, shards, secureMode ? "s" : "p", {
        secureFloors: { cohort: 3, neighbours: 2, threshold: 2 },
      });
      // Same shuffles in both runs: each client seeds its local order.
      cl.forEach((x, i) => ((x.options as { seed?: number }).seed = 50 + i));
      const s = await c.run();
      await Promise.all(cl.map((x) => x.close()));
      await c.close();
      return s;
    };
    const plain = await runOnce(false);
    const sec = await runOnce(true);
    const bound = sec.rounds[0]!.secureErrorBound!;
    expect(bound).toBeGreaterThan(0);
    expect(maxAbsDiff(sec.weights, plain.weights)).toBeLessThanOrEqual(bound + 1e-5);
    expect(sec.rounds[0]!.accuracy!).toBeGreaterThan(sec.initial!.accuracy! + 0.3);
    expect(Math.abs(sec.rounds[0]!.accuracy! - plain.rounds[0]!.accuracy!)).toBeLessThan(0.01);
  });
});

/** Every typed array of numbers inside a decoded message. */
function numericVectors(value: unknown, depth = 0): (Uint32Array | Int32Array | Float32Array)[] {
  if (depth > 8 || value === null || typeof value !== "object") return [];
  if (value instanceof Uint32Array || value instanceof Int32Array || value instanceof Float32Array)
    return [value];
  if (ArrayBuffer.isView(value)) return [];
  return Object.values(value as Record<string, unknown>).flatMap((v) =>
    numericVectors(v, depth + 1),
  );
}

function pearson(a: ArrayLike<number>, b: ArrayLike<number>): number {
  const n = Math.min(a.length, b.length);
  let ma = 0;
  let mb = 0;
  for (let i = 0; i < n; i++) {
    ma += a[i]!;
    mb += b[i]!;
  }
  ma /= n;
  mb /= n;
  let sab = 0;
  let saa = 0;
  let sbb = 0;
  for (let i = 0; i < n; i++) {
    const x = a[i]! - ma;
    const y = b[i]! - mb;
    sab += x * y;
    saa += x * x;
    sbb += y * y;
  }
  return sab / Math.sqrt(saa * sbb);
}
