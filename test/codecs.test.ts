import { describe, expect, it } from "vitest";
import {
  codecRef,
  HALF_MAX,
  parseCodecSpec,
  resolveCodec,
  toHalf,
  type CodecMemory,
  type UpdateCodec,
} from "../aggregation/codecs/index.js";
import { HALF_TABLE } from "../aggregation/codecs/half.js";
import { chunksOf, rotate, unrotate } from "../aggregation/codecs/rotation.js";
import { keptCount, topIndices } from "../aggregation/codecs/topk.js";
import { createRng } from "../aggregation/random.js";
import { decode, encode } from "../protocol/codec.js";
import type { TaskSpec, TensorSpec } from "../protocol/messages.js";
import { parseFitResult, parseFitUpload } from "../protocol/guards.js";
import { encodeOutcome } from "../client/trainer.js";
import { resolveOptions } from "../coordinator/options.js";
import { resolveSimulationConfig } from "../simulations/config.js";
import { expectCohortError } from "./helpers/errors.js";

const specs: TensorSpec[] = [
  { name: "kernel", shape: [30, 9] },
  { name: "bias", shape: [9] },
  { name: "out", shape: [21] },
];
const N = 300;

function randomDelta(seed: number, scale = 0.05): Float32Array[] {
  const rng = createRng(seed);
  return specs.map((s) => {
    const a = new Float32Array(s.shape.reduce((x, y) => x * y, 1));
    for (let i = 0; i < a.length; i++) a[i] = (rng() - 0.5) * 2 * scale * (i % 7 === 0 ? 5 : 1);
    return a;
  });
}

const flat = (d: readonly Float32Array[]) => Float32Array.from(d.flatMap((t) => [...t]));

/** A payload as the coordinator sees it: through msgpack. */
function roundTrip(codec: UpdateCodec, delta: Float32Array[], noiseSeed = 1, memory?: CodecMemory) {
  const ctx = { round: 3, seed: 77, noiseSeed, ...(memory === undefined ? {} : { memory }) };
  const wire = decode(encode(codec.encode(delta, ctx)));
  return codec.decode(wire, specs, ctx);
}

describe("the codec registry", () => {
  it("resolves NAME[:ARG] and { name, params } alike, with every parameter defaulted", () => {
    expect(codecRef(resolveCodec("q8"))).toEqual({ name: "q8", params: { chunk: 1024 } });
    expect(resolveCodec("q4:256").params).toEqual({ chunk: 256 });
    expect(codecRef(resolveCodec("topk:0.01"))).toEqual({
      name: "topk",
      params: { fraction: 0.01, values: "f32" },
    });
    expect(resolveCodec("topk:0.05:f16").label).toBe("topk:0.05:f16");
    expect(resolveCodec({ name: "topk", params: { fraction: 0.05, values: "f16" } }).label).toBe(
      "topk:0.05:f16",
    );
    expect(parseCodecSpec("float32")).toEqual({ name: "float32", params: {} });
    for (const name of ["float32", "q8", "q4", "q2"]) expect(resolveCodec(name).linear).toBe(true);
    for (const name of ["f16", "topk"]) expect(resolveCodec(name).linear).toBe(false);
    expect(resolveCodec("q4:256").secure).toEqual({ bits: 4, chunk: 256 });
    expect(resolveCodec("float32").secure).toBeUndefined();
  });

  it.each([
    ["zip", /unknown codec "zip"/],
    ["topk:0", /fraction/],
    ["topk:1.5", /fraction/],
    ["topk:abc", /fraction/],
    ["topk:0.1:f8", /FRACTION/],
    ["q8:1000", /power of two/],
    ["q8:8", /power of two/],
    ["f16:3", /takes no argument/],
  ])("refuses --codec %s with INVALID_OPTION", (spec, message) => {
    expectCohortError(() => resolveCodec(spec), "INVALID_OPTION", message);
  });

  it("refuses unknown and mistyped params", () => {
    expectCohortError(
      () => resolveCodec({ name: "q8", params: { bits: 3 } }),
      "INVALID_OPTION",
      /no parameter "bits"/,
    );
    expectCohortError(
      () => resolveCodec({ name: "q8", params: { chunk: "big" } }),
      "INVALID_OPTION",
      /chunk must be a number/,
    );
  });

  it("a coordinator refuses a non-linear codec with --secure at start, a quantizer with --secure and DP, and takes float32 and q8", () => {
    for (const codec of ["f16", "topk:0.1"]) {
      expectCohortError(
        () => resolveOptions({ secure: true, codec, runDir: null }, () => undefined),
        "INVALID_OPTION",
        /is not linear/,
      );
    }
    expectCohortError(
      () =>
        resolveOptions(
          { secure: true, codec: "q8", dpClip: 1, dpNoise: 1, dpPopulation: 10, runDir: null },
          () => undefined,
        ),
      "INVALID_OPTION",
      /float32 with --secure and --dp-clip/,
    );
    // The simulator checks the same.
    expectCohortError(
      () => resolveSimulationConfig({ secure: true, codec: "q8", dpClip: 1, dpNoise: 1 }),
      "INVALID_OPTION",
      /float32 with --secure and --dp-clip/,
    );
    expect(resolveOptions({ secure: true, codec: "q8", runDir: null }, () => undefined).codec).toBe(
      "q8",
    );
    expectCohortError(
      () => resolveOptions({ codec: "topk:2", runDir: null }, () => undefined),
      "INVALID_OPTION",
      /fraction/,
    );
    expect(
      resolveOptions({ secure: true, codec: "float32", runDir: null }, () => undefined).codec,
    ).toBe("float32");
  });
});

