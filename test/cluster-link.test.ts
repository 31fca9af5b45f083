/**
 * What a follower sends the leader for a secure round's masked phase is checked like a client's
 * message: it may name only members it was asked for, each once; members it leaves out are
 * failures, and a refusal it relays keeps its code.
 */
import { describe, expect, it } from "vitest";
import { parseMaskedReply } from "../coordinator/cluster/link.js";
import { encode } from "../protocol/codec.js";
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
