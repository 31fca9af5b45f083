/** The round engine: FedAvg rounds over any transport, with evaluation, metrics and checkpoints. */
import type * as tf from "@tensorflow/tfjs";
import { createRng, restoreRng, type Rng } from "../aggregation/random.js";
import { aggregateRound, serverStep } from "../aggregation/server-step.js";
import type { StateRecord } from "../aggregation/state.js";
import type { Strategy } from "../aggregation/strategy.js";
import { resolveStrategy } from "../aggregation/strategies/index.js";
import { codecRef, resolveCodec, type UpdateCodec } from "../aggregation/codecs/index.js";
import type { WeightedSum } from "../aggregation/aggregator.js";
import type { Weights } from "../aggregation/weights.js";
import { encode } from "../protocol/codec.js";
import { CohortError } from "../protocol/errors.js";
import type { FitRequest, RoundConfig, TaskSpec } from "../protocol/messages.js";
import { PROTOCOL_VERSION } from "../protocol/version.js";
import { evaluateModel, writeWeights, type EvalStats } from "../models/adapter.js";
import { instantiate } from "../models/model-file.js";
import { baseRoundConfig, objectiveOf, type CoordinatorOptions } from "./options.js";
import { checkContract } from "../models/task.js";
import { parseRoundConfig } from "../protocol/guards.js";
import { codecFigures, participants, RoundCollector, type RoundOutcome } from "./round.js";
import { RunStore, type RoundMetrics } from "./run-store.js";
import { cohortSize, sampleCohort, samplePoisson } from "./sampling.js";
import { resolvePrivacy, type PrivacyPlan } from "./privacy.js";
import { secureUniform } from "../aggregation/privacy/noise.js";
import {
  clippedUpdates,
  currentClip,
  keepPrivacySpent,
  lastNoise,
  withDpFedAvg,
} from "../aggregation/privacy/dp-fedavg.js";
import { describeStats, evaluationFields, formatRound } from "./format.js";
import {
  CLIP_PER_RMS,
  WEIGHT_CAP_PER_MEAN,
  runSecureRound,
  secureSetup,
  type LinearRound,
  type SecureRange,
} from "./secure-round.js";
import { secureParams, sumMultiplier } from "../aggregation/secure/index.js";
import { evaluationDue, runFederatedEvaluation } from "./evaluate-round.js";
import { repairMetrics, type ServerState } from "./ledger.js";
import { runDirStore, type StateStore } from "./state-store.js";
import {
  configHash,
  experimentConfig,
  publicOptions,
  type ExperimentConfig,
} from "./experiment.js";
import type { CohortTransport } from "./transport.js";
import { DownlinkChain, RoundBroadcast } from "./downlink.js";
import { resolveDownlinkCodec } from "../aggregation/downlink.js";
import type { EnginePhase } from "./phases.js";
import { VersionStore, type VersionEvaluation } from "./versions.js";
import { centralEvaluation, VersionGate, type GateOutcome } from "./version-gate.js";
import { checkPromotion, gated } from "./promotion.js";
import { FedBuffDriver, type BufferProgress } from "./fedbuff.js";

/** What `run()` returns. */
export interface RunSummary {
  runId: string;
  runDir: string | null;
  initial: EvalStats | null;
  rounds: RoundMetrics[];
  weights: Float32Array[];
  /** Why the run ended before its last round (the privacy budget), when it did. */
  stopReason?: string;
}

/** Build the task clients receive from the options and the model. */
export function makeTask(
  opts: CoordinatorOptions,
  runId: string,
  model: TaskSpec["model"],
  security: { coordinatorKey: string | null; signedUpdates: boolean } = {
    coordinatorKey: null,
    signedUpdates: false,
  },
): TaskSpec {
  return {
    protocolVersion: PROTOCOL_VERSION,
    runId,
    model,
    training: {
      optimizer: opts.optimizer,
      learningRate: opts.learningRate,
      localEpochs: opts.localEpochs,
      batchSize: opts.batchSize,
      loss: opts.loss,
      metrics: [...objectiveOf(opts).metrics],
    },
    limits: {
      maxUploadBytes: opts.maxUploadBytes,
      maxExamplesPerClient: opts.maxExamplesPerClient,
    },
    secure: opts.secure,
    coordinatorKey: security.coordinatorKey,
    signedUpdates: security.signedUpdates,
    codec: codecRef(resolveCodec(opts.codec)),
    // Absent under float32, so a float32 downlink's task stays what it was.
    ...downlinkField(opts),
    signature: null,
  };
}

