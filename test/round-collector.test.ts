/** Tests of RoundCollector: every rejection code, failures as data, early close and deadline. */
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";

import { createRng } from "../aggregation/random.js";
import { RoundCollector } from "../coordinator/round.js";
import { decodePartial, encodePartial } from "../coordinator/cluster/link.js";
import { partialOf } from "../coordinator/cluster/follower.js";
import { aggregateRound } from "../aggregation/server-step.js";
import { resolveStrategy } from "../aggregation/strategies/index.js";
import { encode } from "../protocol/codec.js";
import type { ErrorCode, Reply } from "../protocol/errors.js";
import type { FitResult, TensorSpec, UpdateReceipt } from "../protocol/messages.js";

const weightSpecs: TensorSpec[] = [
  { name: "w", shape: [2, 3] },
  { name: "b", shape: [3] },
];
const MAX_UPLOAD = 10_000;
const DEADLINE = 200;
const MAX_EXAMPLES = 1_000;

/** A valid FitResult for round 2, shaped like `weightSpecs`, with values tagged by `seed`. */
function fitResult(seed = 1, overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    round: 2,
    numExamples: 10 * seed,
    delta: [
      Float32Array.from({ length: 6 }, (_, i) => seed + i / 10),
      Float32Array.from({ length: 3 }, (_, i) => -seed - i / 10),
    ],
    metrics: { loss: 1 / seed, accuracy: null, trainMs: 5 * seed, backend: "cpu" },
    ...overrides,
  } satisfies Record<keyof FitResult, unknown>;
}

function payload(seed = 1, overrides: Record<string, unknown> = {}): Uint8Array {
  return encode(fitResult(seed, overrides));
}

function expectRejected(reply: Reply<UpdateReceipt>, code: ErrorCode): void {
  expect(reply).toMatchObject({ ok: false, code });
  if (!reply.ok) expect(reply.message.length).toBeGreaterThan(0);
}

let collectors: RoundCollector[] = [];

function collector(cohort: string[] = ["a", "b", "c"]): RoundCollector {
  const c = new RoundCollector(2, cohort, {
    weightSpecs,
    maxUploadBytes: MAX_UPLOAD,
    maxExamplesPerClient: MAX_EXAMPLES,
    deadlineMs: DEADLINE,
  });
  collectors.push(c);
  return c;
}

beforeEach(() => {
  vi.useFakeTimers();
});

afterEach(() => {
  for (const c of collectors) c.close();
  collectors = [];
  vi.useRealTimers();
});

