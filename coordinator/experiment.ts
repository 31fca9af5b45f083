/**
 * The experiment's configuration: every option that changes the result of a run, as plain
 * JSON, with a hash. The ledger commits both; `--resume` refuses a coordinator whose
 * configuration differs and names the options that differ.
 */
import { createHash } from "node:crypto";
import type { Strategy } from "../aggregation/strategy.js";
import { CohortError } from "../protocol/errors.js";
import { DEFAULT_LOSS } from "../protocol/task.js";
// One canonical form for everything Cohort hashes or signs: configurations and tasks alike.
import { canonicalJson } from "../aggregation/signing.js";
import type { Json, TaskSpec } from "../protocol/messages.js";
import { objectiveOf, type CoordinatorOptions } from "./options.js";
import { modelName } from "../models/model-file.js";

/** Options that decide a run's result, by name. */
export type ExperimentConfig = { [key: string]: Json };

/** The configuration of a run (what `run.json` records under `config`). */
export function experimentConfig(
  opts: CoordinatorOptions,
  task: TaskSpec,
  strategy: Strategy,
): ExperimentConfig {
  return {
    model: task.model.name,
    modelTopology: createHash("sha256")
      .update(canonicalJson(withoutLayerNames(task.model.topology)))
      .digest("hex")
      .slice(0, 16),
    seed: opts.seed,
    strategy: canonicalJson(strategy.ref as unknown as Json),
    optimizer: opts.optimizer,
    learningRate: opts.learningRate,
    lrSchedule: canonicalJson(opts.lrSchedule as Json),
    // A cosine schedule spans the planned rounds; otherwise more rounds extend the same run.
    scheduleRounds:
      typeof opts.lrSchedule === "object" && opts.lrSchedule.name === "cosine" ? opts.rounds : null,
    fitConfig: canonicalJson(opts.fitConfig),
    localEpochs: opts.localEpochs,
    batchSize: opts.batchSize,
    fractionFit: opts.fractionFit,
    minFitClients: opts.minFitClients,
    secure: opts.secure,
    secureNeighbours: opts.secureNeighbours ?? null,
    secureThreshold: opts.secureThreshold ?? null,
    secureClip: opts.secureClip,
    secureMaxWeight: opts.secureMaxWeight,
    // Recorded where they differ from their defaults, so ledgers of earlier runs still resume.
    ...(opts.maxExamplesPerClient !== 10_000
      ? { maxExamplesPerClient: opts.maxExamplesPerClient }
      : {}),
    ...(opts.sampling !== "fixed" ? { sampling: opts.sampling } : {}),
    ...(task.codec.name !== "float32"
      ? { codec: canonicalJson(task.codec as unknown as Json) }
      : {}),
    // Clients train from the model the downlink delivers: it decides the result.
    ...(task.downlink !== undefined
      ? { downlinkCodec: canonicalJson(task.downlink as unknown as Json) }
      : {}),
    ...(task.training.loss !== DEFAULT_LOSS ? { loss: task.training.loss } : {}),
    ...(opts.mode === "async"
      ? {
          fedbuff: canonicalJson({
            buffer: opts.buffer,
            concurrency: opts.asyncConcurrency,
            maxStaleness: opts.maxStaleness,
            stalenessExponent: opts.stalenessExponent,
          }),
        }
      : {}),
    // The gate decides which model training goes on from.
    ...(opts.promoteThreshold !== undefined || opts.rollbackDrop !== undefined
      ? {
          gate: canonicalJson({
            promoteThreshold: opts.promoteThreshold ?? null,
            rollbackDrop: opts.rollbackDrop ?? null,
            canaryFraction: opts.canaryFraction,
          }),
        }
      : {}),
    ...(opts.dpClip > 0
      ? {
          dp: canonicalJson({
            clip: opts.dpClip,
            noise: opts.dpNoise ?? null,
            targetEpsilon: opts.dpTargetEpsilon ?? null,
            // A noise found for a target ε depends on the rounds planned.
            rounds: opts.dpTargetEpsilon === undefined ? null : opts.rounds,
            delta: opts.dpDelta,
            population: opts.dpPopulation ?? null,
            clipQuantile: opts.dpClipQuantile ?? null,
            clipLearningRate: opts.dpClipQuantile === undefined ? null : opts.dpClipLearningRate,
            countNoise: opts.dpCountNoise ?? null,
            // Recorded where distributed, so ledgers of central runs still resume.
            ...(opts.dpMode === "distributed"
              ? { mode: opts.dpMode, dropoutTolerance: opts.dpDropoutTolerance }
              : {}),
          }),
        }
      : {}),
  };
}