describe("f16", () => {
  it("rounds to nearest, ties to even, and saturates beyond 65504", () => {
    expect(toHalf(1)).toBe(0x3c00);
    expect(toHalf(1 + 2 ** -11)).toBe(0x3c00); // a tie: to the even mantissa
    expect(toHalf(1 + 3 * 2 ** -11)).toBe(0x3c02); // a tie: to the even mantissa, up
    expect(toHalf(1 + 2 ** -11 + 2 ** -20)).toBe(0x3c01); // above the tie: up
    expect(toHalf(-2)).toBe(0xc000);
    expect(toHalf(65504)).toBe(0x7bff);
    expect(toHalf(1e6)).toBe(0x7bff);
    expect(toHalf(-1e6)).toBe(0xfbff);
    expect(toHalf(Infinity)).toBe(0x7c00);
    expect(Number.isNaN(HALF_TABLE[toHalf(Number.NaN)]!)).toBe(true);
    expect(toHalf(2 ** -24)).toBe(1); // the smallest subnormal
    expect(toHalf(2 ** -25)).toBe(0); // a tie with 0: to even
    expect(toHalf(3 * 2 ** -25)).toBe(2); // a tie between 1 and 2: to even
    expect(HALF_TABLE[toHalf(2 ** -14)]).toBe(2 ** -14);
    expect(HALF_MAX).toBe(65504);
  });

  it("round-trips within 2⁻¹¹ relative (2⁻²⁵ absolute for subnormals)", () => {
    const codec = resolveCodec("f16");
    const delta = randomDelta(5);
    delta[1]![0] = 3e-6; // subnormal in half precision
    const back = flat(roundTrip(codec, delta));
    const x = flat(delta);
    for (let i = 0; i < N; i++) {
      expect(Math.abs(back[i]! - x[i]!)).toBeLessThanOrEqual(
        Math.max(2 ** -11 * Math.abs(x[i]!), 2 ** -25),
      );
    }
  });
});

describe("the shared rotation", () => {
  it("is orthonormal and inverted exactly (to float32 rounding); the seed decides it", () => {
    const x = flat(randomDelta(9));
    const chunks = chunksOf(N, 128);
    expect(chunks).toMatchObject({ count: 3, lastSize: 64, padded: 320 });
    const y = rotate(x, chunks, 42);
    const norm = (a: Float32Array) => Math.hypot(...a);
    expect(norm(y)).toBeCloseTo(norm(x), 4);
    expect(rotate(x, chunks, 42)).toEqual(y);
    expect(rotate(x, chunks, 43)).not.toEqual(y);
    const back = unrotate(y, chunks, 42);
    for (let i = 0; i < N; i++) expect(back[i]).toBeCloseTo(x[i]!, 6);
  });
});

