/** `simulate(config)`: a population of virtual devices through the real round engine and client code. */
import { mkdir, writeFile } from "node:fs/promises";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { prepareTask } from "../coordinator/coordinator.js";
import { RoundEngine, type RunSummary } from "../coordinator/engine.js";
import { SocketTransport } from "../coordinator/socket-transport.js";
import type { CohortTransport } from "../coordinator/transport.js";
import type { RoundMetrics } from "../coordinator/run-store.js";
import { CohortClient } from "../client/client.js";
import { LocalTrainer } from "../client/trainer.js";
import type { FitHandler } from "../client/fit-handler.js";
import { TrainPool } from "../models/train-pool.js";
import { datasetSize, type Dataset } from "../protocol/dataset.js";
import type { TaskSpec } from "../protocol/messages.js";
import { CohortError } from "../protocol/errors.js";
import { evaluateModel, toTensors, type EvalStats } from "../models/adapter.js";
import { trainLocal } from "../models/training.js";
import {
  backendLabel,
  parseBackendRequest,
  selectBackend,
  type NodeBackend,
  type SelectedBackend,
} from "../models/backend.js";
import { instantiate } from "../models/model-file.js";
import { subsetDataset } from "../models/datasets/index.js";
import { deviceId, deviceSplit } from "./device.js";
import { InProcessTransport, type SimulatedTiming } from "./in-process.js";
import { DeviceFitter, poolHandler } from "./device-fitter.js";
import { CohortBatcher, inThread, onPool, taskBatchPlan } from "./batched-fitter.js";
import { deviceRates, type DeviceSpeed } from "./speeds.js";
import { makePartition, parsePartitionSpec, type Partition } from "./partition.js";
import { accuracyLossPanels, accuracyLossSvg, panelsSvg } from "./plot.js";
import { Progress } from "./progress.js";
import {
  recordedConfig,
  resolveSimulationConfig,
  type SimulationConfig,
  type SimulationInput,
  type SimulationRecord,
} from "./config.js";
import { simulationData, withPartitionDevices } from "./data.js";
import { resolveStrategy } from "../aggregation/strategies/index.js";
import { createRng, permutation } from "../aggregation/random.js";
import { withAttackers } from "./attacks.js";
import { pickShared } from "../coordinator/option-schema.js";
import { objectiveOf } from "../coordinator/options.js";
import type { Objective } from "../models/task.js";

/** The centralised baseline: the same model trained on the pooled device data. */
export interface BaselineResult {
  epochs: number;
  examples: number;
  /** Null when the task has no accuracy metric. */
  accuracy: number | null;
  loss: number;
  metrics: Record<string, number>;
  trainMs: number;
}

/** What a simulation writes to `summary.json`. */
/** How the simulated devices trained. */
export interface TrainingPath {
  batched: boolean;
  /** Why they trained one by one (null when batched). */
  reason: string | null;
}

export interface SimulationSummary {
  name: string;
  runDir: string;
  backend: string;
  devices: number;
  examplesPerDevice: number;
  rounds: number;
  initialAccuracy: number | null;
  initialLoss: number | null;
  finalAccuracy: number | null;
  finalLoss: number | null;
  /** The last evaluation's metrics by name (the task's loss aside). */
  finalMetrics: Record<string, number> | null;
  bestAccuracy: number | null;
  /** Federated evaluation on the devices' held-out data, where it ran. */
  finalFederatedAccuracy: number | null;
  bestFederatedAccuracy: number | null;
  /** For each target accuracy, the first round reaching it, or null. */
  roundsToTarget: Record<string, number | null>;
  /**
   * Where time is simulated (`deviceSpeed`): the run's simulated milliseconds, and for each
   * target the simulated milliseconds and the client updates it took to reach it (null: never).
   */
  simulatedMs: number | null;
  simulatedMsToTarget: Record<string, number | null> | null;
  updatesToTarget: Record<string, number | null>;
  /** The first round within one point of the centralised baseline, or null (no baseline, or never). */
  roundsToBaselineMinus1: number | null;
  wallTimeMs: number;
  meanRoundMs: number;
  bytesUp: number;
  bytesDown: number;
  failures: number;
  /** ε (at `delta`) the run spent, where it was differentially private. */
  epsilon: number | null;
  delta: number | null;
  /** Why the run ended early (the privacy budget), where it did. */
  stopReason: string | null;
  baseline: BaselineResult | null;
  /** Whether the devices trained in batched groups, and if not why not. */
  training: TrainingPath;
  /** The configuration in effect, models and datasets by name. */
  config: SimulationRecord;
}