describe("RoundCollector.submit", () => {
  it("accepts a valid update with a receipt for the round", () => {
    const round = collector();
    expect(round.submit("a", payload())).toStrictEqual({ ok: true, value: { round: 2 } });
    expect(round.open).toBe(true);
  });

  it.each([
    ["a stale round", "a", fitResult(1, { round: 1 }), "STALE_ROUND"],
    ["a future round", "a", fitResult(1, { round: 3 }), "FUTURE_ROUND"],
    ["a client outside the cohort", "z", fitResult(), "NOT_IN_COHORT"],
    ["one tensor too few", "a", fitResult(1, { delta: [new Float32Array(6)] }), "SHAPE_MISMATCH"],
    [
      "one tensor too many",
      "a",
      fitResult(1, { delta: [new Float32Array(6), new Float32Array(3), new Float32Array(1)] }),
      "SHAPE_MISMATCH",
    ],
    [
      "a tensor of the wrong shape",
      "a",
      fitResult(1, { delta: [new Float32Array(3), new Float32Array(6)] }),
      "SHAPE_MISMATCH",
    ],
    [
      "NaN in the delta",
      "a",
      fitResult(1, { delta: [Float32Array.of(0, 0, 0, NaN, 0, 0), new Float32Array(3)] }),
      "NON_FINITE",
    ],
    [
      "Infinity in the delta",
      "a",
      fitResult(1, { delta: [new Float32Array(6), Float32Array.of(0, Infinity, 0)] }),
      "NON_FINITE",
    ],
    [
      "-Infinity in the delta",
      "a",
      fitResult(1, { delta: [new Float32Array(6), Float32Array.of(-Infinity, 0, 0)] }),
      "NON_FINITE",
    ],
    ["numExamples 0", "a", fitResult(1, { numExamples: 0 }), "BAD_NUM_EXAMPLES"],
    ["numExamples 2.5", "a", fitResult(1, { numExamples: 2.5 }), "BAD_NUM_EXAMPLES"],
    ["numExamples '10'", "a", fitResult(1, { numExamples: "10" }), "BAD_NUM_EXAMPLES"],
    [
      "Float64Array deltas",
      "a",
      fitResult(1, { delta: [new Float64Array(6), new Float64Array(3)] }),
      "INVALID_MESSAGE",
    ],
  ] as const)("rejects %s (%s)", (_, clientId, message, code) => {
    const round = collector();
    expectRejected(round.submit(clientId, encode(message)), code);
  });

  it("rejects a second update from the same client and keeps the first", async () => {
    const round = collector();
    expect(round.submit("a", payload(1)).ok).toBe(true);
    expectRejected(round.submit("a", payload(2)), "DUPLICATE_UPDATE");
    round.close();
    const outcome = await round.done;
    expect(outcome.results).toHaveLength(1);
    expect(outcome.results[0]!.numExamples).toBe(10);
    expect(Array.from(outcome.results[0]!.delta[0]!)).toEqual(
      Array.from(Float32Array.of(1, 1.1, 1.2, 1.3, 1.4, 1.5)),
    );
  });

  it("rejects undecodable bytes (MALFORMED_PAYLOAD)", () => {
    const round = collector();
    // bin8 announcing 16 bytes but carrying 2, and a fixarray of 2 holding 1.
    expectRejected(round.submit("a", Uint8Array.of(0xc4, 0x10, 1, 2)), "MALFORMED_PAYLOAD");
    expectRejected(round.submit("a", Uint8Array.of(0x92, 0x01)), "MALFORMED_PAYLOAD");
    expectRejected(round.submit("a", new Uint8Array(0)), "MALFORMED_PAYLOAD");
  });

  it("rejects random bytes, mostly as MALFORMED_PAYLOAD and never by accepting them", () => {
    const round = collector();
    const rng = createRng(5);
    const codes = new Set<string>();
    for (let i = 0; i < 500; i++) {
      const bytes = Uint8Array.from({ length: 1 + Math.floor(rng() * 40) }, () =>
        Math.floor(rng() * 256),
      );
      const reply = round.submit("a", bytes);
      expect(reply.ok).toBe(false);
      if (!reply.ok) codes.add(reply.code);
    }
    expect(codes.has("MALFORMED_PAYLOAD")).toBe(true);
    expect([...codes].every((c) => ["MALFORMED_PAYLOAD", "INVALID_MESSAGE"].includes(c))).toBe(
      true,
    );
  });

  it("rejects truncated msgpack (MALFORMED_PAYLOAD)", () => {
    const round = collector();
    const bytes = payload();
    for (const cut of [1, 10, bytes.length >> 1, bytes.length - 1]) {
      expectRejected(round.submit("a", bytes.subarray(0, cut)), "MALFORMED_PAYLOAD");
    }
  });

  it.each([
    ["a string", "\x84\xa5round\x02"],
    ["a decoded object", fitResult()],
    ["a number array", Array.from(payload())],
    ["null", null],
  ])("rejects a non-binary payload: %s (MALFORMED_PAYLOAD)", (_, value) => {
    const round = collector();
    expectRejected(round.submit("a", value), "MALFORMED_PAYLOAD");
  });

  it("accepts exactly maxUploadBytes and rejects one byte more (PAYLOAD_TOO_LARGE)", () => {
    // Pad a valid update with an unknown field (ignored by the guard) to an exact size.
    const sized = (bytes: number): Uint8Array => {
      // An empty string has a 1-byte header; from 256 chars on, str16 has a 3-byte one.
      const base = payload(1, { padding: "" }).byteLength + 2;
      const out = payload(1, { padding: "x".repeat(bytes - base) });
      expect(out.byteLength).toBe(bytes);
      return out;
    };
    const round = collector();
    expectRejected(round.submit("a", sized(MAX_UPLOAD + 1)), "PAYLOAD_TOO_LARGE");
    expectRejected(round.submit("b", new Uint8Array(50_000)), "PAYLOAD_TOO_LARGE");
    expect(round.submit("a", sized(MAX_UPLOAD)).ok).toBe(true);
  });

  it("rejects updates once the round is closed", async () => {
    const round = collector();
    round.close();
    expect(round.open).toBe(false);
    expectRejected(round.submit("a", payload()), "STALE_ROUND");
    const outcome = await round.done;
    expect(outcome.results).toEqual([]);
  });
});