describe.each([8, 4, 2] as const)("q%i", (bits) => {
  const codec = resolveCodec(`q${bits}:128`);
  const levels = 2 ** bits - 1;

  it("round-trips within the stated bound, chunk by chunk", () => {
    const delta = randomDelta(11);
    const x = flat(delta);
    const chunks = chunksOf(N, 128);
    const y = rotate(x, chunks, 77);
    const back = flat(roundTrip(codec, delta));
    let bound2 = 0;
    for (let c = 0; c < chunks.count; c++) {
      const size = c === chunks.count - 1 ? chunks.lastSize : chunks.size;
      const s = Math.max(...y.subarray(c * 128, c * 128 + size).map(Math.abs));
      bound2 += size * ((2 * s) / levels) ** 2;
    }
    let err2 = 0;
    for (let i = 0; i < N; i++) err2 += (back[i]! - x[i]!) ** 2;
    expect(err2).toBeGreaterThan(0);
    expect(Math.sqrt(err2)).toBeLessThanOrEqual(Math.sqrt(bound2) * (1 + 1e-5));
  });

  it("is unbiased: the mean of 1,000 encodings converges to the value", () => {
    const delta = randomDelta(13);
    const x = flat(delta);
    const chunks = chunksOf(N, 128);
    const y = rotate(x, chunks, 77);
    const smax = Math.max(...y.map(Math.abs));
    const mean = new Float64Array(N);
    const runs = 1000;
    for (let r = 0; r < runs; r++) {
      const back = flat(roundTrip(codec, delta, 1000 + r));
      for (let i = 0; i < N; i++) mean[i]! += back[i]! / runs;
    }
    // Each coordinate's rounding error has variance ≤ step²/4 (step = 2s/levels), in either
    // domain (the rotation is orthonormal): the mean's standard deviation is step/(2√runs).
    const sigma = (2 * smax) / levels / (2 * Math.sqrt(runs));
    let worst = 0;
    for (let i = 0; i < N; i++) worst = Math.max(worst, Math.abs(mean[i]! - x[i]!));
    expect(worst).toBeLessThan(5 * sigma);
    // And it is noise that averages out, not a bias hiding under a loose tolerance.
    const single = flat(roundTrip(codec, delta, 7));
    const oneErr = Math.max(...single.map((v, i) => Math.abs(v - x[i]!)));
    expect(worst).toBeLessThan(oneErr / 5);
  });

  it("sends about 32/bits times fewer bytes than float32", () => {
    const big = resolveCodec(`q${bits}`);
    const delta = [new Float32Array(100_000).map((_, i) => Math.sin(i))];
    const bytes = encode(big.encode(delta, { round: 1, seed: 1, noiseSeed: 1 })).byteLength;
    const ratio = encode(delta).byteLength / bytes;
    expect(ratio).toBeGreaterThan((32 / bits) * 0.97);
    expect(ratio).toBeLessThan(32 / bits);
  });
});