/** The task's `downlink` field: the codec's full reference, unless it is float32. */
function downlinkField(opts: CoordinatorOptions): Pick<TaskSpec, "downlink"> {
  const codec = resolveDownlinkCodec(opts.downlinkCodec ?? "float32");
  return codec.name === "float32" ? {} : { downlink: codecRef(codec) };
}

/**
 * The shared codec seed of a round's attempt, drawn from the run's seed (not the sampling
 * generator, whose sequence stays as it was): a resumed run draws the same seeds again.
 */
export function roundSeed(runSeed: number, round: number, attempt: number): number {
  const rng = createRng(
    (Math.imul(runSeed ^ 0x2c1b3c6d, 0x9e3779b1) + round * 0x85ebca6b + attempt) | 0,
  );
  rng();
  return Math.floor(rng() * 2 ** 32);
}

/**
 * The next secure round's clip and weight cap from what a round of a quantizing codec learned
 * from its sum: CLIP_PER_RMS times the members' mean RMS and WEIGHT_CAP_PER_MEAN times their
 * mean weight. Members report those in masked header words the coordinator cannot check, so
 * one member could claim anything: the clip is held between CLIP_PER_RMS times the RMS of the
 * decoded mean itself (which a member moves only within its clipped share) and `secureClip`,
 * and the cap at most `secureMaxWeight` — a dishonest member then sways the model no more than
 * in a 32-bit round. Null: nothing usable was measured (the last range stays).
 */
export function nextSecureRange(
  result: {
    meanRms?: number;
    sumWeights: number;
    contributors: number[];
    weightedMeanDelta: Float32Array[];
  },
  opts: Pick<CoordinatorOptions, "secureClip" | "secureMaxWeight">,
): SecureRange | null {
  const rms = result.meanRms;
  if (rms === undefined || !(rms > 0) || result.contributors.length === 0) return null;
  let squares = 0;
  let d = 0;
  for (const t of result.weightedMeanDelta) {
    for (let i = 0; i < t.length; i++) squares += t[i]! * t[i]!;
    d += t.length;
  }
  const floor = Math.max(
    CLIP_PER_RMS * Math.sqrt(squares / Math.max(1, d)),
    opts.secureClip * 2 ** -30,
  );
  const clip = Math.min(opts.secureClip, Math.max(floor, CLIP_PER_RMS * rms));
  const meanWeight = result.sumWeights / result.contributors.length;
  const maxWeight = Math.min(
    opts.secureMaxWeight,
    Math.max(1, Math.ceil(WEIGHT_CAP_PER_MEAN * meanWeight)),
  );
  return { clip, maxWeight };
}

/** Runs the rounds of one task; the transport decides how clients are reached. */
export class RoundEngine {
  private readonly strategy: Strategy;
  /** How clients encode their updates (the task names it). */
  private readonly codec: UpdateCodec;
  /** The broadcast chain of a compressed downlink; null: float32, the full G every round. */
  private readonly downlink: DownlinkChain | null;
  /** DP-FedAvg's plan, or null when the run is not differentially private. */
  readonly privacy: PrivacyPlan | null;
  private readonly privateSampler = secureUniform();
  private global: Float32Array[];
  /** The strategy's state between rounds (optimizer moments, momentum). */
  private strategyState: StateRecord;
  /** The options that decide the result, and their hash: committed with every round. */
  readonly config: ExperimentConfig;
  readonly configHash: string;
  private collector: RoundCollector | null = null;
  private evalModel: tf.LayersModel | null = null;
  private started = false;
  private resumed: ServerState | null = null;
  /** Why the engine stopped, once `stop()` was called. */
  private stopError: CohortError | null = null;
  /** The waits in flight that `stop()` rejects (see `unlessStopped`). */
  private readonly stopWaiters = new Set<(error: CohortError) => void>();
  /**
   * The clip and weight cap of the next secure round of a quantizing codec, from what the last
   * one learned from its sum (`nextSecureRange`). Null until a round measured them.
   */
  private secureRange: SecureRange | null = null;
  /** The run's model versions and their gate (from `run()` on). */
  private gate: VersionGate | null = null;
  /** Who contributed to the last round's model. */
  private lastContributors: string[] = [];
  /** Rounds completed so far. */
  completedRounds = 0;
  /** Called after each completed round. */
  onRound: (metrics: RoundMetrics) => void = () => undefined;
  /** Called when the engine enters a phase of a round (round 0 before the first). */
  onPhase: (round: number, phase: EnginePhase) => void = () => undefined;
  /** Called as an asynchronous buffer fills. */
  onBuffer: (state: BufferProgress) => void = () => undefined;
  /** The asynchronous driver, in `mode: "async"`. */
  private fedbuff: FedBuffDriver | null = null;
  /** Called when a new version was decided on (promoted, kept or rejected with a rollback). */
  onVersion: (outcome: GateOutcome) => void = () => undefined;
  /**
   * Where each round's server state is committed: the run directory's ledger (none without a
   * run directory), or a store shared by several coordinator nodes.
   */
  stateStore: StateStore | null;