describe("RoundCollector outcome", () => {
  it("an update claiming 10¹² examples is weighted as maxExamplesPerClient, and the claim is kept", async () => {
    const round = collector(["a", "b"]);
    expect(round.submit("a", payload(1, { numExamples: 1e12 })).ok).toBe(true);
    expect(round.submit("b", payload(2)).ok).toBe(true);
    const outcome = await round.done;
    expect(outcome.results.map((r) => [r.numExamples, r.claimedExamples])).toEqual([
      [MAX_EXAMPLES, 1e12],
      [20, undefined],
    ]);
  });

  it("closes early when every member delivered, results in cohort order", async () => {
    const round = collector();
    const sent = { c: payload(3), a: payload(1), b: payload(2) };
    for (const [id, bytes] of Object.entries(sent)) expect(round.submit(id, bytes).ok).toBe(true);
    expect(round.open).toBe(false); // before any timer ran
    const outcome = await round.done;
    expect(outcome.round).toBe(2);
    expect(outcome.cohort).toEqual(["a", "b", "c"]);
    expect(outcome.failures).toEqual([]);
    expect(outcome.results.map((r) => r.clientId)).toEqual(["a", "b", "c"]);
    expect(outcome.results.map((r) => r.numExamples)).toEqual([10, 20, 30]);
    expect(outcome.results.map((r) => r.bytes)).toEqual([
      sent.a.byteLength,
      sent.b.byteLength,
      sent.c.byteLength,
    ]);
    expect(outcome.results[1]!.metrics).toStrictEqual({
      loss: 0.5,
      accuracy: null,
      trainMs: 10,
      backend: "cpu",
    });
    expect(outcome.results[2]!.delta[1]).toBeInstanceOf(Float32Array);
    expect(Array.from(outcome.results[2]!.delta[1]!)).toEqual(
      Array.from(Float32Array.of(-3, -3.1, -3.2)),
    );
    expect(outcome.bytesUp).toBe(sent.a.byteLength + sent.b.byteLength + sent.c.byteLength);
  });

  it("leaves rejected updates out, and a rejected member may still deliver", async () => {
    const round = collector();
    const bad = payload(9, { delta: [new Float32Array(6).fill(NaN), new Float32Array(3)] });
    expectRejected(round.submit("a", bad), "NON_FINITE");
    expectRejected(round.submit("b", payload(9, { round: 3 })), "FUTURE_ROUND");
    const good = { a: payload(1), b: payload(2), c: payload(3) };
    expect(round.submit("a", good.a).ok).toBe(true);
    expect(round.submit("b", good.b).ok).toBe(true);
    expect(round.open).toBe(true);
    expect(round.submit("c", good.c).ok).toBe(true);
    const outcome = await round.done;
    expect(outcome.failures).toEqual([]);
    expect(outcome.results.map((r) => [r.clientId, r.numExamples])).toEqual([
      ["a", 10],
      ["b", 20],
      ["c", 30],
    ]);
    for (const r of outcome.results) {
      for (const t of r.delta) for (const v of t) expect(Number.isFinite(v)).toBe(true);
    }
    expect(outcome.bytesUp).toBe(
      bad.byteLength +
        payload(9, { round: 3 }).byteLength +
        good.a.byteLength +
        good.b.byteLength +
        good.c.byteLength,
    );
  });

  it("a member that only sent bad updates fails with its last rejection code", async () => {
    const round = collector();
    expectRejected(round.submit("a", payload(1, { numExamples: -1 })), "BAD_NUM_EXAMPLES");
    expectRejected(round.submit("a", payload(1, { round: 1 })), "STALE_ROUND");
    expect(round.submit("b", payload(2)).ok).toBe(true);
    expect(round.submit("c", payload(3)).ok).toBe(true);
    expect(round.open).toBe(true); // a is still pending: it may yet send a good update
    await vi.advanceTimersByTimeAsync(DEADLINE);
    const outcome = await round.done;
    expect(outcome.results.map((r) => r.clientId)).toEqual(["b", "c"]);
    expect(outcome.failures).toHaveLength(1);
    expect(outcome.failures[0]).toMatchObject({ clientId: "a", code: "STALE_ROUND" });
  });

  it("a silent member fails with DEADLINE_EXCEEDED at the deadline, not before", async () => {
    const round = collector();
    expect(round.submit("a", payload(1)).ok).toBe(true);
    expect(round.submit("c", payload(3)).ok).toBe(true);
    await vi.advanceTimersByTimeAsync(DEADLINE - 1);
    expect(round.open).toBe(true);
    await vi.advanceTimersByTimeAsync(1);
    expect(round.open).toBe(false);
    const outcome = await round.done;
    expect(outcome.results.map((r) => r.clientId)).toEqual(["a", "c"]);
    expect(outcome.failures).toEqual([
      { clientId: "b", code: "DEADLINE_EXCEEDED", message: expect.stringContaining("200 ms") },
    ]);
  });

  it("with nobody answering, every member fails at the deadline", async () => {
    const round = collector();
    await vi.advanceTimersByTimeAsync(DEADLINE);
    const outcome = await round.done;
    expect(outcome.results).toEqual([]);
    expect(outcome.failures.map((f) => [f.clientId, f.code])).toEqual([
      ["a", "DEADLINE_EXCEEDED"],
      ["b", "DEADLINE_EXCEEDED"],
      ["c", "DEADLINE_EXCEEDED"],
    ]);
    expect(outcome.bytesUp).toBe(0);
  });

  it("drop() marks a member disconnected and closes early once nobody is pending", async () => {
    const round = collector();
    expectRejected(round.submit("b", payload(2, { numExamples: 0 })), "BAD_NUM_EXAMPLES");
    expect(round.submit("a", payload(1)).ok).toBe(true);
    round.drop("a", { code: "CLIENT_DISCONNECTED", message: "late drop" }); // already delivered
    round.drop("z", { code: "CLIENT_DISCONNECTED", message: "not a member" });
    round.drop("b", { code: "CLIENT_DISCONNECTED", message: "socket closed" });
    expect(round.open).toBe(true);
    round.drop("c", { code: "CLIENT_DISCONNECTED", message: "socket closed" });
    expect(round.open).toBe(false);
    const outcome = await round.done;
    expect(outcome.results.map((r) => r.clientId)).toEqual(["a"]);
    expect(outcome.failures).toEqual([
      { clientId: "b", code: "CLIENT_DISCONNECTED", message: "socket closed" },
      { clientId: "c", code: "CLIENT_DISCONNECTED", message: "socket closed" },
    ]);
  });

  it("counts the bytes of every binary payload, accepted or rejected", async () => {
    const round = collector();
    const sizes: number[] = [];
    const send = (id: string, bytes: Uint8Array): void => {
      sizes.push(bytes.byteLength);
      round.submit(id, bytes);
    };
    send("z", payload(1)); // not in cohort
    send("a", Uint8Array.of(0x92, 0x01)); // malformed
    send("a", new Uint8Array(MAX_UPLOAD + 5)); // too large
    send("a", payload(1));
    send("a", payload(1)); // duplicate
    round.submit("b", "not binary"); // not binary: no byte length to count
    round.close();
    const outcome = await round.done;
    expect(outcome.bytesUp).toBe(sizes.reduce((s, n) => s + n, 0));
  });

  it("an empty cohort closes at once", async () => {
    const round = collector([]);
    expect(round.open).toBe(false);
    expect(await round.done).toMatchObject({ results: [], failures: [], bytesUp: 0 });
  });
});

