/** Tests of the wire protocol: msgpack codec round-trips and failures, guards, CohortError. */
import { describe, expect, it } from "vitest";

import { createRng } from "../aggregation/random.js";
import { decode, encode } from "../protocol/codec.js";
import {
  CohortError,
  ERROR_CODES,
  isErrorCode,
  toCohortError,
  type ErrorCode,
} from "../protocol/errors.js";
import {
  MAX_TENSORS,
  parseFitRequest,
  parseFitResult,
  parseHandshakeAuth,
  parseTaskSpec,
} from "../protocol/guards.js";
import type {
  FitRequest,
  FitResult,
  HandshakeAuth,
  RunDone,
  TaskSpec,
  UpdateReceipt,
} from "../protocol/messages.js";
import { PROTOCOL_VERSION } from "../protocol/version.js";
import { expectCohortError } from "./helpers/errors.js";
import { roundConfig } from "./helpers/raw-client.js";

function randomFloats(length: number, seed: number): Float32Array {
  const rng = createRng(seed);
  const out = new Float32Array(length);
  for (let i = 0; i < length; i++) out[i] = (rng() * 2 - 1) * 1e3;
  return out;
}

function randomBytes(length: number, rng: () => number): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) out[i] = Math.floor(rng() * 256);
  return out;
}

/** Byte-exact equality of two Float32Arrays (keeps −0 and NaN payloads apart, fast on millions). */
function sameBits(a: Float32Array, b: Float32Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(
    Buffer.from(b.buffer, b.byteOffset, b.byteLength),
  );
}

function expectFloat32(value: unknown, expected: Float32Array): void {
  expect(value).toBeInstanceOf(Float32Array);
  expect(Buffer.isBuffer(value)).toBe(false);
  expect(sameBits(value as Float32Array, expected)).toBe(true);
}

const taskSpec = (): TaskSpec => ({
  protocolVersion: PROTOCOL_VERSION,
  runId: "run-2024-05-01",
  model: {
    name: "mlp",
    topology: {
      class_name: "Sequential",
      config: {
        name: "mlp",
        layers: [
          {
            class_name: "Dense",
            config: { units: 10, activation: "softmax", use_bias: true, kernel_regularizer: null },
          },
        ],
      },
      keras_version: "tfjs-layers 4.22.0",
      backend: "tensor_flow.js",
    },
    weightSpecs: [
      { name: "dense/kernel", shape: [784, 10] },
      { name: "dense/bias", shape: [10] },
    ],
    numParameters: 7850,
  },
  training: {
    optimizer: "adam",
    learningRate: 0.001,
    localEpochs: 2,
    batchSize: 32,
    loss: "sparse-categorical-crossentropy",
    metrics: ["accuracy"],
  },
  limits: { maxUploadBytes: 16 * 1024 * 1024, maxExamplesPerClient: 10_000 },
  secure: false,
  coordinatorKey: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
  signedUpdates: false,
  codec: { name: "topk", params: { fraction: 0.01, values: "f16" } },
  signature: null,
});

const handshake = (): HandshakeAuth => ({
  protocolVersion: PROTOCOL_VERSION,
  clientId: "client-7",
  platform: "node 20.20.2 linux x64",
  backend: "wasm",
});

const fitRequest = (): FitRequest => ({
  round: 3,
  weights: [randomFloats(6, 1), Float32Array.from([0, -0, 1e-45, 3.4e38, -1.5])],
  config: { ...roundConfig(), proximalMu: 0.01, extra: { tag: "a", warm: true, k: 3, none: null } },
});

const fitResult = (): FitResult => ({
  round: 2,
  numExamples: 600,
  delta: [randomFloats(6, 2), randomFloats(3, 3)],
  metrics: { loss: 0.6931, accuracy: 0.5, trainMs: 123.4, backend: "cpu" },
});

