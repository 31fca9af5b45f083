/**
 * Simulation configuration: JSON files and flags, with every default documented and merged
 * once. The round options (rounds, C, E, B, learning rate and schedule, the SecAgg+ knobs,
 * federated evaluation, seed, …) are the coordinator's own, from `coordinator/option-schema.ts`;
 * only their defaults differ where a simulation wants other ones (C = 0.1, 1 device minimum,
 * a 60 s deadline, a checkpoint every 10 rounds).
 */
import { CohortError } from "../protocol/errors.js";
import { withDefaults } from "../protocol/options.js";
import { checkFaults, NO_FAULTS, type FaultConfig } from "./faults.js";
import { parsePartitionSpec } from "./partition.js";
import type { Strategy, StrategyRef } from "../aggregation/strategy.js";
import { parseSchedule } from "../aggregation/schedule.js";
import type { Scalar } from "../protocol/messages.js";
import type { AttackConfig } from "./attacks.js";
import { checkDeviceSpeed, type DeviceSpeed } from "./speeds.js";
import type { Dataset } from "../protocol/dataset.js";
import { modelName } from "../models/model-file.js";
import { objectiveOf } from "../coordinator/options.js";
import { resolveStrategy } from "../aggregation/strategies/index.js";
import { checkCodec, resolveCodec } from "../aggregation/codecs/index.js";
import { resolveDownlinkCodec } from "../aggregation/downlink.js";
import { checkShared, sharedDefaults, type SharedOptions } from "../coordinator/option-schema.js";

/** Everything a simulation needs: the shared round options, and the simulation's own. */
export interface SimulationConfig extends SharedOptions {
  /** Shown in logs and plots. @default "simulation" */
  name: string;
  /**
   * Population size N. With the `groups` partition it is the number of distinct groups (leave
   * it unset; another number is an `INVALID_OPTION`). @default 100
   */
  devices: number;
  /**
   * What devices train on: a spec (`mnist`, `fashion-mnist`, `idx:DIR`, `csv:FILE`), whose
   * train split devices draw from and whose test split the coordinator evaluates on, or your own
   * `Dataset` (checked as clients check theirs; see `testDataset`). @default "mnist"
   */
  dataset: string | Dataset;
  /**
   * The centralised evaluation set: a spec (its test split) or a `Dataset`. When unset, a spec's
   * own test split; for a `Dataset` object, a seeded `testFraction` of its examples held out
   * (the devices never see them). @default undefined
   */
  testDataset: string | Dataset | undefined;
  /**
   * Share of a `Dataset` object's examples held out for centralised evaluation when no
   * `testDataset` is given (drawn with `seed`). @default 0.2
   */
  testFraction: number;
  /**
   * `iid`, `shards[:K]` (McMahan's pathological non-IID, K = 2), `dirichlet:α`, or `groups`
   * (the dataset's natural groups, `Dataset.groups` or a `csv:` spec's `?group=N`: one device
   * per group, holding all of it). @default "iid"
   */
  partition: string;
  /** Examples per device (not with `groups`). @default train size / devices (at least 1) */
  examplesPerDevice: number | undefined;
  /**
   * Let IID devices draw with replacement when devices × examplesPerDevice exceed the train
   * split (a population larger than the data); otherwise that is refused. @default false
   */
  allowOversampling: boolean;
  /** The strategy: a registered name, `{ name, params }` or a strategy object. @default "fedavg" */
  strategy: string | StrategyRef | Strategy;
  /** Your own keys for the devices' round configuration. @default {} */
  fitConfig: Record<string, Scalar>;
  /** Evaluate on the first N test examples. @default the whole test split */
  evalSize: number | undefined;
  /** Share of every device's data held out for federated evaluation (not trained on). @default 0 */
  evalFraction: number;
  /**
   * Simulated attackers (plain rounds without DP only): `{ devices, kind: "sign-flip" | "little-is-enough",
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
  /** `in-process` (fast) or `socket` (real socket.io on loopback, one client per device). @default "in-process" */
  transport: "in-process" | "socket";
  /**
   * Worker threads that train devices in parallel, each with its own backend (wasm, or the one
   * `backend` asks for: with `webgpu` every worker owns a Dawn device); 0 trains in this thread
   * on the selected backend. @default 0
   */
  workers: number;
  /** Devices trained at once in this process (on a GPU they share the device). @default 1 */
  concurrency: number;
  /**
   * Cohort-batched training (in-process transport): `auto` trains up to `batchGroup` devices'
   * local runs as one batched computation where the model allows it (dense layers, SGD; others
   * train one by one, said once), in this thread or on each worker; `off` always trains one by
   * one. Results equal one-by-one training within float tolerance. @default "auto"
   */
  batched: "auto" | "off";
  /** Devices per batched computation. @default 32 */
  batchGroup: number;
  /**
   * Simulated time (in-process transport): each device trains at its own speed, drawn from a
   * seeded log-normal whose 5th-to-95th percentile ratio is `spread`, around a median of
   * `samplesPerSecond`; rounds then take as long as their slowest member (or the deadline), and
   * `metrics.jsonl` records `simulatedMs`. Asynchronous rounds take arrivals in that order.
   * @default null (no simulated time)
   */
  deviceSpeed: DeviceSpeed | null;
  /** tfjs backend of the training. @default "auto" */
  backend: string;
  /** Accuracy targets reported in `summary.json` as rounds-to-target. @default [0.9, 0.95, 0.97, 0.99] */
  targets: number[];
  /** Epochs of a centralised baseline on the pooled device data; 0 skips it. @default 1 */
  baselineEpochs: number;
  /** @default "runs/<name>-<timestamp>" */
  runDir: string | undefined;
}

