/**
 * A client's part of each round: checks the task, verifies each model, trains through the one
 * fit handler (with its mods), and answers plainly or through the secure session. A fit that
 * fails is reported to the coordinator at once, so the round does not wait for its deadline.
 */
import createDebug from "debug";
import { decode, encode } from "../protocol/codec.js";
import { CohortError, toCohortError, type Reply } from "../protocol/errors.js";
import { parseEvaluateRequest, parseFitMessage, parseTaskSpec } from "../protocol/guards.js";
import type {
  EvaluateResult,
  FitRequest,
  FitResult,
  TaskSpec,
  UpdateReceipt,
} from "../protocol/messages.js";
import { PROTOCOL_VERSION } from "../protocol/version.js";
import {
  fromBase64,
  openEnvelope,
  sealEnvelope,
  signUpdate,
  verifyModel,
  verifyTask,
} from "../aggregation/signing.js";
import type { TensorData } from "../models/adapter.js";
import type { TrainStats } from "../models/training.js";
import { DEFAULT_MODS, fitIns, withMods, type FitHandler } from "./fit-handler.js";
import { membershipCheck, type ClientOptions, type ClientRoundReport } from "./options.js";
import type { MemberCredential } from "../aggregation/secure/messages.js";
import { SecureSession } from "./secure-session.js";
import { checkTaskCost } from "./task-limits.js";
import { encodeOutcome, LocalTrainer, taskCodec } from "./trainer.js";
import type { CodecMemory } from "../aggregation/codecs/index.js";
import { totalSize } from "../aggregation/codecs/layout.js";
import { HeldModel, taskDownlink } from "./downlink.js";

const debug = createDebug("cohort:client:rounds");

/** How the rounds reach the coordinator (the client core's socket). */
export interface RoundLink {
  /** Send an update; resolves with the coordinator's receipt or refusal. */
  sendUpdate(upload: Uint8Array): Promise<Reply<UpdateReceipt>>;
  /** Tell the coordinator this client's fit of `round` failed. */
  reportFailure(round: number, error: CohortError): void;
  /** A refusal that ends the client (an untrusted coordinator). */
  fatal(error: CohortError): void;
  /** Whether the client is closing. */
  closed(): boolean;
}

/** What a client tells its listeners about a round it trained. */
function roundReport(result: FitResult, stats: TrainStats, accepted: boolean): ClientRoundReport {
  return {
    round: result.round,
    numExamples: result.numExamples,
    loss: stats.loss,
    accuracy: stats.accuracy,
    trainMs: stats.trainMs,
    accepted,
  };
}

/** Whether two weight lists are bit for bit the same. */
function sameWeights(a: readonly Float32Array[], b: readonly Float32Array[]): boolean {
  if (a.length !== b.length) return false;
  return a.every((t, i) => {
    const u = b[i]!;
    if (t.length !== u.length) return false;
    const x = new Uint32Array(t.buffer, t.byteOffset, t.length);
    const y = new Uint32Array(u.buffer, u.byteOffset, u.length);
    for (let j = 0; j < x.length; j++) if (x[j] !== y[j]) return false;
    return true;
  });
}

/** Whether the task carries `key`'s signature. */
function taskSigned(task: TaskSpec, key: string): boolean {
  if (task.signature === null) return false;
  try {
    return verifyTask(fromBase64(key, "coordinatorKey"), task, fromBase64(task.signature));
  } catch {
    return false;
  }
}

/** The round logic of one client. */
export class ClientRounds<R extends string> {
  private task: TaskSpec | null = null;
  private secure: SecureSession | null = null;
  private nextRequest: FitRequest | null = null;
  /** The model version this client was last sent (what a compressed downlink patches). */
  private readonly held = new HeldModel();
  private readonly handle: FitHandler;
  /** The highest round of this run this client trained for: it never trains for a lower one. */
  private highestRound = 0;
  /** The global weights it trained from in that round: the round again is the same model only. */
  private highestModel: readonly Float32Array[] | null = null;
  /**
   * The codec's memory across this run's rounds (top-k's residual), loaded from and saved to
   * `codecMemoryStore` where the client has one (a restarted client goes on with it).
   */
  private codecMemory: CodecMemory = { residual: null };
  /** Settles once the stored memory of the current run is loaded (or found absent). */
  private codecMemoryLoaded: Promise<void> = Promise.resolve();
  /** Whether a plain fit is running. */
  busy = false;
  /** The round being trained (progress reports name it). */
  trainingRound = 0;

