/** Runtime guards: the only way an inbound `unknown` becomes a typed message. */
import { CohortError, isErrorCode } from "./errors.js";
import { describe } from "./codec.js";
import { fail, int, record, show, type Fields } from "./fields.js";
import { featureSize, labelSize, type Dataset, type Labels } from "./dataset.js";
import { DEFAULT_LOSS, defaultMetrics, isLossName, LOSSES } from "./task.js";
import {
  OPTIMIZERS,
  type EvaluateRequest,
  type EvaluateResult,
  type FitFailure,
  type FitMessage,
  type FitMetrics,
  type FitPatchRequest,
  type FitRequest,
  type ModelDiff,
  type ModelVersion,
  type FitResult,
  type FitUpload,
  type HandshakeAuth,
  type Json,
  type ModelSpec,
  type RoundConfig,
  type Scalar,
  type TaskSpec,
  type TensorSpec,
  type TrainingConfig,
} from "./messages.js";

/** Largest number of weight tensors a model may have. */
export const MAX_TENSORS = 4096;
/** Most examples one client may claim to have evaluated on (a weight in the federated mean). */
export const MAX_EVAL_EXAMPLES = 10_000_000;
/** Most metrics a task may name. */
const MAX_METRICS = 32;
/** Largest string accepted in a message field. */
const MAX_STRING = 1024;

function num(o: Fields, key: string, what: string, positive = false): number {
  const v = o[key];
  if (typeof v !== "number" || !Number.isFinite(v) || (positive && v <= 0)) {
    fail(what, `\`${key}\` must be a finite${positive ? " positive" : ""} number, got ${show(v)}`);
  }
  return v;
}

function str(o: Fields, key: string, what: string): string {
  const v = o[key];
  if (typeof v !== "string" || v.length === 0 || v.length > MAX_STRING) {
    fail(what, `\`${key}\` must be a non-empty string of at most ${MAX_STRING} chars`);
  }
  return v;
}

function float32List(o: Fields, key: string, what: string): Float32Array[] {
  const v = o[key];
  if (!Array.isArray(v)) fail(what, `\`${key}\` must be an array of Float32Array, got ${show(v)}`);
  if (v.length > MAX_TENSORS) fail(what, `\`${key}\` has ${v.length} tensors (max ${MAX_TENSORS})`);
  v.forEach((t, i) => {
    if (!(t instanceof Float32Array)) {
      fail(what, `\`${key}[${i}]\` must be a Float32Array, got ${describe(t)}`);
    }
  });
  return v as Float32Array[];
}

/** Validate the socket.io handshake `auth` of a client. */
export function parseHandshakeAuth(raw: unknown): HandshakeAuth {
  const what = "handshake";
  const o = record(raw, what);
  return {
    protocolVersion: int(o, "protocolVersion", what, 0),
    clientId: str(o, "clientId", what),
    platform: str(o, "platform", what),
    backend: str(o, "backend", what),
    ...(o.secret === undefined ? {} : { secret: str(o, "secret", what) }),
  };
}

/** Most user keys a round configuration may carry. */
const MAX_EXTRA_KEYS = 64;

function positiveClip(o: Fields, what: string): number {
  const clip = num(o, "dpClip", what);
  if (!(clip > 0)) fail(what, `\`dpClip\` must be > 0, got ${clip}`);
  return clip;
}