/** What `simulate` returns. */
export interface SimulationResult {
  summary: SimulationSummary;
  rounds: RoundMetrics[];
  weights: Float32Array[];
}

/** Options that shape output rather than the experiment. */
export interface SimulateHooks {
  /** Where progress goes. @default process.stderr, a bar on a TTY */
  progress?: NodeJS.WriteStream | null;
}

/** `count` devices of `population`, chosen by a seeded permutation. */
function chosenDevices(population: number, count: number, seed: number): Set<number> {
  const order = permutation(population, createRng(seed));
  return new Set(order.subarray(0, count));
}

async function baseline(
  cfg: SimulationConfig,
  task: TaskSpec,
  initial: Float32Array[],
  pooled: Dataset,
  evalSet: Dataset,
  objective: Objective,
): Promise<BaselineResult> {
  const model = await instantiate(task.model, initial);
  const tensors = toTensors(pooled);
  try {
    const config = { ...task.training, localEpochs: cfg.baselineEpochs };
    const stats = await trainLocal(model, tensors, config, cfg.seed + 7);
    const evaluation: EvalStats = await evaluateModel(model, evalSet, objective);
    return {
      epochs: cfg.baselineEpochs,
      examples: datasetSize(pooled),
      accuracy: evaluation.accuracy,
      loss: evaluation.loss,
      metrics: evaluation.metrics,
      trainMs: stats.trainMs,
    };
  } finally {
    tensors.dispose();
    model.dispose();
  }
}

/**
 * Run a simulation; writes the run directory, `summary.json` and `accuracy.svg`.
 *
 * @param config any keys of {@link SimulationConfig} (the rest take their defaults), checked at
 *   run time as a JSON config is: `simulate({ dataset: myDataset, partition: "groups" })`.
 * @throws CohortError `INVALID_OPTION` for a bad option, the dataset's errors, the run's.
 */
