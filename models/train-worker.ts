/**
 * A training worker thread: starts its own tfjs backend (wasm by default, with the training
 * kernels) and trains the jobs the pool sends, one at a time, through the client's own training
 * path (writeWeights → trainLocal → readWeights). Started by `TrainPool`; not meant to be run
 * directly.
 */
import { parentPort, workerData } from "node:worker_threads";
import * as tf from "@tensorflow/tfjs";
import { toCohortError } from "../protocol/errors.js";
import { modelFromSpec, readWeights, toTensors, writeWeights } from "./adapter.js";
import { trainLocal } from "./training.js";
import { selectBackend } from "./backend.js";
import { batchPlan, trainBatched } from "./batched-training.js";
import { CohortError } from "../protocol/errors.js";
import {
  isWorkerRequest,
  type TrainBatchRequest,
  type TrainRequest,
  type WorkerInit,
  type WorkerReply,
  type WorkerRequest,
} from "./train-protocol.js";

/** Built models kept per worker (by topology), most recently used last. */
const MAX_MODELS = 4;

const port = parentPort;
if (port === null) throw new Error("models/train-worker must run in a worker thread");
const init = workerData as WorkerInit;
const models = new Map<string, tf.LayersModel>();

function post(reply: WorkerReply, transfer: ArrayBuffer[] = []): void {
  port!.postMessage(reply, transfer);
}

async function modelFor(request: WorkerRequest): Promise<tf.LayersModel> {
  let model = models.get(request.modelKey);
  if (model === undefined) {
    model = await modelFromSpec(request.spec);
    if (models.size >= MAX_MODELS) {
      const [oldestKey, oldest] = models.entries().next().value!;
      models.delete(oldestKey);
      oldest.dispose();
    }
  } else {
    models.delete(request.modelKey);
  }
  models.set(request.modelKey, model);
  return model;
}

async function train(request: TrainRequest): Promise<void> {
  const model = await modelFor(request);
  writeWeights(model, request.weights);
  const tensors = toTensors(request.data);
  try {
    const stats = await trainLocal(model, tensors, request.config, request.shuffleSeed);
    const read = await readWeights(model);
    // On wasm each array read back owns its buffer, so it is handed over without a copy; the cpu
    // backend returns its own storage, which must not be detached.
    const weights = owned(read);
    post(
      { type: "done", jobId: request.jobId, weights, stats },
      weights.map((w) => w.buffer as ArrayBuffer),
    );
  } finally {
    tensors.dispose();
  }
}

/** Arrays safe to transfer: on wasm each array read back owns its buffer; cpu's are its storage. */
function owned(read: Float32Array[]): Float32Array[] {
  return tf.getBackend() === "wasm" ? read : read.map((w) => w.slice());
}

/** A batched job: every device's local run as one computation (the model must batch). */
async function trainBatch(request: TrainBatchRequest): Promise<void> {
  const model = await modelFor(request);
  const plan = batchPlan(model, request.devices[0]!.config);
  if (typeof plan === "string")
    throw new CohortError("INVALID_MODEL", `this model cannot train batched: ${plan}`);
  // Each device's weights are slices of its own: they move without a copy.
  const results = await trainBatched(plan, request.devices);
  post(
    { type: "done-batch", jobId: request.jobId, results },
    results.flatMap((r) => r.weights.map((w) => w.buffer as ArrayBuffer)),
  );
}

async function handle(raw: unknown): Promise<void> {
  const id: unknown = typeof raw === "object" && raw !== null ? Reflect.get(raw, "jobId") : null;
  const jobId = typeof id === "number" ? id : null;
  try {
    if (!isWorkerRequest(raw)) throw new Error("malformed training request");
    await (raw.type === "train" ? train(raw) : trainBatch(raw));
  } catch (error) {
    const e = toCohortError(error);
    post({ type: "failed", jobId, code: e.code, message: e.message });
  }
}

async function start(): Promise<void> {
  try {
    const backend = await selectBackend(init.backend);
    post({ type: "ready", backend: backend.name });
  } catch (error) {
    const e = toCohortError(error, "BACKEND_UNAVAILABLE");
    // The pool terminates a worker that reports a startup failure.
    post({ type: "fatal", code: e.code, message: e.message });
    return;
  }
  // Jobs run one after another; the pool sends a worker one job at a time anyway.
  let queue = Promise.resolve();
  port!.on("message", (raw: unknown) => {
    queue = queue.then(() => handle(raw));
  });
}

void start();