  constructor(
    private readonly opts: CoordinatorOptions,
    readonly task: TaskSpec,
    initialWeights: Float32Array[],
    private readonly transport: CohortTransport,
    /** Extra fields for `run.json`. */
    private readonly runInfo: Record<string, unknown> = {},
  ) {
    this.global = initialWeights;
    this.stateStore =
      opts.runDir === null ? null : runDirStore(opts.runDir, task.model.weightSpecs);
    this.codec = resolveCodec(task.codec);
    this.downlink =
      task.downlink === undefined
        ? null
        : new DownlinkChain(resolveDownlinkCodec(task.downlink), task.model.weightSpecs, opts.seed);
    const chosen = resolveStrategy(opts.strategy);
    this.privacy = resolvePrivacy(opts, chosen);
    this.strategy = this.privacy === null ? chosen : withDpFedAvg(chosen, this.privacy.settings);
    if (this.privacy?.mode === "distributed") {
      // Refuse at start a noise the 32-bit encoding of the expected cohort has no room for.
      const n = Math.max(2, Math.round(this.privacy.settings.expectedCohort));
      secureParams(secureSetup(opts, task, 0, n, 0, this.privacy.settings.noiseMultiplier));
    }
    this.strategyState = this.strategy.optimizer.init(initialWeights);
    checkPromotion(opts, { evaluates: opts.evalDataset !== undefined });
    this.config = experimentConfig(opts, task, this.strategy);
    this.configHash = configHash(this.config);
  }

  /** Current global weights. */
  weights(): Weights {
    return this.global;
  }

  /** The run's model versions, once `run()` has opened them (null before). */
  versions(): VersionStore | null {
    return this.gate?.store ?? null;
  }

  /** Continue a crashed run from its ledger (already checked to be this experiment): call before `run()`. */
  resumeFrom(state: ServerState): void {
    if (this.started) throw new CohortError("INVALID_OPTION", "resumeFrom() after run()");
    this.resumed = state;
    this.global = state.weights;
    // A version-1 ledger predates strategy state: its runs were stateless FedAvg.
    this.strategyState =
      state.config === null ? this.strategy.optimizer.init(state.weights) : state.strategy;
    this.completedRounds = state.completedRounds;
    this.secureRange = state.lastMetrics?.secureNext ?? null;
  }

  /** Run every round; resolves after the last one, with all metrics. */
  async run(): Promise<RunSummary> {
    if (this.started) throw new CohortError("INVALID_OPTION", "run() was already called");
    this.started = true;
    const { opts, task } = this;
    const resumed = this.resumed;
    const store =
      opts.runDir === null
        ? null
        : resumed !== null
          ? await RunStore.open(opts.runDir)
          : await RunStore.create(opts.runDir, {
              runId: task.runId,
              createdAt: new Date().toISOString(),
              options: publicOptions(opts, this.strategy),
              config: this.config,
              configHash: this.configHash,
              model: { name: task.model.name, numParameters: task.model.numParameters },
              protocolVersion: PROTOCOL_VERSION,
              ...this.runInfo,
            });
    if (store !== null && resumed === null) await store.checkpoint(0, task.model, this.global);
    if (opts.runDir !== null && resumed !== null) await repairMetrics(opts.runDir, resumed);
    const initial = await this.evaluate();
    this.gate = await this.openVersions(initial);
    opts.log(
      `run ${task.runId}: ${task.model.name} (${task.model.numParameters} parameters), ` +
        `${opts.rounds} rounds` +
        (initial ? `, initial ${describeStats(initial)}` : ""),
    );
    if (resumed !== null)
      opts.log(`resuming run ${task.runId} after round ${resumed.completedRounds}`);
    const rng = resumed !== null ? restoreRng(resumed.rngState) : createRng(opts.seed + 1);
    if (opts.mode === "async") this.fedbuff = this.fedbuffDriver(rng);
    const rounds: RoundMetrics[] = [];
    let stopReason: string | undefined;
    for (let round = (resumed?.completedRounds ?? 0) + 1; round <= opts.rounds; round++) {
      stopReason = this.budgetStop(round);
      if (stopReason !== undefined) {
        opts.log(stopReason);
        break;
      }
      const metrics =
        this.fedbuff === null ? await this.runRound(round, rng) : await this.bufferRound(round);
      const simulated = this.transport.simulated;
      if (simulated !== undefined) metrics.simulatedMs = simulated.now();
      this.privacyMetrics(metrics);
      if (metrics.aborted !== true) await this.gateVersion(metrics);
      this.completedRounds = round;
      if (this.stateStore !== null) {
        // The ledger commits the round before the new model leaves again (federated
        // evaluation): a crash after that can't re-run the round and release it twice.
        // metrics.jsonl is repaired from the ledger after a crash. A shared store out of
        // reach must not hold up a stop (a cluster node that lost its lease).
        await this.unlessStopped(
          this.stateStore.commit({
            runId: task.runId,
            completedRounds: round,
            rngState: rng.state(),
            weights: this.global,
            strategy: this.strategyState,
            config: this.config,
            configHash: this.configHash,
            lastMetrics: metrics,
            versions: this.gate!.pointers(),
          }),
        );
      }
      if (evaluationDue(opts, round) && metrics.aborted !== true) {
        await this.evaluateOnClients(metrics);
      }
      if (store !== null && opts.runDir !== null) {
        this.stateStore?.check?.();
        await store.appendRound(metrics);
        const every = opts.checkpointEvery;
        if (round === opts.rounds || (every > 0 && round % every === 0)) {
          this.stateStore?.check?.();
          await store.checkpoint(round, task.model, this.global);
        }
      }
      rounds.push(metrics);
      opts.log(formatRound(metrics, opts.rounds));
      this.onRound(metrics);
    }
    this.fedbuff?.close();
    this.onPhase(this.completedRounds, "done");
    this.transport.finish({ runId: task.runId, rounds: this.completedRounds });
    this.evalModel?.dispose();
    this.evalModel = null;
    return {
      runId: task.runId,
      runDir: opts.runDir,
      initial,
      rounds,
      weights: this.global,
      ...(stopReason === undefined ? {} : { stopReason }),
    };
  }