/** Validate a round's training configuration. */
export function parseRoundConfig(raw: unknown, what = "round config"): RoundConfig {
  const o = record(raw, what);
  const mu = num(o, "proximalMu", what);
  if (mu < 0) fail(what, `\`proximalMu\` must be ≥ 0, got ${mu}`);
  const extraRaw = record(o.extra, `${what} extra`);
  const keys = Object.keys(extraRaw);
  if (keys.length > MAX_EXTRA_KEYS)
    fail(what, `\`extra\` has ${keys.length} keys (max ${MAX_EXTRA_KEYS})`);
  const extra: Record<string, Scalar> = {};
  for (const key of keys) {
    const v = extraRaw[key];
    const ok =
      v === null ||
      typeof v === "boolean" ||
      (typeof v === "number" && Number.isFinite(v)) ||
      (typeof v === "string" && v.length <= MAX_STRING);
    if (!ok || key.length > MAX_STRING)
      fail(what, `\`extra.${key.slice(0, 64)}\` must be a scalar`);
    extra[key] = v as Scalar;
  }
  return {
    learningRate: num(o, "learningRate", what, true),
    localEpochs: int(o, "localEpochs", what, 1, 100_000),
    batchSize: int(o, "batchSize", what, 1, 1_000_000),
    proximalMu: mu,
    ...(o.dpClip === undefined ? {} : { dpClip: positiveClip(o, what) }),
    extra,
  };
}

/** Most chained differences one patch may carry. */
export const MAX_PATCH_DIFFS = 64;

/** Validate a decoded `FitRequest` (the full model; a patch is refused here). */
export function parseFitRequest(raw: unknown): FitRequest {
  const what = "fit request";
  const o = record(raw, what);
  if (o.patch !== undefined && o.weights === undefined) {
    fail(what, "it is a patch of a held model; this receiver takes full models only");
  }
  return {
    round: int(o, "round", what, 1),
    weights: float32List(o, "weights", what),
    config: parseRoundConfig(o.config, "fit request config"),
    ...(o.seed === undefined ? {} : { seed: int(o, "seed", what, 0, 2 ** 32 - 1) }),
    ...(o.model === undefined ? {} : { model: parseModelVersion(o.model) }),
  };
}

function parseModelVersion(raw: unknown): ModelVersion {
  const what = "fit request model";
  const o = record(raw, what);
  return {
    version: int(o, "version", what, 1),
    checksum: int(o, "checksum", what, 0, 2 ** 32 - 1),
  };
}

function parseModelDiff(raw: unknown, i: number): ModelDiff {
  const what = `fit request patch diff ${i}`;
  const o = record(raw, what);
  if (o.update === undefined) fail(what, "`update` is missing");
  return {
    version: int(o, "version", what, 1),
    seed: int(o, "seed", what, 0, 2 ** 32 - 1),
    // Only the downlink codec can check its payload (every length, scale and width).
    update: o.update,
  };
}

/**
 * Validate a decoded `round:fit`: a full `FitRequest`, or a patch whose versions chain from its
 * base to its model's version one by one.
 */
export function parseFitMessage(raw: unknown): FitMessage {
  const what = "fit request";
  const o = record(raw, what);
  if (o.patch === undefined) return parseFitRequest(raw);
  if (o.weights !== undefined) fail(what, "it carries both `weights` and `patch`");
  if (o.model === undefined) fail(what, "a patch needs `model`");
  const model = parseModelVersion(o.model);
  const p = record(o.patch, "fit request patch");
  const base = int(p, "base", "fit request patch", 1, model.version);
  if (!Array.isArray(p.diffs) || p.diffs.length > MAX_PATCH_DIFFS) {
    fail("fit request patch", `\`diffs\` must be an array of at most ${MAX_PATCH_DIFFS}`);
  }
  const diffs = p.diffs.map(parseModelDiff);
  diffs.forEach((d, i) => {
    if (d.version !== base + i + 1) {
      fail("fit request patch", `diff ${i} is of version ${d.version}; ${base + i + 1} was next`);
    }
  });
  if (base + diffs.length !== model.version) {
    fail(
      "fit request patch",
      `${diffs.length} diffs from version ${base} do not reach version ${model.version}`,
    );
  }
  const request: FitPatchRequest = {
    round: int(o, "round", what, 1),
    config: parseRoundConfig(o.config, "fit request config"),
    ...(o.seed === undefined ? {} : { seed: int(o, "seed", what, 0, 2 ** 32 - 1) }),
    model,
    patch: { base, diffs },
  };
  return request;
}

