/**
 * The model routes: `GET /api/models` (the version index), `GET /api/models/:version` and
 * `/api/models/promoted` (tfjs `model.json`), `…/weights.bin`, and `POST /api/predict` (the
 * promoted model on a batch of flat examples, JSON or msgpack). ETags let clients poll cheaply.
 */
import type { IncomingMessage } from "node:http";
import { decode, encode } from "../../protocol/codec.js";
import { toCohortError } from "../../protocol/errors.js";
import { MAX_PREDICT_EXAMPLES, type ModelService } from "../model-service.js";
import type { ModelVersion } from "../versions.js";
import { HttpError, json, type HttpResponse } from "./respond.js";

/** The largest predict body accepted. */
export const MAX_PREDICT_BYTES = 8 * 1024 * 1024;

const MSGPACK = /^application\/(x-)?msgpack\b/i;

function service(models: ModelService | null): ModelService {
  if (models === null) throw new HttpError(404, "this coordinator serves no models");
  return models;
}

/** 503 before the run started, 404 for an unknown version, like every other refusal: JSON. */
function refuse(error: unknown): never {
  if (error instanceof HttpError) throw error;
  const e = toCohortError(error);
  if (e.code === "NO_ACTIVE_ROUND") throw new HttpError(503, e.message, e.code);
  if (e.code === "INVALID_MESSAGE") throw new HttpError(404, e.message, e.code);
  throw error;
}

/** The answer, or 304 when the client holds it already (`If-None-Match`). */
function tagged(req: IncomingMessage, etag: string, answer: () => HttpResponse): HttpResponse {
  const held = req.headers["if-none-match"];
  if (held !== undefined && held.split(",").some((t) => t.trim() === etag)) {
    return {
      status: 304,
      contentType: "text/plain; charset=utf-8",
      body: "",
      headers: { ETag: etag },
    };
  }
  const r = answer();
  return { ...r, headers: { ...r.headers, ETag: etag } };
}

/** `GET /api/models`. */
export function modelIndex(req: IncomingMessage, models: ModelService | null): HttpResponse {
  try {
    const store = service(models).store();
    return tagged(req, store.etag(), () =>
      json({
        runId: store.runId,
        promoted: store.promoted(),
        latest: store.latest(),
        versions: store.list(),
      }),
    );
  } catch (error) {
    refuse(error);
  }
}

/** `:version` of a path: a version number, or `promoted`. */
function parseVersion(text: string): number | "promoted" {
  if (text === "promoted") return "promoted";
  if (!/^(0|[1-9]\d{0,8})$/.test(text)) {
    throw new HttpError(
      400,
      `${JSON.stringify(text)} is not a version (0, 1, … or promoted)`,
      "INVALID_MESSAGE",
    );
  }
  return Number(text);
}

/** `GET /api/models/:version` and `/api/models/:version/weights.bin`. */
export async function modelFiles(
  req: IncomingMessage,
  models: ModelService | null,
  rest: string,
): Promise<HttpResponse> {
  const parts = rest.split("/");
  if (parts.length > 2 || (parts.length === 2 && parts[1] !== "weights.bin")) {
    throw new HttpError(404, `no route /api/models/${rest}`);
  }
  const which = parseVersion(parts[0]!);
  let version: ModelVersion;
  const served = service(models);
  try {
    version = served.version(which);
  } catch (error) {
    refuse(error);
  }
  const headers = { "X-Cohort-Version": String(version.version) };
  const etag = `"${version.checksum}"`;
  if (parts.length === 1) {
    return tagged(req, etag, () => ({ ...json(served.modelJson(version)), headers }));
  }
  const bin = await served.weightsBin(version);
  if (bin === null) {
    throw new HttpError(
      410,
      `the weights of version ${version.version} were pruned (--keep-versions keeps the promoted, the latest and the last few)`,
    );
  }
  return tagged(req, etag, () => ({
    status: 200,
    contentType: "application/octet-stream",
    body: bin,
    headers,
  }));
}

/** The body of a request, at most `limit` bytes (413 past it). */
export async function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const declared = Number(req.headers["content-length"] ?? "0");
  if (declared > limit) {
    throw new HttpError(
      413,
      `a body of ${declared} bytes exceeds the limit of ${limit}`,
      "PAYLOAD_TOO_LARGE",
    );
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.byteLength;
    if (size > limit) {
      throw new HttpError(413, `the body exceeds the limit of ${limit} bytes`, "PAYLOAD_TOO_LARGE");
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

/** The examples of a predict body: `{ inputs: number[][] }`, each finite. */
export function parsePredictBody(raw: unknown): Float64Array[] {
  const inputs = (raw as { inputs?: unknown } | null)?.inputs;
  if (typeof raw !== "object" || raw === null || !Array.isArray(inputs)) {
    throw new HttpError(400, 'the body must be { "inputs": [[…], …] }', "INVALID_MESSAGE");
  }
  if (inputs.length === 0) throw new HttpError(400, "inputs is empty", "INVALID_MESSAGE");
  if (inputs.length > MAX_PREDICT_EXAMPLES) {
    throw new HttpError(
      413,
      `${inputs.length} examples; at most ${MAX_PREDICT_EXAMPLES} a request`,
      "PAYLOAD_TOO_LARGE",
    );
  }
  return inputs.map((row: unknown, i) => {
    const values: ArrayLike<unknown> | null = Array.isArray(row)
      ? row
      : ArrayBuffer.isView(row) && !(row instanceof DataView)
        ? (row as unknown as ArrayLike<unknown>)
        : null;
    if (values === null) {
      throw new HttpError(400, `inputs[${i}] is not a list of numbers`, "INVALID_MESSAGE");
    }
    const out = new Float64Array(values.length);
    for (let j = 0; j < values.length; j++) {
      const v = values[j];
      if (typeof v !== "number" || !Number.isFinite(v)) {
        throw new HttpError(400, `inputs[${i}][${j}] is not a finite number`, "NON_FINITE");
      }
      out[j] = v;
    }
    return out;
  });
}

/** `POST /api/predict`: JSON in, JSON out; msgpack in, msgpack out. */
export async function predict(
  req: IncomingMessage,
  models: ModelService | null,
): Promise<HttpResponse> {
  const served = service(models);
  const body = await readBody(req, MAX_PREDICT_BYTES);
  const packed = MSGPACK.test(req.headers["content-type"] ?? "");
  let raw: unknown;
  try {
    raw = packed ? decode(body) : JSON.parse(body.toString("utf8"));
  } catch {
    throw new HttpError(400, `the body is not ${packed ? "msgpack" : "JSON"}`, "MALFORMED_PAYLOAD");
  }
  const rows = parsePredictBody(raw);
  let answer: Awaited<ReturnType<ModelService["predict"]>>;
  try {
    answer = await served.predict(rows);
  } catch (error) {
    const e = toCohortError(error);
    if (e.code === "SHAPE_MISMATCH") throw new HttpError(400, e.message, e.code);
    refuse(e);
  }
  if (!packed) return json(answer);
  return { status: 200, contentType: "application/msgpack", body: encode(answer) };
}