  /** The FedBuff driver of an asynchronous run, going on after `completedRounds` steps. */
  private fedbuffDriver(rng: Rng): FedBuffDriver {
    const { opts, task } = this;
    const seedOf = (round: number) => roundSeed(opts.seed, round, 1);
    return new FedBuffDriver(
      {
        transport: this.transport,
        opts,
        limits: {
          weightSpecs: task.model.weightSpecs,
          maxUploadBytes: opts.maxUploadBytes,
          maxExamplesPerClient: opts.maxExamplesPerClient,
          deadlineMs: opts.roundTimeoutMs,
          codec: this.codec,
        },
        seedOf,
        broadcast: (round) => this.broadcast(round, seedOf(round)),
        baseVersion: () => this.gate?.pointers().current ?? this.completedRounds,
        rng,
        unlessStopped: (work) => this.unlessStopped(work),
        progress: (state) => this.onBuffer(state),
      },
      this.completedRounds,
    );
  }

  /** One asynchronous step: the next buffer, aggregated like a round's updates. */
  private async bufferRound(round: number): Promise<RoundMetrics> {
    const started = performance.now();
    this.onPhase(round, "training");
    const driver = this.fedbuff!;
    const outcome = await driver.next();
    const metrics = await this.finishRound(
      outcome,
      1,
      started,
      outcome.bytesDown,
      undefined,
      outcome.broadcast,
    );
    metrics.mode = "async";
    metrics.totalExamples = outcome.examples;
    metrics.staleness = outcome.staleness;
    metrics.inFlight = driver.training;
    return metrics;
  }

  /** The run's versions: a new store, or the resumed run's cut back to its ledger. */
  private async openVersions(initial: EvalStats | null): Promise<VersionGate> {
    const { opts, task } = this;
    const resumed = this.resumed?.versions ?? null;
    const store = await VersionStore.open(opts.runDir, task.runId, task.model.weightSpecs, {
      keep: opts.keepVersions,
      ...(this.resumed === null
        ? {}
        : {
            resumeAt: resumed?.latest ?? -1,
            ...(resumed === null ? {} : { promoted: resumed.promoted }),
          }),
    });
    return VersionGate.open(store, opts, this.strategy.name, (v, w) => this.canary(v, w), {
      round: this.completedRounds,
      weights: this.global,
      state: this.strategyState,
      central: centralEvaluation(initial),
      resumed,
    });
  }

  /** A version's federated evaluation on a sample of `canaryFraction` of the clients. */
  private async canary(
    version: number,
    weights: readonly Float32Array[],
  ): Promise<VersionEvaluation | null> {
    const opts = {
      ...this.opts,
      fractionEvaluate: this.opts.canaryFraction,
      minEvaluateClients: 1,
    };
    const fed = await this.unlessStopped(
      runFederatedEvaluation(this.transport, opts, this.completedRounds + 1, [...weights]),
    );
    if (fed.clients === 0) return null;
    return {
      loss: fed.loss,
      accuracy: fed.accuracy,
      metrics: fed.metrics,
      clients: fed.clients,
      examples: fed.numExamples,
    };
  }

