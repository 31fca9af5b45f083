/** Coordinator options: every default documented here and merged once; the round options come from `option-schema.ts`. */
import type * as tf from "@tensorflow/tfjs";
import type { Dataset } from "../protocol/dataset.js";
import { CohortError } from "../protocol/errors.js";
import { withDefaults } from "../protocol/options.js";
import type { AuthOptions } from "./auth.js";
import type { OptimizerName } from "../protocol/messages.js";
import { checkShared, sharedDefaults } from "./option-schema.js";
import { checkStrategy, type Strategy, type StrategyRef } from "../aggregation/strategy.js";
import { resolveStrategy } from "../aggregation/strategies/index.js";
import { checkCodec, resolveCodec, type CodecRef } from "../aggregation/codecs/index.js";
import { resolveDownlinkCodec } from "../aggregation/downlink.js";
import { resolvePrivacy } from "./privacy.js";
import {
  parseSchedule,
  scheduledRate,
  type LearningRateSchedule,
} from "../aggregation/schedule.js";
import { parseRoundConfig } from "../protocol/guards.js";
import type { RoundConfig, Scalar } from "../protocol/messages.js";
import { checkMetrics, defaultMetrics, parseMetricList, type LossName } from "../protocol/task.js";
import type { MetricFn, Objective } from "../models/task.js";

/** A metric of the task: a built-in name, or your own function under a name. */
export type MetricSpec = string | { name: string; fn: MetricFn };