const DEFAULTS: SimulationConfig = {
  ...sharedDefaults("simulator"),
  name: "simulation",
  devices: 100,
  dataset: "mnist",
  testDataset: undefined,
  testFraction: 0.2,
  partition: "iid",
  examplesPerDevice: undefined,
  allowOversampling: false,
  strategy: "fedavg",
  fitConfig: {},
  evalSize: undefined,
  evalFraction: 0,
  attack: null,
  partialWork: 0,
  faults: NO_FAULTS,
  transport: "in-process",
  workers: 0,
  concurrency: 1,
  batched: "auto",
  batchGroup: 32,
  deviceSpeed: null,
  backend: "auto",
  targets: [0.9, 0.95, 0.97, 0.99],
  baselineEpochs: 1,
  runDir: undefined,
};

const KEYS = new Set(Object.keys(DEFAULTS));

/**
 * What `simulate` takes: any of the configuration's keys, each defaulted when absent (see
 * {@link SimulationConfig} for every default); `faults` and `attack` may be partial too.
 */
export type SimulationInput = Partial<Omit<SimulationConfig, "faults" | "attack">> & {
  faults?: Partial<FaultConfig>;
  attack?: Partial<AttackConfig> | null;
  /** A note in a JSON config; ignored. */
  $comment?: string;
};

/**
 * A parsed JSON config as a `SimulationInput`: an object whose keys are all known. Values are
 * checked by {@link resolveSimulationConfig}.
 *
 * @throws CohortError `INVALID_OPTION` for a non-object or an unknown key (listing the known).
 */
export function simulationInput(raw: unknown): SimulationInput {
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
  return raw as SimulationInput;
}