describe("codec round-trips", () => {
  it("TaskSpec", () => {
    const value = taskSpec();
    expect(decode(encode(value))).toStrictEqual(value);
  });

  it("HandshakeAuth", () => {
    const value = handshake();
    expect(decode(encode(value))).toStrictEqual(value);
  });

  it("UpdateReceipt and RunDone", () => {
    const receipt: UpdateReceipt = { round: 12 };
    const done: RunDone = { runId: "run-x", rounds: 50 };
    expect(decode(encode(receipt))).toStrictEqual(receipt);
    expect(decode(encode(done))).toStrictEqual(done);
  });

  it("FitRequest keeps Float32Arrays bit for bit, including −0 and extremes", () => {
    const value = fitRequest();
    const back = decode(encode(value)) as FitRequest;
    expect(back.round).toBe(3);
    expect(back.weights).toHaveLength(2);
    back.weights.forEach((t, i) => expectFloat32(t, value.weights[i]!));
    expect(Object.is(back.weights[1]![1], -0)).toBe(true);
  });

  it("FitResult with several tensors, one of 1.6M values", () => {
    const value = fitResult();
    value.delta.push(randomFloats(1_600_000, 4), new Float32Array(0), Float32Array.of(42));
    value.metrics.accuracy = null;
    const bytes = encode(value);
    expect(bytes.byteLength).toBeGreaterThan(1_600_000 * 4);
    const back = decode(bytes) as FitResult;
    expect(back.delta).toHaveLength(value.delta.length);
    back.delta.forEach((t, i) => expectFloat32(t, value.delta[i]!));
    expect({ ...back, delta: [] }).toStrictEqual({ ...value, delta: [] });
    // The decoded arrays are copies: reusing the socket buffer cannot change an update.
    bytes.fill(0);
    expectFloat32(back.delta[2], value.delta[2]!);
  });

  it("decodes from a Node Buffer and from an ArrayBuffer", () => {
    const value = fitResult();
    const bytes = encode(value);
    const arrayBuffer = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
    for (const input of [Buffer.from(bytes), arrayBuffer]) {
      const back = decode(input) as FitResult;
      expect(back.numExamples).toBe(600);
      back.delta.forEach((t, i) => expectFloat32(t, value.delta[i]!));
    }
  });

  it("a decoded message passes its guard and equals the original", () => {
    expect(parseTaskSpec(decode(encode(taskSpec())))).toStrictEqual(taskSpec());
    expect(parseHandshakeAuth(decode(encode(handshake())))).toStrictEqual(handshake());
    const request = fitRequest();
    expect(parseFitRequest(decode(encode(request)))).toStrictEqual(request);
    const result = fitResult();
    expect(parseFitResult(decode(encode(result)))).toStrictEqual(result);
  });
});

describe("codec failures", () => {
  const guards = [parseFitResult, parseFitRequest, parseTaskSpec, parseHandshakeAuth];

  it("random bytes either fail as MALFORMED_PAYLOAD or decode to something every guard rejects", () => {
    const rng = createRng(1234);
    let malformed = 0;
    for (let i = 0; i < 3000; i++) {
      const bytes = randomBytes(1 + Math.floor(rng() * 64), rng);
      let value: unknown;
      try {
        value = decode(bytes);
      } catch (error) {
        expect(error).toBeInstanceOf(CohortError);
        expect((error as CohortError).code).toBe("MALFORMED_PAYLOAD");
        malformed++;
        continue;
      }
      for (const guard of guards) {
        expect(() => guard(value)).toThrow(CohortError);
      }
    }
    expect(malformed).toBeGreaterThan(0);
  });

  it("a FitResult with random byte flips is malformed, rejected by the guard, or still well-typed", () => {
    const rng = createRng(99);
    const valid = encode(fitResult());
    for (let i = 0; i < 2000; i++) {
      const bytes = Uint8Array.from(valid);
      const flips = 1 + Math.floor(rng() * 4);
      for (let f = 0; f < flips; f++) {
        bytes[Math.floor(rng() * bytes.length)] = Math.floor(rng() * 256);
      }
      let value: unknown;
      try {
        value = decode(bytes);
      } catch (error) {
        expect((error as CohortError).code).toBe("MALFORMED_PAYLOAD");
        continue;
      }
      let parsed: FitResult;
      try {
        parsed = parseFitResult(value);
      } catch (error) {
        expect(error).toBeInstanceOf(CohortError);
        expect(["INVALID_MESSAGE", "BAD_NUM_EXAMPLES"]).toContain((error as CohortError).code);
        continue;
      }
      expect(Number.isInteger(parsed.round) && parsed.round >= 1).toBe(true);
      expect(Number.isSafeInteger(parsed.numExamples) && parsed.numExamples > 0).toBe(true);
      for (const t of parsed.delta) expect(t).toBeInstanceOf(Float32Array);
    }
  });

  it("every truncation of a valid encoding is MALFORMED_PAYLOAD", () => {
    const bytes = encode(fitResult());
    for (let cut = 1; cut < bytes.length; cut++) {
      expectCohortError(() => decode(bytes.subarray(0, cut)), "MALFORMED_PAYLOAD");
    }
  });

  it("a large FitResult cut in half is MALFORMED_PAYLOAD", () => {
    const value = fitResult();
    value.delta.push(randomFloats(100_000, 5));
    const bytes = encode(value);
    expectCohortError(
      () => decode(bytes.subarray(0, bytes.length >> 1)),
      "MALFORMED_PAYLOAD",
      /undecodable/,
    );
  });

  it.each([
    ["Uint8Array", new Uint8Array(0)],
    ["Buffer", Buffer.alloc(0)],
    ["ArrayBuffer", new ArrayBuffer(0)],
  ])("an empty %s is MALFORMED_PAYLOAD", (_, empty) => {
    expectCohortError(() => decode(empty), "MALFORMED_PAYLOAD", /empty/);
  });

  it.each([
    ["a string", "\x82\xa5round\x02"],
    ["a number", 42],
    ["an object", { round: 2 }],
    ["null", null],
    ["undefined", undefined],
    ["an array of bytes", [0x81, 0xa1, 0x61, 0x01]],
  ])("non-binary input (%s) is MALFORMED_PAYLOAD", (_, input) => {
    expectCohortError(() => decode(input), "MALFORMED_PAYLOAD", /expected binary/);
  });
});

