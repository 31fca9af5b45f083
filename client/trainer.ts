/** The transport-free core of a client: from an encoded fit request to an encoded update. */
import type * as tf from "@tensorflow/tfjs";
import { checkWeights, subtract } from "../aggregation/weights.js";
import { decode, encode } from "../protocol/codec.js";
import type { Dataset } from "../protocol/dataset.js";
import { CohortError } from "../protocol/errors.js";
import { parseFitRequest } from "../protocol/guards.js";
import type { FitRequest, FitResult, TaskSpec } from "../protocol/messages.js";
import {
  modelFromSpec,
  readWeights,
  trainLocal,
  writeWeights,
  type TensorData,
  type TrainProgress,
  type TrainStats,
} from "../models/adapter.js";

/** What one local fit produced. */
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
      const input = model.inputs[0]?.shape.slice(1).join(",");
      const outputs = model.outputs[0]?.shape.at(-1);
      if (input !== data.sampleShape.join(",") || outputs !== data.numClasses) {
        model.dispose();
        throw new CohortError(
          "INVALID_MODEL",
          `model takes [${input}] → ${outputs} classes but the data is [${data.sampleShape.join(",")}] → ${data.numClasses} classes`,
        );
      }
      this.model = model;
      this.modelRunId = task.runId;
    }
    return this.model;
  }

  /**
   * Train from a checked fit request's weights; returns the update in the clear (the caller
   * encodes it, or masks it in a secure round).
   */
  async train(
    task: TaskSpec,
    request: FitRequest,
    data: Dataset,
    tensors: TensorData,
    shuffleSeed?: number,
  ): Promise<{ result: FitResult; stats: TrainStats }> {
    checkWeights(request.weights, task.model.weightSpecs, "global weights");
    const model = await this.ensureModel(task, data);
    writeWeights(model, request.weights);
    const stats = await trainLocal(model, tensors, task.training, shuffleSeed, this.onProgress);
    const delta = subtract(await readWeights(model), request.weights);
    const result: FitResult = {
      round: request.round,
      numExamples: data.labels.length,
      delta,
      metrics: {
        loss: stats.loss,
        accuracy: stats.accuracy,
        trainMs: stats.trainMs,
        backend: this.backend,
      },
    };
    return { result, stats };
  }

  /**
   * Decode and check a fit request, train from its weights, and encode `Δ = w_local − w_global`.
   * Throws a CohortError on a bad request, a model that does not fit the data, or an update
   * over the task's upload limit.
   */
  async fit(
    task: TaskSpec,
    requestPayload: unknown,
    data: Dataset,
    tensors: TensorData,
    shuffleSeed?: number,
  ): Promise<FitOutcome> {
    const request = parseFitRequest(decode(requestPayload));
    const { result, stats } = await this.train(task, request, data, tensors, shuffleSeed);
    return encodeOutcome(task, result, stats);
  }

  /** Free the model. */
  dispose(): void {
    this.model?.dispose();
    this.model = null;
    this.modelRunId = null;
  }
}

/** Encode an update for the wire, checked against the task's upload limit. */
export function encodeOutcome(task: TaskSpec, result: FitResult, stats: TrainStats): FitOutcome {
  const payload = encode(result);
  if (payload.byteLength > task.limits.maxUploadBytes) {
    throw new CohortError(
      "PAYLOAD_TOO_LARGE",
      `update of ${payload.byteLength} bytes exceeds the coordinator's limit of ${task.limits.maxUploadBytes}`,
    );
  }
  return { round: result.round, numExamples: result.numExamples, stats, payload, result };
}
