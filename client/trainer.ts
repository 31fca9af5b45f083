/** The tfjs fit handler: trains the task's model on local data, one model per task reused across rounds. */
import type * as tf from "@tensorflow/tfjs";
import { checkWeights } from "../aggregation/weights.js";
import { decode, encode } from "../protocol/codec.js";
import type { Dataset } from "../protocol/dataset.js";
import { CohortError } from "../protocol/errors.js";
import { resolveCodec, type CodecMemory, type UpdateCodec } from "../aggregation/codecs/index.js";
import { isBuiltinMetric } from "../protocol/task.js";
import { parseFitRequest } from "../protocol/guards.js";
import type {
  EvaluateRequest,
  EvaluateResult,
  FitRequest,
  FitResult,
  TaskSpec,
} from "../protocol/messages.js";
import {
  modelFromSpec,
  readWeights,
  toTensors,
  writeWeights,
  type TensorData,
} from "../models/adapter.js";
import { checkContract, evaluateModel, type MetricFn } from "../models/task.js";
import { trainLocal, type TrainProgress, type TrainStats } from "../models/training.js";
import { localFit, localTraining, type FitHandler, type LocalFit } from "./fit-handler.js";

/** What one local fit produced, encoded for the wire. */
export interface FitOutcome {
  round: number;
  numExamples: number;
  stats: TrainStats;
  /** The msgpack-encoded `FitResult`, checked against the task's upload limit. */
  payload: Uint8Array;
  /** The same update, decoded. */
  result: FitResult;
}

/**
 * Trains the task's model on local data. One model is built per task and reused across rounds
 * (and, in simulations, across the virtual devices that share a process).
 */
export class LocalTrainer {
  private readonly model = new ModelSlot("training data");
  /** A second model for evaluation, so a late fit never shares weights with it. */
  private readonly evalModel = new ModelSlot("evaluation data");

  /**
   * @param backend reported in every update's metrics
   * @param onProgress hears after every local batch (pages show it)
   * @param customMetrics the user's metric functions, for task metrics that are not built in
   */
  constructor(
    private readonly backend: string,
    private readonly onProgress?: TrainProgress,
    private readonly customMetrics: Readonly<Record<string, MetricFn>> = {},
  ) {}

  /**
   * Build the task's models and check them against the training (and evaluation) data now.
   *
   * @throws CohortError `INVALID_MODEL` naming what differs.
   */
  async prepare(task: TaskSpec, data: Dataset, evalData?: Dataset): Promise<void> {
    const built = async () => undefined;
    await this.model.use(task, data, built);
    if (evalData !== undefined) await this.evalModel.use(task, evalData, built);
  }

  /**
   * The fit handler of this trainer. `tensors`, when given, are the tensors of the data every
   * call trains on (a client's own data, kept across rounds); otherwise each call makes its own.
   */
  handler(tensors?: TensorData): FitHandler {
    return async (ins) => {
      checkWeights(ins.request.weights, ins.task.model.weightSpecs, "global weights");
      return this.model.use(ins.task, ins.data, async (model) => {
        writeWeights(model, ins.request.weights);
        const data = tensors ?? toTensors(ins.data);
        try {
          const stats = await trainLocal(
            model,
            data,
            localTraining(ins),
            ins.shuffleSeed,
            this.onProgress,
          );
          return localFit(ins, await readWeights(model), stats, this.backend);
        } finally {
          if (tensors === undefined) data.dispose();
        }
      });
    };
  }

  /** A federated evaluation: the request's weights on `data`, as the reply to send. */
  async evaluate(task: TaskSpec, request: EvaluateRequest, data: Dataset): Promise<EvaluateResult> {
    const { weights } = request;
    checkWeights(weights, task.model.weightSpecs, "evaluated weights");
    const { loss, metrics } = task.training;
    // Metrics named by the task that this client has no function for are left out.
    const known = metrics.filter((m) => isBuiltinMetric(m) || Object.hasOwn(this.customMetrics, m));
    const stats = await this.evalModel.use(task, data, async (model) => {
      writeWeights(model, weights);
      return evaluateModel(model, data, { loss, metrics: known, custom: this.customMetrics });
    });
    return {
      round: request.round,
      numExamples: stats.numExamples,
      loss: stats.loss,
      accuracy: stats.accuracy,
      metrics: finiteOnly(stats.metrics),
    };
  }

  /** Free the models. */
  dispose(): void {
    this.model.clear();
    this.evalModel.clear();
  }
}

/**
 * One model per run, built once even when a task check and a round ask for it at the same
 * time; a build that failed is tried again by the next caller. A model replaced by a new run's
 * is freed when the last fit or evaluation using it ends, not under it.
 */
class ModelSlot {
  private current: SlotEntry | null = null;

