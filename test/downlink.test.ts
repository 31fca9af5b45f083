/** The compressed downlink's chain, its patches and their checks, without sockets or tfjs. */
import { describe, expect, it } from "vitest";
import { createRng } from "../aggregation/random.js";
import { resolveCodec } from "../aggregation/codecs/index.js";
import {
  addWeights,
  DOWNLINK_WINDOW,
  downlinkSeeds,
  modelChecksum,
  resolveDownlinkCodec,
  subtractWeights,
} from "../aggregation/downlink.js";
import { HeldModel } from "../client/downlink.js";
import { DownlinkChain, RoundBroadcast } from "../coordinator/downlink.js";
import { resolveOptions } from "../coordinator/options.js";
import { sharedFlags } from "../coordinator/option-schema.js";
import { resolveSimulationConfig } from "../simulations/config.js";
import { decode, encode } from "../protocol/codec.js";
import { parseFitMessage } from "../protocol/guards.js";
import type { ErrorCode } from "../protocol/errors.js";
import type { FitPatchRequest, FitRequest, TaskSpec, TensorSpec } from "../protocol/messages.js";
import { expectCohortError } from "./helpers/errors.js";
import { roundConfig } from "./helpers/raw-client.js";

const SPECS: TensorSpec[] = [
  { name: "w", shape: [60, 50] },
  { name: "b", shape: [50] },
];
const N = 60 * 50 + 50;

function task(downlink: string | null): TaskSpec {
  return {
    protocolVersion: 1,
    runId: "run",
    model: { name: "tiny", topology: {}, weightSpecs: SPECS, numParameters: N },
    training: {
      optimizer: "sgd",
      learningRate: 0.1,
      localEpochs: 1,
      batchSize: 10,
      loss: "categorical-crossentropy",
      metrics: ["accuracy"],
    },
    limits: { maxUploadBytes: 1 << 20, maxExamplesPerClient: 10_000 },
    secure: false,
    coordinatorKey: null,
    signedUpdates: false,
    codec: { name: "float32", params: {} },
    ...(downlink === null
      ? {}
      : {
          downlink: {
            name: resolveDownlinkCodec(downlink).name,
            params: { ...resolveDownlinkCodec(downlink).params },
          },
        }),
    signature: null,
  };
}

/** A random walk of global models: G₁ random, each next one a small step away. */
function walk(rounds: number, seed = 1, step = 0.01): Float32Array[][] {
  const rng = createRng(seed);
  const gauss = () => Math.sqrt(-2 * Math.log(1 - rng())) * Math.cos(2 * Math.PI * rng());
  let g = SPECS.map((s) => Float32Array.from({ length: s.shape.reduce((a, b) => a * b) }, gauss));
  const out = [g];
  for (let r = 1; r < rounds; r++) {
    g = g.map((t) => t.map((v) => v + step * gauss()));
    out.push(g);
  }
  return out;
}

const norm = (w: readonly Float32Array[]) =>
  Math.sqrt(w.reduce((s, t) => s + t.reduce((a, v) => a + v * v, 0), 0));

/** Bit-for-bit equality of weight lists. */
function sameBits(a: readonly Float32Array[], b: readonly Float32Array[]): boolean {
  return (
    a.length === b.length &&
    a.every((t, i) =>
      Buffer.from(t.buffer, t.byteOffset, t.byteLength).equals(
        Buffer.from(b[i]!.buffer, b[i]!.byteOffset, b[i]!.byteLength),
      ),
    )
  );
}

/** What a client of `task` holds after `payload`, rebuilt as a client rebuilds it. */
function receive(held: HeldModel, t: TaskSpec, payload: Uint8Array): FitRequest {
  return held.receive(t, parseFitMessage(decode(payload)));
}

const body = (round: number) => ({ round, config: roundConfig() });