/** A deep copy of `base` with the field at `path` (dot-separated) set, or deleted for MISSING. */
const MISSING = Symbol("missing");
function withField(base: object, path: string, value: unknown): unknown {
  const copy = structuredClone(base) as Record<string, unknown>;
  const keys = path.split(".");
  const last = keys.pop()!;
  let at = copy;
  for (const key of keys) at = at[key] as Record<string, unknown>;
  if (value === MISSING) delete at[last];
  else at[last] = value;
  return copy;
}

type Variant = [path: string, value: unknown, code: ErrorCode, message: RegExp];

const nonObjects: [string, unknown][] = [
  ["null", null],
  ["undefined", undefined],
  ["an array", []],
  ["a Float32Array", new Float32Array(3)],
  ["a string", "{}"],
  ["a number", 1],
];

describe("parseFitResult", () => {
  it("accepts a valid result and returns an equal value", () => {
    const value = fitResult();
    expect(parseFitResult(value)).toStrictEqual(value);
  });

  it("accepts a missing or null accuracy as null, and drops unknown fields", () => {
    const noAccuracy = withField(fitResult(), "metrics.accuracy", MISSING);
    expect(parseFitResult(noAccuracy).metrics.accuracy).toBeNull();
    const extra = withField(fitResult(), "extra", "ignored");
    expect(parseFitResult(extra)).toStrictEqual(fitResult());
  });

  const bad = "BAD_NUM_EXAMPLES" as const;
  const invalid = "INVALID_MESSAGE" as const;
  const variants: Variant[] = [
    ["round", MISSING, invalid, /`round`/],
    ["round", "2", invalid, /`round`/],
    ["round", 0, invalid, /`round`/],
    ["round", -1, invalid, /`round`/],
    ["round", 1.5, invalid, /`round`/],
    ["round", Number.NaN, invalid, /`round`/],
    ["round", Number.POSITIVE_INFINITY, invalid, /`round`/],
    ["numExamples", MISSING, bad, /`numExamples`/],
    ["numExamples", 0, bad, /`numExamples`/],
    ["numExamples", -1, bad, /`numExamples`/],
    ["numExamples", 1.5, bad, /`numExamples`/],
    ["numExamples", Number.NaN, bad, /`numExamples`/],
    ["numExamples", Number.POSITIVE_INFINITY, bad, /`numExamples`/],
    ["numExamples", 2 ** 53, bad, /`numExamples`/],
    ["numExamples", "600", bad, /`numExamples`/],
    ["delta", MISSING, invalid, /`delta`/],
    ["delta", "not an array", invalid, /`delta`/],
    ["delta", new Float32Array(9), invalid, /`delta`/],
    ["delta", { 0: new Float32Array(6) }, invalid, /`delta`/],
    ["delta", [new Float64Array(6), new Float64Array(3)], invalid, /`delta\[0\]`/],
    ["delta", [new Float32Array(6), new Float64Array(3)], invalid, /`delta\[1\]`/],
    ["delta", [new Float32Array(6), new Uint8Array(12)], invalid, /`delta\[1\]`/],
    ["delta", [[1, 2, 3, 4, 5, 6]], invalid, /`delta\[0\]`/],
    ["delta", [1, 2, 3], invalid, /`delta\[0\]`/],
    ["delta", [new Float32Array(6), null], invalid, /`delta\[1\]`/],
    ["delta", Array.from({ length: MAX_TENSORS + 1 }, () => new Float32Array(1)), invalid, /delta/],
    ["metrics", MISSING, invalid, /metrics/],
    ["metrics", null, invalid, /metrics/],
    ["metrics", [0.5], invalid, /metrics/],
    ["metrics.loss", Number.NaN, invalid, /`loss`/],
    ["metrics.loss", Number.POSITIVE_INFINITY, invalid, /`loss`/],
    ["metrics.loss", MISSING, invalid, /`loss`/],
    ["metrics.loss", "0.5", invalid, /`loss`/],
    ["metrics.accuracy", Number.NaN, invalid, /`accuracy`/],
    ["metrics.accuracy", "0.5", invalid, /`accuracy`/],
    ["metrics.trainMs", MISSING, invalid, /`trainMs`/],
    ["metrics.backend", "", invalid, /`backend`/],
    ["metrics.backend", 3, invalid, /`backend`/],
  ];

  it.each(variants)("rejects %s = %o (%s)", (path, value, code, message) => {
    const err = expectCohortError(() => parseFitResult(withField(fitResult(), path, value)), code);
    expect(err.message).toMatch(message);
    expect(err.message).toMatch(/^fit result/);
  });

  it.each(nonObjects)("rejects %s", (_, value) => {
    expectCohortError(() => parseFitResult(value), "INVALID_MESSAGE", /fit result.*object/);
  });
});