  constructor(private readonly where: string) {}

  /** Run `work` with the task's model, kept alive until it ends. */
  async use<T>(
    task: TaskSpec,
    data: Dataset,
    work: (model: tf.LayersModel) => Promise<T>,
  ): Promise<T> {
    const entry = this.entry(task, data);
    entry.users++;
    try {
      return await work(await entry.model);
    } finally {
      entry.users--;
      if (entry.retired && entry.users === 0) free(entry);
    }
  }

  private entry(task: TaskSpec, data: Dataset): SlotEntry {
    if (this.current === null || this.current.runId !== task.runId) {
      this.clear();
      const entry: SlotEntry = {
        runId: task.runId,
        model: checkedModel(task, data, this.where),
        users: 0,
        retired: false,
      };
      entry.model.catch(() => {
        if (this.current === entry) this.current = null;
      });
      this.current = entry;
    }
    return this.current;
  }

  clear(): void {
    const entry = this.current;
    this.current = null;
    if (entry === null) return;
    entry.retired = true;
    if (entry.users === 0) free(entry);
  }
}

interface SlotEntry {
  runId: string;
  model: Promise<tf.LayersModel>;
  users: number;
  retired: boolean;
}

function free(entry: SlotEntry): void {
  void entry.model.then(
    (m) => m.dispose(),
    () => undefined,
  );
}

/** The task's model, checked against the data under the task's loss (freed when it does not fit). */
async function checkedModel(task: TaskSpec, data: Dataset, where: string): Promise<tf.LayersModel> {
  const model = await modelFromSpec(task.model);
  try {
    checkContract(model, data, task.training.loss, where);
  } catch (error) {
    model.dispose();
    throw error;
  }
  return model;
}

/** The finite entries (an AUC without both classes is NaN and is not sent). */
function finiteOnly(metrics: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(metrics).filter(([, v]) => Number.isFinite(v)));
}

/** Decode and check an unsigned fit request (in-process devices; sockets verify signatures first). */
export function decodeFitRequest(payload: unknown): FitRequest {
  return parseFitRequest(decode(payload));
}

/** What a client adds to encode one round's update with the task's codec. */
export interface Coding {
  /** The round's shared seed, from the fit request (needed by every codec but float32). */
  seed: number | undefined;
  /** Seed of the client's own rounding noise. @default fresh random bits */
  noiseSeed?: number;
  /** The client's codec memory for this run (top-k's residual). @default none kept */
  memory?: CodecMemory;
}

const codecs = new WeakMap<TaskSpec, UpdateCodec>();

/** The codec a task names, resolved once per task. @throws CohortError `INVALID_OPTION` for one this client lacks. */
export function taskCodec(task: TaskSpec): UpdateCodec {
  let codec = codecs.get(task);
  if (codec === undefined) {
    codec = resolveCodec(task.codec);
    codecs.set(task, codec);
  }
  return codec;
}

/** 32 fresh random bits. */
function freshSeed(): number {
  return globalThis.crypto.getRandomValues(new Uint32Array(1))[0]!;
}

/**
 * Encode an update for the wire with the task's codec, checked against the task's upload
 * limit. Under `float32`, and in secure tasks, the payload is the `FitResult` itself.
 */
export function encodeOutcome(
  task: TaskSpec,
  fit: LocalFit,
  coding: Coding = { seed: undefined },
): FitOutcome {
  const { stats } = fit;
  let { result } = fit;
  const codec = taskCodec(task);
  let payload: Uint8Array;
  // A secure task's update leaves only masked, from `result` (its codec's linear form is the
  // secure session's business): nothing to encode here.
  if (codec.name === "float32" || task.secure) payload = encode(result);
  else {
    if (coding.seed === undefined) {
      throw new CohortError(
        "INVALID_MESSAGE",
        `round ${result.round} of a ${codec.label} task carries no seed`,
      );
    }
    const started = performance.now();
    const update = codec.encode(result.delta, {
      round: result.round,
      seed: coding.seed,
      noiseSeed: coding.noiseSeed ?? freshSeed(),
      ...(coding.memory === undefined ? {} : { memory: coding.memory }),
    });
    const metrics = { ...result.metrics, encodeMs: performance.now() - started };
    result = { ...result, metrics };
    const { round, numExamples } = result;
    payload = encode({ round, numExamples, metrics, codec: codec.name, update });
  }
  if (payload.byteLength > task.limits.maxUploadBytes) {
    throw new CohortError(
      "PAYLOAD_TOO_LARGE",
      `update of ${payload.byteLength} bytes exceeds the coordinator's limit of ${task.limits.maxUploadBytes}`,
    );
  }
  return { round: result.round, numExamples: result.numExamples, stats, payload, result };
}
