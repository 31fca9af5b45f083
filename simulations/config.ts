/** Simulation configuration: JSON files and flags, with every default documented and merged once. */
import { CohortError } from "../protocol/errors.js";
import { withDefaults } from "../protocol/options.js";
import { OPTIMIZERS, type OptimizerName } from "../protocol/messages.js";
import { checkFaults, NO_FAULTS, type FaultConfig } from "./faults.js";
import { parsePartitionSpec } from "./partition.js";
import type { Strategy, StrategyRef } from "../aggregation/strategy.js";
import { parseSchedule, type LearningRateSchedule } from "../aggregation/schedule.js";
import type { Scalar } from "../protocol/messages.js";
import type { AttackConfig } from "./attacks.js";
import { resolveStrategy } from "../aggregation/strategies/index.js";

/** Everything a simulation needs. */
export interface SimulationConfig {
  /** Shown in logs and plots. @default "simulation" */
  name: string;
  /** Population size N. @default 100 */
  devices: number;
  /** Fraction C of the population sampled per round. @default 0.1 */
  fractionFit: number;
  /** Least devices sampled, and least updates a round needs. @default 1 */
  minFitClients: number;
  /** @default 10 */
  rounds: number;
  /** `mlp`, `cnn` or a tfjs `model.json`. @default "mlp" */
  model: string;
  /** `mnist`, `fashion-mnist` or `idx:DIR`; devices draw from its train split. @default "mnist" */
  dataset: string;
  /** `iid`, `shards[:K]` (McMahan's pathological non-IID, K = 2) or `dirichlet:α`. @default "iid" */
  partition: string;
  /** Examples per device. @default train size / devices (at least 1) */
  examplesPerDevice: number | undefined;
  /** @default 1 */
  localEpochs: number;
  /** @default 10 */
  batchSize: number;
  /** @default 0.1 */
  learningRate: number;
  /** @default "sgd" */
  optimizer: OptimizerName;
  /** Client learning rate over the rounds: `constant`, `step:EVERY:GAMMA`, `cosine[:MIN]`. @default "constant" */
  lrSchedule: string | LearningRateSchedule;
  /** Your own keys for the devices' round configuration. @default {} */
  fitConfig: Record<string, Scalar>;
  /** Evaluate on the first N test examples. @default the whole test split */
  evalSize: number | undefined;
  /** The strategy: a registered name or `{ name, params }` (see the README's Strategies). @default "fedavg" */
  strategy: string | StrategyRef | Strategy;
  /** Run rounds through secure aggregation. @default false */
  secure: boolean;
  /** SecAgg+ neighbour degree k. @default cohort size − 1 */
  secureNeighbours: number | undefined;
  /** SecAgg+ threshold t. @default ⌊(k + 1)/2⌋ + 1 */
  secureThreshold: number | undefined;
  /** Delta coordinates are clipped to ±clip in secure rounds. @default 1 */
  secureClip: number;
  /** Example counts are capped at this many in secure rounds. @default 10000 */
  secureMaxWeight: number;
  /** Share of every device's data held out for federated evaluation (not trained on). @default 0 */
  evalFraction: number;
  /** Fraction of the devices asked to evaluate the global model after a round; 0: none. @default 0 */
  fractionEvaluate: number;
  /** Least devices asked to evaluate. @default 1 */
  minEvaluateClients: number;
  /** Evaluate on devices after every this many rounds. @default 1 */
  evaluateEvery: number;
  /**
   * Simulated attackers (plain rounds only): `{ devices, kind: "sign-flip" | "little-is-enough",
   * scale }`. @default null (none)
   */
  attack: AttackConfig | null;
  /**
   * Share of the devices (a fixed, seeded set) that each round do only a random fraction
   * U(0, 1] of their local work (FedProx's systems heterogeneity). @default 0
   */
  partialWork: number;
  /** Fault injection. @default none */
  faults: FaultConfig;
  /** Round deadline; simulated stragglers beyond it miss the round. @default 60000 */
  roundTimeoutMs: number;
  /** `in-process` (fast) or `socket` (real socket.io on loopback, one client per device). @default "in-process" */
  transport: "in-process" | "socket";
  /**
   * Worker threads that train devices in parallel (each with its own wasm backend); 0 trains in
   * this thread on the selected backend. @default 0
   */
  workers: number;
  /** Devices trained at once in this process (on a GPU they share the device). @default 1 */
  concurrency: number;
  /** tfjs backend of the training. @default "auto" */
  backend: string;
  /** Accuracy targets reported in `summary.json` as rounds-to-target. @default [0.9, 0.95, 0.97, 0.99] */
  targets: number[];
  /** Epochs of a centralised baseline on the pooled device data; 0 skips it. @default 1 */
  baselineEpochs: number;
  /** Checkpoint the global model every this many rounds (and the first and last). @default 10 */
  checkpointEvery: number;
  /** @default 0 */
  seed: number;
  /** @default "runs/<name>-<timestamp>" */
  runDir: string | undefined;
}