describe("topk with error feedback", () => {
  it("sends the k largest coordinates exactly, sorted, and keeps the rest as the residual", () => {
    const codec = resolveCodec("topk:0.1");
    const delta = randomDelta(17);
    const x = flat(delta);
    const memory: CodecMemory = { residual: null };
    const payload = codec.encode(delta, { round: 1, seed: 0, noiseSeed: 0, memory }) as {
      indices: Uint32Array;
      values: Float32Array;
    };
    const k = keptCount(N, 0.1);
    expect(k).toBe(30);
    expect(payload.indices.length).toBe(k);
    const kth = [...x].map(Math.abs).sort((a, b) => b - a)[k - 1]!;
    for (let j = 0; j < k; j++) {
      if (j > 0) expect(payload.indices[j]!).toBeGreaterThan(payload.indices[j - 1]!);
      expect(Math.abs(payload.values[j]!)).toBeGreaterThanOrEqual(kth);
    }
    const sent = flat(codec.decode(decode(encode(payload)), specs, { round: 1, seed: 0 }));
    // The residual carries exactly what top-k left out.
    for (let i = 0; i < N; i++) expect(sent[i]! + memory.residual![i]!).toBe(x[i]);
    expect(sent.filter((v) => v !== 0).length).toBe(k);
  });

  it.each(["topk:0.1", "topk:0.1:f16"])(
    "%s transmits a constant update in full over enough rounds",
    (spec) => {
      const codec = resolveCodec(spec);
      // Magnitudes within a factor of 4 (a coordinate 1,000 times smaller than the rest waits
      // about 1,000 times longer for its turn).
      const rng = createRng(19);
      const delta = specs.map((s) =>
        Float32Array.from(
          { length: s.shape.reduce((a, b) => a * b, 1) },
          () => (rng() < 0.5 ? -1 : 1) * (0.25 + 0.75 * rng()),
        ),
      );
      const x = flat(delta);
      const memory: CodecMemory = { residual: null };
      const rounds = 400;
      const total = new Float64Array(N);
      const seen = new Set<number>();
      for (let r = 1; r <= rounds; r++) {
        const sent = flat(roundTrip(codec, delta, 0, memory));
        sent.forEach((v, i) => {
          total[i]! += v;
          if (v !== 0) seen.add(i);
        });
      }
      // Every coordinate got through, and what was sent is the update times the rounds, but
      // for what is still in the residual (bounded, so its share vanishes).
      expect(seen.size).toBe(N);
      const xmax = Math.max(...x.map(Math.abs));
      for (let i = 0; i < N; i++) {
        expect(Math.abs(total[i]! / rounds - x[i]!)).toBeLessThan(0.05 * xmax);
        expect(Math.abs(total[i]! + memory.residual![i]! - rounds * x[i]!)).toBeLessThan(
          1e-3 * rounds * xmax,
        );
      }
      // Without feedback the small coordinates would never be sent at all.
      const plain = flat(roundTrip(codec, delta));
      expect(plain.filter((v) => v !== 0).length).toBe(keptCount(N, 0.1));
    },
  );
});

describe("a codec checks the payload it decodes", () => {
  const ctx = { round: 1, seed: 5 };
  const q = resolveCodec("q4:128");
  const good = () => q.encode(randomDelta(1), { ...ctx, noiseSeed: 1 }) as Record<string, unknown>;
  const t = resolveCodec("topk:0.1");
  const goodTop = () =>
    t.encode(randomDelta(1), { ...ctx, noiseSeed: 1 }) as Record<string, unknown>;
  it.each([
    ["q: not an object", q, () => [1, 2], "INVALID_MESSAGE"],
    ["q: another bit width", q, () => ({ ...good(), bits: 8 }), "MALFORMED_PAYLOAD"],
    ["q: another chunk", q, () => ({ ...good(), chunk: 64 }), "MALFORMED_PAYLOAD"],
    ["q: scales missing", q, () => ({ ...good(), scales: undefined }), "INVALID_MESSAGE"],
    ["q: too few scales", q, () => ({ ...good(), scales: new Float32Array(2) }), "SHAPE_MISMATCH"],
    [
      "q: a NaN scale",
      q,
      () => ({ ...good(), scales: new Float32Array([1, Number.NaN, 1]) }),
      "NON_FINITE",
    ],
    [
      "q: an infinite scale",
      q,
      () => ({ ...good(), scales: new Float32Array([1, Infinity, 1]) }),
      "NON_FINITE",
    ],
    [
      "q: a negative scale",
      q,
      () => ({ ...good(), scales: new Float32Array([1, -1, 1]) }),
      "MALFORMED_PAYLOAD",
    ],
    ["q: short codes", q, () => ({ ...good(), codes: new Uint8Array(10) }), "SHAPE_MISMATCH"],
    ["topk: k", t, () => ({ ...goodTop(), k: 31 }), "MALFORMED_PAYLOAD"],
    [
      "topk: out of range",
      t,
      () => ({ ...goodTop(), indices: Uint32Array.from({ length: 30 }, (_, i) => i * 20) }),
      "SHAPE_MISMATCH",
    ],
    [
      "topk: repeated",
      t,
      () => ({
        ...goodTop(),
        indices: Uint32Array.from({ length: 30 }, (_, i) => (i === 5 ? 4 : i)),
      }),
      "MALFORMED_PAYLOAD",
    ],
    [
      "topk: unsorted",
      t,
      () => ({ ...goodTop(), indices: Uint32Array.from({ length: 30 }, (_, i) => 29 - i) }),
      "MALFORMED_PAYLOAD",
    ],
    [
      "topk: values of another type",
      t,
      () => ({ ...goodTop(), values: new Uint16Array(30) }),
      "INVALID_MESSAGE",
    ],
    [
      "topk: fewer values",
      t,
      () => ({ ...goodTop(), values: new Float32Array(29) }),
      "SHAPE_MISMATCH",
    ],
  ] as const)("%s", (_name, codec, payload, code) => {
    expectCohortError(() => codec.decode(decode(encode(payload())), specs, ctx), code);
  });
});

