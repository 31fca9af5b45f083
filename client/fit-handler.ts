/**
 * The one client update path: a fit handler (train on the round's request, return the update in
 * the clear) wrapped by client mods. Node clients, browsers, the simulator's devices and the
 * worker pool all run it; the secure session masks what it returns.
 */
import { subtract } from "../aggregation/weights.js";
import { clipL2 } from "../aggregation/privacy/noise.js";
import { datasetSize, type Dataset } from "../protocol/dataset.js";
import { CohortError } from "../protocol/errors.js";
import type { FitRequest, FitResult, TaskSpec } from "../protocol/messages.js";
import type { LocalTraining, TrainStats } from "../models/training.js";

/** What a fit handler is given: the task, the checked request, the data. */
export interface FitIns {
  task: TaskSpec;
  /** The round's request, already decoded, checked and (where models are signed) verified. */
  request: FitRequest;
  data: Dataset;
  /** Seed of the local shuffles; a fresh random order when absent. */
  shuffleSeed: number | undefined;
  /** Terms of the local objective beyond the task's loss; mods add them. */
  objective: { proximalMu: number };
}

/** What a fit produced, in the clear (it leaves the client encoded, or masked). */
export interface LocalFit {
  result: FitResult;
  stats: TrainStats;
}

/** Trains one round. */
export type FitHandler = (ins: FitIns) => Promise<LocalFit>;

/** A link around the handler: may change what goes in or what comes out. */
export type ClientMod = (ins: FitIns, next: FitHandler) => Promise<LocalFit>;

/** FedProx: the round's μ becomes a proximal term of the local objective. */
export const fedProxMod: ClientMod = (ins, next) =>
  next({ ...ins, objective: { ...ins.objective, proximalMu: ins.request.config.proximalMu } });

/**
 * DP-FedAvg's client side: with `config.dpClip` set, the update leaves clipped to that L2 norm
 * and weighted like every other (one), as the coordinator's privacy analysis assumes.
 */
export const dpClipMod: ClientMod = async (ins, next) => {
  const out = await next(ins);
  const clip = ins.request.config.dpClip;
  if (clip === undefined || clip <= 0) return out;
  const { delta } = clipL2(out.result.delta, clip);
  return { ...out, result: { ...out.result, delta, numExamples: 1 } };
};

/** The mods every client runs, first to last. */
export const DEFAULT_MODS: readonly ClientMod[] = [dpClipMod, fedProxMod];

/** `handler` wrapped by `mods`: the first mod is the outermost. */
export function withMods(handler: FitHandler, mods: readonly ClientMod[]): FitHandler {
  return mods.reduceRight<FitHandler>((next, mod) => (ins) => mod(ins, next), handler);
}

/** The input of a fit with nothing added to the objective yet. */
export function fitIns(
  task: TaskSpec,
  request: FitRequest,
  data: Dataset,
  shuffleSeed: number | undefined,
): FitIns {
  return { task, request, data, shuffleSeed, objective: { proximalMu: 0 } };
}

/** How the local run trains: the task's optimizer, the round's configuration, the objective. */
export function localTraining(ins: FitIns): LocalTraining {
  const { config } = ins.request;
  return {
    optimizer: ins.task.training.optimizer,
    loss: ins.task.training.loss,
    learningRate: config.learningRate,
    localEpochs: config.localEpochs,
    batchSize: config.batchSize,
    proximalMu: ins.objective.proximalMu,
  };
}

/** The update `Δ = w_trained − w_global` and its metrics. */
export function localFit(
  ins: FitIns,
  trained: readonly Float32Array[],
  stats: TrainStats,
  backend: string,
): LocalFit {
  if (!Number.isFinite(stats.loss)) {
    // Sent, it would be refused for its NaN loss after the round's wait; say why now.
    throw new CohortError(
      "NON_FINITE",
      `local training diverged: the training loss is ${stats.loss} after round ${ins.request.round}'s ${ins.request.config.localEpochs} epoch(s) at learning rate ${ins.request.config.learningRate}; lower the learning rate`,
    );
  }
  return {
    result: {
      round: ins.request.round,
      numExamples: datasetSize(ins.data),
      delta: subtract(trained, ins.request.weights),
      metrics: { loss: stats.loss, accuracy: stats.accuracy, trainMs: stats.trainMs, backend },
    },
    stats,
  };
}