describe("the broadcast chain (server-side error feedback)", () => {
  it.each(["q8", "f16"])(
    "%s: ‖M̂ − G‖ stays within one encoding's bound over 60 rounds, while naive accumulation of encoded global differences grows",
    (name) => {
      const codec = resolveDownlinkCodec(name);
      const models = walk(60);
      const chain = new DownlinkChain(codec, SPECS, 7);
      let naive: Float32Array[] = models[0]!.map((t) => Float32Array.from(t));
      const chainErr: number[] = [];
      const naiveErr: number[] = [];
      models.forEach((g, i) => {
        const version = i + 1;
        const before = chain.model();
        chain.advance(version, g);
        const mhat = chain.model()!;
        if (before !== null) {
          // One encoding's bound, of this round's difference D = G − M̂ before.
          const d = norm(subtractWeights(g, before));
          const bound = name === "q8" ? ((2 * Math.sqrt(1024)) / 255) * d : 2 ** -11 * d + 1e-6;
          expect(norm(subtractWeights(mhat, g))).toBeLessThanOrEqual(bound);
          // Naive: encode G_r − G_{r−1} and add it to the last reconstruction; errors add up.
          const { seed, noiseSeed } = downlinkSeeds(7, version);
          const step = subtractWeights(g, models[i - 1]!);
          const enc = codec.encode(step, { round: version, seed, noiseSeed });
          naive = addWeights(naive, codec.decode(enc, SPECS, { round: version, seed }));
        }
        chainErr.push(norm(subtractWeights(mhat, g)));
        naiveErr.push(norm(subtractWeights(naive, g)));
      });
      expect(chainErr[0]).toBe(0);
      const early = Math.max(...chainErr.slice(1, 11));
      const late = Math.max(...chainErr.slice(50));
      // Bounded: the last rounds' error is no larger than the first rounds' (same step size).
      expect(late).toBeLessThan(1.5 * early);
      if (name === "q8") {
        // The stochastic errors of the naive sum add up like a random walk: √59 ≈ 7.7 times one.
        expect(naiveErr.at(-1)!).toBeGreaterThan(3 * late);
        expect(naiveErr.at(-1)!).toBeGreaterThan(2 * naiveErr[10]!);
      } else {
        // f16's rounding is deterministic but still adds up in the naive sum.
        expect(naiveErr.at(-1)!).toBeGreaterThan(late);
      }
    },
  );

  it("encodes the same bytes for the same run seed and round, and other bytes for another seed", () => {
    const models = walk(3);
    const payloads = [7, 7, 8].map((seed) => {
      const chain = new DownlinkChain(resolveDownlinkCodec("q8"), SPECS, seed);
      models.forEach((g, i) => chain.advance(i + 1, g));
      return chain.broadcast(body(3)).requestFor(chain.id, 2).payload;
    });
    expect(Buffer.from(payloads[0]!).equals(Buffer.from(payloads[1]!))).toBe(true);
    expect(Buffer.from(payloads[0]!).equals(Buffer.from(payloads[2]!))).toBe(false);
  });

  it.each(["q8", "f16"])(
    "%s: a client rebuilds M̂ bit for bit from any base a patch is sent for, and the far-behind get the full model",
    (name) => {
      const t = task(name);
      const models = walk(12);
      const chain = new DownlinkChain(resolveDownlinkCodec(name), SPECS, 3);
      // One client per join round; each is sent every round from then on.
      const clients = models.map(() => new HeldModel());
      const sinceJoin = new Map<number, number>();
      models.forEach((g, i) => {
        const version = i + 1;
        chain.advance(version, g);
        const broadcast = chain.broadcast(body(version));
        clients.forEach((held, c) => {
          if (c > i) return;
          const request = receive(held, t, broadcast.requestFor(chain.id, held.version).payload);
          expect(sameBits(request.weights, chain.model()!)).toBe(true);
          expect(held.version).toBe(version);
          sinceJoin.set(c, (sinceJoin.get(c) ?? 0) + 1);
        });
        // From its second round on, a client holding the previous version gets a patch.
        expect(broadcast.patched).toBe(i);
        expect(broadcast.full).toBe(1);
      });
      // A client last sent version 1 of 12: only the full model (too many differences).
      const late = new HeldModel();
      const start = new DownlinkChain(resolveDownlinkCodec(name), SPECS, 3);
      start.advance(1, models[0]!);
      receive(late, t, start.broadcast(body(1)).requestFor(start.id, null).payload);
      const last = chain.broadcast(body(12));
      const message = parseFitMessage(decode(last.requestFor(chain.id, 1).payload));
      expect("patch" in message).toBe(false);
    },
  );

  it("sends a chain of differences only while it is smaller than the full model", () => {
    const models = walk(DOWNLINK_WINDOW + 3);
    const patchable = (name: string) => {
      const chain = new DownlinkChain(resolveDownlinkCodec(name), SPECS, 1);
      models.forEach((g, i) => chain.advance(i + 1, g));
      const r = models.length;
      return Array.from({ length: DOWNLINK_WINDOW + 2 }, (_, k) => chain.chainFrom(r - k) !== null);
    };
    // q8 is ≈ 4× smaller: up to 3 differences; f16 2×: 1. The current version: an empty patch.
    expect(patchable("q8")).toEqual([
      true,
      true,
      true,
      true,
      ...Array(DOWNLINK_WINDOW - 2).fill(false),
    ]);
    expect(patchable("f16")).toEqual([true, true, ...Array(DOWNLINK_WINDOW).fill(false)]);
  });

  it("a retried round (the same version again) sends the same model; its patch holds no differences", () => {
    const t = task("q8");
    const [g1, g2] = walk(2);
    const chain = new DownlinkChain(resolveDownlinkCodec("q8"), SPECS, 1);
    const held = new HeldModel();
    chain.advance(1, g1!);
    receive(held, t, chain.broadcast(body(1)).requestFor(chain.id, null).payload);
    chain.advance(2, g2!);
    const first = receive(held, t, chain.broadcast(body(2)).requestFor(chain.id, 1).payload);
    chain.advance(
      2,
      g2!.map((x) => x.map((v) => v + 1)),
    );
    const again = chain.broadcast(body(2)).requestFor(chain.id, 2).payload;
    const message = parseFitMessage(decode(again)) as FitPatchRequest;
    expect(message.patch).toEqual({ base: 2, diffs: [] });
    expect(sameBits(receive(held, t, again).weights, first.weights)).toBe(true);
  });

  it("a version that does not follow the last (a resumed run) starts over from G, sent in full", () => {
    const [g1, g2] = walk(2);
    const chain = new DownlinkChain(resolveDownlinkCodec("q8"), SPECS, 1);
    chain.advance(3, g1!);
    chain.advance(5, g2!);
    expect(sameBits(chain.model()!, g2!)).toBe(true);
    expect(chain.chainFrom(3)).toBeNull();
    const broadcast = chain.broadcast(body(5));
    expect("weights" in (decode(broadcast.requestFor(chain.id, 3).payload) as object)).toBe(true);
    expect(broadcast.full).toBe(1);
  });

  it("a version held of another chain (an earlier run on the same transport) gets the full model", () => {
    const [g1, g2] = walk(2);
    const a = new DownlinkChain(resolveDownlinkCodec("q8"), SPECS, 1);
    const b = new DownlinkChain(resolveDownlinkCodec("q8"), SPECS, 1);
    for (const c of [a, b]) {
      c.advance(1, g1!);
      c.advance(2, g2!);
    }
    const broadcast = b.broadcast(body(2));
    broadcast.requestFor(a.id, 1);
    expect(broadcast.full).toBe(1);
    expect(broadcast.canPatch(a.id, 1)).toBe(false);
    expect(broadcast.canPatch(b.id, 1)).toBe(true);
  });

  it("a plain broadcast sends everyone the same bytes and no versions", () => {
    const payload = encode({ round: 1 });
    const plain = RoundBroadcast.plain(1, payload);
    expect(plain.requestFor(null, null).payload).toBe(payload);
    expect(plain.requestFor(3, 7).payload).toBe(payload);
    expect(plain.version).toBeNull();
    expect([plain.patched, plain.full]).toEqual([0, 2]);
  });

  it("the checksum is FNV-1a of the float32 bytes", () => {
    // FNV-1a("") and of the four bytes of 0.0f.
    expect(modelChecksum([])).toBe(0x811c9dc5);
    expect(modelChecksum([new Float32Array(1)])).toBe(0x4b95f515);
    expect(modelChecksum([Float32Array.of(1)])).not.toBe(modelChecksum([Float32Array.of(-1)]));
  });
});

