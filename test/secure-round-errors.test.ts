/** A secure round tells protocol failures (an aborted round) from programming errors (which surface). */
import { describe, expect, it } from "vitest";
import { runSecureRound } from "../coordinator/secure-round.js";
import { makeTask } from "../coordinator/engine.js";
import { resolveOptions } from "../coordinator/options.js";
import type { CohortTransport } from "../coordinator/transport.js";
import { CohortError } from "../protocol/errors.js";
import { roundConfig } from "./helpers/raw-client.js";
import { RoundBroadcast } from "../coordinator/downlink.js";
import { encode } from "../protocol/codec.js";

const opts = resolveOptions(
  { secure: true, runDir: null, secureStepTimeoutMs: 50 },
  () => undefined,
);
const task = makeTask(opts, "run-1", {
  name: "tiny",
  topology: {},
  weightSpecs: [{ name: "w", shape: [4] }],
  numParameters: 4,
});
const request = RoundBroadcast.plain(
  1,
  encode({ round: 1, weights: [new Float32Array(4)], config: roundConfig() }),
);

function transport(overrides: Partial<CohortTransport>): CohortTransport {
  return {
    available: () => ["a", "b", "c"],
    waitForAvailable: async () => undefined,
    startRound: () => 0,
    request: async () => {
      throw new CohortError("CLIENT_DISCONNECTED", "gone");
    },
    sealModel: (_round, payload) => payload,
    modelFor(_clientId, broadcast) {
      return this.sealModel(broadcast.round, broadcast.requestFor(null, null).payload);
    },
    forgetModel: () => undefined,
    finish: () => undefined,
    ...overrides,
  };
}

describe("secure round errors", () => {
  it("a round whose members all drop aborts with SECAGG_THRESHOLD", async () => {
    const outcome = await runSecureRound(transport({}), opts, task, 1, ["a", "b", "c"], request, 7);
    expect(outcome.result).toBeNull();
    expect(outcome.abortReason).toMatch(/^SECAGG_THRESHOLD/);
    expect(outcome.failures.map((f) => f.code)).toEqual([
      "CLIENT_DISCONNECTED",
      "CLIENT_DISCONNECTED",
      "CLIENT_DISCONNECTED",
    ]);
  });

  it("a programming error inside the round surfaces instead of reading as an abort", async () => {
    const broken = transport({
      sealModel: () => {
        throw new TypeError("cannot read properties of undefined");
      },
    });
    await expect(
      runSecureRound(broken, opts, task, 1, ["a", "b", "c"], request, 7),
    ).rejects.toThrow(TypeError);
  });
});
