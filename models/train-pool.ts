/**
 * A pool of worker threads that train models in parallel. tfjs-backend-wasm runs on one thread
 * in Node, so one process trains on one core; the simulator and multi-client hosts use this pool
 * to train many (virtual) clients on all of them. Each worker owns a tfjs backend (wasm with the
 * training kernels by default) and runs the client's own training path.
 */
import { existsSync } from "node:fs";
import { availableParallelism } from "node:os";
import { fileURLToPath } from "node:url";
import { Worker } from "node:worker_threads";
import createDebug from "debug";
import { CohortError } from "../protocol/errors.js";
import type { ModelSpec } from "../protocol/messages.js";
import type { BackendRequest } from "./backend.js";
import {
  isWorkerReply,
  transferable,
  type BatchJobDevice,
  type TrainJob,
  type TrainJobResult,
  type TrainedDevice,
  type WorkerInit,
  type WorkerReply,
  type WorkerRequest,
} from "./train-protocol.js";

const debug = createDebug("cohort:models:train-pool");

/** Options of a {@link TrainPool}. */
export interface TrainPoolOptions {
  /** Worker threads. @default os.availableParallelism() */
  size: number;
  /** Backend every worker starts. @default "wasm" */
  backend: BackendRequest;
  /** A job still running after this long kills its worker and fails with `TIMEOUT`. @default 600000 */
  jobTimeoutMs: number;
  /**
   * The worker script. @default `train-worker.js` beside this module; from the TypeScript sources
   * (tests), the built `dist/models/train-worker.js`.
   */
  workerUrl: URL;
}

/** How a job's arrays travel to its worker. */
export interface TrainSendOptions {
  /**
   * Transfer the job's weight and data buffers instead of copying them: faster, but the caller's
   * arrays are detached (empty) afterwards. Arrays on a `SharedArrayBuffer` (see
   * `shareDataset`) are always shared, never copied. @default false
   */
  transfer: boolean;
}

/** A worker's answer to a job. */
type Done = Extract<WorkerReply, { type: "done" | "done-batch" }>;

interface Pending {
  jobId: number;
  request: WorkerRequest;
  transfer: ArrayBuffer[];
  resolve: (reply: Done, worker: number) => void;
  reject: (error: Error) => void;
}

interface Slot {
  index: number;
  worker: Worker;
  ready: boolean;
  job: Pending | null;
  timer: NodeJS.Timeout | null;
  /** Why the worker is going away, when the pool decided it. */
  fate: CohortError | null;
  lastError: Error | null;
}

/** The worker script to start by default; see {@link TrainPoolOptions.workerUrl}. */
export function defaultWorkerUrl(): URL {
  const here = import.meta.url;
  if (here.endsWith(".ts")) return new URL("../dist/models/train-worker.js", here);
  return new URL("./train-worker.js", here);
}

/**
 * A fixed-size pool of training workers. Jobs queue and run as workers free up; a worker that
 * dies fails its job with a `CohortError` (`INTERNAL`, or `TIMEOUT` past `jobTimeoutMs`) and is
 * replaced for the next job. Call {@link close} when done: workers keep the process alive.
 *
 * @example
 * const pool = new TrainPool({ size: 2 });
 * const { weights, stats } = await pool.train({ spec, weights: global, data: shard, config });
 * await pool.close();
 */
export class TrainPool {
  readonly options: TrainPoolOptions;
  private readonly slots: (Slot | null)[];
  private readonly queue: Pending[] = [];
  private readonly modelKeys = new WeakMap<ModelSpec, string>();
  private nextJobId = 1;
  private closed = false;

  constructor(options: Partial<TrainPoolOptions> = {}) {
    this.options = {
      size: availableParallelism(),
      backend: "wasm",
      jobTimeoutMs: 600_000,
      workerUrl: defaultWorkerUrl(),
      ...options,
    };
    const { size, workerUrl } = this.options;
    if (!Number.isInteger(size) || size < 1) {
      throw new CohortError("INVALID_OPTION", `pool size must be an integer ≥ 1, got ${size}`);
    }
    if (workerUrl.protocol === "file:" && !existsSync(fileURLToPath(workerUrl))) {
      throw new CohortError(
        "BACKEND_UNAVAILABLE",
        `training worker ${fileURLToPath(workerUrl)} not found (run \`npm run build\`)`,
      );
    }
    this.slots = Array.from({ length: size }, () => null);
  }

