/**
 * The round options the coordinator, its CLI and the simulator share, defined once: type and
 * range, default (and the simulator's, where it differs), flag and help text. `resolveOptions`,
 * `cohort coordinator --help`, `cohort simulate --help` and the simulator's config all derive
 * from this table, so they cannot drift apart.
 */
import { CohortError } from "../protocol/errors.js";
import { OPTIMIZERS } from "../protocol/messages.js";
import { BUILTIN_METRICS, LOSSES } from "../protocol/task.js";
import type { CoordinatorOptions } from "./options.js";
import { codecDefinitions } from "../aggregation/codecs/index.js";

/** How a value is checked. */
export type OptionKind =
  | { type: "int"; min: number; max?: number }
  /** A finite number in the range; `above` excludes the lower end. */
  | { type: "number"; min: number; max?: number; above?: boolean }
  | { type: "boolean" }
  | { type: "choice"; of: readonly string[] }
  /** A string its own parser checks (a model path, a schedule). */
  | { type: "text" };

/** One shared option. */
export interface OptionSpec<V> {
  kind: OptionKind;
  default: V;
  /** The simulator's default, where it differs. */
  simDefault?: V;
  /** What `--help` says. */
  doc: string;
  flag: string;
  placeholder?: string;
  /** `--help` text instead of the default. */
  defaultText?: string;
  /** The flag takes seconds for this millisecond option. */
  seconds?: boolean;
  /** `undefined` is a valid value (the option then has a computed default). */
  optional?: boolean;
}

/** The shared options' names. */
export type SharedKey =
  | "model"
  | "rounds"
  | "fractionFit"
  | "minFitClients"
  | "optimizer"
  | "loss"
  | "metrics"
  | "learningRate"
  | "lrSchedule"
  | "localEpochs"
  | "batchSize"
  | "roundTimeoutMs"
  | "maxRoundAttempts"
  | "codec"
  | "downlinkCodec"
  | "secure"
  | "secureNeighbours"
  | "secureThreshold"
  | "secureClip"
  | "secureMaxWeight"
  | "maxExamplesPerClient"
  | "sampling"
  | "dpClip"
  | "dpNoise"
  | "dpTargetEpsilon"
  | "dpDelta"
  | "dpMaxEpsilon"
  | "dpPopulation"
  | "dpClipQuantile"
  | "dpClipLearningRate"
  | "dpCountNoise"
  | "dpMode"
  | "dpDropoutTolerance"
  | "secureStepTimeoutMs"
  | "fractionEvaluate"
  | "minEvaluateClients"
  | "evaluateEvery"
  | "evaluateTimeoutMs"
  | "seed"
  | "checkpointEvery"
  | "mode"
  | "buffer"
  | "asyncConcurrency"
  | "maxStaleness"
  | "stalenessExponent"
  | "promoteThreshold"
  | "rollbackDrop"
  | "canaryFraction"
  | "keepVersions";

/** The shared options, with their types from `CoordinatorOptions`. */
export type SharedOptions = Pick<CoordinatorOptions, SharedKey>;

const int = (min: number, max?: number): OptionKind => ({
  type: "int",
  min,
  ...(max === undefined ? {} : { max }),
});