describe("bad patches are refused with codes", () => {
  /** A client holding version 1 and the coordinator's patch to version 2. */
  function setup() {
    const t = task("q8");
    const [g1, g2] = walk(2);
    const chain = new DownlinkChain(resolveDownlinkCodec("q8"), SPECS, 1);
    const held = new HeldModel();
    chain.advance(1, g1!);
    receive(held, t, chain.broadcast(body(1)).requestFor(chain.id, null).payload);
    chain.advance(2, g2!);
    const patch = decode(chain.broadcast(body(2)).requestFor(chain.id, 1).payload) as Record<
      string,
      unknown
    > & { patch: { base: number; diffs: { update: Record<string, unknown> }[] } };
    return { t, held, patch };
  }
  const bent = (
    patch: ReturnType<typeof setup>["patch"],
    update: (u: Record<string, unknown>) => Record<string, unknown>,
  ) => ({
    ...patch,
    patch: {
      ...patch.patch,
      diffs: [{ ...patch.patch.diffs[0]!, update: update(patch.patch.diffs[0]!.update) }],
    },
  });

  const guards: [string, (p: ReturnType<typeof setup>["patch"]) => unknown, RegExp][] = [
    ["both weights and a patch", (p) => ({ ...p, weights: [] }), /both/],
    ["a patch without a model version", (p) => ({ ...p, model: undefined }), /needs `model`/],
    ["a base past the version", (p) => ({ ...p, patch: { ...p.patch, base: 3 } }), /base/],
    [
      "diffs that skip a version",
      (p) => ({ ...p, patch: { ...p.patch, base: 1, diffs: [] } }),
      /do not reach/,
    ],
    [
      "a diff of the wrong version",
      (p) => ({ ...p, patch: { ...p.patch, diffs: [{ ...p.patch.diffs[0]!, version: 5 }] } }),
      /version 5/,
    ],
    ["diffs that are not a list", (p) => ({ ...p, patch: { ...p.patch, diffs: "x" } }), /diffs/],
    [
      "too many diffs",
      (p) => ({ ...p, patch: { ...p.patch, diffs: Array(65).fill(p.patch.diffs[0]) } }),
      /at most 64/,
    ],
    ["a diff without an update", (p) => bentDiff(p, { update: undefined }), /update/],
    ["a negative seed", (p) => bentDiff(p, { seed: -1 }), /seed/],
  ];
  const bentDiff = (p: ReturnType<typeof setup>["patch"], fields: Record<string, unknown>) => ({
    ...p,
    patch: { ...p.patch, diffs: [{ ...p.patch.diffs[0]!, ...fields }] },
  });

  it.each(guards)("the guard refuses %s (INVALID_MESSAGE)", (_what, bend, message) => {
    const { patch } = setup();
    expectCohortError(() => parseFitMessage(bend(patch)), "INVALID_MESSAGE", message);
  });

  const decoding: [string, ErrorCode, (p: ReturnType<typeof setup>["patch"]) => unknown][] = [
    [
      "too few codes",
      "SHAPE_MISMATCH",
      (p) => bent(p, (u) => ({ ...u, codes: (u.codes as Uint8Array).subarray(1) })),
    ],
    [
      "a NaN scale",
      "NON_FINITE",
      (p) => bent(p, (u) => ({ ...u, scales: (u.scales as Float32Array).map(() => NaN) })),
    ],
    ["another bit width", "MALFORMED_PAYLOAD", (p) => bent(p, (u) => ({ ...u, bits: 4 }))],
    ["an update that is not an object", "INVALID_MESSAGE", (p) => bent(p, () => [1, 2] as never)],
    [
      "a changed code (the checksum differs)",
      "BASE_MISMATCH",
      (p) =>
        bent(p, (u) => ({
          ...u,
          codes: (u.codes as Uint8Array).map((c, i) => (i === 7 ? c ^ 1 : c)),
        })),
    ],
    [
      "a wrong checksum",
      "BASE_MISMATCH",
      (p) => ({ ...p, model: { version: 2, checksum: 12345 } }),
    ],
  ];

  it.each(decoding)("a client refuses %s with %s and holds nothing after", (_what, code, bend) => {
    const { t, held, patch } = setup();
    expectCohortError(() => receive(held, t, encode(bend(patch))), code);
    expect(held.version).toBeNull();
  });

  it("a patch of a version the client does not hold fails with BASE_MISMATCH", () => {
    const { t, patch } = setup();
    expectCohortError(
      () => receive(new HeldModel(), t, encode(patch)),
      "BASE_MISMATCH",
      /holds none/,
    );
  });

  it("a patch in a run without a downlink codec is INVALID_MESSAGE", () => {
    const { held, patch } = setup();
    expectCohortError(
      () => receive(held, task(null), encode(patch)),
      "INVALID_MESSAGE",
      /no downlink codec/,
    );
  });

  it("a full model whose checksum differs fails with BASE_MISMATCH", () => {
    const [g1] = walk(1);
    const request: FitRequest = {
      round: 1,
      weights: g1!,
      config: roundConfig(),
      model: { version: 1, checksum: 1 },
    };
    expectCohortError(() => receive(new HeldModel(), task("q8"), encode(request)), "BASE_MISMATCH");
  });

  it("an f16 patch whose values overflow to infinity is NON_FINITE", () => {
    const t = task("f16");
    const [g1, g2] = walk(2);
    const chain = new DownlinkChain(resolveDownlinkCodec("f16"), SPECS, 1);
    const held = new HeldModel();
    chain.advance(1, g1!);
    receive(held, t, chain.broadcast(body(1)).requestFor(chain.id, null).payload);
    chain.advance(2, g2!);
    const p = decode(chain.broadcast(body(2)).requestFor(chain.id, 1).payload) as ReturnType<
      typeof setup
    >["patch"];
    const inf = bent(p, (u) => ({ ...u, values: (u.values as Uint16Array).map(() => 0x7c00) }));
    expectCohortError(() => receive(held, t, encode(inf)), "NON_FINITE");
  });
});