/** Options of `createCoordinator`. */
export interface CoordinatorOptions {
  /** TCP port; 0 picks a free one. @default 0 */
  port: number;
  /** Interface to listen on. @default "0.0.0.0" */
  host: string;
  /**
   * A built-in model (`mlp`, `mlp:H1,H2,…`, `cnn`, `logreg`, `char-lstm`; sized from
   * `evalDataset` when given), a path to a tfjs layers `model.json`, or a `tf.LayersModel` in
   * memory (its topology and current weights). @default "mlp"
   */
  model: string | tf.LayersModel;
  /** Number of rounds to run. @default 10 */
  rounds: number;
  /** Connected clients needed before a round starts. @default 2 */
  minAvailableClients: number;
  /** Fraction C of connected clients sampled each round. @default 1.0 */
  fractionFit: number;
  /** Least clients sampled each round, and least results a round needs to complete. @default 2 */
  minFitClients: number;
  /** Local optimizer of the clients. @default "sgd" */
  optimizer: OptimizerName;
  /**
   * The task's loss, which clients train with and every evaluation reports (labels, model
   * output and loss are checked against each other). @default "sparse-categorical-crossentropy"
   */
  loss: LossName;
  /**
   * What evaluation reports besides the loss: built-in names (`accuracy`, `binary-accuracy`,
   * `auc`, `mae`, `mse`), comma-separated or as a list, which may hold your own metrics as
   * `{ name, fn }` (central evaluation runs them; clients run those they were given too).
   * @default ["accuracy"] for classification losses, ["mae"] for regression losses
   */
  metrics: string | readonly MetricSpec[] | undefined;
  /** Client learning rate η. @default 0.1 */
  learningRate: number;
  /**
   * How the client learning rate changes over the rounds: `"constant"`, `"step:EVERY:GAMMA"`
   * (× GAMMA every EVERY rounds), `"cosine:MIN"` (cosine decay to MIN at the last round), or
   * the same as an object (`{ name: "step", every: 10, gamma: 0.5 }`). @default "constant"
   */
  lrSchedule: string | LearningRateSchedule;
  /** Your own keys for the clients' round configuration (`request.config.extra`). @default {} */
  fitConfig: Record<string, Scalar>;
  /** Local epochs E. @default 1 */
  localEpochs: number;
  /** Local batch size B. @default 10 */
  batchSize: number;
  /**
   * The strategy: a registered name, `{ name, params }` (e.g.
   * `{ name: "fedadam", params: { serverLearningRate: 0.01 } }`), or your own `Strategy` object.
   * Strategies that need every update in the clear are refused with `secure`. @default "fedavg"
   */
  strategy: string | StrategyRef | Strategy;
  /** Deadline of one round, from broadcast to the last accepted update. @default 120000 */
  roundTimeoutMs: number;
  /** Attempts at one round (too few results, or no clients) before the run fails. @default 5 */
  maxRoundAttempts: number;
  /** Largest update payload accepted from a client, in bytes. @default 67108864 (64 MiB) */
  maxUploadBytes: number;
  /**
   * How clients encode their updates: a registered codec as `NAME[:ARG]` (`"q8"`,
   * `"topk:0.01"`) or `{ name, params }`. Non-linear codecs (all but float32) are refused with
   * `secure`. README: Update codecs. @default "float32" (today's wire format)
   */
  codec: string | CodecRef;
  /**
   * How the coordinator sends the global model: `"float32"` (the full model each round, as it
   * always was), `"f16"` or `"q8"` (encoded differences of the model clients hold, error
   * feedback on the coordinator; full models to new connections). Refused with `secure`.
   * README: Update codecs, Downlink. @default "float32"
   */
  downlinkCodec: string | CodecRef;
  /** Run every round through secure aggregation (SecAgg+): the coordinator sees only the sum. @default false */
  secure: boolean;
  /** SecAgg+ neighbour degree k; n − 1 is the original SecAgg. @default n − 1 */
  secureNeighbours: number | undefined;
  /** SecAgg+ threshold t (shares needed to unmask). @default ⌊(k + 1)/2⌋ + 1 */
  secureThreshold: number | undefined;
  /** Delta coordinates are clipped to ±clip before fixed-point encoding. @default 1 */
  secureClip: number;
  /** FedAvg weights (example counts) are capped at this many in secure rounds. @default 10000 */
  secureMaxWeight: number;
  /**
   * An update's FedAvg weight is capped at this many examples, whatever it claims (secure
   * rounds cap at `secureMaxWeight`); capped claims are logged and recorded in the metrics.
   * @default 10000
   */
  maxExamplesPerClient: number;
  /**
   * How each round's cohort is drawn: `"fixed"` samples C of the available clients (at least
   * `minFitClients`); `"poisson"` takes each available client with probability C, as the
   * privacy accountant assumes. @default "fixed"
   */
  sampling: "fixed" | "poisson";
  /**
   * DP-FedAvg (docs/privacy.md): clip every update to this L2 norm, add Gaussian noise of
   * standard deviation `dpNoise`·clip to the sum, and average over the expected cohort size.
   * @default 0 (off)
   */
  dpClip: number;
  /** The noise multiplier z. @default derived from `dpTargetEpsilon` */
  dpNoise: number | undefined;
  /** Pick the smallest z that keeps the planned rounds within this ε. @default undefined */
  dpTargetEpsilon: number | undefined;
  /** δ of the reported (ε, δ). @default 1e-5 */
  dpDelta: number;
  /** End the run before a round would take ε past this. @default undefined (no limit) */
  dpMaxEpsilon: number | undefined;
  /** The population N clients are sampled from (the accountant's q = cohort / N). Required with DP. @default undefined */
  dpPopulation: number | undefined;
  /**
   * Adaptive clipping (Andrew et al. 2021): the clip follows this quantile of the update norms,
   * starting at `dpClip`. @default undefined (a fixed clip)
   */
  dpClipQuantile: number | undefined;
  /** Adaptive clipping's learning rate η_C. @default 0.2 */
  dpClipLearningRate: number;
  /** Adaptive clipping: noise on the count within the clip. @default expected cohort / 20 */
  dpCountNoise: number | undefined;
  /**
   * Where the noise is added: `"central"` by the coordinator on the sum (a trusted coordinator);
   * `"distributed"` by the members of secure rounds, as Skellam noise in the integer domain of
   * the encoding, so the coordinator never sees a noiseless sum. @default "central"
   */
  dpMode: "central" | "distributed";
  /**
   * Distributed noise: the share of a secure round's cohort that may drop out and the round
   * still release; members size their noise for the rest and refuse to unmask fewer. @default 0.1
   */
  dpDropoutTolerance: number;
  /** Deadline of each key phase of a secure round; the masked-input phase uses `roundTimeoutMs`. @default 30000 */
  secureStepTimeoutMs: number;
  /**
   * Continue the crashed run in this directory from its ledger (same model and seed required):
   * the next round is the first one the ledger does not hold. @default undefined
   */
  resume: string | undefined;
  /**
   * Client authentication: admit only listed Ed25519 keys or holders of a join token, and
   * require every update to be signed. @default undefined (open: any client may join)
   */
  auth: Partial<AuthOptions> | undefined;
  /**
   * 64-byte Ed25519 secret key that signs every model broadcast (clients verify before
   * training; they can pin its public key). @default a fresh key per start
   */
  signingKey: Uint8Array | undefined;
  /** Serve https and wss with this PEM certificate and key. @default undefined (plain http) */
  tls: { cert: string | Uint8Array; key: string | Uint8Array } | undefined;
  /** Messages a client may send per second (sustained, and at once); beyond: RATE_LIMITED. @default { perSecond: 20, burst: 50 } */
  rateLimit: { perSecond: number; burst: number } | null;
  /**
   * Bearer token the data routes (`/api/*`, `/metrics`, `/data/*`) require as
   * `Authorization: Bearer TOKEN`: at least 16 visible ASCII characters. The pages and static
   * files stay public (the dashboard asks for the token); it never reaches a log or `run.json`.
   * Client joins are `auth`'s business, not this token's. @default undefined (open)
   */
  apiToken: string | undefined;
  /**
   * Origins (`https://ops.example.com`) whose pages may read the data routes: they get
   * `Access-Control-Allow-Origin` and answered preflights. The socket.io endpoint keeps its
   * own CORS. @default [] (no CORS headers on the data routes)
   */
  corsOrigins: string[];
  /**
   * Serve shards of the bundled MNIST digits at `/data/mnist-shard` for the demo client page;
   * off, the route answers 404. @default false
   */
  serveDemoData: boolean;
  /** A connection must send a request's complete headers within this time, or is cut (408). @default 10000 */
  headersTimeoutMs: number;
  /**
   * A connection must send a whole request (headers and body, e.g. a socket.io polling upload)
   * within this time, or is cut; websockets, once upgraded, are not bound. @default 30000
   */
  requestTimeoutMs: number;
  /** Open connections one remote address may hold; more are closed at once. @default 1024 */
  maxConnectionsPerAddress: number;
  /** Seed of the initial weights and of cohort sampling. @default 0 */
  seed: number;
  /**
   * Fraction of connected clients asked to evaluate the global model on their own held-out
   * data after a round (federated evaluation); 0 turns it off. @default 0
   */
  fractionEvaluate: number;
  /** Least clients asked to evaluate (when that many are connected). @default 1 */
  minEvaluateClients: number;
  /** Evaluate on clients after every this many rounds. @default 1 */
  evaluateEvery: number;
  /** Deadline of one client's evaluation. @default 60000 */
  evaluateTimeoutMs: number;
  /** Held-out set for centralised evaluation after each round. @default undefined (none) */
  evalDataset: Dataset | undefined;
  /** Run directory for metrics and checkpoints; `null` keeps nothing on disk. @default "runs/<timestamp>" */
  runDir: string | null;
  /**
   * Checkpoint the global model every this many rounds (and always the initial and the last
   * model); 0 keeps only those two. @default 1
   */
  checkpointEvery: number;
  /**
   * `sync`: rounds of a sampled cohort. `async`: FedBuff (Nguyen et al. 2022): `asyncConcurrency`
   * clients train at all times on the newest version, each update's delta scaled by its
   * staleness, and every `buffer` updates the server step makes a version; `rounds` counts
   * versions.
   * @default "sync"
   */
  mode: "sync" | "async";
  /** Async mode: updates per server step (K). @default 10 */
  buffer: number;
  /** Async mode: clients kept training (C). @default 20 */
  asyncConcurrency: number;
  /** Async mode: updates more versions stale than this are refused (`STALE_UPDATE`). @default 20 */
  maxStaleness: number;
  /** Async mode: the delta of an update s versions stale is scaled by (1 + s)^-a. @default 0.5 */
  stalenessExponent: number;
  /**
   * Promote a version when its score (accuracy where the task has one, else −loss) is at most
   * this much below the promoted version's. @default undefined (every version is promoted)
   */
  promoteThreshold: number | undefined;
  /**
   * Reject a version whose score is more than this below the promoted one's, or whose loss is
   * not finite, and roll training back to the promoted version. @default undefined (off)
   */
  rollbackDrop: number | undefined;
  /**
   * Evaluate each candidate on this fraction of connected clients (federated, on their
   * held-out data) before deciding; 0: the centralised evaluation decides. @default 0
   */
  canaryFraction: number;
  /** Weights kept of this many recent versions beside the promoted and the latest. @default 5 */
  keepVersions: number;
  /**
   * Where progress lines go: the URL it listens on, the run, one line per round, notes and
   * rejected updates. `() => {}` silences them; `createDebug("cohort:coordinator")` hands them
   * to `DEBUG`. @default standard output (`console.log`), as the CLI prints them
   */
  log: (line: string) => void;
}

