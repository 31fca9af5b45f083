/** SecAgg+ messages survive msgpack with their types, and the guards refuse anything else. */
import { describe, expect, it } from "vitest";
import { decode, encode } from "../../protocol/codec.js";
import {
  parseAdvertiseKeys,
  parseMaskedInput,
  parseMaskRequest,
  parseNeighbourKeys,
  parseSecAggSetup,
  parseShareKeys,
  parseUnmaskRequest,
  parseUnmaskResponse,
  SECAGG_PHASES,
  nextState,
} from "../../aggregation/secure/index.js";
import type { AdvertiseKeys } from "../../aggregation/secure/index.js";
import { SHARE_BOX_BYTES } from "../../aggregation/secure/transcript.js";
import { expectCohortError } from "../helpers/errors.js";
import { makeSetup } from "./harness.js";

const bytes = (n: number, fill = 1) => new Uint8Array(n).fill(fill);
const ad = { round: 2, index: 1, cPublicKey: bytes(32), sPublicKey: bytes(32, 2), signature: null };

describe("phases", () => {
  it("are ordered and each leads to the next", () => {
    expect(SECAGG_PHASES).toEqual([
      "advertise-keys",
      "share-keys",
      "collect-masked",
      "consistency",
      "unmask",
    ]);
    expect(SECAGG_PHASES.map((p) => nextState(p, true))).toEqual([
      ...SECAGG_PHASES.slice(1),
      "done",
    ]);
    expect(nextState("collect-masked")).toBe("unmask"); // without the consistency check
  });
});

describe("guards", () => {
  it("accept every message after a msgpack round trip, typed arrays intact", () => {
    const roundTrip = <T>(m: T, parse: (raw: unknown) => T) => parse(decode(encode(m)));
    const setup = makeSetup({ n: 7 });
    expect(roundTrip(setup, parseSecAggSetup)).toEqual(setup);
    const signed = { ...ad, signature: bytes(64) };
    expect(roundTrip<AdvertiseKeys>(signed, parseAdvertiseKeys).signature).toBeInstanceOf(
      Uint8Array,
    );
    expect(
      roundTrip({ round: 2, index: 0, neighbours: [ad] }, parseNeighbourKeys).neighbours,
    ).toHaveLength(1);
    const box = bytes(SHARE_BOX_BYTES);
    expect(
      roundTrip({ round: 2, index: 0, boxes: [{ to: 1, box }] }, parseShareKeys).boxes[0]!.to,
    ).toBe(1);
    expect(
      roundTrip({ round: 2, index: 0, boxes: [{ from: 1, box }] }, parseMaskRequest).boxes[0]!.from,
    ).toBe(1);
    const masked = Uint32Array.of(0, 1, 2 ** 32 - 1);
    const back = roundTrip({ round: 2, index: 0, masked }, parseMaskedInput).masked;
    expect(back).toBeInstanceOf(Uint32Array);
    expect(back).toEqual(masked);
    expect(
      roundTrip({ round: 2, index: 0, survivors: [0, 1], dropped: [2] }, parseUnmaskRequest)
        .dropped,
    ).toEqual([2]);
    const response = {
      round: 2,
      index: 0,
      selfMaskShares: [{ of: 1, share: bytes(32) }],
      maskKeyShares: [],
    };
    expect(roundTrip(response, parseUnmaskResponse)).toEqual(response);
  });

  it("refuse wrong shapes, lengths and ranges with INVALID_MESSAGE", () => {
    const cases: [() => unknown, RegExp][] = [
      [() => parseAdvertiseKeys(null), /expected an object/],
      [() => parseAdvertiseKeys({ ...ad, cPublicKey: bytes(31) }), /cPublicKey/],
      [() => parseAdvertiseKeys({ ...ad, signature: bytes(10) }), /signature/],
      [() => parseAdvertiseKeys({ ...ad, round: -1 }), /round/],
      [() => parseAdvertiseKeys({ ...ad, index: 1.5 }), /index/],
      [
        () => parseNeighbourKeys({ round: 2, index: 0, neighbours: [{ ...ad, sPublicKey: "x" }] }),
        /sPublicKey/,
      ],
      [() => parseShareKeys({ round: 2, index: 0, boxes: [{ to: 1, box: bytes(20) }] }), /box/],
      [() => parseShareKeys({ round: 2, index: 0, boxes: "nope" }), /boxes/],
      [() => parseMaskedInput({ round: 2, index: 0, masked: new Float32Array(3) }), /Uint32Array/],
      [
        () => parseUnmaskRequest({ round: 2, index: 0, survivors: [0, -1], dropped: [] }),
        /survivors/,
      ],
      [
        () =>
          parseUnmaskResponse({
            round: 2,
            index: 0,
            selfMaskShares: [{ of: 1, share: bytes(31) }],
            maskKeyShares: [],
          }),
        /share/,
      ],
      [() => parseSecAggSetup({ ...makeSetup({ n: 5 }), k: 5 }), /`k`/],
      [() => parseSecAggSetup({ ...makeSetup({ n: 5 }), clip: -1 }), /clip/],
      [() => parseSecAggSetup({ ...makeSetup({ n: 5 }), tensorSizes: [1.5] }), /tensorSizes/],
    ];
    for (const [fn, message] of cases) expectCohortError(fn, "INVALID_MESSAGE", message);
  });
});
