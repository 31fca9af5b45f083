/**
 * Masked inputs summed before they reach the server (a cluster node sums its members'): the
 * round's result is the one the individual inputs give, and a sum that names a member out of the
 * round, seen before or twice, or has the wrong length, is refused whole, changing nothing.
 */
import { describe, expect, it } from "vitest";
import {
  addMasked,
  encodedWords,
  packMasked,
  parseMaskedInput,
  secureParams,
  type MaskedInput,
} from "../../aggregation/secure/index.js";
import type { ErrorCode } from "../../protocol/errors.js";
import { createRng } from "../../aggregation/random.js";
import { expectCohortError } from "../helpers/errors.js";
import { maxDifference, plainMean, TestRound, wire } from "./harness.js";

/** A round through share-keys, and every member's masked input (not yet sent). */
async function maskedRound(n: number, seed: number) {
  const round = new TestRound({ n, seed, tensorSizes: [300, 7] });
  round.advertise();
  await round.shareKeys();
  const inputs = new Map<number, MaskedInput>();
  for (const request of round.maskRequests()) {
    const m = await round.clients[request.index]!.maskedInput(
      request,
      round.updates[request.index]!,
    );
    inputs.set(request.index, wire(m, parseMaskedInput));
  }
  return { round, inputs };
}

/** The masked inputs of `who`, summed and packed as a node sends them. */
function sumOf(round: TestRound, inputs: Map<number, MaskedInput>, who: number[]) {
  const sum = new Uint32Array(encodedWords(round.params, round.setup.tensorSizes));
  for (const i of who) addMasked(sum, inputs.get(i)!.masked, round.params, `input ${i}`);
  return packMasked(sum, round.params);
}

describe("a sum of several members' masked inputs", () => {
  it("unmasks to the mean of the individual inputs, with a dropout recovered", async () => {
    const { round, inputs } = await maskedRound(8, 3);
    // Two nodes send sums; member 6 answers on its own; member 7 drops after sharing keys.
    round.server.receiveMaskedSum({
      round: 3,
      indices: [0, 2, 4],
      masked: sumOf(round, inputs, [0, 2, 4]),
    });
    round.server.receiveMaskedSum({
      round: 3,
      indices: [1, 3, 5],
      masked: sumOf(round, inputs, [1, 3, 5]),
    });
    round.server.receiveMaskedInput(inputs.get(6)!);
    round.closeMasked();
    round.unmask();
    const result = await round.finish();
    const contributors = [0, 1, 2, 3, 4, 5, 6];
    expect(result.contributors).toEqual(contributors);
    expect(result.dropouts.map((d) => d.index)).toEqual([7]);
    const plain = plainMean(round.updates, contributors, round.params);
    expect(result.sumWeights).toBe(plain.sumWeights);
    expect(maxDifference(result.weightedMeanDelta, plain.mean)).toBeLessThanOrEqual(
      result.errorBound,
    );
  });

  it("of narrow (packed) words sums as the inputs one by one do", () => {
    const params = secureParams({
      n: 6,
      clip: 0.5,
      maxWeight: 100,
      tensorSizes: [300, 7],
      quantizer: { bits: 8, chunk: 64, seed: 5 },
    });
    expect(params.wordBits).toBeLessThan(32);
    const words = encodedWords(params, [300, 7]);
    const rng = createRng(8);
    const members = Array.from({ length: 6 }, () =>
      packMasked(
        Uint32Array.from({ length: words }, () => Math.floor(rng() * 2 ** 32)),
        params,
      ),
    );
    const oneByOne = new Uint32Array(words);
    for (const m of members) addMasked(oneByOne, m, params, "member");
    // Two nodes' sums, each packed as one member's vector, then added.
    const node = (ms: (Uint32Array | Uint8Array)[]) => {
      const sum = new Uint32Array(words);
      for (const m of ms) addMasked(sum, m, params, "member");
      return packMasked(sum, params);
    };
    const viaNodes = new Uint32Array(words);
    const a = node(members.slice(0, 4));
    expect(a.byteLength).toBe(members[0]!.byteLength);
    addMasked(viaNodes, a, params, "node a");
    addMasked(viaNodes, node(members.slice(4)), params, "node b");
    const low = (w: Uint32Array) =>
      Array.from(w, (v, i) => (i < params.headerWords ? v : v % 2 ** params.wordBits));
    expect(low(viaNodes)).toEqual(low(oneByOne));
  });

  it("is refused whole when it names a member twice, one already in, one out of the round, or nobody", async () => {
    const { round, inputs } = await maskedRound(5, 4);
    round.server.receiveMaskedInput(inputs.get(0)!);
    const good = sumOf(round, inputs, [1, 2]);
    const refused: { indices: number[]; masked: Uint32Array | Uint8Array; code: ErrorCode }[] = [
      { indices: [1, 1], masked: good, code: "SECAGG_DUPLICATE" },
      { indices: [1, 0], masked: good, code: "SECAGG_DUPLICATE" },
      { indices: [1, 9], masked: good, code: "NOT_IN_COHORT" },
      { indices: [], masked: good, code: "INVALID_MESSAGE" },
      { indices: [1, 2], masked: good.subarray(0, good.length - 1), code: "SHAPE_MISMATCH" },
    ];
    for (const { indices, masked, code } of refused) {
      expectCohortError(() => round.server.receiveMaskedSum({ round: 3, indices, masked }), code);
    }
    expectCohortError(
      () => round.server.receiveMaskedSum({ round: 2, indices: [1, 2], masked: good }),
      "STALE_ROUND",
    );
    // Nothing of the refused sums stuck: the honest one and the rest give the exact result.
    round.server.receiveMaskedSum({ round: 3, indices: [1, 2], masked: good });
    round.server.receiveMaskedInput(inputs.get(3)!);
    round.server.receiveMaskedInput(inputs.get(4)!);
    round.closeMasked();
    round.unmask();
    const result = await round.finish();
    const plain = plainMean(round.updates, [0, 1, 2, 3, 4], round.params);
    expect(result.contributors).toEqual([0, 1, 2, 3, 4]);
    expect(maxDifference(result.weightedMeanDelta, plain.mean)).toBeLessThanOrEqual(
      result.errorBound,
    );
  });
});