/** Merge user options over the defaults and validate them. */
export function resolveOptions(
  options: Partial<CoordinatorOptions>,
  defaultLog: (line: string) => void,
): CoordinatorOptions {
  const o = withDefaults<CoordinatorOptions>(
    {
      ...sharedDefaults("coordinator"),
      port: 0,
      host: "0.0.0.0",
      minAvailableClients: 2,
      fitConfig: {},
      strategy: "fedavg",
      maxUploadBytes: 64 * 1024 * 1024,
      resume: undefined,
      auth: undefined,
      signingKey: undefined,
      rateLimit: { perSecond: 20, burst: 50 },
      tls: undefined,
      apiToken: undefined,
      corsOrigins: [],
      serveDemoData: false,
      headersTimeoutMs: 10_000,
      requestTimeoutMs: 30_000,
      maxConnectionsPerAddress: 1024,
      evalDataset: undefined,
      runDir: `runs/${new Date().toISOString().replace(/[:.]/g, "-")}`,
      log: defaultLog,
    },
    options,
  );
  checkShared(o as unknown as Record<string, unknown>);
  const int = (key: keyof CoordinatorOptions, min: number, max = Number.MAX_SAFE_INTEGER) => {
    const v = o[key];
    if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max) {
      throw new CohortError(
        "INVALID_OPTION",
        `${key} must be an integer in [${min}, ${max}], got ${String(v)}`,
      );
    }
  };
  int("port", 0, 65535);
  int("minAvailableClients", 1);
  int("maxUploadBytes", 1024);
  // Node checks the timeouts every min(1 s, headersTimeoutMs): below 100 ms that is a busy loop.
  int("headersTimeoutMs", 100);
  int("requestTimeoutMs", 100);
  int("maxConnectionsPerAddress", 1);
  if (o.headersTimeoutMs > o.requestTimeoutMs) {
    // Node refuses the pair: the headers are part of the request.
    throw new CohortError(
      "INVALID_OPTION",
      `headersTimeoutMs (${o.headersTimeoutMs}) cannot exceed requestTimeoutMs (${o.requestTimeoutMs})`,
    );
  }
  if (o.apiToken !== undefined) checkApiToken(o.apiToken, "apiToken");
  if (typeof o.serveDemoData !== "boolean") {
    throw new CohortError("INVALID_OPTION", `serveDemoData must be true or false`);
  }
  o.corsOrigins = checkOrigins(o.corsOrigins);
  if (o.minFitClients > o.minAvailableClients) {
    throw new CohortError(
      "INVALID_OPTION",
      `minFitClients (${o.minFitClients}) cannot exceed minAvailableClients (${o.minAvailableClients})`,
    );
  }
  const strategy = resolveStrategy(o.strategy);
  checkStrategy(strategy, o);
  checkCodec(resolveCodec(o.codec), { secure: o.secure, dp: o.dpClip > 0 });
  resolveDownlinkCodec(o.downlinkCodec);
  if (o.mode === "async") checkAsync(o);
  // DP settings that make no sense are refused here, before any client joins.
  resolvePrivacy(o, strategy);
  o.lrSchedule = parseSchedule(o.lrSchedule, o.learningRate);
  objectiveOf(o);
  parseRoundConfig({ ...baseRoundConfig(o, 1), extra: o.fitConfig });
  return o;
}

