/**
 * What a follower sends the leader for a secure round's masked phase is checked like a client's
 * message: it may name only members it was asked for, each once; members it leaves out are
 * failures, and a refusal it relays keeps its code. A plain round's partial carries its members'
 * summaries column by column, exactly, and is refused when malformed.
 */
import { describe, expect, it } from "vitest";
import {
  decodePartial,
  encodePartial,
  packColumn,
  parseMaskedReply,
} from "../coordinator/cluster/link.js";
import type { NodePartial, UpdateSummary } from "../coordinator/round.js";
import { decode, encode } from "../protocol/codec.js";
import { expectCohortError } from "./helpers/errors.js";

const asked = new Map([
  ["c1", 1],
  ["c2", 2],
  ["c5", 5],
]);
const masked = new Uint32Array(4);

describe("a follower's masked sum", () => {
  it("accounts for every member asked: summed, failed as it says, or missing", () => {
    const sum = parseMaskedReply(
      encode({
        indices: [2, 1],
        masked,
        failures: [
          { clientId: "c9", code: "X", message: "not asked: ignored" },
          { clientId: "c1", code: "X", message: "summed: not a failure" },
        ],
        bytesUp: 40,
      }),
      asked,
      "b",
    );
    expect(sum.indices).toEqual([2, 1]);
    expect(sum.failures).toEqual([
      expect.objectContaining({ clientId: "c5", code: "CLIENT_DISCONNECTED" }),
    ]);
    expect(sum.failures[0]!.message).toMatch(/its node b sent no masked input/);
    expect(sum.wireBytes).toBeGreaterThan(16);
  });

  it("is refused when it names a member not asked, or one twice, or a sum for nobody", () => {
    for (const indices of [
      [1, 7],
      [1, 1],
    ]) {
      expectCohortError(
        () => parseMaskedReply(encode({ indices, masked, failures: [], bytesUp: 0 }), asked, "b"),
        "INVALID_MESSAGE",
        /not asked of this node, or is listed twice/,
      );
    }
    expectCohortError(
      () => parseMaskedReply(encode({ indices: [], masked, failures: [], bytesUp: 0 }), asked, "b"),
      "INVALID_MESSAGE",
    );
    expectCohortError(() => parseMaskedReply(encode([1, 2]), asked, "b"), "INVALID_MESSAGE");
  });

  it("relays the node's refusal with its code", () => {
    expectCohortError(
      () =>
        parseMaskedReply(
          encode({ ok: false, code: "SECAGG_PHASE", message: "bad setup" }),
          asked,
          "b",
        ),
      "SECAGG_PHASE",
      /bad setup/,
    );
  });
});

describe("a follower's partial", () => {
  const specs = [{ name: "w", shape: [2], dtype: "float32" as const }];
  const cohort = ["c0", "c1", "c2", "c3"];
  const summary = (clientId: string, i: number): UpdateSummary => ({
    clientId,
    numExamples: 600 + i,
    metrics: {
      loss: 0.4321987 + i / 7,
      accuracy: i === 1 ? null : 0.881 + i / 1000,
      trainMs: 1234.5678 + i,
      backend: i % 2 === 0 ? "wasm" : "tensorflow",
      ...(i === 2 ? {} : { encodeMs: 3.21 + i }),
    },
    bytes: 796_900 + i,
    decodeMs: 1.2345678 * (i + 1),
    ...(i === 3 ? { claimedExamples: 10_000 } : {}),
  });
  const partial = (results: UpdateSummary[]): NodePartial => ({
    round: 4,
    results,
    failures: [{ clientId: "c1", code: "DEADLINE_EXCEEDED", message: "late" }],
    bytesUp: 123,
    sum: { weighted: [Float64Array.from([1, 2])], weight: 2, count: results.length },
  });

  it("carries every member's summary exactly, in a few bytes each", () => {
    const results = [summary("c3", 3), summary("c0", 0), summary("c2", 2)];
    const back = decodePartial(encodePartial(partial(results), cohort), specs, () => cohort);
    expect(back.results).toEqual(results);
    expect(back.failures).toEqual(partial(results).failures);
    // 1,000 members: far smaller than the summaries as records with their ids.
    const ids = Array.from({ length: 1000 }, (_, i) => `client-${i}-${"x".repeat(20)}`);
    const many = ids.map((id, i) => summary(id, i));
    const columns = encodePartial(partial(many), ids).byteLength;
    expect(columns).toBeLessThan(encode(many).byteLength / 3);
    expect(decodePartial(encodePartial(partial(many), ids), specs, () => ids).results).toEqual(
      many,
    );
  });

  it("packs each column in the narrowest exact typed array", () => {
    expect(packColumn([0, 3, 255])).toBeInstanceOf(Uint8Array);
    expect(packColumn([256])).toBeInstanceOf(Uint16Array);
    expect(packColumn([70_000])).toBeInstanceOf(Uint32Array);
    expect(packColumn([0.5, Number.NaN, -1])).toBeInstanceOf(Float32Array);
    expect(packColumn([0.1])).toBeInstanceOf(Float64Array);
    expect(packColumn([2 ** 40])).toBeInstanceOf(Float32Array);
    expect([...packColumn([2 ** 40 + 1])]).toEqual([2 ** 40 + 1]);
  });

  it("is refused when it names a place outside the node's cohort, has ragged columns, or is of another round", () => {
    const good = encodePartial(partial([summary("c3", 3)]), cohort);
    expectCohortError(
      () => decodePartial(good, specs, () => cohort.slice(0, 2)),
      "INVALID_MESSAGE",
      /partial result 0/,
    );
    expectCohortError(() => decodePartial(good, specs, () => null), "STALE_ROUND", /round 4/);
    const o = decode(good) as { results: Record<string, unknown> };
    const ragged = { ...o, results: { ...o.results, loss: new Float64Array(2) } };
    expectCohortError(
      () => decodePartial(encode(ragged), specs, () => cohort),
      "INVALID_MESSAGE",
      /typed arrays of one length/,
    );
    const nanLoss = { ...o, results: { ...o.results, loss: Float64Array.of(Number.NaN) } };
    expectCohortError(
      () => decodePartial(encode(nanLoss), specs, () => cohort),
      "INVALID_MESSAGE",
      /partial result 0/,
    );
    for (const [column, value] of [
      ["member", Float32Array.of(-1)],
      ["bytes", Float64Array.of(Infinity)],
      ["trainMs", Float64Array.of(-Infinity)],
      ["decodeMs", Float64Array.of(-2)],
    ] as const) {
      const wrong = { ...o, results: { ...o.results, [column]: value } };
      expectCohortError(
        () => decodePartial(encode(wrong), specs, () => cohort),
        "INVALID_MESSAGE",
        /partial result 0/,
      );
    }
    const noBackend = { ...o, results: { ...o.results, backends: [] } };
    expectCohortError(
      () => decodePartial(encode(noBackend), specs, () => cohort),
      "INVALID_MESSAGE",
      /backend required/,
    );
  });
});