function parseFitMetrics(raw: unknown): FitMetrics {
  const what = "fit result metrics";
  const o = record(raw, what);
  const accuracy =
    o.accuracy === null || o.accuracy === undefined ? null : num(o, "accuracy", what);
  return {
    loss: num(o, "loss", what),
    accuracy,
    trainMs: num(o, "trainMs", what),
    backend: str(o, "backend", what),
    ...(o.encodeMs === undefined ? {} : { encodeMs: nonNegative(o, "encodeMs", what) }),
  };
}

function nonNegative(o: Fields, key: string, what: string): number {
  const v = num(o, key, what);
  if (v < 0) fail(what, `\`${key}\` must be ≥ 0, got ${v}`);
  return v;
}

/** Validate a decoded `EvaluateRequest`. */
export function parseEvaluateRequest(raw: unknown): EvaluateRequest {
  const what = "evaluate request";
  const o = record(raw, what);
  if (o.kind !== "evaluate") fail(what, '`kind` must be "evaluate"');
  return {
    kind: "evaluate",
    round: int(o, "round", what, 0),
    weights: float32List(o, "weights", what),
  };
}

/**
 * Validate a decoded `EvaluateResult`: a count, a finite non-negative loss, an accuracy in
 * [0, 1] or null, and finite named metrics.
 */
export function parseEvaluateResult(raw: unknown): EvaluateResult {
  const what = "evaluate result";
  const o = record(raw, what);
  const loss = num(o, "loss", what);
  const accuracy = o.accuracy === null ? null : num(o, "accuracy", what);
  if (loss < 0) fail(what, `\`loss\` must be ≥ 0, got ${loss}`);
  if (accuracy !== null && (accuracy < 0 || accuracy > 1)) {
    fail(what, `\`accuracy\` must be in [0, 1], got ${accuracy}`);
  }
  const metrics: Record<string, number> = {};
  if (o.metrics !== undefined) {
    const m = record(o.metrics, `${what} metrics`);
    const keys = Object.keys(m);
    if (keys.length > MAX_METRICS) fail(what, `\`metrics\` has ${keys.length} entries`);
    for (const key of keys) {
      if (key.length > 64) fail(what, "a metric name is too long");
      metrics[key] = num(m, key, `${what} metrics`);
    }
  }
  return {
    round: int(o, "round", what, 0),
    numExamples: int(o, "numExamples", what, 1, MAX_EVAL_EXAMPLES),
    loss,
    accuracy,
    ...(o.metrics === undefined ? {} : { metrics }),
  };
}

/** Validate a client's report of a failed fit (codes it does not know become `INTERNAL`). */
export function parseFitFailure(raw: unknown): FitFailure {
  const what = "fit failure";
  const o = record(raw, what);
  const code = o.code;
  return {
    round: int(o, "round", what, 1),
    code: isErrorCode(code) ? code : "INTERNAL",
    message: str(o, "message", what),
  };
}

/**
 * Validate a decoded fit upload (structure only: shapes are checked against the task, and a
 * codec's payload by that codec).
 */
export function parseFitUpload(raw: unknown): FitUpload {
  const what = "fit result";
  const o = record(raw, what);
  const round = int(o, "round", what, 1);
  const numExamplesRaw = o.numExamples;
  if (
    typeof numExamplesRaw !== "number" ||
    !Number.isSafeInteger(numExamplesRaw) ||
    numExamplesRaw <= 0
  ) {
    throw new CohortError(
      "BAD_NUM_EXAMPLES",
      `fit result: \`numExamples\` must be a positive integer, got ${show(numExamplesRaw)}`,
    );
  }
  const metrics = parseFitMetrics(o.metrics);
  const codec = o.codec === undefined ? "float32" : str(o, "codec", what);
  if (codec === "float32") {
    return {
      round,
      numExamples: numExamplesRaw,
      metrics,
      body: { codec, delta: float32List(o, "delta", what) },
    };
  }
  if (o.update === undefined) fail(what, `a ${codec} update needs \`update\``);
  return { round, numExamples: numExamplesRaw, metrics, body: { codec, update: o.update } };
}