  /** Number of worker threads. */
  get size(): number {
    return this.slots.length;
  }

  /** Start every worker now and wait until each has its backend running. */
  async warmUp(): Promise<void> {
    await Promise.all(this.slots.map((_, i) => this.whenReady(this.slotAt(i))));
  }

  /** Train one job on the next free worker. */
  train(job: TrainJob, options: Partial<TrainSendOptions> = {}): Promise<TrainJobResult> {
    const transfer = options.transfer
      ? transferable([...job.weights, job.data.features, job.data.labels])
      : [];
    return this.enqueue(
      (jobId) => ({
        type: "train",
        jobId,
        modelKey: this.modelKey(job.spec),
        spec: job.spec,
        weights: [...job.weights],
        data: job.data,
        config: job.config,
        ...(job.shuffleSeed === undefined ? {} : { shuffleSeed: job.shuffleSeed }),
      }),
      transfer,
      (reply, worker) =>
        reply.type === "done" ? { weights: reply.weights, stats: reply.stats, worker } : null,
    );
  }

  /**
   * Train several devices' local runs on the next free worker as one batched computation
   * (`trainBatched`); the model must batch (`batchPlan`). Their arrays are copied, not moved.
   *
   * @throws CohortError `INVALID_MODEL` when the model cannot train batched.
   */
  trainBatch(spec: ModelSpec, devices: readonly BatchJobDevice[]): Promise<TrainedDevice[]> {
    return this.enqueue(
      (jobId) => ({
        type: "train-batch",
        jobId,
        modelKey: this.modelKey(spec),
        spec,
        devices: [...devices],
      }),
      [],
      (reply) => (reply.type === "done-batch" ? reply.results : null),
    );
  }

  private enqueue<T>(
    request: (jobId: number) => WorkerRequest,
    transfer: ArrayBuffer[],
    read: (reply: Done, worker: number) => T | null,
  ): Promise<T> {
    if (this.closed)
      return Promise.reject(new CohortError("CLOSED", "the training pool is closed"));
    const jobId = this.nextJobId++;
    return new Promise<T>((resolve, reject) => {
      this.queue.push({
        jobId,
        request: request(jobId),
        transfer,
        resolve: (reply, worker) => {
          const out = read(reply, worker);
          if (out === null)
            reject(new CohortError("INTERNAL", `job ${jobId} got a ${reply.type} reply`));
          else resolve(out);
        },
        reject,
      });
      this.dispatch();
    });
  }