describe("parseFitRequest", () => {
  it("accepts a valid request and returns an equal value", () => {
    const value = fitRequest();
    expect(parseFitRequest(value)).toStrictEqual(value);
    const empty = { round: 1, weights: [], config: roundConfig() };
    expect(parseFitRequest(empty)).toStrictEqual(empty);
  });

  const variants: Variant[] = [
    ["round", MISSING, "INVALID_MESSAGE", /`round`/],
    ["round", 0, "INVALID_MESSAGE", /`round`/],
    ["round", -3, "INVALID_MESSAGE", /`round`/],
    ["round", 2.5, "INVALID_MESSAGE", /`round`/],
    ["round", "3", "INVALID_MESSAGE", /`round`/],
    ["weights", MISSING, "INVALID_MESSAGE", /`weights`/],
    ["weights", new Float32Array(6), "INVALID_MESSAGE", /`weights`/],
    ["weights", [new Float64Array(6)], "INVALID_MESSAGE", /`weights\[0\]`/],
    ["weights", [[0.1, 0.2]], "INVALID_MESSAGE", /`weights\[0\]`/],
    ["weights", [0.1, 0.2], "INVALID_MESSAGE", /`weights\[0\]`/],
    ["config", MISSING, "INVALID_MESSAGE", /config: expected an object/],
    ["config.learningRate", 0, "INVALID_MESSAGE", /`learningRate`/],
    ["config.learningRate", Number.NaN, "INVALID_MESSAGE", /`learningRate`/],
    ["config.localEpochs", 0, "INVALID_MESSAGE", /`localEpochs`/],
    ["config.batchSize", 1.5, "INVALID_MESSAGE", /`batchSize`/],
    ["config.proximalMu", -1, "INVALID_MESSAGE", /`proximalMu`/],
    ["config.extra", MISSING, "INVALID_MESSAGE", /config extra/],
    ["config.extra.nested", { a: 1 }, "INVALID_MESSAGE", /`extra.nested` must be a scalar/],
  ];

  it.each(variants)("rejects %s = %o (%s)", (path, value, code, message) => {
    const err = expectCohortError(
      () => parseFitRequest(withField(fitRequest(), path, value)),
      code,
    );
    expect(err.message).toMatch(message);
    expect(err.message).toMatch(/^fit request/);
  });

  it.each(nonObjects)("rejects %s", (_, value) => {
    expectCohortError(() => parseFitRequest(value), "INVALID_MESSAGE", /fit request.*object/);
  });
});