/** Refuse, at start, what asynchronous rounds cannot do. */
function checkAsync(opts: CoordinatorOptions): void {
  if (opts.secure) {
    throw new CohortError(
      "INVALID_OPTION",
      "mode async with secure: SecAgg+ masks a cohort fixed before training, while a FedBuff buffer is whoever arrives first; use mode sync for secure rounds",
    );
  }
  if (opts.dpClip > 0) {
    throw new CohortError(
      "INVALID_OPTION",
      "mode async with differential privacy: the accountant counts sampled rounds, not buffers of arrivals; use mode sync",
    );
  }
}

/** Shortest API token accepted: a floor against tokens short enough to guess over the network. */
const MIN_API_TOKEN_LENGTH = 16;

/**
 * Refuse an API token that is too short or not a header-safe word (`INVALID_OPTION`, naming
 * `source`: the option or the flag and file it came from). The token itself is never echoed.
 */
export function checkApiToken(token: unknown, source: string): void {
  if (typeof token !== "string" || token.length === 0) {
    throw new CohortError("INVALID_OPTION", `${source}: the API token is empty`);
  }
  if (token.length < MIN_API_TOKEN_LENGTH) {
    throw new CohortError(
      "INVALID_OPTION",
      `${source}: the API token has ${token.length} characters; it needs at least ${MIN_API_TOKEN_LENGTH}`,
    );
  }
  if (!/^[\x21-\x7e]+$/.test(token)) {
    throw new CohortError(
      "INVALID_OPTION",
      `${source}: the API token must be visible ASCII without spaces (it travels in a header)`,
    );
  }
}