const DEFAULTS: SimulationConfig = {
  name: "simulation",
  devices: 100,
  fractionFit: 0.1,
  minFitClients: 1,
  rounds: 10,
  model: "mlp",
  dataset: "mnist",
  partition: "iid",
  examplesPerDevice: undefined,
  localEpochs: 1,
  batchSize: 10,
  learningRate: 0.1,
  optimizer: "sgd",
  lrSchedule: "constant",
  fitConfig: {},
  evalSize: undefined,
  strategy: "fedavg",
  secure: false,
  secureNeighbours: undefined,
  secureThreshold: undefined,
  secureClip: 1,
  secureMaxWeight: 10_000,
  evalFraction: 0,
  fractionEvaluate: 0,
  minEvaluateClients: 1,
  evaluateEvery: 1,
  attack: null,
  partialWork: 0,
  faults: NO_FAULTS,
  roundTimeoutMs: 60_000,
  transport: "in-process",
  workers: 0,
  concurrency: 1,
  backend: "auto",
  targets: [0.9, 0.95, 0.97, 0.99],
  baselineEpochs: 1,
  checkpointEvery: 10,
  seed: 0,
  runDir: undefined,
};

const KEYS = new Set(Object.keys(DEFAULTS));

/** Merge a (parsed JSON) config over the defaults and validate it; unknown keys are errors. */
export function resolveSimulationConfig(raw: unknown): SimulationConfig {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    throw new CohortError("INVALID_OPTION", "a simulation config must be a JSON object");
  }
  const unknown = Object.keys(raw).filter((k) => !KEYS.has(k) && k !== "$comment");
  if (unknown.length > 0) {
    throw new CohortError(
      "INVALID_OPTION",
      `unknown config keys: ${unknown.join(", ")}; known: ${[...KEYS].join(", ")}`,
    );
  }
  const partial = raw as Partial<SimulationConfig>;
  const c = withDefaults(DEFAULTS, {
    ...partial,
    faults: withDefaults(NO_FAULTS, partial.faults ?? {}),
  });
  const int = (key: keyof SimulationConfig, min: number) => {
    const v = c[key];
    if (typeof v !== "number" || !Number.isInteger(v) || v < min) {
      throw new CohortError(
        "INVALID_OPTION",
        `${key} must be an integer ≥ ${min}, got ${String(v)}`,
      );
    }
  };
  int("devices", 1);
  int("minFitClients", 1);
  int("rounds", 1);
  int("localEpochs", 1);
  int("batchSize", 1);
  int("roundTimeoutMs", 1);
  int("baselineEpochs", 0);
  int("seed", 0);
  int("concurrency", 1);
  int("workers", 0);
  int("checkpointEvery", 0);
  int("minEvaluateClients", 1);
  int("evaluateEvery", 1);
  if (!(c.evalFraction >= 0 && c.evalFraction < 1)) {
    throw new CohortError(
      "INVALID_OPTION",
      `evalFraction must be in [0, 1), got ${c.evalFraction}`,
    );
  }
  if (!(c.fractionEvaluate >= 0 && c.fractionEvaluate <= 1)) {
    throw new CohortError(
      "INVALID_OPTION",
      `fractionEvaluate must be in [0, 1], got ${c.fractionEvaluate}`,
    );
  }
  if (c.fractionEvaluate > 0 && c.evalFraction === 0) {
    throw new CohortError(
      "INVALID_OPTION",
      "fractionEvaluate needs held-out device data: set evalFraction (e.g. 0.1) too",
    );
  }
  if (!(c.partialWork >= 0 && c.partialWork <= 1)) {
    throw new CohortError("INVALID_OPTION", `partialWork must be in [0, 1], got ${c.partialWork}`);
  }
  if (c.attack !== null) {
    const a = withDefaults<AttackConfig>({ devices: 1, kind: "sign-flip", scale: 10 }, c.attack);
    if (!Number.isInteger(a.devices) || a.devices < 1 || a.devices >= c.devices) {
      throw new CohortError(
        "INVALID_OPTION",
        `attack.devices must be an integer in [1, ${c.devices})`,
      );
    }
    if (a.kind !== "sign-flip" && a.kind !== "little-is-enough") {
      throw new CohortError("INVALID_OPTION", `attack.kind must be sign-flip or little-is-enough`);
    }
    if (!(a.scale > 0)) throw new CohortError("INVALID_OPTION", "attack.scale must be > 0");
    if (c.secure) {
      throw new CohortError(
        "INVALID_OPTION",
        "simulated attackers need plain rounds (secure is on)",
      );
    }
    c.attack = a;
  }
  if (c.examplesPerDevice !== undefined) int("examplesPerDevice", 1);
  if (c.evalSize !== undefined) int("evalSize", 1);
  if (!(c.fractionFit > 0 && c.fractionFit <= 1)) {
    throw new CohortError("INVALID_OPTION", `fractionFit must be in (0, 1], got ${c.fractionFit}`);
  }
  if (!(c.learningRate > 0)) throw new CohortError("INVALID_OPTION", `learningRate must be > 0`);
  if (!OPTIMIZERS.includes(c.optimizer))
    throw new CohortError("INVALID_OPTION", `optimizer must be sgd or adam`);
  if (c.transport !== "in-process" && c.transport !== "socket") {
    throw new CohortError(
      "INVALID_OPTION",
      `transport must be in-process or socket, got ${String(c.transport)}`,
    );
  }
  if (!Array.isArray(c.targets) || !c.targets.every((t) => t > 0 && t <= 1)) {
    throw new CohortError("INVALID_OPTION", "targets must be accuracies in (0, 1]");
  }
  parsePartitionSpec(c.partition);
  resolveStrategy(c.strategy);
  parseSchedule(c.lrSchedule, c.learningRate);
  checkFaults(c.faults);
  return c;
}