describe("parseTaskSpec", () => {
  it("accepts a valid task and returns an equal value", () => {
    expect(parseTaskSpec(taskSpec())).toStrictEqual(taskSpec());
  });

  const variants: Variant[] = [
    ["protocolVersion", MISSING, "INVALID_MESSAGE", /`protocolVersion`/],
    ["protocolVersion", -1, "INVALID_MESSAGE", /`protocolVersion`/],
    ["protocolVersion", 1.5, "INVALID_MESSAGE", /`protocolVersion`/],
    ["protocolVersion", "1", "INVALID_MESSAGE", /`protocolVersion`/],
    ["runId", MISSING, "INVALID_MESSAGE", /`runId`/],
    ["runId", "", "INVALID_MESSAGE", /`runId`/],
    ["runId", 42, "INVALID_MESSAGE", /`runId`/],
    ["runId", "r".repeat(1025), "INVALID_MESSAGE", /`runId`/],
    ["model", MISSING, "INVALID_MESSAGE", /task model/],
    ["model", "mlp", "INVALID_MESSAGE", /task model/],
    ["model.name", MISSING, "INVALID_MESSAGE", /`name`/],
    ["model.topology", MISSING, "INVALID_MESSAGE", /topology/],
    ["model.topology", [], "INVALID_MESSAGE", /topology/],
    ["model.topology.config.layers.0.config.units", Number.NaN, "INVALID_MESSAGE", /topology/],
    ["model.weightSpecs", MISSING, "INVALID_MESSAGE", /`weightSpecs`/],
    ["model.weightSpecs", { 0: { name: "w", shape: [1] } }, "INVALID_MESSAGE", /`weightSpecs`/],
    ["model.weightSpecs.0", null, "INVALID_MESSAGE", /weight spec 0/],
    ["model.weightSpecs.1.shape", [0], "INVALID_MESSAGE", /weight spec 1.*`shape`/],
    ["model.weightSpecs.1.shape", [2.5], "INVALID_MESSAGE", /`shape`/],
    ["model.weightSpecs.1.shape", [-10], "INVALID_MESSAGE", /`shape`/],
    ["model.weightSpecs.1.shape", "10", "INVALID_MESSAGE", /`shape`/],
    ["model.weightSpecs.0.name", MISSING, "INVALID_MESSAGE", /weight spec 0.*`name`/],
    ["model.numParameters", -1, "INVALID_MESSAGE", /`numParameters`/],
    ["model.numParameters", "7850", "INVALID_MESSAGE", /`numParameters`/],
    ["training", MISSING, "INVALID_MESSAGE", /training/],
    ["training.optimizer", "rmsprop", "INVALID_MESSAGE", /`optimizer`/],
    ["training.optimizer", MISSING, "INVALID_MESSAGE", /`optimizer`/],
    ["training.learningRate", 0, "INVALID_MESSAGE", /`learningRate`/],
    ["training.learningRate", -0.1, "INVALID_MESSAGE", /`learningRate`/],
    ["training.learningRate", Number.NaN, "INVALID_MESSAGE", /`learningRate`/],
    ["training.localEpochs", 0, "INVALID_MESSAGE", /`localEpochs`/],
    ["training.localEpochs", 1.5, "INVALID_MESSAGE", /`localEpochs`/],
    ["training.localEpochs", 10_001, "INVALID_MESSAGE", /`localEpochs`/],
    ["training.batchSize", 0, "INVALID_MESSAGE", /`batchSize`/],
    ["training.batchSize", MISSING, "INVALID_MESSAGE", /`batchSize`/],
    ["limits", MISSING, "INVALID_MESSAGE", /limits/],
    ["limits.maxUploadBytes", 0, "INVALID_MESSAGE", /`maxUploadBytes`/],
    ["limits.maxUploadBytes", "1MB", "INVALID_MESSAGE", /`maxUploadBytes`/],
  ];

  it.each(variants)("rejects %s = %o (%s)", (path, value, code, message) => {
    const err = expectCohortError(() => parseTaskSpec(withField(taskSpec(), path, value)), code);
    expect(err.message).toMatch(message);
  });

  it.each(nonObjects)("rejects %s", (_, value) => {
    expectCohortError(() => parseTaskSpec(value), "INVALID_MESSAGE", /task.*object/);
  });
});

