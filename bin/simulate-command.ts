/** `cohort simulate`: run a convergence experiment from a JSON config and/or flags. */
import { readFile } from "node:fs/promises";
import { CohortError } from "../protocol/errors.js";
import { simulate } from "../simulations/simulate.js";
import { simulationInput } from "../simulations/config.js";
import { sharedFlags, sharedFromFlags } from "../coordinator/option-schema.js";
import { helpText, parseFlags, type CommandSpec, type FlagSpec } from "./args.js";
import {
  fitConfigFlag,
  fitConfigFromFlag,
  flagGiven,
  strategyFlags,
  strategyFromFlags,
} from "./strategy-flags.js";

export const simulateCommand = {
  name: "simulate",
  summary:
    "Simulate a population of devices through the real round engine and client code; writes metrics.jsonl, summary.json and accuracy.svg. Flags override the config file.",
  flags: {
    config: {
      type: "string",
      placeholder: "FILE",
      description: "JSON config (see simulations/experiments/)",
    },
    name: { type: "string", default: "simulation", description: "experiment name" },
    devices: {
      type: "number",
      defaultText: "100; with --partition groups, the number of groups",
      description: "population size N",
    },
    dataset: {
      type: "string",
      default: "mnist",
      placeholder: "mnist|fashion-mnist|idx:DIR|csv:FILE",
      description: "dataset (devices train on its train split; evaluation uses its test split)",
    },
    "test-dataset": {
      type: "string",
      defaultText: "the dataset's test split",
      placeholder: "SPEC",
      description: "centralised evaluation set (its test split)",
    },
    partition: {
      type: "string",
      default: "iid",
      placeholder: "iid|shards[:K]|dirichlet:A|groups",
      description:
        "how data is spread over devices (groups: one device per group id, csv:FILE?group=N)",
    },
    "examples-per-device": {
      type: "number",
      defaultText: "train size / devices",
      description: "examples per device",
    },
    "allow-oversampling": {
      type: "boolean",
      default: false,
      description:
        "let IID devices draw with replacement when devices × examples exceed the dataset",
    },
    "eval-size": {
      type: "number",
      defaultText: "whole test split",
      description: "evaluate on the first N test examples",
    },
    "eval-fraction": {
      type: "number",
      default: 0,
      description: "share of every device's data held out for federated evaluation",
    },
    ...sharedFlags("simulator"),
    ...strategyFlags(),
    "fit-config": fitConfigFlag,
    "partial-work": {
      type: "number",
      default: 0,
      description: "share of devices doing a random fraction of their local work each round",
    },
    "dropout-before": {
      type: "number",
      default: 0,
      description: "probability a device drops before training",
    },
    "dropout-after": {
      type: "number",
      default: 0,
      description: "probability a device drops after training",
    },
    disconnect: {
      type: "number",
      default: 0,
      description: "probability a device disconnects mid-round",
    },
    "straggler-mean-ms": {
      type: "number",
      default: 0,
      description: "mean exponential extra latency; beyond the deadline a device misses the round",
    },
    transport: {
      type: "string",
      default: "in-process",
      placeholder: "in-process|socket",
      description: "how devices reach the coordinator",
    },
    backend: {
      type: "string",
      default: "auto",
      placeholder: "auto|webgpu|tfjs-node-gpu|tfjs-node|wasm|cpu",
      description: "tfjs backend",
    },
    workers: {
      type: "number",
      default: 0,
      description:
        "worker threads training devices in parallel, each with its own backend (wasm, or the --backend asked for); 0 = this thread",
    },
    concurrency: {
      type: "number",
      default: 1,
      description: "devices trained at once in this process",
    },
    batched: {
      type: "string",
      default: "auto",
      placeholder: "auto|off",
      description:
        "train up to --batch-group devices as one batched computation where the model allows (dense layers, SGD), in this thread or on each worker; off: one by one",
    },
    "batch-group": {
      type: "number",
      default: 32,
      description: "devices per batched computation",
    },
    "device-speed": {
      type: "string",
      placeholder: "RATE[,SPREAD]",
      description:
        "simulate time: devices train at a median RATE examples per simulated second, log-normally spread so the 95th percentile is SPREAD × the 5th (default 1); rounds last as long as their slowest member, --mode async takes arrivals in simulated order",
    },
    "baseline-epochs": {
      type: "number",
      default: 1,
      description: "epochs of the centralised baseline (0 skips it)",
    },
    "run-dir": {
      type: "string",
      defaultText: "runs/<name>-<timestamp>",
      placeholder: "DIR",
      description: "output directory",
    },
  },
} satisfies CommandSpec<Record<string, FlagSpec>>;