/** The table. */
export const SHARED_OPTIONS: { [K in SharedKey]: OptionSpec<SharedOptions[K]> } = {
  model: {
    kind: { type: "text" },
    default: "mlp",
    flag: "model",
    placeholder: "NAME|PATH",
    doc: "built-in model (mlp, mlp:H1,H2…, cnn, logreg, char-lstm; sized from the evaluation set) or a tfjs model.json",
  },
  rounds: { kind: int(1), default: 10, flag: "rounds", doc: "rounds to run" },
  fractionFit: {
    kind: { type: "number", min: 0, max: 1, above: true },
    default: 1,
    simDefault: 0.1,
    flag: "fraction-fit",
    doc: "fraction C of connected clients sampled per round",
  },
  minFitClients: {
    kind: int(1),
    default: 2,
    simDefault: 1,
    flag: "min-fit-clients",
    doc: "least clients sampled, and least updates a round needs",
  },
  optimizer: {
    kind: { type: "choice", of: OPTIMIZERS },
    default: "sgd",
    flag: "optimizer",
    placeholder: OPTIMIZERS.join("|"),
    doc: "client optimizer",
  },
  loss: {
    kind: { type: "choice", of: LOSSES },
    default: "sparse-categorical-crossentropy",
    flag: "loss",
    placeholder: "NAME",
    doc: `the task's loss: ${LOSSES.join(", ")}`,
  },
  metrics: {
    kind: { type: "text" },
    default: undefined,
    optional: true,
    flag: "metrics",
    placeholder: "LIST",
    defaultText: "accuracy (mae for regression losses)",
    doc: `metrics evaluation reports, comma-separated: ${BUILTIN_METRICS.join(", ")}`,
  },
  learningRate: {
    kind: { type: "number", min: 0, above: true },
    default: 0.1,
    flag: "lr",
    doc: "client learning rate (the schedule's base)",
  },
  lrSchedule: {
    kind: { type: "text" },
    default: "constant",
    flag: "lr-schedule",
    placeholder: "constant|step:EVERY:GAMMA|cosine[:MIN]",
    doc: "client learning rate over the rounds",
  },
  localEpochs: { kind: int(1), default: 1, flag: "local-epochs", doc: "local epochs E" },
  batchSize: { kind: int(1), default: 10, flag: "batch-size", doc: "local batch size B" },
  roundTimeoutMs: {
    kind: int(1),
    default: 120_000,
    simDefault: 60_000,
    flag: "round-timeout",
    seconds: true,
    placeholder: "SECONDS",
    doc: "deadline of a round",
  },
  maxRoundAttempts: {
    kind: int(1),
    default: 5,
    flag: "max-round-attempts",
    doc: "attempts at a round with too few updates before the run fails",
  },
  codec: {
    kind: { type: "text" },
    default: "float32",
    flag: "codec",
    placeholder: "NAME[:ARG]",
    doc: `how clients encode updates: ${codecDefinitions()
      .map(
        (d) =>
          `${d.name}${d.argument === undefined ? "" : `[:${d.argument.placeholder}]`} (${d.summary})`,
      )
      .join(
        "; ",
      )}. With --secure: float32, or q8/q4/q2 in their linear form (shared scale, b + log₂ n bits a word); README: Update codecs`,
  },
  downlinkCodec: {
    kind: { type: "text" },
    default: "float32",
    flag: "downlink-codec",
    placeholder: "NAME[:ARG]",
    doc:
      "how the coordinator sends the global model: float32 (the full model every round), f16 or q8 " +
      "(from the second round, a client that holds a recent model gets the encoded differences " +
      "with error feedback on the coordinator, when they are smaller than the model; new " +
      "connections get it in full; in secure rounds, in the first SecAgg+ step). README: Update codecs, Downlink",
  },
  secure: {
    kind: { type: "boolean" },
    default: false,
    flag: "secure",
    doc: "secure aggregation (SecAgg+): the coordinator learns only the sum",
  },
  secureNeighbours: {
    kind: int(2),
    default: undefined,
    optional: true,
    flag: "secure-neighbours",
    defaultText: "cohort size − 1",
    doc: "SecAgg+ neighbour degree k",
  },
  secureThreshold: {
    kind: int(2),
    default: undefined,
    optional: true,
    flag: "secure-threshold",
    defaultText: "⌊(k + 1)/2⌋ + 1",
    doc: "SecAgg+ threshold t",
  },
  secureClip: {
    kind: { type: "number", min: 0, above: true },
    default: 1,
    flag: "secure-clip",
    doc: "delta coordinates are clipped to ±clip in secure rounds",
  },
  secureMaxWeight: {
    kind: int(1),
    default: 10_000,
    flag: "secure-max-weight",
    doc: "example counts are capped at this many in secure rounds",
  },
  maxExamplesPerClient: {
    kind: int(1),
    default: 10_000,
    flag: "max-examples-per-client",
    doc: "an update's weight (example count) is capped at this many in plain rounds; capped claims are logged and recorded",
  },
  sampling: {
    kind: { type: "choice", of: ["fixed", "poisson"] },
    default: "fixed",
    flag: "sampling",
    doc: "cohort sampling: a fixed-size sample (C of the clients), or each client with probability C (the privacy accountant's Poisson sampling)",
  },
  dpClip: {
    kind: { type: "number", min: 0 },
    default: 0,
    flag: "dp-clip",
    doc: "DP-FedAvg: clip every update to this L2 norm and add Gaussian noise to the sum (0: off; docs/privacy.md)",
  },
  dpNoise: {
    kind: { type: "number", min: 0 },
    default: undefined,
    optional: true,
    flag: "dp-noise",
    defaultText: "from --dp-target-epsilon",
    doc: "DP-FedAvg noise multiplier z: the sum's noise has standard deviation z·clip",
  },
  dpTargetEpsilon: {
    kind: { type: "number", min: 0, above: true },
    default: undefined,
    optional: true,
    flag: "dp-target-epsilon",
    defaultText: "unset",
    doc: "DP-FedAvg: pick the smallest noise that keeps the planned rounds within this ε",
  },
  dpDelta: {
    kind: { type: "number", min: 0, max: 1, above: true },
    default: 1e-5,
    flag: "dp-delta",
    doc: "δ of the (ε, δ) the accountant reports",
  },
  dpMaxEpsilon: {
    kind: { type: "number", min: 0, above: true },
    default: undefined,
    optional: true,
    flag: "dp-max-epsilon",
    defaultText: "unset",
    doc: "end the run, cleanly, before a round would take ε past this",
  },
  dpPopulation: {
    kind: int(1),
    default: undefined,
    optional: true,
    flag: "dp-population",
    defaultText: "required with --dp-clip (the simulator: its devices)",
    doc: "the population the clients are sampled from, as the accountant counts it",
  },
  dpClipQuantile: {
    kind: { type: "number", min: 0, max: 1 },
    default: undefined,
    optional: true,
    flag: "dp-clip-quantile",
    defaultText: "unset: a fixed clip",
    doc: "adaptive clipping (Andrew et al. 2021): the clip follows this quantile of the update norms, starting at --dp-clip",
  },
  dpClipLearningRate: {
    kind: { type: "number", min: 0, above: true },
    default: 0.2,
    flag: "dp-clip-lr",
    doc: "adaptive clipping: C ← C·exp(−lr·(share within C − quantile)) each round",
  },
  dpCountNoise: {
    kind: { type: "number", min: 0, above: true },
    default: undefined,
    optional: true,
    flag: "dp-count-noise",
    defaultText: "expected cohort / 20",
    doc: "adaptive clipping: the noise on the count of updates within the clip (part of the budget)",
  },
  dpMode: {
    kind: { type: "choice", of: ["central", "distributed"] },
    default: "central",
    flag: "dp-mode",
    doc: "where DP noise is added: by the coordinator on the sum (central), or by the members of secure rounds in the integer domain (distributed, Skellam; needs --secure)",
  },
  dpDropoutTolerance: {
    kind: { type: "number", min: 0, max: 0.9 },
    default: 0.1,
    flag: "dp-dropout-tolerance",
    doc: "distributed DP: the share of a cohort that may drop and the round still release; members size their noise for the rest and refuse to unmask fewer",
  },
  secureStepTimeoutMs: {
    kind: int(1),
    default: 30_000,
    flag: "secure-step-timeout",
    seconds: true,
    placeholder: "SECONDS",
    doc: "deadline of each key phase of a secure round",
  },
  fractionEvaluate: {
    kind: { type: "number", min: 0, max: 1 },
    default: 0,
    flag: "fraction-evaluate",
    doc: "fraction of clients evaluating each new model on their held-out data (0: off)",
  },
  minEvaluateClients: {
    kind: int(1),
    default: 1,
    flag: "min-evaluate-clients",
    doc: "least clients asked to evaluate",
  },
  evaluateEvery: {
    kind: int(1),
    default: 1,
    flag: "evaluate-every",
    doc: "federated evaluation after every this many rounds",
  },
  evaluateTimeoutMs: {
    kind: int(1),
    default: 60_000,
    flag: "evaluate-timeout",
    seconds: true,
    placeholder: "SECONDS",
    doc: "deadline of one client's evaluation",
  },
  seed: {
    kind: int(0, 2 ** 32 - 1),
    default: 0,
    flag: "seed",
    doc: "seed of the initial model, sampling and faults: same seed, same run",
  },
  checkpointEvery: {
    kind: int(0),
    default: 1,
    simDefault: 10,
    flag: "checkpoint-every",
    doc: "checkpoint the model every this many rounds (0: first and last only)",
  },
  mode: {
    kind: { type: "choice", of: ["sync", "async"] },
    default: "sync",
    flag: "mode",
    placeholder: "sync|async",
    doc: "sync: rounds of a sampled cohort; async: FedBuff, clients always training, a new version every --buffer updates (--rounds counts versions)",
  },
  buffer: {
    kind: int(1),
    default: 10,
    flag: "buffer",
    doc: "async mode: updates buffered before the server step makes a version (K)",
  },
  asyncConcurrency: {
    kind: int(1),
    default: 20,
    flag: "async-concurrency",
    doc: "async mode: clients kept training at all times (C)",
  },
  maxStaleness: {
    kind: int(0),
    default: 20,
    flag: "max-staleness",
    doc: "async mode: an update trained on a version more than this many versions old is refused (STALE_UPDATE)",
  },
  stalenessExponent: {
    kind: { type: "number", min: 0, max: 8 },
    default: 0.5,
    flag: "staleness-exponent",
    doc: "async mode: the delta of an update s versions stale is scaled by (1 + s)^-a (0.5: 1/√(1+s); 0: no discount)",
  },
  promoteThreshold: {
    kind: { type: "number", min: 0 },
    default: undefined,
    optional: true,
    flag: "promote-threshold",
    defaultText: "off: every version is promoted",
    doc: "promote a version when its evaluation (accuracy, else loss) is at most this much worse than the promoted one's",
  },
  rollbackDrop: {
    kind: { type: "number", min: 0, above: true },
    default: undefined,
    optional: true,
    flag: "rollback-drop",
    defaultText: "off",
    doc: "a version this much worse than the promoted one (or with a non-finite loss) is rejected and training rolls back to the promoted version",
  },
  canaryFraction: {
    kind: { type: "number", min: 0, max: 1 },
    default: 0,
    flag: "canary-fraction",
    doc: "evaluate each candidate version on this fraction of clients (federated, their held-out data) before promotion; 0: the centralised evaluation decides",
  },
  keepVersions: {
    kind: int(1),
    default: 5,
    flag: "keep-versions",
    doc: "weights kept of this many recent versions beside the promoted and the latest (the index keeps every version)",
  },
};