describe("a client's encoded update", () => {
  const task = (codec: TaskSpec["codec"]): TaskSpec => ({
    protocolVersion: 4,
    runId: "r",
    model: { name: "m", topology: {}, weightSpecs: specs, numParameters: N },
    training: {
      optimizer: "sgd",
      learningRate: 0.1,
      localEpochs: 1,
      batchSize: 10,
      loss: "sparse-categorical-crossentropy",
      metrics: ["accuracy"],
    },
    limits: { maxUploadBytes: 1 << 20, maxExamplesPerClient: 10_000 },
    secure: false,
    coordinatorKey: null,
    signedUpdates: false,
    codec,
    signature: null,
  });
  const fit = () => ({
    result: {
      round: 2,
      numExamples: 5,
      delta: randomDelta(23),
      metrics: { loss: 1, accuracy: 0.5, trainMs: 3, backend: "wasm" },
    },
    stats: { loss: 1, accuracy: 0.5, trainMs: 3, epochs: 1, examples: 5 } as never,
  });

  it("is today's FitResult byte for byte under float32, with no seed needed", () => {
    const local = fit();
    const out = encodeOutcome(task({ name: "float32", params: {} }), local);
    expect(out.payload).toEqual(encode(local.result));
    expect(parseFitResult(decode(out.payload))).toEqual(local.result);
  });

  it("names its codec and carries the encoding time otherwise; it needs the round's seed", () => {
    const t = task({ name: "q8", params: { chunk: 1024 } });
    expectCohortError(() => encodeOutcome(t, fit()), "INVALID_MESSAGE", /carries no seed/);
    const out = encodeOutcome(t, fit(), { seed: 9, noiseSeed: 1 });
    const upload = parseFitUpload(decode(out.payload));
    expect(upload.body.codec).toBe("q8");
    expect(upload.metrics.encodeMs).toBeGreaterThanOrEqual(0);
    const back = resolveCodec(t.codec).decode(
      "update" in upload.body ? upload.body.update : null,
      specs,
      { round: 2, seed: 9 },
    );
    expect(back.map((a) => a.length)).toEqual([270, 9, 21]);
  });
});

describe("top-k selection", () => {
  it.each([1, 100, 2_000, 20_000])(
    "finds exactly the %i largest magnitudes of 300,000 values, ties included",
    (k) => {
      const rng = createRng(k);
      const e = Float32Array.from(
        { length: 300_000 },
        () => (rng() - 0.5) * (rng() < 0.01 ? 50 : 1),
      );
      e[7] = e[8] = e[9] = 40; // ties at the top
      const got = topIndices(e, k);
      const want = [...e.keys()]
        .sort((a, b) => Math.abs(e[b]!) - Math.abs(e[a]!) || a - b)
        .slice(0, k)
        .sort((a, b) => a - b);
      expect([...got]).toEqual(want);
    },
  );
});
