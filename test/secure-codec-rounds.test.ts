/** Secure rounds with a quantizing codec over real socket.io: narrow masked words, the sum within the bound. */
import { flatten } from "../aggregation/codecs/layout.js";
import { afterEach, describe, expect, it } from "vitest";
import type { Coordinator, CoordinatorOptions } from "../coordinator/index.js";
import type { CohortClient } from "../client/index.js";
import { createRng } from "../aggregation/random.js";
import { sizeOf } from "../aggregation/weights.js";
import { chunksOf, rotate, unrotate } from "../aggregation/codecs/rotation.js";
import { DEFAULT_CHUNK } from "../aggregation/codecs/stochastic.js";
import { signedBits } from "../aggregation/secure/index.js";
import { roundSeed } from "../coordinator/engine.js";
import { formatRound } from "../coordinator/format.js";
import { CLIP_PER_RMS, WEIGHT_CAP_PER_MEAN } from "../coordinator/secure-round.js";
import { mnistShards, startClients, startCoordinator, tempRunDir } from "./helpers/federation.js";
import type { RoundMetrics } from "../coordinator/run-store.js";
import { connectSecure, type SecureTestClient } from "./helpers/secure-client.js";

/** A secure run of `n` members, all of them in every round, with 10 s deadlines and no run directory. */
function secureCohort(
  n: number,
  options: Partial<CoordinatorOptions>,
): Partial<CoordinatorOptions> {
  return {
    minAvailableClients: n,
    minFitClients: n,
    secure: true,
    secureStepTimeoutMs: 10_000,
    roundTimeoutMs: 10_000,
    runDir: null,
    ...options,
  };
}