  constructor(
    private readonly options: ClientOptions<R>,
    private readonly trainer: LocalTrainer,
    tensors: TensorData,
    private readonly link: RoundLink,
    private readonly report: (r: ClientRoundReport) => void,
  ) {
    this.handle = withMods(trainer.handler(tensors), [...DEFAULT_MODS, ...options.mods]);
    this.membership =
      options.trustedMembers === undefined ? null : membershipCheck(options.trustedMembers);
  }

  private readonly membership: ((credential: MemberCredential) => string | null) | null;

  /** A task arrived: check it; an untrusted coordinator is fatal. */
  onTask(raw: unknown): void {
    try {
      const task = parseTaskSpec(raw);
      if (task.protocolVersion !== PROTOCOL_VERSION) {
        throw new CohortError("PROTOCOL_VERSION", `task of protocol ${task.protocolVersion}`);
      }
      const pinned = this.options.coordinatorKey;
      if (pinned !== undefined && task.coordinatorKey !== pinned) {
        // Not the coordinator this client trusts: never train for it.
        this.link.fatal(
          new CohortError(
            "MODEL_SIGNATURE",
            `the coordinator's key ${task.coordinatorKey ?? "(none)"} is not the pinned key`,
          ),
        );
        return;
      }
      if (pinned !== undefined && !taskSigned(task, pinned)) {
        // The mode and limits must be the pinned coordinator's word, not a relay's.
        this.link.fatal(
          new CohortError(
            "MODEL_SIGNATURE",
            "the task is not signed by the pinned coordinator key",
          ),
        );
        return;
      }
      try {
        checkTaskCost(task, this.options.taskLimits);
      } catch (error) {
        this.link.fatal(toCohortError(error, "MODEL_TOO_LARGE"));
        return;
      }
      try {
        taskCodec(task);
        taskDownlink(task);
      } catch (error) {
        // A codec this client lacks cannot encode a single round.
        this.link.fatal(toCohortError(error, "INVALID_OPTION"));
        return;
      }
      if ((this.options.requireSecure || this.options.requireNoise !== undefined) && !task.secure) {
        this.options.log(
          "this client takes part in secure rounds only (requireSecure, requireNoise) and the run is plain: it will refuse every round",
        );
      }
      if (task.signedUpdates && this.options.identity === undefined) {
        this.options.log("the coordinator requires signed updates but this client has no identity");
      }
      if (this.task?.runId !== task.runId) {
        // A new run: its rounds count from 1 again, and no secure round of the old one goes on.
        this.highestRound = 0;
        this.highestModel = null;
        this.secure = null;
        this.codecMemory = { residual: null };
        this.codecMemoryLoaded = this.loadCodecMemory(task);
        this.held.reset();
      }
      this.task = task;
      const t = task.training;
      this.options.log(
        `task: ${task.model.name} (${task.model.numParameters} parameters), ${t.loss}, E=${t.localEpochs}, B=${t.batchSize}, ${t.optimizer} lr=${t.learningRate}`,
      );
      void this.checkFits(task);
    } catch (error) {
      this.options.log(`ignored an invalid task: ${toCohortError(error).message}`);
    }
  }

  /**
   * Check the task's model, data and loss against each other now, not at the first round: a
   * model this client's data cannot train is fatal (`INVALID_MODEL`, naming what differs).
   */
  private async checkFits(task: TaskSpec): Promise<void> {
    try {
      await this.trainer.prepare(task, this.options.data, this.options.evalData);
    } catch (error) {
      const e = toCohortError(error);
      // Only a model that cannot fit this data is final; anything else the first round retries.
      if (e.code === "INVALID_MODEL" && this.task === task) this.link.fatal(e);
      else this.options.logError(`could not build the task's model yet: ${e.code}: ${e.message}`);
    }
  }

  /**
   * A plain round's broadcast: train on the latest; newer requests replace waiting ones. Each
   * is checked and its model rebuilt at once, in arrival order, so a patch that is never
   * trained on still moves the held model on for the next.
   */
  onFit(payload: unknown): void {
    let round = 0;
    try {
      const task = this.requireTask();
      const message = this.checkedModel(task, payload, parseFitMessage);
      round = message.round;
      this.nextRequest = this.held.receive(task, message);
    } catch (error) {
      this.failed(round, error);
      return;
    }
    void this.drain();
  }

