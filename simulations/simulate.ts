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
import { LocalTrainer, decodeFitRequest, encodeOutcome } from "../client/trainer.js";
import {
  DEFAULT_MODS,
  fitIns,
  localFit,
  localTraining,
  withMods,
  type FitHandler,
} from "../client/fit-handler.js";
import { TrainPool } from "../models/train-pool.js";
import { checkWeights } from "../aggregation/weights.js";
import { datasetSize, type Dataset } from "../protocol/dataset.js";
import type { TaskSpec } from "../protocol/messages.js";
import { decode, encode } from "../protocol/codec.js";
import { parseEvaluateRequest, parseFitMessage } from "../protocol/guards.js";
import { HeldModel } from "../client/downlink.js";
import { CohortError } from "../protocol/errors.js";
import { evaluateModel, toTensors, type EvalStats } from "../models/adapter.js";
import { trainLocal } from "../models/training.js";
import {
  backendLabel,
  parseBackendRequest,
  selectBackend,
  type SelectedBackend,
} from "../models/backend.js";
import { instantiate } from "../models/model-file.js";
import { subsetDataset } from "../models/datasets/index.js";
import { deviceId, deviceSplit } from "./device.js";
import { InProcessTransport, type DeviceTrainer, type SimulatedTiming } from "./in-process.js";
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
import type { CodecMemory } from "../aggregation/codecs/index.js";
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

/**
 * Trains virtual devices through the client's own fit handler and mods, one handler per slot:
 * in this thread (one model per slot; with `concurrency` > 1 their GPU work interleaves on one
 * device) or in worker threads (`TrainPool`, each worker with its own wasm backend). Results
 * do not depend on which slot trains a device.
 */
class DeviceFitter implements DeviceTrainer {
  private readonly free: FitHandler[];
  readonly concurrency: number;
  /** Evaluates in this thread, with a model of its own. */
  private readonly evaluator: LocalTrainer;
  constructor(
    private readonly task: TaskSpec,
    private readonly split: (device: number) => { train: Dataset; evaluate: Dataset | null },
    handlers: FitHandler[],
    backend: string,
    /** Devices that do only part of their local work each round. */
    private readonly partial: (device: number) => boolean = () => false,
  ) {
    this.free = handlers.map((h) => withMods(h, DEFAULT_MODS));
    this.concurrency = handlers.length;
    this.evaluator = new LocalTrainer(backend);
  }
  async evaluate(device: number, payload: Uint8Array): Promise<Uint8Array> {
    const request = parseEvaluateRequest(decode(payload));
    const data = this.split(device).evaluate;
    if (data === null)
      throw new CohortError("NO_EVAL_DATA", `device ${device} holds no evaluation data`);
    return encode(await this.evaluator.evaluate(this.task, request, data));
  }
  dispose(): void {
    this.evaluator.dispose();
  }
  /** Each device's codec memory (top-k's residual), kept across the rounds it is sampled for. */
  private readonly memories = new Map<number, CodecMemory>();
  private memoryOf(device: number): CodecMemory {
    let memory = this.memories.get(device);
    if (memory === undefined) {
      memory = { residual: null };
      this.memories.set(device, memory);
    }
    return memory;
  }
  /** Each device's held model (compressed downlink), kept while it can still be patched. */
  private readonly held = new Map<number, HeldModel>();
  receive(device: number, payload: Uint8Array): Uint8Array {
    // A float32 downlink's requests are full models: nothing to rebuild or keep.
    if (this.task.downlink === undefined) return payload;
    let held = this.held.get(device);
    if (held === undefined) {
      held = new HeldModel();
      this.held.set(device, held);
    }
    return encode(held.receive(this.task, parseFitMessage(decode(payload))));
  }
  release(device: number): void {
    this.held.delete(device);
  }
  async train(device: number, payload: Uint8Array, shuffleSeed: number) {
    const handler = this.free.pop();
    if (handler === undefined)
      throw new CohortError("INTERNAL", "more devices in flight than trainers");
    try {
      const request = decodeFitRequest(payload);
      let local = this.split(device).train;
      if (this.partial(device)) local = partialWork(local, shuffleSeed);
      return encodeOutcome(
        this.task,
        await handler(fitIns(this.task, request, local, shuffleSeed)),
        {
          seed: request.seed,
          // The device's rounding noise follows the run's seed, so a simulation repeats exactly.
          noiseSeed: (shuffleSeed ^ 0x27d4eb2f) >>> 0,
          memory: this.memoryOf(device),
        },
      );
    } finally {
      this.free.push(handler);
    }
  }
}

/** A random fraction U(0, 1] of the device's examples, drawn from its round's seed. */
function partialWork(local: Dataset, shuffleSeed: number): Dataset {
  const rng = createRng((shuffleSeed ^ 0x5bd1e995) >>> 0);
  const n = datasetSize(local);
  const keep = Math.max(1, Math.ceil(rng() * n));
  const order = permutation(n, rng);
  return { ...subsetDataset(local, order.subarray(0, keep).sort()), name: local.name };
}

/** A fit handler that trains in the worker pool, through the same training code. */
function poolHandler(pool: TrainPool): FitHandler {
  return async (ins) => {
    checkWeights(ins.request.weights, ins.task.model.weightSpecs, "global weights");
    const { weights, stats } = await pool.train({
      spec: ins.task.model,
      weights: ins.request.weights,
      data: ins.data,
      config: localTraining(ins),
      ...(ins.shuffleSeed === undefined ? {} : { shuffleSeed: ins.shuffleSeed }),
    });
    return localFit(ins, weights, stats, "wasm");
  };
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
  const cleanups: (() => Promise<void> | void)[] = [];
  if (cfg.transport === "in-process") {
    let handlers: FitHandler[];
    if (cfg.workers > 0) {
      const pool = new TrainPool({ size: cfg.workers, backend: "wasm" });
      cleanups.push(() => pool.close());
      handlers = Array.from({ length: cfg.workers }, () => poolHandler(pool));
    } else {
      const trainers = Array.from(
        { length: cfg.concurrency },
        () => new LocalTrainer(backend.name),
      );
      cleanups.push(() => trainers.forEach((t) => t.dispose()));
      handlers = trainers.map((t) => t.handler());
    }
    const partial = chosenDevices(
      cfg.devices,
      Math.round(cfg.partialWork * cfg.devices),
      cfg.seed + 11,
    );
    const trainer = new DeviceFitter(task, split, handlers, backend.name, (d) => partial.has(d));
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