  /**
   * The round's model becomes a version and the gate decides; after a rejection the global
   * model and the strategy state go back to the promoted version's. The round's metrics say
   * what happened.
   */
  private async gateVersion(metrics: RoundMetrics): Promise<void> {
    const outcome = await this.gate!.next({
      round: metrics.round,
      weights: this.global,
      state: this.strategyState,
      central: centralEvaluation(metrics),
      contributors: this.lastContributors,
    });
    const { version, decision, rollback } = outcome;
    metrics.modelVersion = version.version;
    metrics.versionStatus = version.status;
    metrics.promotedVersion = this.gate!.store.promoted();
    if (gated(this.opts)) metrics.versionReason = decision.reason;
    if (rollback !== null) {
      this.global = rollback.weights;
      // The privacy spent on the rejected rounds stays spent.
      this.strategyState =
        this.privacy === null
          ? rollback.strategy
          : keepPrivacySpent(rollback.strategy, this.strategyState);
      metrics.rollback = { from: version.version, to: rollback.to, reason: decision.reason };
      // Updates in flight on the abandoned versions must not land on the restored model.
      this.fedbuff?.abandon(rollback.to, version.version);
      this.opts.log(
        `round ${metrics.round}: version ${version.version} rejected (${decision.reason}); training goes on from version ${rollback.to}`,
      );
    }
    this.onVersion(outcome);
  }

  /** Why round `round` must not run (it would take ε past the budget), or undefined. */
  private budgetStop(round: number): string | undefined {
    const plan = this.privacy;
    if (plan === null || plan.maxEpsilon === undefined) return undefined;
    // The worst case: fixed-size sampling from the clients connected now, if fewer than planned.
    const have = this.transport.available().length;
    const rate = plan.roundRate(
      cohortSize(have, this.opts.fractionFit, this.opts.minFitClients),
      have,
    );
    const next = plan.epsilonAfterNext(this.strategyState, rate);
    if (next <= plan.maxEpsilon) return undefined;
    return `privacy budget: round ${round} would take ε to ${next.toFixed(4)} (δ = ${plan.delta}), past dpMaxEpsilon = ${plan.maxEpsilon}; the run ends after round ${round - 1}`;
  }

  /** ε (at the plan's δ) after the rounds released so far, in the round's metrics. */
  private privacyMetrics(metrics: RoundMetrics): void {
    const plan = this.privacy;
    if (plan === null) return;
    metrics.epsilon = plan.epsilonOf(this.strategyState);
    metrics.delta = plan.delta;
    metrics.noiseMultiplier =
      metrics.aborted === true
        ? plan.settings.noiseMultiplier
        : (lastNoise(this.strategyState) ?? plan.settings.noiseMultiplier);
    metrics.dpClip = currentClip(this.strategyState, plan.settings.clip);
    if (!metrics.secure && metrics.aborted !== true) {
      metrics.clippedUpdates = clippedUpdates(this.strategyState);
    }
  }