function isDatasetObject(v: unknown): v is Dataset {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function checkDatasetOption(key: "dataset" | "testDataset", v: unknown): void {
  if (typeof v === "string" ? v === "" : !isDatasetObject(v)) {
    throw new CohortError(
      "INVALID_OPTION",
      `${key} must be a dataset spec (mnist, fashion-mnist, idx:DIR, csv:FILE) or a Dataset object, got ${JSON.stringify(v) ?? typeof v}`,
    );
  }
}

/**
 * The configuration in effect: defaults merged once under `raw` (a `SimulationInput` or a parsed
 * JSON config), every value checked. Objects (a `Dataset`, a `tf.LayersModel`, a strategy) are
 * kept as given, never copied.
 *
 * @throws CohortError `INVALID_OPTION` naming the first bad key.
 */
export function resolveSimulationConfig(raw: SimulationInput | unknown): SimulationConfig {
  const partial = simulationInput(raw);
  const { $comment: _note, ...given } = partial;
  void _note;
  const c = withDefaults(DEFAULTS, {
    ...(given as Partial<SimulationConfig>),
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
  checkShared(c as unknown as Record<string, unknown>);
  int("devices", 1);
  int("baselineEpochs", 0);
  int("concurrency", 1);
  if (c.deviceSpeed !== null) c.deviceSpeed = checkDeviceSpeed(c.deviceSpeed);
  int("workers", 0);
  int("batchGroup", 1);
  if (c.batched !== "auto" && c.batched !== "off") {
    throw new CohortError(
      "INVALID_OPTION",
      `batched must be "auto" or "off", got ${JSON.stringify(c.batched)}`,
    );
  }
  if (!(c.evalFraction >= 0 && c.evalFraction < 1)) {
    throw new CohortError(
      "INVALID_OPTION",
      `evalFraction must be in [0, 1), got ${c.evalFraction}`,
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
    const a = withDefaults<AttackConfig>(
      { devices: 1, kind: "sign-flip", scale: 10, steps: null },
      c.attack,
    );
    const steps = a.steps;
    if (
      steps !== null &&
      !(
        Array.isArray(steps) &&
        steps.length === 2 &&
        steps.every((n) => Number.isInteger(n) && n >= 1) &&
        steps[0] <= steps[1]
      )
    ) {
      throw new CohortError(
        "INVALID_OPTION",
        "attack.steps must be [first, last] server steps (integers ≥ 1, first ≤ last) or null",
      );
    }
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
    if (c.dpClip > 0) {
      // The attackers replace updates inside the strategy's aggregator, which DP-FedAvg replaces
      // with its clipped, noised sum: the attack would silently not happen.
      throw new CohortError(
        "INVALID_OPTION",
        "simulated attackers are not simulated under differential privacy (dpClip is set): DP-FedAvg aggregates in place of the attacked strategy",
      );
    }
    c.attack = a;
  }
  if (c.examplesPerDevice !== undefined) int("examplesPerDevice", 1);
  if (typeof c.allowOversampling !== "boolean") {
    throw new CohortError("INVALID_OPTION", "allowOversampling must be true or false");
  }
  checkDatasetOption("dataset", c.dataset);
  if (c.testDataset !== undefined) checkDatasetOption("testDataset", c.testDataset);
  if (!(c.testFraction > 0 && c.testFraction < 1)) {
    throw new CohortError(
      "INVALID_OPTION",
      `testFraction must be in (0, 1), got ${String(c.testFraction)}`,
    );
  }
  if (c.evalSize !== undefined) int("evalSize", 1);
  if (c.transport !== "in-process" && c.transport !== "socket") {
    throw new CohortError(
      "INVALID_OPTION",
      `transport must be in-process or socket, got ${String(c.transport)}`,
    );
  }
  if (!Array.isArray(c.targets) || !c.targets.every((t) => t > 0 && t <= 1)) {
    throw new CohortError("INVALID_OPTION", "targets must be accuracies in (0, 1]");
  }
  if (parsePartitionSpec(c.partition).kind === "groups" && c.examplesPerDevice !== undefined) {
    throw new CohortError(
      "INVALID_OPTION",
      "examplesPerDevice does not apply to the groups partition: each device holds its whole group",
    );
  }
  resolveStrategy(c.strategy);
  checkCodec(resolveCodec(c.codec), { secure: c.secure, dp: c.dpClip > 0 });
  resolveDownlinkCodec(c.downlinkCodec);
  parseSchedule(c.lrSchedule, c.learningRate);
  checkFaults(c.faults);
  return c;
}

/** A dataset option as `summary.json` and `run.json` record it: its spec or its name. */
function datasetName(v: string | Dataset | undefined): string | null {
  return v === undefined ? null : typeof v === "string" ? v : v.name;
}

/** The configuration as `summary.json` and `run.json` record it: names, never objects. */
export type SimulationRecord = Omit<
  SimulationConfig,
  "model" | "dataset" | "testDataset" | "strategy" | "metrics"
> & {
  model: string;
  dataset: string;
  testDataset: string | null;
  strategy: StrategyRef;
  metrics: readonly string[];
};

/** The JSON-safe record of a configuration: a model, dataset or metric function by its name. */
export function recordedConfig(c: SimulationConfig): SimulationRecord {
  return {
    ...c,
    model: modelName(c.model),
    dataset: datasetName(c.dataset)!,
    testDataset: datasetName(c.testDataset),
    strategy: resolveStrategy(c.strategy).ref,
    metrics: objectiveOf(c).metrics,
  };
}
