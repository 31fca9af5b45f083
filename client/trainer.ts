/** The tfjs fit handler: trains the task's model on local data, one model per task reused across rounds. */
import type * as tf from "@tensorflow/tfjs";
import { checkWeights } from "../aggregation/weights.js";
import { decode, encode } from "../protocol/codec.js";
import type { Dataset } from "../protocol/dataset.js";
import { CohortError } from "../protocol/errors.js";
import { parseFitRequest } from "../protocol/guards.js";
import type {
  EvaluateRequest,
  EvaluateResult,
  FitRequest,
  FitResult,
  TaskSpec,
} from "../protocol/messages.js";
import {
  evaluateModel,
  modelFromSpec,
  readWeights,
  lazyTensors,
  writeWeights,
  type TensorData,
} from "../models/adapter.js";
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
  private model: tf.LayersModel | null = null;
  private modelRunId: string | null = null;
  /** A second model for evaluation, so a late fit never shares weights with it. */
  private evalModel: tf.LayersModel | null = null;
  private evalRunId: string | null = null;

  /**
   * @param backend reported in every update's metrics
   * @param onProgress hears after every local batch (pages show it)
   */
  constructor(
    private readonly backend: string,
    private readonly onProgress?: TrainProgress,
  ) {}

  private async ensureModel(task: TaskSpec, data: Dataset): Promise<tf.LayersModel> {
    if (this.model === null || this.modelRunId !== task.runId) {
      this.model?.dispose();
      this.model = null;
      const model = await modelFromSpec(task.model);
      checkFits(model, data);
      this.model = model;
      this.modelRunId = task.runId;
    }
    return this.model;
  }

  /**
   * The fit handler of this trainer. `tensors`, when given, are the tensors of the data every
   * call trains on (a client's own data, kept across rounds); otherwise each call makes its own.
   */
  handler(tensors?: TensorData): FitHandler {
    return async (ins) => {
      checkWeights(ins.request.weights, ins.task.model.weightSpecs, "global weights");
      const model = await this.ensureModel(ins.task, ins.data);
      writeWeights(model, ins.request.weights);
      const data = tensors ?? lazyTensors(ins.data);
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
    };
  }

  /** A federated evaluation: the request's weights on `data`, as the reply to send. */
  async evaluate(task: TaskSpec, request: EvaluateRequest, data: Dataset): Promise<EvaluateResult> {
    const { weights } = request;
    checkWeights(weights, task.model.weightSpecs, "evaluated weights");
    if (this.evalModel === null || this.evalRunId !== task.runId) {
      this.evalModel?.dispose();
      this.evalModel = null;
      const model = await modelFromSpec(task.model);
      checkFits(model, data);
      this.evalModel = model;
      this.evalRunId = task.runId;
    }
    writeWeights(this.evalModel, weights);
    const stats = await evaluateModel(this.evalModel, data);
    return {
      round: request.round,
      numExamples: stats.numExamples,
      loss: stats.loss,
      accuracy: stats.accuracy,
    };
  }

  /** Free the models. */
  dispose(): void {
    this.model?.dispose();
    this.evalModel?.dispose();
    this.model = null;
    this.evalModel = null;
    this.modelRunId = null;
    this.evalRunId = null;
  }
}

/** Throw `INVALID_MODEL` (and free the model) unless it takes the data's shape and classes. */
function checkFits(model: tf.LayersModel, data: Dataset): void {
  const input = model.inputs[0]?.shape.slice(1).join(",");
  const outputs = model.outputs[0]?.shape.at(-1);
  if (input !== data.sampleShape.join(",") || outputs !== data.numClasses) {
    model.dispose();
    throw new CohortError(
      "INVALID_MODEL",
      `model takes [${input}] → ${outputs} classes but the data is [${data.sampleShape.join(",")}] → ${data.numClasses} classes`,
    );
  }
}

/** Decode and check an unsigned fit request (in-process devices; sockets verify signatures first). */
export function decodeFitRequest(payload: unknown): FitRequest {
  return parseFitRequest(decode(payload));
}

/** Encode an update for the wire, checked against the task's upload limit. */
export function encodeOutcome(task: TaskSpec, fit: LocalFit): FitOutcome {
  const { result, stats } = fit;
  const payload = encode(result);
  if (payload.byteLength > task.limits.maxUploadBytes) {
    throw new CohortError(
      "PAYLOAD_TOO_LARGE",
      `update of ${payload.byteLength} bytes exceeds the coordinator's limit of ${task.limits.maxUploadBytes}`,
    );
  }
  return { round: result.round, numExamples: result.numExamples, stats, payload, result };
}