  private async runRound(round: number, rng: Rng): Promise<RoundMetrics> {
    const { opts } = this;
    for (let attempt = 1; ; attempt++) {
      const have = this.transport.available().length;
      if (have < opts.minAvailableClients) {
        this.onPhase(round, "waiting");
        opts.log(
          `round ${round}: waiting for ${opts.minAvailableClients} clients (${have} connected)`,
        );
      }
      await this.unlessStopped(this.transport.waitForAvailable(opts.minAvailableClients));
      // Amplification by sampling needs a sample nobody can predict: a seeded generator (its
      // seed is in run.json, its state in the ledger) would not do for a private run.
      const sampler = this.privacy === null ? rng : this.privateSampler;
      const available = this.transport.available();
      const cohort =
        opts.sampling === "poisson"
          ? samplePoisson(available, opts.fractionFit, sampler)
          : sampleCohort(available, opts.fractionFit, opts.minFitClients, sampler);
      // Fixed-size sampling from fewer clients than the population samples each more often.
      const samplingRate = this.privacy?.roundRate(cohort.length, available.length);
      const started = performance.now();
      if (opts.secure) {
        const graphSeed = Math.floor(rng() * 2 ** 32);
        return this.secureRound(round, cohort, started, graphSeed, samplingRate);
      }
      const seed = roundSeed(opts.seed, round, attempt);
      const collector = new RoundCollector(round, cohort, {
        weightSpecs: this.task.model.weightSpecs,
        maxUploadBytes: opts.maxUploadBytes,
        maxExamplesPerClient: opts.maxExamplesPerClient,
        // Where time is simulated, the transport misses deadlines in simulated time.
        deadlineMs: this.transport.simulated === undefined ? opts.roundTimeoutMs : 2 ** 31 - 1,
        codec: this.codec,
        seed,
      });
      this.collector = collector;
      this.onPhase(round, "training");
      const broadcast = this.broadcast(round, seed);
      const bytesDown = this.transport.startRound(collector, broadcast);
      const outcome = await this.unlessStopped(collector.done);
      // Under DP with Poisson sampling every round is released, however few answered (the
      // noise alone, if none did): a retry would condition the sample on who answered.
      const releaseAnyway = this.privacy !== null && opts.sampling === "poisson";
      const answered = participants(outcome).length;
      if (answered >= opts.minFitClients || releaseAnyway) {
        return this.finishRound(outcome, attempt, started, bytesDown, samplingRate, broadcast);
      }
      const reasons = outcome.failures.map((f) => `${f.clientId}: ${f.code}`).join(", ");
      opts.log(
        `round ${round} attempt ${attempt}: ${answered} of ${cohort.length} updates, ` +
          `${opts.minFitClients} needed (${reasons})`,
      );
      if (attempt >= opts.maxRoundAttempts) {
        const last = outcome.failures[0];
        throw new CohortError(
          "ROUND_FAILED",
          `round ${round} failed ${attempt} times: too few updates` +
            (last === undefined
              ? ""
              : ` (${outcome.failures.length} failed in the last attempt, e.g. ${last.clientId}: ${last.code}: ${last.message})`),
        );
      }
    }
  }

  private async finishRound(
    outcome: RoundOutcome,
    attempt: number,
    started: number,
    bytesDown: number,
    samplingRate: number | undefined,
    broadcast: RoundBroadcast,
  ): Promise<RoundMetrics> {
    this.onPhase(outcome.round, "aggregating");
    const aggStart = performance.now();
    const aggregate = aggregateRound(this.strategy, this.global, outcome.results, outcome.sums);
    if (aggregate === null)
      throw new CohortError("ROUND_FAILED", `round ${outcome.round} has no results`);
    this.step(
      { ...aggregate, ...(samplingRate === undefined ? {} : { samplingRate }) },
      outcome.round,
    );
    // Updates received here and on other nodes (their deltas came summed).
    const results = participants(outcome);
    this.lastContributors = results.map((r) => r.clientId);
    const totalExamples = results.reduce((n, r) => n + r.numExamples, 0);
    const aggregationMs = performance.now() - aggStart;
    this.onPhase(outcome.round, "evaluating");
    const evalStart = performance.now();
    const evaluation = await this.evaluate();
    const evaluationMs = performance.now() - evalStart;
    const trainLoss =
      totalExamples === 0
        ? null
        : results.reduce((s, r) => s + r.metrics.loss * r.numExamples, 0) / totalExamples;
    const clipped = results.flatMap((r) =>
      r.claimedExamples === undefined ? [] : [{ clientId: r.clientId, claimed: r.claimedExamples }],
    );
    for (const c of clipped) {
      this.opts.log(
        `round ${outcome.round}: ${c.clientId} claimed ${c.claimed} examples; weighted as ${this.opts.maxExamplesPerClient} (maxExamplesPerClient)`,
      );
    }
    return {
      round: outcome.round,
      attempt,
      cohortSize: outcome.cohort.length,
      participants: results.length,
      failures: outcome.failures.length,
      failureReasons: outcome.failures,
      totalExamples,
      durationMs: performance.now() - started,
      aggregationMs,
      evaluationMs,
      bytesUp: outcome.bytesUp,
      bytesDown,
      ...(outcome.sums === undefined
        ? {}
        : {
            partials: {
              nodes: outcome.sums.length,
              bytes: outcome.partialBytes?.wire ?? 0,
              clientBytes: outcome.partialBytes?.clients ?? 0,
            },
          }),
      secure: false,
      ...codecFigures(this.codec, results, this.task.model.numParameters),
      downlinkCodec: this.downlink?.codec.label ?? "float32",
      downlinkPatched: broadcast.patched,
      downlinkFull: broadcast.full,
      ...evaluationFields(evaluation),
      trainLoss,
      ...(clipped.length > 0 ? { clippedClaims: clipped } : {}),
      clients: results.map((r) => ({
        clientId: r.clientId,
        numExamples: r.numExamples,
        loss: r.metrics.loss,
        accuracy: r.metrics.accuracy,
        trainMs: r.metrics.trainMs,
        backend: r.metrics.backend,
        bytesUp: r.bytes,
      })),
      timestamp: new Date().toISOString(),
    };
  }