/** The simulation's own flags, by config key (the shared round options map themselves). */
const MAP: Record<string, string> = {
  name: "name",
  devices: "devices",
  dataset: "dataset",
  "test-dataset": "testDataset",
  partition: "partition",
  "examples-per-device": "examplesPerDevice",
  "allow-oversampling": "allowOversampling",
  "eval-size": "evalSize",
  "eval-fraction": "evalFraction",
  "partial-work": "partialWork",
  transport: "transport",
  backend: "backend",
  concurrency: "concurrency",
  workers: "workers",
  batched: "batched",
  "batch-group": "batchGroup",
  "baseline-epochs": "baselineEpochs",
  "run-dir": "runDir",
};

const FAULTS: Record<string, string> = {
  "dropout-before": "dropoutBeforeFit",
  "dropout-after": "dropoutAfterFit",
  disconnect: "disconnect",
  "straggler-mean-ms": "stragglerMeanMs",
};

/** `--device-speed RATE[,SPREAD]` as a `deviceSpeed` setting (checked by the config). */
function deviceSpeedFlag(text: string): { samplesPerSecond: number; spread: number } {
  const [rate, spread = "1", ...rest] = text.split(",");
  if (rest.length > 0 || !/^\d+(\.\d+)?$/.test(rate ?? "") || !/^\d+(\.\d+)?$/.test(spread)) {
    throw new CohortError(
      "INVALID_OPTION",
      `--device-speed takes RATE[,SPREAD] (e.g. 10,10), got ${JSON.stringify(text)}`,
    );
  }
  return { samplesPerSecond: Number(rate), spread: Number(spread) };
}

/** Run the command; resolves with the process exit code. */
export async function runSimulate(argv: string[]): Promise<number> {
  const flags = parseFlags(simulateCommand, argv);
  if (flags === null) {
    console.log(helpText(simulateCommand));
    return 0;
  }
  let config: Record<string, unknown> = {};
  if (flags.config !== undefined) {
    try {
      config = JSON.parse(await readFile(flags.config, "utf8")) as Record<string, unknown>;
    } catch (cause) {
      throw new CohortError(
        "INVALID_OPTION",
        `cannot read config ${flags.config}: ${(cause as Error).message}`,
        { cause },
      );
    }
  }
  // Only flags given on the command line override the file.
  const given = flagGiven(argv);
  const values = flags as Record<string, unknown>;
  const faults = { ...((config.faults as Record<string, unknown> | undefined) ?? {}) };
  for (const [flag, key] of Object.entries(MAP)) if (given(flag)) config[key] = values[flag];
  for (const [flag, key] of Object.entries(FAULTS)) if (given(flag)) faults[key] = values[flag];
  Object.assign(config, sharedFromFlags(values, given));
  config.faults = faults;
  if (given("fit-config")) config.fitConfig = fitConfigFromFlag(values["fit-config"] as string);
  if (given("device-speed")) config.deviceSpeed = deviceSpeedFlag(values["device-speed"] as string);
  const strategyFlagNames = Object.keys(strategyFlags());
  if (strategyFlagNames.some(given)) {
    // Parameter flags add to the file's strategy parameters; --strategy replaces its name.
    const fromFile =
      typeof config.strategy === "string"
        ? { name: config.strategy, params: {} }
        : ((config.strategy as { name?: string; params?: Record<string, unknown> } | undefined) ??
          {});
    const ref = strategyFromFlags(values, given);
    config.strategy = {
      name: given("strategy") ? ref.name : (fromFile.name ?? "fedavg"),
      params: { ...(fromFile.params ?? {}), ...ref.params },
    };
  }
  const { summary } = await simulate(simulationInput(config));
  console.log(
    JSON.stringify({
      runDir: summary.runDir,
      finalAccuracy: summary.finalAccuracy,
      ...(summary.finalFederatedAccuracy === null
        ? {}
        : { finalFederatedAccuracy: summary.finalFederatedAccuracy }),
      roundsToTarget: summary.roundsToTarget,
      ...(summary.simulatedMs === null
        ? {}
        : {
            simulatedMs: Math.round(summary.simulatedMs),
            simulatedMsToTarget: summary.simulatedMsToTarget,
          }),
      wallTimeMs: Math.round(summary.wallTimeMs),
    }),
  );
  return 0;
}