describe("parseHandshakeAuth", () => {
  it("accepts a valid handshake and returns an equal value", () => {
    expect(parseHandshakeAuth(handshake())).toStrictEqual(handshake());
  });

  const variants: Variant[] = [
    ["protocolVersion", MISSING, "INVALID_MESSAGE", /`protocolVersion`/],
    ["protocolVersion", -1, "INVALID_MESSAGE", /`protocolVersion`/],
    ["protocolVersion", "1", "INVALID_MESSAGE", /`protocolVersion`/],
    ["protocolVersion", 0.5, "INVALID_MESSAGE", /`protocolVersion`/],
    ["clientId", MISSING, "INVALID_MESSAGE", /`clientId`/],
    ["clientId", "", "INVALID_MESSAGE", /`clientId`/],
    ["clientId", 7, "INVALID_MESSAGE", /`clientId`/],
    ["clientId", "c".repeat(1025), "INVALID_MESSAGE", /`clientId`/],
    ["platform", MISSING, "INVALID_MESSAGE", /`platform`/],
    ["platform", null, "INVALID_MESSAGE", /`platform`/],
    ["backend", MISSING, "INVALID_MESSAGE", /`backend`/],
    ["backend", ["wasm"], "INVALID_MESSAGE", /`backend`/],
  ];

  it.each(variants)("rejects %s = %o (%s)", (path, value, code, message) => {
    const err = expectCohortError(
      () => parseHandshakeAuth(withField(handshake(), path, value)),
      code,
    );
    expect(err.message).toMatch(message);
    expect(err.message).toMatch(/^handshake/);
  });

  it.each(nonObjects)("rejects %s", (_, value) => {
    expectCohortError(() => parseHandshakeAuth(value), "INVALID_MESSAGE", /handshake.*object/);
  });
});

describe("CohortError", () => {
  it("is an Error with a name, a code and a cause", () => {
    const cause = new RangeError("offset out of bounds");
    const error = new CohortError("SHAPE_MISMATCH", "layer 2 has 200 values", { cause });
    expect(error).toBeInstanceOf(Error);
    expect(error.name).toBe("CohortError");
    expect(error.code).toBe("SHAPE_MISMATCH");
    expect(error.message).toBe("layer 2 has 200 values");
    expect(error.cause).toBe(cause);
  });

  it("toReply() is the wire failure and nothing more", () => {
    const reply = new CohortError("STALE_ROUND", "round 3 is open").toReply();
    expect(reply).toStrictEqual({ ok: false, code: "STALE_ROUND", message: "round 3 is open" });
  });

  it("toCohortError wraps a plain Error keeping it as cause", () => {
    const plain = new TypeError("boom");
    const wrapped = toCohortError(plain);
    expect(wrapped).toBeInstanceOf(CohortError);
    expect(wrapped.code).toBe("INTERNAL");
    expect(wrapped.message).toBe("boom");
    expect(wrapped.cause).toBe(plain);
    expect(toCohortError(plain, "INVALID_MESSAGE").code).toBe("INVALID_MESSAGE");
  });

  it("toCohortError wraps a thrown non-Error and passes a CohortError through", () => {
    const wrapped = toCohortError("just a string", "TIMEOUT");
    expect(wrapped.code).toBe("TIMEOUT");
    expect(wrapped.message).toBe("just a string");
    expect(wrapped.cause).toBe("just a string");
    const original = new CohortError("NON_FINITE", "NaN");
    expect(toCohortError(original, "INTERNAL")).toBe(original);
  });

  it("isErrorCode accepts exactly the known codes", () => {
    for (const code of ERROR_CODES) expect(isErrorCode(code)).toBe(true);
    expect(isErrorCode("MALFORMED_PAYLOAD")).toBe(true);
    for (const value of [
      "malformed_payload",
      "NOPE",
      "",
      42,
      null,
      undefined,
      { code: "TIMEOUT" },
    ]) {
      expect(isErrorCode(value)).toBe(false);
    }
  });
});