describe("partial sums from other coordinator nodes", () => {
  /** What node B makes of its members' updates: the partial it sends, through the wire format. */
  async function nodePartial(ids: string[], seeds: number[]) {
    const node = new RoundCollector(2, ids, {
      weightSpecs,
      maxUploadBytes: MAX_UPLOAD,
      maxExamplesPerClient: MAX_EXAMPLES,
      deadlineMs: DEADLINE,
    });
    ids.forEach((id, i) => node.submit(id, payload(seeds[i])));
    const partial = partialOf(await node.done);
    return decodePartial(encodePartial(partial, ids), weightSpecs, () => ids);
  }

  it("a partial counts its members as answered, and its sum aggregates like their updates", async () => {
    vi.useRealTimers();
    const strategy = resolveStrategy("fedavg");
    const global = [new Float32Array(6), new Float32Array(3)];
    // One node has everyone.
    const alone = collector(["a", "b", "c"]);
    ["a", "b", "c"].forEach((id, i) => alone.submit(id, payload(i + 1)));
    const whole = aggregateRound(strategy, global, (await alone.done).results)!;
    // b and c on another node.
    const leader = collector(["a", "b", "c"]);
    leader.submit("a", payload(1));
    leader.addPartial(await nodePartial(["b", "c"], [2, 3]), new Set(["b", "c"]));
    const outcome = await leader.done;
    expect(outcome.results.map((r) => r.clientId)).toEqual(["a"]);
    expect(outcome.remote!.map((r) => r.clientId)).toEqual(["b", "c"]);
    expect(outcome.failures).toEqual([]);
    const split = aggregateRound(strategy, global, outcome.results, outcome.sums)!;
    expect(split.weight).toBe(whole.weight);
    expect(split.count).toBe(3);
    split.weighted.forEach((t, i) =>
      t.forEach((v, j) => expect(v).toBeCloseTo(whole.weighted[i]![j]!, 4)),
    );
  });

  it("refuses a partial naming a client its node was not asked for, or a sum that does not add up", async () => {
    vi.useRealTimers();
    const leader = collector(["a", "b", "c"]);
    const partial = await nodePartial(["b", "c"], [2, 3]);
    expect(() => leader.addPartial(partial, new Set(["b"]))).toThrow(/names c, which that node/);
    const lighter = { ...partial, sum: { ...partial.sum!, weight: partial.sum!.weight / 2 } };
    expect(() => leader.addPartial(lighter, new Set(["b", "c"]))).toThrow(/does not match/);
    const stale = { ...partial, round: 1 };
    expect(() => leader.addPartial(stale, new Set(["b", "c"]))).toThrow(/round 1/);
    // Nothing was taken: the members still count as pending, and a good partial still lands.
    leader.addPartial(partial, new Set(["b", "c"]));
    leader.submit("a", payload(1));
    expect((await leader.done).remote).toHaveLength(2);
  });

  it("a partial's sum must have the model's shapes and finite values", async () => {
    const bad = (mean: Float32Array[]) =>
      encodePartial(
        {
          round: 2,
          results: [],
          failures: [],
          bytesUp: 0,
          sum: { weighted: mean.map((t) => Float64Array.from(t)), weight: 1, count: 0 },
        },
        [],
      );
    const none = () => [];
    expect(() => decodePartial(bad([new Float32Array(6)]), weightSpecs, none)).toThrow();
    expect(() =>
      decodePartial(
        bad([new Float32Array(6).fill(Number.NaN), new Float32Array(3)]),
        weightSpecs,
        none,
      ),
    ).toThrow(/NaN|finite/);
    expect(() => decodePartial(encode({ round: "x" }), weightSpecs, none)).toThrow(
      /INVALID_MESSAGE|round/,
    );
  });
});