export async function simulate(
  config: SimulationInput,
  hooks: SimulateHooks = {},
): Promise<SimulationResult> {
  const started = performance.now();
  const given = resolveSimulationConfig(config);
  const { train, test: evalSet } = await simulationData(given);
  const cfg = withPartitionDevices(given, config, train);
  const progress =
    hooks.progress === null ? null : new Progress(cfg.rounds, hooks.progress ?? process.stderr);
  const backend: SelectedBackend = await selectBackend(parseBackendRequest(cfg.backend));
  const perDevice =
    cfg.examplesPerDevice ?? Math.max(1, Math.floor(datasetSize(train) / cfg.devices));
  const partition = makePartition(
    parsePartitionSpec(cfg.partition),
    train,
    cfg.devices,
    perDevice,
    cfg.seed,
    { allowOversampling: cfg.allowOversampling },
  );
  const runDir = cfg.runDir ?? `runs/${cfg.name}-${new Date().toISOString().replace(/[:.]/g, "-")}`;
  const { opts, task, weights, signing } = await prepareTask(
    {
      // Every round option the coordinator has, as the config gives it.
      ...pickShared(cfg),
      // The population the accountant counts is the simulation's devices, unless said otherwise.
      dpPopulation: cfg.dpPopulation ?? cfg.devices,
      minAvailableClients: cfg.minFitClients,
      fitConfig: cfg.fitConfig,
      strategy:
        cfg.attack === null
          ? cfg.strategy
          : withAttackers(
              resolveStrategy(cfg.strategy),
              new Set(
                [...chosenDevices(cfg.devices, cfg.attack.devices, cfg.seed + 13)].map((d) =>
                  deviceId(d, cfg.devices),
                ),
              ),
              cfg.attack,
            ),
      evalDataset: evalSet,
      runDir,
      log: () => undefined,
    },
    () => undefined,
  );
  progress?.line(
    `${cfg.name}: ${cfg.devices} devices × ${cfg.partition === "groups" ? "≈" : ""}${perDevice} examples (${cfg.partition}), C=${cfg.fractionFit}, ` +
      `${task.model.name} E=${cfg.localEpochs} B=${cfg.batchSize}, ${cfg.transport}, backend ${backendLabel(backend)}`,
  );

  const split = (device: number) =>
    deviceSplit(train, partition, device, cfg.evalFraction, cfg.seed);
  let transport: CohortTransport;
  let batcher: CohortBatcher | null = null;
  // How the devices trained, for the summary: socket clients always train one by one.
  let training: TrainingPath = { batched: false, reason: "socket clients train one by one" };
  const cleanups: (() => Promise<void> | void)[] = [];
  if (cfg.transport === "in-process") {
    let handlers: FitHandler[];
    // Each worker starts its own backend: wasm unless one is asked for (with webgpu, every
    // worker owns a Dawn device).
    const asked = parseBackendRequest(cfg.backend);
    const poolBackend: NodeBackend = asked === "auto" ? "wasm" : asked;
    const pool =
      cfg.workers > 0 ? new TrainPool({ size: cfg.workers, backend: poolBackend }) : null;
    if (pool !== null) cleanups.push(() => pool.close());
    const plan = cfg.batched === "off" ? "batched training is off" : await taskBatchPlan(task);
    if (typeof plan !== "string") {
      batcher = new CohortBatcher(
        pool === null ? inThread(plan) : onPool(pool, task),
        cfg.batchGroup,
        pool?.size ?? 1,
        pool === null ? backend.name : poolBackend,
      );
      handlers = Array.from({ length: batcher.capacity }, () => batcher!.handler());
      training = { batched: true, reason: null };
    } else if (pool !== null) {
      handlers = Array.from({ length: pool.size }, () => poolHandler(pool, poolBackend));
      training = { batched: false, reason: plan };
    } else {
      const trainers = Array.from(
        { length: cfg.concurrency },
        () => new LocalTrainer(backend.name),
      );
      cleanups.push(() => trainers.forEach((t) => t.dispose()));
      handlers = trainers.map((t) => t.handler());
      training = { batched: false, reason: plan };
    }
    if (cfg.batched === "auto" && !training.batched)
      progress?.line(`${cfg.name}: devices train one by one: ${plan}`);
    const partial = chosenDevices(
      cfg.devices,
      Math.round(cfg.partialWork * cfg.devices),
      cfg.seed + 11,
    );
    const trainer = new DeviceFitter(
      task,
      split,
      handlers,
      backend.name,
      (d) => partial.has(d),
      batcher,
    );
    cleanups.push(() => trainer.dispose());
    transport = new InProcessTransport({
      partition,
      trainer,
      faults: cfg.faults,
      seed: cfg.seed,
      deadlineMs: cfg.roundTimeoutMs,
      ...(cfg.deviceSpeed === null ? {} : { timing: timingOf(cfg, cfg.deviceSpeed, partition) }),
    });
  } else {
    transport = await socketPopulation(
      task,
      train,
      partition,
      opts.log,
      cleanups,
      cfg,
      signing.secretKey,
    );
  }
  const engine = new RoundEngine(opts, task, weights, transport, {
    simulation: recordedConfig(cfg),
    backend: backend.name,
  });
  engine.onRound = (m) =>
    progress?.round(m.round, m.accuracy, m.failures > 0 ? `failures ${m.failures}` : "");
  let run: RunSummary;
  try {
    run = await engine.run();
  } finally {
    for (const cleanup of cleanups.reverse()) await cleanup();
  }
  const base =
    cfg.baselineEpochs > 0
      ? await baseline(
          cfg,
          task,
          weights,
          subsetDataset(train, partition.pooledIndices()),
          evalSet,
          objectiveOf(opts),
        )
      : null;
  const summary = summarise(
    cfg,
    training,
    run,
    runDir,
    backend,
    perDevice,
    base,
    performance.now() - started,
  );
  await writeOutputs(runDir, summary, run);
  progress?.line(
    `${cfg.name}: final ${summary.finalAccuracy !== null ? `accuracy ${summary.finalAccuracy.toFixed(4)}` : `loss ${summary.finalLoss?.toFixed(4)}`}` +
      (base
        ? ` (centralised baseline ${base.accuracy !== null ? `accuracy ${base.accuracy.toFixed(4)}` : `loss ${base.loss.toFixed(4)}`} after ${base.epochs} epoch${base.epochs > 1 ? "s" : ""})`
        : "") +
      `; ${runDir}`,
  );
  return { summary, rounds: run.rounds, weights: run.weights };
}

/** Simulated time from the devices' speeds: asynchronous rounds take arrivals one by one. */
function timingOf(
  cfg: SimulationConfig,
  speed: DeviceSpeed,
  partition: Partition,
): SimulatedTiming {
  const rates = deviceRates(speed, cfg.devices, cfg.seed);
  return {
    trainMs: (device) => (1000 * partition.sizeOf(device)) / rates[device]!,
    epochs: cfg.localEpochs,
    clock: cfg.mode === "async" ? "driver" : "round",
  };
}

