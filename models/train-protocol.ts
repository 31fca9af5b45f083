/** Training jobs, and the messages that carry them between the pool and its worker threads. */
import type { Weights } from "../aggregation/weights.js";
import { labelsLike, type Dataset, type Labels } from "../protocol/dataset.js";
import { isErrorCode, type ErrorCode } from "../protocol/errors.js";
import type { ModelSpec } from "../protocol/messages.js";
import type { LocalTraining, TrainStats } from "./training.js";
import type { BackendRequest } from "./backend.js";

/** One local training run: the client's `trainLocal` on `data`, starting from `weights`. */
export interface TrainJob {
  spec: ModelSpec;
  weights: Weights;
  data: Dataset;
  config: LocalTraining;
  /** Seed of the per-epoch shuffles (reproducible runs); tfjs's own shuffle when absent. */
  shuffleSeed?: number;
}

/** What a job returns: the trained weights (same shapes as the job's) and its statistics. */
export interface TrainJobResult {
  weights: Float32Array[];
  stats: TrainStats;
  /** Index of the worker that trained it. */
  worker: number;
}

/**
 * Copy a dataset into `SharedArrayBuffer`s once, so every job that trains on it reaches its
 * worker without a copy.
 */
export function shareDataset(data: Dataset): Dataset {
  const features = new Float32Array(new SharedArrayBuffer(data.features.byteLength));
  const labels = labelsLike(data.labels, 0);
  const shared = new (labels.constructor as new (b: SharedArrayBuffer) => Labels)(
    new SharedArrayBuffer(data.labels.byteLength),
  );
  features.set(data.features);
  shared.set(data.labels);
  const out: Dataset = { ...data, sampleShape: [...data.sampleShape], features, labels: shared };
  if (data.groups === undefined) return out;
  const groups = new Int32Array(new SharedArrayBuffer(data.groups.byteLength));
  groups.set(data.groups);
  return { ...out, groups };
}

/** Buffers that can move to a worker: whole, unshared, each listed once. */
export function transferable(views: readonly ArrayBufferView[]): ArrayBuffer[] {
  const out = new Set<ArrayBuffer>();
  for (const v of views) {
    const b = v.buffer;
    if (b instanceof ArrayBuffer && v.byteOffset === 0 && v.byteLength === b.byteLength) out.add(b);
  }
  return [...out];
}

/** `workerData` of a training worker. */
export interface WorkerInit {
  backend: BackendRequest;
}

/** Pool → worker: train one job. */
export interface TrainRequest {
  type: "train";
  jobId: number;
  /** Stable per model topology: the worker keeps built models under this key. */
  modelKey: string;
  spec: ModelSpec;
  weights: Float32Array[];
  data: Dataset;
  config: LocalTraining;
  shuffleSeed?: number;
}

/** One device of a batched job: its starting weights, data, configuration and shuffle seed. */
export interface BatchJobDevice {
  weights: Float32Array[];
  data: Dataset;
  config: LocalTraining;
  shuffleSeed: number;
}

/** Pool → worker: train several devices' local runs as one batched computation. */
export interface TrainBatchRequest {
  type: "train-batch";
  jobId: number;
  modelKey: string;
  spec: ModelSpec;
  devices: BatchJobDevice[];
}

/** What a worker is sent. */
export type WorkerRequest = TrainRequest | TrainBatchRequest;

/** One device's trained weights and statistics. */
export interface TrainedDevice {
  weights: Float32Array[];
  stats: TrainStats;
}

/** Worker → pool. */
export type WorkerReply =
  | { type: "ready"; backend: string }
  | { type: "done"; jobId: number; weights: Float32Array[]; stats: TrainStats }
  | { type: "done-batch"; jobId: number; results: TrainedDevice[] }
  /** A job failed (jobId null: the request could not be read); the worker goes on. */
  | { type: "failed"; jobId: number | null; code: ErrorCode; message: string }
  /** The worker could not start its backend; it can run nothing. */
  | { type: "fatal"; code: ErrorCode; message: string };

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null;
}

function isStats(v: unknown): v is TrainStats {
  return (
    isRecord(v) &&
    typeof v.loss === "number" &&
    (v.accuracy === null || typeof v.accuracy === "number") &&
    typeof v.trainMs === "number"
  );
}

/** Narrow a message from a worker. */
export function isWorkerReply(raw: unknown): raw is WorkerReply {
  if (!isRecord(raw)) return false;
  switch (raw.type) {
    case "ready":
      return typeof raw.backend === "string";
    case "done":
      return (
        typeof raw.jobId === "number" &&
        Array.isArray(raw.weights) &&
        raw.weights.every((w) => w instanceof Float32Array) &&
        isStats(raw.stats)
      );
    case "done-batch":
      return (
        typeof raw.jobId === "number" &&
        Array.isArray(raw.results) &&
        raw.results.every(
          (r: unknown) =>
            isRecord(r) &&
            Array.isArray(r.weights) &&
            r.weights.every((w) => w instanceof Float32Array) &&
            isStats(r.stats),
        )
      );
    case "failed":
      return (
        (raw.jobId === null || typeof raw.jobId === "number") &&
        isErrorCode(raw.code) &&
        typeof raw.message === "string"
      );
    case "fatal":
      return isErrorCode(raw.code) && typeof raw.message === "string";
    default:
      return false;
  }
}

function isWeightList(v: unknown): v is Float32Array[] {
  return Array.isArray(v) && v.every((w) => w instanceof Float32Array);
}

function isDataset(data: unknown): data is Dataset {
  return (
    isRecord(data) &&
    data.features instanceof Float32Array &&
    (data.labels instanceof Uint8Array ||
      data.labels instanceof Uint16Array ||
      data.labels instanceof Int32Array ||
      data.labels instanceof Float32Array) &&
    Array.isArray(data.sampleShape) &&
    (data.numClasses === undefined || typeof data.numClasses === "number") &&
    (data.groups === undefined || data.groups instanceof Int32Array)
  );
}

/** Narrow a message from the pool. */
export function isWorkerRequest(raw: unknown): raw is WorkerRequest {
  if (!isRecord(raw) || typeof raw.jobId !== "number" || typeof raw.modelKey !== "string")
    return false;
  if (!isRecord(raw.spec)) return false;
  if (raw.type === "train")
    return (
      isWeightList(raw.weights) &&
      isDataset(raw.data) &&
      isRecord(raw.config) &&
      (raw.shuffleSeed === undefined || typeof raw.shuffleSeed === "number")
    );
  if (raw.type === "train-batch")
    return (
      Array.isArray(raw.devices) &&
      raw.devices.length > 0 &&
      raw.devices.every(
        (d: unknown) =>
          isRecord(d) &&
          isWeightList(d.weights) &&
          isDataset(d.data) &&
          isRecord(d.config) &&
          typeof d.shuffleSeed === "number",
      )
    );
  return false;
}