describe("secure rounds with a quantizing codec over socket.io", () => {
  let coordinator: Coordinator | undefined;
  let secure: SecureTestClient[] = [];
  let clients: CohortClient[] = [];
  afterEach(async () => {
    secure.forEach((c) => c.close());
    await Promise.all(clients.map((c) => c.close()));
    await coordinator?.close();
    secure = [];
    clients = [];
    coordinator = undefined;
  });

  it("calibrates at 32 bits, then masks 8-bit members in words of 8 + log₂ n bits: each round's mean within its bound, under a third of the bytes", async () => {
    const n = 5;
    const seed = 21;
    coordinator = await startCoordinator(
      secureCohort(n, { model: "mlp", codec: "q8", rounds: 3, seed }),
    );
    const shapes = coordinator.task.model.weightSpecs.map((s) => s.shape);
    const initial = flatten(coordinator.weights());
    const rng = createRng(8);
    // Deltas of realistic size (RMS 0.003), each member its own.
    const deltas = Array.from({ length: n }, () =>
      shapes.map((s) => Float32Array.from({ length: sizeOf(s) }, () => (rng() - 0.5) * 0.01)),
    );
    const weights = Array.from({ length: n }, (_, i) => 40 + 30 * i);
    secure = await Promise.all(
      deltas.map((d, i) => connectSecure(coordinator!.url, `c${i}`, d, weights[i]!)),
    );
    const summary = await coordinator.run();
    const [r1, r2, r3] = summary.rounds;
    expect(r1!.secureBits).toBe(32);
    expect(r1!.secureWordBits).toBe(32);
    expect(r1!.secureClip).toBe(1); // secureClip's default
    const rms = deltas.map((d) => {
      const f = flatten(d);
      return Math.sqrt(f.reduce((s, v) => s + v * v, 0) / f.length);
    });
    const meanRms = rms.reduce((a, b) => a + b, 0) / n;
    expect(r1!.secureRms!).toBeCloseTo(meanRms, 6);
    for (const r of [r2!, r3!]) {
      expect(r.codec).toBe("q8");
      expect(r.secureBits).toBe(8);
      expect(r.compressionRatio!).toBeGreaterThan(2.8); // 32 / 11, less the two 32-bit header words
      expect(r.secureWordBits).toBe(signedBits(n * 127)); // 11 bits for 5 members
      expect(r.secureClip!).toBeCloseTo(CLIP_PER_RMS * meanRms, 6);
      // Twice the members' mean weight (100), not secureMaxWeight's 10,000.
      expect(r.secureMaxWeight).toBe(WEIGHT_CAP_PER_MEAN * 100);
    }
    expect(formatRound(r1!, 3)).toMatch(/q8 ×1\.00 \(32-bit words, calibrating\)/);
    expect(formatRound(r2!, 3)).toMatch(/q8 ×2\.\d\d \(11-bit words\)/);
    // The masked vector dominates a member's upload: 11-bit words against 32-bit ones.
    expect(r2!.bytesUp).toBeLessThan(r1!.bytesUp / 2.5);
    // The model moved by the three rounds' means: each the weighted mean of the members'
    // clipped rotated deltas, within the round's bound (an L2 bound per chunk, √size × it).
    const total = weights.reduce((a, b) => a + b, 0);
    const chunks = chunksOf(initial.length, DEFAULT_CHUNK);
    const expected = new Float64Array(initial.length);
    const l2Bound = new Float64Array(chunks.count);
    for (const r of summary.rounds) {
      const rotationSeed = roundSeed(seed, r.round, 1);
      const mean = new Float32Array(chunks.padded);
      deltas.forEach((d, i) => {
        const y = rotate(flatten(d), chunks, rotationSeed);
        for (let j = 0; j < y.length; j++) {
          const c = Math.max(-r.secureClip!, Math.min(r.secureClip!, y[j]!));
          mean[j]! += (weights[i]! / total) * c;
        }
      });
      const back = unrotate(mean, chunks, rotationSeed);
      for (let j = 0; j < initial.length; j++) expected[j]! += back[j]!;
      for (let c = 0; c < chunks.count; c++) {
        const size = c === chunks.count - 1 ? chunks.lastSize : chunks.size;
        l2Bound[c]! += Math.sqrt(size) * r.secureErrorBound!;
      }
    }
    const moved = flatten(summary.weights);
    for (let c = 0; c < chunks.count; c++) {
      let squares = 0;
      for (let j = c * chunks.size; j < Math.min((c + 1) * chunks.size, initial.length); j++) {
        squares += (moved[j]! - initial[j]! - expected[j]!) ** 2;
      }
      expect(Math.sqrt(squares)).toBeLessThanOrEqual(l2Bound[c]! + 1e-5);
    }
    // The bound is tight enough to mean something: well under the delta's own size per chunk.
    expect(r2!.secureErrorBound! * Math.sqrt(DEFAULT_CHUNK)).toBeLessThan(
      meanRms * Math.sqrt(DEFAULT_CHUNK),
    );
  });

  it("answers a member's masked vector of the wrong type or length with SHAPE_MISMATCH and completes each round with the rest", async () => {
    const n = 7;
    coordinator = await startCoordinator(
      secureCohort(n, { model: "logreg", codec: "q4", rounds: 2 }),
    );
    const shapes = coordinator.task.model.weightSpecs.map((s) => s.shape);
    const rng = createRng(9);
    const delta = () =>
      shapes.map((s) => Float32Array.from({ length: sizeOf(s) }, () => (rng() - 0.5) * 0.01));
    const bends: ((m: Uint32Array | Uint8Array) => unknown)[] = [
      (m) => m.subarray(1), // one word or byte short
      // The other type, same bytes: 32-bit words where packed bytes are due, and back.
      (m) =>
        m instanceof Uint32Array
          ? new Uint8Array(m.buffer, m.byteOffset, m.byteLength)
          : new Uint32Array(m.slice(0, m.byteLength & ~3).buffer),
      () => "garbage",
    ];
    secure = await Promise.all(
      Array.from({ length: n }, (_, i) =>
        connectSecure(
          coordinator!.url,
          `c${i}`,
          delta(),
          10,
          i < bends.length
            ? { bendMasked: (r) => ({ ...r, masked: bends[i]!(r.masked as Uint8Array) }) }
            : {},
        ),
      ),
    );
    const summary = await coordinator.run();
    expect(summary.rounds.map((r) => r.secureWordBits)).toEqual([32, signedBits(n * 7)]);
    for (const r of summary.rounds) {
      expect(r.aborted).toBeUndefined();
      expect(r.participants).toBe(4);
      const codes = Object.fromEntries(r.failureReasons.map((f) => [f.clientId, f.code]));
      expect(codes).toEqual({ c0: "SHAPE_MISMATCH", c1: "SHAPE_MISMATCH", c2: "INVALID_MESSAGE" });
    }
  });

  it("a resumed run goes on at the narrow width with the clip and weight cap of its last committed round", async () => {
    const n = 5;
    const runDir = await tempRunDir("cohort-secure-q8-");
    const options = secureCohort(n, { model: "logreg", codec: "q8", rounds: 3, seed: 3 });
    const rng = createRng(4);
    const connectAll = async (c: Coordinator) => {
      const shapes = c.task.model.weightSpecs.map((s) => s.shape);
      return Promise.all(
        Array.from({ length: n }, (_, i) =>
          connectSecure(
            c.url,
            `c${i}`,
            shapes.map((s) => Float32Array.from({ length: sizeOf(s) }, () => (rng() - 0.5) * 0.02)),
            20 + i,
          ),
        ),
      );
    };
    coordinator = await startCoordinator({ ...options, runDir });
    const first = coordinator;
    const seen: RoundMetrics[] = [];
    const twoRounds = new Promise<void>((resolve) =>
      first.on("round", (m) => {
        seen.push(m);
        if (m.round === 2) resolve();
      }),
    );
    secure = await connectAll(first);
    first.run().catch(() => undefined); // stopped below, mid-run
    await twoRounds;
    secure.forEach((c) => c.close());
    await first.close();
    const second = await startCoordinator({ ...options, runDir: null, resume: runDir });
    coordinator = second;
    secure = await connectAll(second);
    const summary = await second.run();
    const resumed = summary.rounds.find((r) => r.round === 3)!;
    const last = seen[1]!;
    expect(last.secureBits).toBe(8);
    expect(resumed.secureBits).toBe(8);
    expect(last.secureNext!.clip).toBeCloseTo(CLIP_PER_RMS * last.secureRms!, 9);
    expect({ clip: resumed.secureClip, maxWeight: resumed.secureMaxWeight }).toEqual(
      last.secureNext,
    );
  });

  it("a member that lies in its masked RMS word cannot push the clip past --secure-clip (its sway stays a 32-bit round's)", async () => {
    const n = 5;
    const secureClip = 0.05;
    coordinator = await startCoordinator(
      secureCohort(n, { model: "logreg", codec: "q8", rounds: 3, secureClip }),
    );
    const shapes = coordinator.task.model.weightSpecs.map((s) => s.shape);
    const rng = createRng(10);
    // The liar adds 2^30 to its RMS word (the second header word): masks are additive, so
    // the sum's RMS word grows by as much: a mean of 32 clips.
    const lie = (m: Uint32Array | Uint8Array): Uint32Array | Uint8Array => {
      if (m instanceof Uint32Array) {
        const out = Uint32Array.from(m);
        out[1] = (out[1]! + 2 ** 30) >>> 0;
        return out;
      }
      const out = Uint8Array.from(m);
      const view = new DataView(out.buffer);
      view.setUint32(4, (view.getUint32(4, true) + 2 ** 30) >>> 0, true);
      return out;
    };
    secure = await Promise.all(
      Array.from({ length: n }, (_, i) =>
        connectSecure(
          coordinator!.url,
          `c${i}`,
          shapes.map((s) => Float32Array.from({ length: sizeOf(s) }, () => (rng() - 0.5) * 0.01)),
          10,
          i === 0 ? { bendMasked: (r) => ({ ...r, masked: lie(r.masked as Uint8Array) }) } : {},
        ),
      ),
    );
    const summary = await coordinator.run();
    expect(summary.rounds.every((r) => r.participants === n && r.aborted === undefined)).toBe(true);
    // It claimed an RMS far past what the clip allows; the clip stays at --secure-clip.
    expect(summary.rounds[0]!.secureRms!).toBeGreaterThan(10 * secureClip);
    for (const r of summary.rounds.slice(1)) expect(r.secureClip).toBe(secureClip);
  });

  it("trains real clients with q4 secure rounds to the accuracy of float32 secure rounds", async () => {
    const { shards, evalSet } = await mnistShards(3, 300, 500);
    const runOnce = async (codec: string) => {
      coordinator = await startCoordinator({
        model: "mlp",
        codec,
        rounds: 3,
        minAvailableClients: 3,
        minFitClients: 3,
        secure: true,
        evalDataset: evalSet,
        runDir: null,
        seed: 4,
      });
      clients = await startClients(coordinator.url, shards, codec, {
        secureFloors: { cohort: 3, neighbours: 2, threshold: 2 },
      });
      clients.forEach((x, i) => ((x.options as { seed?: number }).seed = 50 + i));
      const s = await coordinator.run();
      await Promise.all(clients.map((x) => x.close()));
      await coordinator.close();
      clients = [];
      coordinator = undefined;
      return s;
    };
    const wide = await runOnce("float32");
    const narrow = await runOnce("q4");
    expect(narrow.rounds.map((r) => r.secureWordBits)).toEqual([32, 6, 6]);
    const last = narrow.rounds[2]!;
    expect(last.accuracy!).toBeGreaterThan(narrow.initial!.accuracy! + 0.3);
    expect(Math.abs(last.accuracy! - wide.rounds[2]!.accuracy!)).toBeLessThan(0.05);
    expect(last.bytesUp).toBeLessThan(wide.rounds[2]!.bytesUp / 3);
  });
});