/** Real socket.io on loopback: one `CohortClient` per device, each with its data materialised. */
async function socketPopulation(
  task: TaskSpec,
  train: Dataset,
  partition: Partition,
  log: (line: string) => void,
  cleanups: (() => Promise<void> | void)[],
  cfg: SimulationConfig,
  signingKey: Uint8Array,
): Promise<CohortTransport> {
  const http = createServer();
  const transport = new SocketTransport(http, task, log, {
    authenticator: null,
    signingKey,
    rateLimiter: null,
  });
  await new Promise<void>((resolve) => http.listen(0, "127.0.0.1", resolve));
  cleanups.push(() => transport.close());
  const url = `http://127.0.0.1:${(http.address() as AddressInfo).port}`;
  const clients: CohortClient[] = [];
  for (let d = 0; d < partition.devices; d++) {
    if (partition.sizeOf(d) === 0) continue;
    const split = deviceSplit(train, partition, d, cfg.evalFraction, cfg.seed);
    clients.push(
      new CohortClient({
        url,
        data: split.train,
        evalData: split.evaluate ?? undefined,
        clientId: deviceId(d, partition.devices),
        backend: parseBackendRequest(cfg.backend),
        log: () => undefined,
      }),
    );
  }
  cleanups.push(async () => {
    await Promise.all(clients.map((c) => c.close()));
  });
  await Promise.all(clients.map((c) => c.start()));
  return transport;
}

function summarise(
  cfg: SimulationConfig,
  training: TrainingPath,
  run: RunSummary,
  runDir: string,
  backend: SelectedBackend,
  perDevice: number,
  base: BaselineResult | null,
  wallTimeMs: number,
): SimulationSummary {
  const acc = run.rounds.map((r) => r.accuracy).filter((a): a is number => a !== undefined);
  const fed = run.rounds
    .map((r) => r.federatedAccuracy)
    .filter((a): a is number => a !== undefined);
  const last = run.rounds.at(-1);
  return {
    name: cfg.name,
    runDir,
    backend: backendLabel(backend),
    devices: cfg.devices,
    examplesPerDevice: perDevice,
    rounds: run.rounds.length,
    initialAccuracy: run.initial?.accuracy ?? null,
    initialLoss: run.initial?.loss ?? null,
    finalAccuracy: last?.accuracy ?? null,
    finalLoss: last?.loss ?? null,
    finalMetrics: last?.metrics ?? null,
    bestAccuracy: acc.length > 0 ? Math.max(...acc) : null,
    finalFederatedAccuracy:
      [...run.rounds].reverse().find((r) => r.federatedAccuracy !== undefined)?.federatedAccuracy ??
      null,
    bestFederatedAccuracy: fed.length > 0 ? Math.max(...fed) : null,
    training,
    roundsToTarget: Object.fromEntries(
      cfg.targets.map((t) => [
        String(t),
        run.rounds.find((r) => (r.accuracy ?? 0) >= t)?.round ?? null,
      ]),
    ),
    simulatedMs: last?.simulatedMs ?? null,
    simulatedMsToTarget:
      last?.simulatedMs === undefined
        ? null
        : Object.fromEntries(
            cfg.targets.map((t) => [
              String(t),
              run.rounds.find((r) => (r.accuracy ?? 0) >= t)?.simulatedMs ?? null,
            ]),
          ),
    updatesToTarget: Object.fromEntries(
      cfg.targets.map((t) => {
        const i = run.rounds.findIndex((r) => (r.accuracy ?? 0) >= t);
        return [
          String(t),
          i < 0 ? null : run.rounds.slice(0, i + 1).reduce((n, r) => n + r.participants, 0),
        ];
      }),
    ),
    roundsToBaselineMinus1:
      base === null
        ? null
        : base.accuracy === null
          ? null
          : (run.rounds.find((r) => (r.accuracy ?? 0) >= base.accuracy! - 0.01)?.round ?? null),
    wallTimeMs,
    meanRoundMs: run.rounds.reduce((s, r) => s + r.durationMs, 0) / Math.max(1, run.rounds.length),
    bytesUp: run.rounds.reduce((s, r) => s + r.bytesUp, 0),
    bytesDown: run.rounds.reduce((s, r) => s + r.bytesDown, 0),
    failures: run.rounds.reduce((s, r) => s + r.failures, 0),
    epsilon: last?.epsilon ?? null,
    delta: last?.delta ?? null,
    stopReason: run.stopReason ?? null,
    baseline: base,
    config: recordedConfig(cfg),
  };
}