  private async secureRound(
    round: number,
    cohort: string[],
    started: number,
    graphSeed: number,
    samplingRate: number | undefined,
  ): Promise<RoundMetrics> {
    const linear = this.linearRound(round);
    // Members need no codec seed (the quantizer's travels in the setup): one request per version.
    const broadcast = this.broadcast(round, 0, false);
    const outcome = await this.unlessStopped(
      runSecureRound(
        this.transport,
        this.opts,
        this.task,
        round,
        cohort,
        broadcast,
        graphSeed,
        (phase) => this.onPhase(round, phase),
        this.privacy?.mode === "distributed" ? this.privacy.settings.noiseMultiplier : undefined,
        linear,
      ),
    );
    const { result } = outcome;
    this.lastContributors = result?.contributors.map((i) => cohort[i]!) ?? [];
    if (result !== null && linear !== undefined) {
      this.secureRange = nextSecureRange(result, this.opts) ?? this.secureRange;
    }
    const aggStart = performance.now();
    if (result !== null) {
      // The unmasked weighted sum goes to the strategy's (linear) aggregator like any other
      // partial sum.
      const sum: WeightedSum = {
        weighted: result.weightedSum,
        weight: result.sumWeights,
        count: result.contributors.length,
        // The members' noise, as the accountant counts it (replace-one doubles the sensitivity).
        ...(outcome.noise === null
          ? {}
          : {
              noiseMultiplier:
                this.privacy!.sensitivity *
                sumMultiplier(outcome.noise, result.contributors.length, this.privacy!.sensitivity),
            }),
      };
      const aggregate = aggregateRound(this.strategy, this.global, [], [sum]);
      if (aggregate !== null) {
        this.step({ ...aggregate, ...(samplingRate === undefined ? {} : { samplingRate }) }, round);
      }
    }
    const aggregationMs = performance.now() - aggStart;
    this.onPhase(round, "evaluating");
    const evalStart = performance.now();
    const evaluation = result !== null ? await this.evaluate() : null;
    return {
      round,
      attempt: 1,
      cohortSize: cohort.length,
      participants: result?.contributors.length ?? 0,
      failures: outcome.failures.length,
      failureReasons: outcome.failures,
      totalExamples: result?.sumWeights ?? 0,
      durationMs: performance.now() - started,
      aggregationMs,
      evaluationMs: performance.now() - evalStart,
      bytesUp: outcome.bytesUp,
      bytesDown: outcome.bytesDown,
      ...(outcome.partials === undefined
        ? {}
        : {
            partials: {
              nodes: outcome.partials.nodes,
              bytes: outcome.partials.wire,
              clientBytes: outcome.partials.clients,
            },
          }),
      secure: true,
      downlinkCodec: this.downlink?.codec.label ?? "float32",
      downlinkPatched: broadcast.patched,
      downlinkFull: broadcast.full,
      ...evaluationFields(evaluation),
      trainLoss: null,
      ...(result === null
        ? { aborted: true, abortReason: outcome.abortReason ?? "aborted" }
        : { secureErrorBound: result.errorBound }),
      ...(linear === undefined
        ? {}
        : {
            codec: this.codec.label,
            secureBits: linear.quantizer.bits,
            secureClip: linear.clip,
            secureMaxWeight: linear.maxWeight,
            ...(outcome.wordBits === null ? {} : { secureWordBits: outcome.wordBits }),
            ...(outcome.maskedRatio === null ? {} : { compressionRatio: outcome.maskedRatio }),
            ...(result?.meanRms === undefined ? {} : { secureRms: result.meanRms }),
            ...(this.secureRange === null ? {} : { secureNext: this.secureRange }),
          }),
      clients: [],
      timestamp: new Date().toISOString(),
    };
  }

  /**
   * A secure round of a quantizing codec: its bits, shared clip and weight cap. The first round
   * (and one after a resume of a run that measured nothing) calibrates at 32 bits,
   * `secureClip` and `secureMaxWeight`; later ones take `nextSecureRange` of the round before.
   */
  private linearRound(round: number): LinearRound | undefined {
    const form = this.codec.secure;
    if (form === undefined) return undefined;
    const range = this.secureRange;
    return {
      clip: range?.clip ?? this.opts.secureClip,
      maxWeight: range?.maxWeight ?? this.opts.secureMaxWeight,
      quantizer: {
        bits: range === null ? 32 : form.bits,
        chunk: form.chunk,
        seed: roundSeed(this.opts.seed, round, 1),
      },
    };
  }