  private async drain(): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    try {
      while (this.nextRequest !== null && !this.link.closed()) {
        const payload = this.nextRequest;
        this.nextRequest = null;
        await this.fit(payload);
      }
    } finally {
      this.busy = false;
    }
  }

  /** Train from a checked request through the handler and its mods. */
  private async train(request: FitRequest): Promise<{ result: FitResult; stats: TrainStats }> {
    const task = this.requireTask();
    if (request.round < this.highestRound) {
      // A replayed or reordered round: training on it again would reveal a second update of
      // the same data under an older model.
      throw new CohortError(
        "STALE_ROUND",
        `round ${request.round} after round ${this.highestRound}: refused`,
      );
    }
    if (
      request.round === this.highestRound &&
      this.highestModel !== null &&
      !sameWeights(this.highestModel, request.weights)
    ) {
      // A retried round trains the same model again; another model under the same round
      // number would give the coordinator two updates to difference.
      throw new CohortError(
        "STALE_ROUND",
        `round ${request.round} again, with another model than the first time: refused`,
      );
    }
    this.highestRound = request.round;
    this.highestModel = request.weights;
    this.trainingRound = request.round;
    const seed = this.options.seed;
    const shuffleSeed = seed === undefined ? undefined : (seed + request.round) >>> 0;
    return this.handle(fitIns(task, request, this.options.data, shuffleSeed));
  }

  /** The stored codec memory of `task`'s run, if the client keeps one (else it starts empty). */
  private async loadCodecMemory(task: TaskSpec): Promise<void> {
    const store = this.options.codecMemoryStore;
    if (store === undefined) return;
    const codec = taskCodec(task);
    const size = totalSize(task.model.weightSpecs);
    try {
      const residual = await store.load({ runId: task.runId, codec: codec.label });
      // Another run's task may have come while this one loaded: its memory is not this.
      if (residual === null || this.task?.runId !== task.runId) return;
      if (residual.length !== size) {
        throw new CohortError(
          "SHAPE_MISMATCH",
          `stored residual has ${residual.length} values, the model ${size}`,
        );
      }
      this.codecMemory = { residual };
      this.options.log(`codec memory: went on with the stored ${codec.label} residual of this run`);
    } catch (error) {
      const e = toCohortError(error);
      this.options.logError(`codec memory not restored (${e.code}: ${e.message}); starting empty`);
    }
  }

  /** Store the codec memory after an encode, so a restart goes on with it. */
  private async saveCodecMemory(task: TaskSpec): Promise<void> {
    const store = this.options.codecMemoryStore;
    const residual = this.codecMemory.residual;
    if (store === undefined || residual === null) return;
    try {
      await store.save({ runId: task.runId, codec: taskCodec(task).label }, residual);
    } catch (error) {
      const e = toCohortError(error);
      this.options.logError(`codec memory not saved: ${e.code}: ${e.message}`);
    }
  }

  private async fit(request: FitRequest): Promise<void> {
    const { options } = this;
    const round = request.round;
    try {
      const task = this.requireTask();
      const secureOnly = options.requireSecure || options.requireNoise !== undefined;
      if (secureOnly || task.secure) {
        // A plain reply is the delta in the clear: a secure client never sends one.
        throw new CohortError(
          "SECURE_REQUIRED",
          `round ${round} asks for a plain update; this client ${secureOnly ? "takes part in secure rounds only" : "is in a secure run"}: refused`,
        );
      }
      const fit = await this.train(request);
      await this.codecMemoryLoaded;
      const outcome = encodeOutcome(task, fit, { seed: request.seed, memory: this.codecMemory });
      // Stored while the update travels (both before the round is over).
      const saved = this.saveCodecMemory(task);
      let reply: Reply<UpdateReceipt>;
      try {
        if (this.link.closed()) return;
        const identity = options.identity;
        const upload =
          identity === undefined
            ? outcome.payload
            : sealEnvelope(
                outcome.payload,
                signUpdate(
                  identity.secretKey,
                  { runId: task.runId, round: outcome.round, clientId: options.clientId },
                  outcome.payload,
                ),
              );
        reply = await this.link.sendUpdate(upload);
      } finally {
        // Written before the fit ends, whatever the upload's fate: close() waits for the fit.
        await saved;
      }
      const { stats } = outcome;
      const report = roundReport(outcome.result, stats, reply.ok);
      if (reply.ok) {
        options.log(
          `round ${outcome.round}: loss ${stats.loss.toFixed(4)}, ${Math.round(stats.trainMs)} ms, update accepted`,
        );
      } else {
        report.code = reply.code;
        options.log(`round ${outcome.round}: update rejected: ${reply.code}: ${reply.message}`);
      }
      this.report(report);
    } catch (error) {
      this.failed(round, error);
    }
  }

  /** Report a failed fit of `round` (0: unknown) to the coordinator. */
  private failed(round: number, error: unknown): void {
    const e = toCohortError(error);
    this.options.logError(`round ${round}: fit failed: ${e.code}: ${e.message}`);
    if (round > 0 && !this.link.closed()) this.link.reportFailure(round, e);
    // The same data and model fail the same way every round: give up now.
    if (UNRECOVERABLE.has(e.code)) this.link.fatal(e);
  }

  /** A federated evaluation: the global model on this client's held-out data. */
  async onEvaluate(payload: unknown): Promise<Reply<Uint8Array>> {
    try {
      const task = this.requireTask();
      const data = this.options.evalData;
      if (data === undefined) {
        throw new CohortError("NO_EVAL_DATA", "this client holds no evaluation data");
      }
      const request = this.checkedModel(task, payload, parseEvaluateRequest);
      const result = await this.trainer.evaluate(task, request, data);
      this.options.log(
        `round ${request.round}: evaluated the global model on ${result.numExamples} held-out examples: ${describeEval(result)}`,
      );
      return { ok: true, value: encode(result) };
    } catch (error) {
      const e = toCohortError(error, "INVALID_MESSAGE");
      this.options.log(`evaluation refused: ${e.code}: ${e.message}`);
      return e.toReply();
    }
  }

  /** A model the coordinator sent, decoded once, after checking the coordinator's signature. */
  private checkedModel<M extends { round: number }>(
    task: TaskSpec,
    payload: unknown,
    parse: (raw: unknown) => M,
  ): M {
    if (task.coordinatorKey === null) return parse(decode(payload));
    const envelope = openEnvelope(payload);
    const request = parse(decode(envelope.body));
    const key = fromBase64(task.coordinatorKey, "coordinatorKey");
    const ctx = { runId: task.runId, round: request.round };
    if (!verifyModel(key, ctx, envelope.body, envelope.signature)) {
      throw new CohortError(
        "MODEL_SIGNATURE",
        `the model of round ${request.round} is not signed by the coordinator: refused`,
      );
    }
    return request;
  }

  private requireTask(): TaskSpec {
    if (this.task === null) throw new CohortError("INVALID_MESSAGE", "round before the task");
    return this.task;
  }

  /** A secure-aggregation step: answered by the session, which masks the update. */
  async onSecureStep(payload: unknown): Promise<Reply<Uint8Array>> {
    try {
      this.secure ??= new SecureSession(
        async (request) => {
          const { result, stats } = await this.train(request);
          this.options.log(
            `round ${request.round}: loss ${stats.loss.toFixed(4)}, ${Math.round(stats.trainMs)} ms, sending it masked`,
          );
          this.report(roundReport(result, stats, true));
          return { delta: result.delta, numExamples: result.numExamples };
        },
        // Checked like a plain round's model, and rebuilt from a patch under a compressed
        // downlink.
        (p) => {
          const task = this.requireTask();
          return this.held.receive(task, this.checkedModel(task, p, parseFitMessage));
        },
        {
          floors: this.options.secureFloors,
          minNoise: this.options.requireNoise ?? null,
          identity: this.options.identity ?? null,
          membership: this.membership,
        },
      );
      return { ok: true, value: await this.secure.step(payload) };
    } catch (error) {
      const e = toCohortError(error, "INVALID_MESSAGE");
      debug("secure step refused: %s", e.message);
      this.options.log(`secure step refused: ${e.code}: ${e.message}`);
      return e.toReply();
    }
  }
}

/** Fit failures that every later round would repeat: the run cannot go on for this client. */
const UNRECOVERABLE = new Set<string>(["INVALID_MODEL", "DATASET_INVALID", "PAYLOAD_TOO_LARGE"]);

/** An evaluation's figures for the log: loss, then each metric. */
function describeEval(result: EvaluateResult): string {
  const parts = [`loss ${result.loss.toFixed(4)}`];
  for (const [name, value] of Object.entries(result.metrics ?? {})) {
    parts.push(`${name} ${value.toFixed(4)}`);
  }
  return parts.join(", ");
}