const KEYS = Object.keys(SHARED_OPTIONS) as SharedKey[];

/** The shared options' defaults for the coordinator or the simulator. */
export function sharedDefaults(target: "coordinator" | "simulator"): SharedOptions {
  const out: Record<string, unknown> = {};
  for (const key of KEYS) {
    const spec = SHARED_OPTIONS[key] as OptionSpec<unknown>;
    out[key] = target === "simulator" && "simDefault" in spec ? spec.simDefault : spec.default;
  }
  return out as unknown as SharedOptions;
}

/** Check every shared option of `o`; `INVALID_OPTION` names the first bad one. */
export function checkShared(o: Record<string, unknown>): void {
  for (const key of KEYS) {
    const spec = SHARED_OPTIONS[key] as OptionSpec<unknown>;
    const v = o[key];
    if (v === undefined && spec.optional) continue;
    const bad = (what: string): never => {
      throw new CohortError(
        "INVALID_OPTION",
        `${key} must be ${what}, got ${JSON.stringify(v) ?? "undefined"}`,
      );
    };
    const k = spec.kind;
    switch (k.type) {
      case "int": {
        const max = k.max ?? Number.MAX_SAFE_INTEGER;
        if (typeof v !== "number" || !Number.isInteger(v) || v < k.min || v > max) {
          bad(`an integer in [${k.min}, ${max}]`);
        }
        break;
      }
      case "number": {
        const range = `${k.above ? "(" : "["}${k.min}, ${k.max ?? "∞"}${k.max === undefined ? ")" : "]"}`;
        if (
          typeof v !== "number" ||
          !Number.isFinite(v) ||
          (k.above ? v <= k.min : v < k.min) ||
          (k.max !== undefined && v > k.max)
        ) {
          bad(`a number in ${range}`);
        }
        break;
      }
      case "boolean":
        if (typeof v !== "boolean") bad("true or false");
        break;
      case "choice":
        if (typeof v !== "string" || !k.of.includes(v)) bad(`one of ${k.of.join(", ")}`);
        break;
      case "text":
        if (typeof v !== "string" && (typeof v !== "object" || v === null)) bad("a string");
        break;
      default: {
        const exhaustive: never = k;
        throw new CohortError("INTERNAL", `unknown option kind ${JSON.stringify(exhaustive)}`);
      }
    }
  }
}