  /**
   * The fit requests of a round's attempt. Under float32 one request of the global model, byte
   * for byte what it always was; under a compressed downlink the chain first moves to this
   * round's version (once per round: a retry sends the same model) and the requests carry M̂.
   */
  private broadcast(
    round: number,
    seed: number,
    seeded = this.codec.name !== "float32",
  ): RoundBroadcast {
    const config = this.roundConfig(round);
    // float32 draws nothing: its requests stay byte for byte what they were.
    const seedField = seeded ? { seed } : {};
    if (this.downlink === null) {
      const request: FitRequest = { round, weights: this.global, config, ...seedField };
      return RoundBroadcast.plain(round, encode(request));
    }
    const body = { round, config, ...seedField };
    this.downlink.advance(round, this.global);
    return this.downlink.broadcast(body);
  }

  /** The model clients hold under a compressed downlink (M̂), or null. */
  downlinkModel(): Weights | null {
    return this.downlink?.model() ?? null;
  }

  /** The round's client configuration: the options on their schedule, then the strategy's say. */
  private roundConfig(round: number): RoundConfig {
    const base = baseRoundConfig(this.opts, round);
    const chosen =
      this.strategy.configureFit?.({ round, rounds: this.opts.rounds }, base, this.strategyState) ??
      base;
    try {
      return parseRoundConfig(chosen);
    } catch (cause) {
      // A user's strategy produced a configuration no client would accept.
      throw new CohortError(
        "INVALID_OPTION",
        `strategy ${this.strategy.name} configured round ${round} wrongly: ${(cause as Error).message}`,
        { cause },
      );
    }
  }

  /** Federated evaluation of the new model; its figures join the round's metrics. */
  private async evaluateOnClients(metrics: RoundMetrics): Promise<void> {
    this.onPhase(metrics.round, "evaluating");
    const started = performance.now();
    const fed = await this.unlessStopped(
      runFederatedEvaluation(this.transport, this.opts, metrics.round, this.global),
    );
    metrics.evaluationMs += performance.now() - started;
    if (fed.accuracy !== null) metrics.federatedAccuracy = fed.accuracy;
    if (Object.keys(fed.metrics).length > 0) metrics.federatedMetrics = fed.metrics;
    if (fed.loss !== null) metrics.federatedLoss = fed.loss;
    metrics.federatedExamples = fed.numExamples;
    metrics.federatedClients = fed.clients;
    metrics.evaluationFailures = fed.failures;
  }

  /** The server step: the strategy's optimizer moves the global model and its state. */
  private step(aggregate: WeightedSum, round: number): void {
    const next = serverStep(
      this.strategy,
      this.global,
      this.strategyState,
      aggregate,
      round,
      this.opts.rounds,
    );
    this.global = next.weights;
    this.strategyState = next.state;
  }

  private async evaluate(): Promise<EvalStats | null> {
    const data = this.opts.evalDataset;
    if (data === undefined) return null;
    if (this.evalModel === null) {
      const model = await instantiate(this.task.model, this.global);
      try {
        checkContract(model, data, this.opts.loss, "evaluation set");
      } catch (error) {
        model.dispose();
        throw error;
      }
      this.evalModel = model;
    } else writeWeights(this.evalModel, this.global);
    return evaluateModel(this.evalModel, data, objectiveOf(this.opts));
  }

  /**
   * `work`, or a rejection with `CLOSED` if `stop()` comes first. Nothing of it stays behind
   * once it settles: a `Promise.race` against one promise that stays pending for the whole run
   * would leave a reaction on it each time, holding what the race resolved to (a round's
   * outcome, every update's delta) until the run ends.
   */
  private unlessStopped<T>(work: Promise<T>): Promise<T> {
    if (this.stopError !== null) {
      work.catch(() => undefined);
      return Promise.reject(this.stopError);
    }
    return new Promise<T>((resolve, reject) => {
      this.stopWaiters.add(reject);
      work.then(
        (value) => {
          this.stopWaiters.delete(reject);
          resolve(value);
        },
        (error: unknown) => {
          this.stopWaiters.delete(reject);
          reject(error);
        },
      );
    });
  }

  /**
   * Stop: the open round closes and `run()` rejects with `reason` (`CLOSED` by default; a
   * cluster node that lost its lease stops with `FENCED`).
   */
  stop(reason = new CohortError("CLOSED", "coordinator closed")): void {
    if (this.stopError === null) {
      this.stopError = reason;
      for (const reject of this.stopWaiters) reject(this.stopError);
      this.stopWaiters.clear();
    }
    this.collector?.close();
    this.fedbuff?.close();
    this.evalModel?.dispose();
    this.evalModel = null;
  }
}