describe("the downlink-codec option", () => {
  const quiet = () => undefined;
  it.each(["topk:0.01", "q4", "q2", "nope"])("refuses %s naming the allowed codecs", (name) => {
    expectCohortError(
      () => resolveOptions({ downlinkCodec: name }, quiet),
      "INVALID_OPTION",
      /float32, f16, q8|nope/,
    );
  });

  it("takes float32, f16, q8 and q8:CHUNK, in plain and secure runs", () => {
    expect(resolveOptions({ downlinkCodec: "q8", secure: true }, quiet).downlinkCodec).toBe("q8");
    for (const name of ["float32", "f16", "q8", "q8:512"]) {
      expect(resolveOptions({ downlinkCodec: name }, quiet).downlinkCodec).toBe(name);
    }
    expect(resolveDownlinkCodec("q8:512").params).toEqual({ chunk: 512 });
    expect(resolveOptions({}, quiet).downlinkCodec).toBe("float32");
  });

  it("is a flag of the coordinator and the simulator, and a simulation config key", () => {
    for (const target of ["coordinator", "simulator"] as const) {
      const flag = sharedFlags(target)["downlink-codec"]!;
      expect(flag.default).toBe("float32");
      expect(flag.description).toMatch(/f16 or q8/);
    }
    expect(resolveSimulationConfig({ downlinkCodec: "f16" }).downlinkCodec).toBe("f16");
    expectCohortError(
      () => resolveSimulationConfig({ downlinkCodec: "topk:0.1" }),
      "INVALID_OPTION",
    );
  });

  it("the codecs' own registry still resolves every codec (the downlink only narrows it)", () => {
    expect(resolveCodec("topk:0.01").name).toBe("topk");
  });
});