/** Each CORS origin exactly as browsers send it (`scheme://host[:port]`, no path). */
function checkOrigins(origins: unknown): string[] {
  if (!Array.isArray(origins)) {
    throw new CohortError("INVALID_OPTION", "corsOrigins must be an array of origins");
  }
  return origins.map((origin: unknown) => {
    let parsed: string | null = null;
    try {
      parsed = typeof origin === "string" ? new URL(origin).origin : null;
    } catch {
      parsed = null;
    }
    if (parsed === null || parsed === "null" || parsed !== origin) {
      throw new CohortError(
        "INVALID_OPTION",
        `corsOrigins: ${JSON.stringify(origin)} is not an origin` +
          (parsed !== null && parsed !== "null"
            ? `; did you mean ${parsed}?`
            : " (scheme://host[:port])"),
      );
    }
    return parsed;
  });
}

/** A round's configuration before the strategy adjusts it: the options, on the schedule. */
export function baseRoundConfig(o: CoordinatorOptions, round: number): RoundConfig {
  return {
    learningRate: scheduledRate(
      o.learningRate,
      parseSchedule(o.lrSchedule, o.learningRate),
      round,
      o.rounds,
    ),
    localEpochs: o.localEpochs,
    batchSize: o.batchSize,
    proximalMu: 0,
    extra: { ...o.fitConfig },
  };
}

/**
 * The task's loss and metrics from the options: names checked against the loss, functions
 * kept by name. @throws CohortError `INVALID_OPTION` naming the metric.
 */
export function objectiveOf(o: Pick<CoordinatorOptions, "loss" | "metrics">): Objective {
  const given = o.metrics;
  const list: readonly MetricSpec[] =
    given === undefined
      ? defaultMetrics(o.loss)
      : typeof given === "string"
        ? parseMetricList(given)
        : given;
  if (!Array.isArray(list)) {
    throw new CohortError("INVALID_OPTION", "metrics must be a comma-separated string or a list");
  }
  const custom: Record<string, MetricFn> = {};
  const names = list.map((m: unknown) => {
    if (typeof m === "string") return m;
    const spec = m as { name?: unknown; fn?: unknown } | null;
    if (typeof spec?.name !== "string" || typeof spec.fn !== "function") {
      throw new CohortError("INVALID_OPTION", "a metric must be a name or { name, fn }");
    }
    custom[spec.name] = spec.fn as MetricFn;
    return spec.name;
  });
  return { loss: o.loss, metrics: checkMetrics(o.loss, names, Object.keys(custom)), custom };
}