/** Validate a decoded `FitResult`: a float32 upload (structure only). */
export function parseFitResult(raw: unknown): FitResult {
  const upload = parseFitUpload(raw);
  if (upload.body.codec !== "float32" || !("delta" in upload.body)) {
    fail("fit result", `expected a float32 delta, got a ${upload.body.codec} update`);
  }
  return {
    round: upload.round,
    numExamples: upload.numExamples,
    delta: upload.body.delta,
    metrics: upload.metrics,
  };
}

/** The codec of a task: a name and scalar parameters (the registry checks them). */
function parseCodecField(raw: unknown): TaskSpec["codec"] {
  if (raw === undefined) return { name: "float32", params: {} };
  const what = "task codec";
  const o = record(raw, what);
  const p = record(o.params ?? {}, "task codec params");
  const keys = Object.keys(p);
  if (keys.length > MAX_EXTRA_KEYS) fail(what, `\`params\` has ${keys.length} keys`);
  const params: TaskSpec["codec"]["params"] = {};
  for (const key of keys) {
    const v = p[key];
    const ok =
      typeof v === "boolean" ||
      (typeof v === "number" && Number.isFinite(v)) ||
      (typeof v === "string" && v.length <= MAX_STRING);
    if (!ok || key.length > 64) fail(what, `\`params.${key.slice(0, 64)}\` must be a scalar`);
    params[key] = v as number | string | boolean;
  }
  return { name: str(o, "name", what), params };
}

function parseTensorSpec(raw: unknown, i: number): TensorSpec {
  const what = `weight spec ${i}`;
  const o = record(raw, what);
  const shape = o.shape;
  if (
    !Array.isArray(shape) ||
    !shape.every((d) => typeof d === "number" && Number.isInteger(d) && d > 0)
  ) {
    fail(what, "`shape` must be an array of positive integers");
  }
  return { name: str(o, "name", what), shape: shape as number[] };
}

function isJson(v: unknown, depth = 0): v is Json {
  if (depth > 64) return false;
  if (v === null || typeof v === "boolean" || typeof v === "string") return true;
  if (typeof v === "number") return Number.isFinite(v);
  if (Array.isArray(v)) return v.every((x) => isJson(x, depth + 1));
  if (typeof v === "object") return Object.values(v).every((x) => isJson(x, depth + 1));
  return false;
}

function parseModelSpec(raw: unknown): ModelSpec {
  const what = "task model";
  const o = record(raw, what);
  const topology = record(o.topology, "task model topology");
  if (!isJson(topology)) fail(what, "`topology` must be plain JSON");
  const specs = o.weightSpecs;
  if (!Array.isArray(specs) || specs.length > MAX_TENSORS) {
    fail(what, "`weightSpecs` must be an array");
  }
  return {
    name: str(o, "name", what),
    topology: topology as { [key: string]: Json },
    weightSpecs: specs.map(parseTensorSpec),
    numParameters: int(o, "numParameters", what, 0),
  };
}

function parseTrainingConfig(raw: unknown): TrainingConfig {
  const what = "task training";
  const o = record(raw, what);
  const optimizer = o.optimizer;
  if (!OPTIMIZERS.some((name) => name === optimizer)) {
    fail(what, `\`optimizer\` must be one of ${OPTIMIZERS.join(", ")}, got ${show(optimizer)}`);
  }
  const loss = o.loss ?? DEFAULT_LOSS;
  if (!isLossName(loss)) {
    fail(what, `\`loss\` must be one of ${LOSSES.join(", ")}, got ${show(loss)}`);
  }
  const metrics = o.metrics ?? defaultMetrics(loss);
  if (
    !Array.isArray(metrics) ||
    metrics.length > MAX_METRICS ||
    !metrics.every((m) => typeof m === "string" && m.length <= 64)
  ) {
    fail(what, `\`metrics\` must be a list of at most ${MAX_METRICS} names`);
  }
  return {
    optimizer: optimizer as TrainingConfig["optimizer"],
    learningRate: num(o, "learningRate", what, true),
    localEpochs: int(o, "localEpochs", what, 1, 10_000),
    batchSize: int(o, "batchSize", what, 1, 1 << 20),
    loss,
    metrics: metrics as string[],
  };
}