async function writeOutputs(
  runDir: string,
  summary: SimulationSummary,
  run: RunSummary,
): Promise<void> {
  await mkdir(runDir, { recursive: true });
  await writeFile(join(runDir, "summary.json"), JSON.stringify(summary, null, 2) + "\n");
  await writeFile(
    join(runDir, "accuracy.svg"),
    runPlot(summary.name, run.rounds, run.initial, summary.baseline, strategyName(summary.config)),
  );
}

function strategyName(cfg: SimulationRecord): string {
  return cfg.strategy.name;
}

/** The accuracy and loss plot of a run, with its initial point and baseline where known. */
export function runPlot(
  name: string,
  roundMetrics: readonly RoundMetrics[],
  initial: { accuracy: number | null; loss: number; metrics?: Record<string, number> } | null,
  baseline: BaselineResult | null,
  strategy = "FedAvg",
): string {
  const run = { rounds: roundMetrics, initial };
  // Accuracy where the task has it; else its first metric (a regression's MAE).
  const metric =
    roundMetrics.some((r) => r.accuracy !== undefined) || initial?.accuracy != null
      ? "accuracy"
      : (Object.keys(roundMetrics.find((r) => r.metrics)?.metrics ?? initial?.metrics ?? {})[0] ??
        "accuracy");
  const score = (m: { accuracy?: number | null; metrics?: Record<string, number> } | null) =>
    metric === "accuracy" ? (m?.accuracy ?? undefined) : m?.metrics?.[metric];
  const summary = { baseline };
  const rounds = run.rounds.length;
  const withInitial = (
    pick: (r: RoundMetrics) => number | undefined,
    initial: number | undefined,
  ) => [
    ...(initial === undefined ? [] : [{ x: 0, y: initial }]),
    ...run.rounds.map((r) => ({ x: r.round, y: pick(r) ?? Number.NaN })),
  ];
  const flat = (y: number) => [
    { x: 0, y },
    { x: rounds, y },
  ];
  const b = summary.baseline;
  const accuracy = [
    {
      label: `${strategy} (global model)`,
      color: "#1f77b4",
      points: withInitial((r) => score(r), score(run.initial)),
    },
    ...(run.rounds.some((r) => r.federatedAccuracy !== undefined || r.federatedMetrics)
      ? [
          {
            label: "federated evaluation (devices' held-out data)",
            color: "#9467bd",
            points: run.rounds.map((r) => ({
              x: r.round,
              y:
                (metric === "accuracy" ? r.federatedAccuracy : r.federatedMetrics?.[metric]) ??
                Number.NaN,
            })),
          },
        ]
      : []),
    ...(b
      ? [
          {
            label: `centralised, ${b.epochs} epoch${b.epochs > 1 ? "s" : ""}`,
            color: "#d62728",
            dashed: true,
            points: flat(score(b) ?? Number.NaN),
          },
        ]
      : []),
  ];
  const loss = [
    {
      label: `${strategy} test loss`,
      color: "#1f77b4",
      points: withInitial((r) => r.loss, run.initial?.loss),
    },
    {
      label: "clients' train loss",
      color: "#2ca02c",
      points: run.rounds.map((r) => ({ x: r.round, y: r.trainLoss ?? Number.NaN })),
    },
    ...(b
      ? [{ label: "centralised test loss", color: "#d62728", dashed: true, points: flat(b.loss) }]
      : []),
  ];
  const spent = run.rounds.filter((r) => r.epsilon !== undefined && Number.isFinite(r.epsilon));
  if (spent.length === 0) return accuracyLossSvg(name, accuracy, loss, rounds, metric);
  // A differentially private run: a third chart with the privacy spent, round by round.
  const delta = spent[0]!.delta;
  return panelsSvg(
    [
      ...accuracyLossPanels(name, accuracy, loss, metric),
      {
        title: `${name}: privacy spent`,
        yLabel: "ε",
        series: [
          {
            label: `ε at δ = ${delta}`,
            color: "#9467bd",
            points: spent.map((r) => ({ x: r.round, y: r.epsilon! })),
          },
        ],
        legendLow: true,
      },
    ],
    rounds,
  );
}