  /** Fail queued and running jobs with `CLOSED` and stop every worker. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const error = new CohortError("CLOSED", "the training pool was closed");
    for (const pending of this.queue.splice(0)) pending.reject(error);
    await Promise.all(
      this.slots.map(async (slot, i) => {
        if (slot === null) return;
        this.slots[i] = null;
        slot.fate = error;
        this.finishJob(slot)?.reject(error);
        await slot.worker.terminate();
      }),
    );
  }

  private modelKey(spec: ModelSpec): string {
    let key = this.modelKeys.get(spec);
    if (key === undefined) {
      key = JSON.stringify([spec.name, spec.topology, spec.weightSpecs]);
      this.modelKeys.set(spec, key);
    }
    return key;
  }

  private slotAt(index: number): Slot {
    return this.slots[index] ?? this.spawn(index);
  }

  private whenReady(slot: Slot): Promise<void> {
    if (slot.ready) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const onMessage = (raw: unknown) => {
        if (isWorkerReply(raw) && raw.type === "ready") done(null);
      };
      const onExit = () => done(slot.fate ?? slot.lastError ?? new Error("worker exited"));
      const done = (error: Error | null) => {
        slot.worker.off("message", onMessage);
        slot.worker.off("exit", onExit);
        if (error === null) resolve();
        else reject(error);
      };
      slot.worker.on("message", onMessage);
      slot.worker.on("exit", onExit);
    });
  }

  private spawn(index: number): Slot {
    const init: WorkerInit = { backend: this.options.backend };
    const worker = new Worker(this.options.workerUrl, { workerData: init });
    const slot: Slot = {
      index,
      worker,
      ready: false,
      job: null,
      timer: null,
      fate: null,
      lastError: null,
    };
    this.slots[index] = slot;
    worker.on("message", (raw: unknown) => this.onMessage(slot, raw));
    worker.on("error", (error: Error) => {
      debug("worker %d error: %s", index, error.message);
      slot.lastError = error;
    });
    worker.on("exit", (code: number) => this.onExit(slot, code));
    debug("worker %d started (%s)", index, this.options.backend);
    return slot;
  }

  private onMessage(slot: Slot, raw: unknown): void {
    if (!isWorkerReply(raw)) {
      this.kill(
        slot,
        new CohortError("INTERNAL", `training worker ${slot.index} sent a malformed reply`),
      );
      return;
    }
    this.handleReply(slot, raw);
  }

  private handleReply(slot: Slot, reply: WorkerReply): void {
    switch (reply.type) {
      case "ready":
        slot.ready = true;
        debug("worker %d ready on %s", slot.index, reply.backend);
        break;
      case "done":
      case "done-batch":
        this.finishJob(slot)?.resolve(reply, slot.index);
        break;
      case "failed":
        this.finishJob(slot)?.reject(new CohortError(reply.code, reply.message));
        break;
      case "fatal": {
        // The worker could not start its backend: nothing it would run could succeed.
        const error = new CohortError(
          reply.code,
          `training worker ${slot.index}: ${reply.message}`,
        );
        this.kill(slot, error);
        this.failQueue(error);
        break;
      }
      default: {
        const exhaustive: never = reply;
        throw new CohortError("INTERNAL", `unknown reply ${String(exhaustive)}`);
      }
    }
    this.dispatch();
  }

  private onExit(slot: Slot, code: number): void {
    if (this.slots[slot.index] === slot) this.slots[slot.index] = null;
    if (this.closed && slot.fate?.code === "CLOSED") return;
    const reason = slot.lastError ? `: ${slot.lastError.message}` : "";
    const error =
      slot.fate ??
      new CohortError(
        "INTERNAL",
        `training worker ${slot.index} exited with code ${code}${reason}` +
          (slot.job ? ` while training job ${slot.job.jobId}` : ""),
        { cause: slot.lastError ?? undefined },
      );
    debug("worker %d exited (%d): %s", slot.index, code, error.message);
    this.finishJob(slot)?.reject(error);
    // A worker that never came up will not come up on retry: fail what waits instead of looping.
    if (!slot.ready) this.failQueue(error);
    this.dispatch();
  }

  private kill(slot: Slot, error: CohortError): void {
    slot.fate = error;
    // The exit event fails the worker's job; terminate() itself only reports the exit code.
    slot.worker.terminate().catch((e: unknown) => debug("terminate worker %d: %o", slot.index, e));
  }

  private finishJob(slot: Slot): Pending | null {
    const job = slot.job;
    slot.job = null;
    if (slot.timer !== null) clearTimeout(slot.timer);
    slot.timer = null;
    return job;
  }

  private failQueue(error: Error): void {
    for (const pending of this.queue.splice(0)) pending.reject(error);
  }

  private dispatch(): void {
    if (this.closed) return;
    for (let i = 0; i < this.slots.length && this.queue.length > 0; i++) {
      const slot = this.slotAt(i);
      if (slot.job !== null || slot.fate !== null) continue;
      const job = this.queue.shift()!;
      try {
        // Messages posted before the worker is ready wait in its port until it listens.
        slot.worker.postMessage(job.request, job.transfer);
      } catch (cause) {
        // e.g. a detached array (already transferred): this job cannot be sent, others can.
        const reason = cause instanceof Error ? cause.message : String(cause);
        job.reject(
          new CohortError("INVALID_MESSAGE", `cannot send training job ${job.jobId}: ${reason}`, {
            cause,
          }),
        );
        i--;
        continue;
      }
      slot.job = job;
      const { jobTimeoutMs } = this.options;
      slot.timer = setTimeout(() => {
        this.kill(
          slot,
          new CohortError("TIMEOUT", `training job ${job.jobId} ran past ${jobTimeoutMs} ms`),
        );
      }, jobTimeoutMs);
    }
  }
}