/**
 * A topology with its layer names replaced by their order of appearance: tfjs numbers layers
 * per process ("dense_Dense1", then "dense_Dense4" for the same model built again), and the
 * same architecture must hash alike wherever it was built.
 */
function withoutLayerNames(topology: { [key: string]: Json }): Json {
  const names = new Map<string, string>();
  const collect = (v: Json): void => {
    if (Array.isArray(v)) v.forEach(collect);
    else if (typeof v === "object" && v !== null) {
      for (const [k, x] of Object.entries(v)) {
        if (k === "name" && typeof x === "string" && !names.has(x)) {
          names.set(x, `#${names.size}`);
        }
        collect(x);
      }
    }
  };
  collect(topology);
  const rename = (v: Json): Json => {
    if (typeof v === "string") return names.get(v) ?? v;
    if (Array.isArray(v)) return v.map(rename);
    if (typeof v === "object" && v !== null) {
      return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, rename(x)]));
    }
    return v;
  };
  return rename(topology);
}

/** How ledgers written before names were normalised hash a topology (still accepted on resume). */
export function legacyTopologyHash(topology: { [key: string]: Json }): string {
  return createHash("sha256").update(canonicalJson(topology)).digest("hex").slice(0, 16);
}

/** SHA-256 of the canonical configuration. */
export function configHash(config: ExperimentConfig): string {
  return createHash("sha256").update(canonicalJson(config)).digest("hex");
}

/**
 * Throw `INVALID_OPTION` naming every option whose value differs from the run's; `where` names
 * the run (`--resume: DIR`, a cluster).
 */
export function checkSameExperiment(
  where: string,
  was: ExperimentConfig,
  now: ExperimentConfig,
): void {
  const keys = [...new Set([...Object.keys(was), ...Object.keys(now)])].sort();
  const differ = keys.filter(
    (k) => canonicalJson(was[k] ?? null) !== canonicalJson(now[k] ?? null),
  );
  if (differ.length === 0) return;
  const show = (v: Json | undefined) => (v === undefined ? "unset" : canonicalJson(v));
  throw new CohortError(
    "INVALID_OPTION",
    `${where} ran another experiment; differing options: ` +
      differ.map((k) => `${k} (was ${show(was[k])}, now ${show(now[k])})`).join("; ") +
      ". Resume with the run's options, or start a new run.",
  );
}

/**
 * The options as `run.json` records them: no key, token, certificate or function — only
 * whether authentication, the API token and TLS were on.
 */
export function publicOptions(
  opts: CoordinatorOptions,
  strategy: Strategy,
): { [key: string]: unknown } {
  const { signingKey, tls, auth, apiToken, log, evalDataset, strategy: _given, ...rest } = opts;
  void log;
  void _given;
  return {
    ...rest,
    model: modelName(opts.model),
    metrics: objectiveOf(opts).metrics,
    strategy: strategy.ref,
    evalDataset: evalDataset?.name ?? null,
    auth: auth !== undefined,
    apiToken: apiToken !== undefined,
    tls: tls !== undefined,
    signingKey: signingKey === undefined ? "generated" : "given",
  };
}