/** Validate the task a coordinator sends. */
export function parseTaskSpec(raw: unknown): TaskSpec {
  const what = "task";
  const o = record(raw, what);
  const limits = record(o.limits, "task limits");
  return {
    protocolVersion: int(o, "protocolVersion", what, 0),
    runId: str(o, "runId", what),
    model: parseModelSpec(o.model),
    training: parseTrainingConfig(o.training),
    limits: {
      maxUploadBytes: int(limits, "maxUploadBytes", "task limits", 1),
      maxExamplesPerClient: int(limits, "maxExamplesPerClient", "task limits", 1),
    },
    secure: o.secure === true,
    coordinatorKey: o.coordinatorKey === null ? null : str(o, "coordinatorKey", what),
    signedUpdates: o.signedUpdates === true,
    codec: parseCodecField(o.codec),
    ...(o.downlink === undefined ? {} : { downlink: parseCodecField(o.downlink) }),
    signature: o.signature === null || o.signature === undefined ? null : str(o, "signature", what),
  };
}

/** Boolean form of `parseFitResult`, for callers that only branch. */
export function isFitResult(raw: unknown): raw is FitResult {
  try {
    parseFitResult(raw);
    return true;
  } catch {
    return false;
  }
}

/** Validate a dataset sent as msgpack (the coordinator's demo shards): sizes must agree. */
export function parseDataset(raw: unknown): Dataset {
  const what = "dataset";
  const o = record(raw, what);
  const { features, labels, sampleShape } = o;
  if (!(features instanceof Float32Array)) fail(what, "`features` must be a Float32Array");
  const isLabels =
    labels instanceof Uint8Array ||
    labels instanceof Uint16Array ||
    labels instanceof Int32Array ||
    labels instanceof Float32Array;
  if (!isLabels) fail(what, "`labels` must be a Uint8, Uint16, Int32 or Float32 array");
  const shape = dims(sampleShape, "sampleShape", what, false);
  const labelShape = o.labelShape === undefined ? [] : dims(o.labelShape, "labelShape", what, true);
  const n = (labels as Labels).length / labelSize({ labelShape });
  if (!Number.isInteger(n) || features.length !== n * featureSize({ sampleShape: shape })) {
    fail(what, `${features.length} feature values for ${(labels as Labels).length} label values`);
  }
  const base = { name: str(o, "name", what), features, sampleShape: shape, labelShape };
  if (labels instanceof Float32Array) {
    if (labels.some((y) => !Number.isFinite(y))) fail(what, "a label is not finite");
    return { ...base, labels: new Float32Array(labels) };
  }
  const numClasses = int(o, "numClasses", what, 2, 1 << 24);
  const ids = labels as Exclude<Labels, Float32Array>;
  if (ids.some((y) => y < 0 || y >= numClasses)) {
    fail(what, `a label is outside [0, numClasses ${numClasses})`);
  }
  return { ...base, labels: ids.slice(), numClasses };
}

function dims(raw: unknown, key: string, what: string, mayBeEmpty: boolean): number[] {
  if (
    !Array.isArray(raw) ||
    (!mayBeEmpty && raw.length === 0) ||
    raw.length > 8 ||
    !raw.every((d) => Number.isInteger(d) && d > 0)
  ) {
    fail(
      what,
      `\`${key}\` must be ${mayBeEmpty ? "an" : "a non-empty"} array of positive integers`,
    );
  }
  return raw as number[];
}