/** A flag spec, as the CLI's parser takes it. */
export interface SharedFlag {
  type: "string" | "number" | "boolean";
  description: string;
  default?: string | number | boolean;
  defaultText?: string;
  placeholder?: string;
}

/** The shared options as CLI flags, with the target's defaults (seconds where the flag says so). */
export function sharedFlags(target: "coordinator" | "simulator"): Record<string, SharedFlag> {
  const defaults = sharedDefaults(target) as unknown as Record<string, unknown>;
  const flags: Record<string, SharedFlag> = {};
  for (const key of KEYS) {
    const spec = SHARED_OPTIONS[key] as OptionSpec<unknown>;
    const d = defaults[key];
    const type =
      spec.kind.type === "int" || spec.kind.type === "number"
        ? "number"
        : spec.kind.type === "boolean"
          ? "boolean"
          : "string";
    flags[spec.flag] = {
      type,
      description: spec.doc,
      ...(d === undefined
        ? {}
        : { default: (spec.seconds ? (d as number) / 1000 : d) as string | number | boolean }),
      ...(spec.defaultText === undefined ? {} : { defaultText: spec.defaultText }),
      ...(spec.placeholder === undefined ? {} : { placeholder: spec.placeholder }),
    };
  }
  return flags;
}

/** Shared options from parsed flags: every flag for which `take(flag)` holds, seconds made ms. */
export function sharedFromFlags(
  values: Record<string, unknown>,
  take: (flag: string) => boolean = () => true,
): Partial<SharedOptions> {
  const out: Record<string, unknown> = {};
  for (const key of KEYS) {
    const spec = SHARED_OPTIONS[key] as OptionSpec<unknown>;
    const v = values[spec.flag];
    if (v === undefined || !take(spec.flag)) continue;
    out[key] = spec.seconds ? Math.round((v as number) * 1000) : v;
  }
  return out as Partial<SharedOptions>;
}

/** The shared options of a (simulation) config, to pass to the coordinator. */
export function pickShared(o: SharedOptions): SharedOptions {
  const out: Record<string, unknown> = {};
  for (const key of KEYS) out[key] = o[key];
  return out as unknown as SharedOptions;
}
