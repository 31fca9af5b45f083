/**
 * Fuzz: 10,000 malformed or hostile messages from a cohort member during a live round. The
 * coordinator must answer each one it can (never crash), keep its memory bounded, and still
 * complete the round with the honest updates.
 */
import { afterEach, describe, expect, it } from "vitest";
import type { Coordinator } from "../coordinator/index.js";
import type { CohortClient } from "../client/index.js";
import { createRng } from "../aggregation/random.js";
import { decode, encode } from "../protocol/codec.js";
import { isErrorCode } from "../protocol/errors.js";
import { connectRaw, updateFor, type RawClient } from "./helpers/raw-client.js";
import { mnistShards, startClients, startCoordinator } from "./helpers/federation.js";

/** msgpack that declares far more than it holds, or nests deeper than any real message. */
function hostile(rng: () => number, valid: Uint8Array): unknown {
  const kind = Math.floor(rng() * 10);
  const bytes = (n: number) => Uint8Array.from({ length: n }, () => Math.floor(rng() * 256));
  switch (kind) {
    case 0:
      return bytes(1 + Math.floor(rng() * 64)); // random bytes
    case 1:
      return Uint8Array.from([0xdd, 0xff, 0xff, 0xff, 0xff, 0x01]); // array32 of 4 billion items
    case 2:
      return Uint8Array.from([0xdb, 0x7f, 0xff, 0xff, 0xff, 0x61]); // str32 of 2 GB
    case 3:
      return Uint8Array.from([...new Array(5000).fill(0x91), 0x01]); // 5,000 nested arrays
    case 4: {
      const cut = valid.slice(0, Math.floor(rng() * valid.length)); // truncated
      return cut.length > 0 ? cut : bytes(3);
    }
    case 5: {
      // A few flipped bytes in the structure of a valid update (flips inside the float data
      // would give a different but valid update, which no server can tell from a real one).
      const flipped = valid.slice();
      const at = new Set(Array.from({ length: 4 }, () => Math.floor(rng() * 24)));
      for (const i of at) flipped[i] = flipped[i]! ^ 0xff; // distinct bytes: never flipped back
      return flipped;
    }
    case 6:
      return [null, 42, "update", { round: 1 }, [1, 2, 3], true][Math.floor(rng() * 6)]; // wrong types
    case 7: // a well-formed update for a round that has not started
      return encode({ ...(decode(valid) as object), round: 2 + Math.floor(rng() * 1000) });
    case 8:
      return encode({
        round: rng() < 0.5 ? -5 : 1,
        numExamples: Number.NaN,
        delta: "x",
        metrics: null,
      });
    default:
      return encode(Array.from({ length: 100 }, () => rng()));
  }
}

describe("fuzz", () => {
  let coordinator: Coordinator | undefined;
  let clients: CohortClient[] = [];
  let raws: RawClient[] = [];
  afterEach(async () => {
    raws.forEach((r) => r.close());
    await Promise.all(clients.map((c) => c.close()));
    await coordinator?.close();
  });

  it("survives 10,000 hostile messages during a round, with bounded memory", async () => {
    const { shards, evalSet } = await mnistShards(2, 200, 300);
    coordinator = await startCoordinator({
      model: "mlp",
      rounds: 1,
      minAvailableClients: 3,
      minFitClients: 3,
      maxUploadBytes: 4 * 1024 * 1024,
      // The flood itself is the test here; rate limiting has its own test.
      rateLimit: null,
      roundTimeoutMs: 120_000,
      evalDataset: evalSet,
      runDir: null,
    });
    const codes = new Map<string, number>();
    coordinator.on("rejected", (r) => codes.set(r.code, (codes.get(r.code) ?? 0) + 1));
    clients = await startClients(coordinator.url, shards);
    const fuzzer = await connectRaw(coordinator.url, "fuzzer");
    raws.push(fuzzer);
    const running = coordinator.run();
    running.catch(() => undefined);
    const fit = await fuzzer.nextFit();
    // A plain Uint8Array: Buffer.slice would return views, and the flips would corrupt it.
    const valid = Uint8Array.from(updateFor(fit));

    global.gc?.();
    const heapBefore = process.memoryUsage().heapUsed;
    const rng = createRng(2026);
    let answered = 0;
    let accepted = 0;
    const N = 10_000;
    for (let sent = 0; sent < N; sent += 500) {
      const batch = Array.from({ length: 500 }, () => {
        const r = rng();
        if (r < 0.02) {
          // Events the coordinator does not listen to, and a reply nobody asked for.
          fuzzer.socket.emit(r < 0.01 ? "secagg:step" : "no-such-event", hostile(rng, valid));
          return Promise.resolve(null);
        }
        return fuzzer.send(hostile(rng, valid));
      });
      for (const reply of await Promise.all(batch)) {
        if (reply === null) continue;
        answered++;
        if (reply.ok) accepted++;
        else expect(isErrorCode(reply.code)).toBe(true);
      }
    }
    const heapAfter = process.memoryUsage().heapUsed;
    expect(answered).toBeGreaterThan(0.95 * N);
    expect(accepted).toBe(0);
    expect(heapAfter - heapBefore).toBeLessThan(200 * 1024 * 1024);
    // Every kind of refusal was exercised.
    for (const code of [
      "MALFORMED_PAYLOAD",
      "INVALID_MESSAGE",
      "FUTURE_ROUND",
      "BAD_NUM_EXAMPLES",
    ]) {
      expect(codes.get(code) ?? 0, `${code} in ${JSON.stringify([...codes])}`).toBeGreaterThan(0);
    }

    // The fuzzer finally behaves; the round completes with all three updates.
    expect(await fuzzer.send(valid)).toMatchObject({ ok: true });
    const summary = await running;
    expect(summary.rounds[0]!.participants).toBe(3);
    expect(summary.rounds[0]!.accuracy!).toBeGreaterThan(summary.initial!.accuracy!);
    // Still serving.
    const after = await connectRaw(coordinator.url, "after");
    raws.push(after);
    expect((await after.task).model.name).toBe("mlp");
  }, 180_000);
});
