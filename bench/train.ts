/**
 * Training benchmark. On 600 real MNIST digits, one epoch, batch 10 and 50, for the 2NN and the
 * CNN: samples/s on every backend this process can start, and the framework's training path
 * (writeWeights → trainLocal → readWeights, as a client runs each round) against a bare tfjs
 * `model.fit` of the same model on the same backend. Then the training pool: one worker against
 * two, beside the hardware's own ceiling (a CPU-bound pure-JS loop in one and two threads).
 *
 * Run with `npm run bench:train` (after `npm run build`); with `BENCH_OUT=path.json` the results
 * are also written as JSON.
 */
import { writeFile } from "node:fs/promises";
import { availableParallelism, cpus, loadavg } from "node:os";
import { Worker } from "node:worker_threads";
import * as tf from "@tensorflow/tfjs";
import {
  instantiate,
  resolveModel,
  probeWebGpuAdapter,
  readWeights,
  shareDataset,
  toTensors,
  trainLocal,
  TrainPool,
  useBackend,
  writeWeights,
  type LoadedModel,
  type NodeBackend,
  type TensorData,
  type TrainJob,
} from "../models/index.js";
import type { Dataset } from "../protocol/dataset.js";
import type { LocalTraining } from "../models/training.js";
import { loadMnistDigits, takeExamples } from "../models/datasets/index.js";
import { median } from "./stats.js";

const SAMPLES = 600;
const BATCHES = [10, 50] as const;
const MODELS = ["mlp", "cnn"] as const;
type ModelName = (typeof MODELS)[number];
/** Timed repetitions per path (after one warm-up); the median is reported. */
const REPS: Record<ModelName, number> = { mlp: 7, cnn: 4 };

interface Row {
  backend: string;
  model: ModelName;
  batch: number;
  bareSamplesPerS: number;
  frameworkSamplesPerS: number;
  /** Framework time / bare time − 1. */
  overhead: number;
}

const notes: string[] = [];

function note(line: string): void {
  notes.push(line);
  console.log(`note: ${line}`);
}

function config(batchSize: number): LocalTraining {
  return { optimizer: "sgd", learningRate: 0.01, localEpochs: 1, batchSize };
}

/** Bare tfjs: compile once, then `fit` one epoch. */
async function bareEpoch(model: tf.LayersModel, data: TensorData, batchSize: number) {
  const t0 = performance.now();
  await model.fit(data.x, data.targets("sparse-categorical-crossentropy"), {
    epochs: 1,
    batchSize,
    shuffle: true,
    verbose: 0,
  });
  return performance.now() - t0;
}

/** What a client does each round: load the global weights, train, read the weights back. */
async function frameworkEpoch(
  model: tf.LayersModel,
  global: Float32Array[],
  data: TensorData,
  batchSize: number,
) {
  const t0 = performance.now();
  writeWeights(model, global);
  await trainLocal(model, data, config(batchSize));
  await readWeights(model);
  return performance.now() - t0;
}

async function measure(backend: string, loaded: LoadedModel, name: ModelName, data: TensorData) {
  const rows: Row[] = [];
  for (const batch of BATCHES) {
    // Two instances of the same model and weights, so neither path disturbs the other's state.
    const bare = await instantiate(loaded.spec, loaded.weights);
    const framework = await instantiate(loaded.spec, loaded.weights);
    const optimizer = tf.train.sgd(0.01);
    bare.compile({ optimizer, loss: "categoricalCrossentropy", metrics: ["accuracy"] });
    await bareEpoch(bare, data, batch);
    await frameworkEpoch(framework, loaded.weights, data, batch);
    const bareMs: number[] = [];
    const frameworkMs: number[] = [];
    for (let r = 0; r < REPS[name]; r++) {
      bareMs.push(await bareEpoch(bare, data, batch));
      frameworkMs.push(await frameworkEpoch(framework, loaded.weights, data, batch));
    }
    const b = median(bareMs);
    const f = median(frameworkMs);
    rows.push({
      backend,
      model: name,
      batch,
      bareSamplesPerS: (SAMPLES / b) * 1000,
      frameworkSamplesPerS: (SAMPLES / f) * 1000,
      overhead: f / b - 1,
    });
    console.log(
      `  ${backend} ${name} B=${batch}: bare ${b.toFixed(0)} ms, framework ${f.toFixed(0)} ms per epoch`,
    );
    optimizer.dispose();
    bare.dispose();
    framework.dispose();
  }
  return rows;
}

/** Start a backend for the table, or say why it is skipped. */
async function startBackend(name: NodeBackend): Promise<boolean> {
  if (name === "webgpu") {
    try {
      const adapter = await probeWebGpuAdapter();
      if (adapter.software) {
        note(`webgpu skipped: software adapter only (${adapter.description || adapter.vendor})`);
        return false;
      }
    } catch (error) {
      note(`webgpu skipped: ${error instanceof Error ? error.message : String(error)}`);
      return false;
    }
  }
  try {
    await useBackend(name);
    return true;
  } catch (error) {
    note(`${name} skipped: ${error instanceof Error ? error.message : String(error)}`);
    return false;
  }
}

async function backendTable(digits: Dataset) {
  const models = new Map<ModelName, LoadedModel>();
  for (const name of MODELS) models.set(name, await resolveModel(name, { seed: 1 }));
  const rows: Row[] = [];
  // BENCH_BACKENDS=wasm,webgpu limits the table (e.g. on a machine lent for minutes).
  const only = process.env.BENCH_BACKENDS?.split(",");
  const all = ["wasm", "cpu", "tfjs-node", "tfjs-node-gpu", "webgpu"] as const;
  for (const backend of all.filter((b) => only === undefined || only.includes(b))) {
    if (!(await startBackend(backend))) continue;
    const data = toTensors(digits);
    for (const name of MODELS) {
      if (backend === "cpu" && name === "cnn") {
        note("cpu CNN skipped: ~87 s per 50-sample step, an epoch of 600 would take ~17 min");
        continue;
      }
      rows.push(...(await measure(backend, models.get(name)!, name, data)));
    }
    data.dispose();
  }
  return rows;
}

/** Samples/s of `jobs` on a pool of `size` workers, after one warm-up job per worker. */
async function poolRate(size: number, jobs: TrainJob[]): Promise<number> {
  const pool = new TrainPool({ size });
  try {
    await pool.warmUp();
    await Promise.all(Array.from({ length: size }, (_, i) => pool.train(jobs[i % jobs.length]!)));
    const t0 = performance.now();
    await Promise.all(jobs.map((job) => pool.train(job)));
    const ms = performance.now() - t0;
    const samples = jobs.reduce((n, j) => n + j.data.labels.length, 0);
    return (samples / ms) * 1000;
  } finally {
    await pool.close();
  }
}

const SPIN = `
const { parentPort, workerData } = require("node:worker_threads");
let x = 1;
for (let i = 0; i < workerData; i++) x = (Math.imul(x, 1664525) + 1013904223 + i) | 0;
parentPort.postMessage(x);`;

function spin(iterations: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const w = new Worker(SPIN, { eval: true, workerData: iterations });
    w.once("message", () => resolve());
    w.once("error", reject);
  });
}

/** Two threads' throughput over one thread's on a CPU-bound JS loop: the hardware's ceiling. */
async function jsCeiling(): Promise<number> {
  const n = 400_000_000;
  await spin(n / 10);
  let t0 = performance.now();
  await spin(n);
  const one = performance.now() - t0;
  t0 = performance.now();
  await Promise.all([spin(n), spin(n)]);
  const two = performance.now() - t0;
  return (2 * one) / two;
}

async function poolScaling(digits: Dataset) {
  const shared = shareDataset(digits);
  const out: Array<{ model: ModelName; batch: number; one: number; two: number; ratio: number }> =
    [];
  for (const [name, batch, count] of [
    ["cnn", 50, 4],
    ["mlp", 10, 8],
  ] as const) {
    const { spec, weights } = await resolveModel(name, { seed: 1 });
    const job: TrainJob = { spec, weights, data: shared, config: config(batch) };
    const jobs = Array.from({ length: count }, () => job);
    const one = await poolRate(1, jobs);
    const two = await poolRate(2, jobs);
    out.push({ model: name, batch, one, two, ratio: two / one });
    console.log(
      `  pool ${name} B=${batch}: 1 worker ${one.toFixed(0)}, 2 workers ${two.toFixed(0)} samples/s`,
    );
  }
  return out;
}

function printTable(rows: Row[]): void {
  const header = ["backend", "model", "batch", "bare fit /s", "framework /s", "overhead"];
  const lines = rows.map((r) => [
    r.backend,
    r.model === "mlp" ? "2NN" : "CNN",
    String(r.batch),
    r.bareSamplesPerS.toFixed(0),
    r.frameworkSamplesPerS.toFixed(0),
    `${(100 * r.overhead).toFixed(1)} %`,
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i]!.length)));
  const fmt = (cells: string[]) => cells.map((c, i) => c.padStart(widths[i]!)).join("  ");
  console.log(fmt(header));
  for (const l of lines) console.log(fmt(l));
}

async function main() {
  const started = performance.now();
  const machine = {
    cores: availableParallelism(),
    cpu: cpus()[0]?.model ?? "unknown",
    node: process.version,
    loadavgBefore: loadavg(),
  };
  console.log(`# cohort training benchmark: ${SAMPLES} MNIST digits, 1 epoch`);
  console.log(
    `${machine.cores} cores (${machine.cpu}), node ${machine.node}, load ${loadavg()
      .map((l) => l.toFixed(2))
      .join(" ")}`,
  );
  const digits = takeExamples(await loadMnistDigits("train"), SAMPLES);

  console.log("\nbackends (median of repeated epochs):");
  const rows = await backendTable(digits);
  console.log("\npool (each job = 1 epoch on the 600 digits, in worker threads on wasm):");
  // BENCH_POOL=0 skips the worker-pool measurement.
  const skipPool = process.env.BENCH_POOL === "0";
  const pool = skipPool ? [] : await poolScaling(digits);
  const ceiling = skipPool ? 0 : await jsCeiling();

  console.log("\n## samples/s, one process");
  printTable(rows);
  console.log("\n## training pool, samples/s");
  for (const p of pool) {
    console.log(
      `${p.model === "mlp" ? "2NN" : "CNN"} B=${p.batch}: 1 worker ${p.one.toFixed(0)}, 2 workers ${p.two.toFixed(0)}: ${p.ratio.toFixed(2)}×`,
    );
  }
  console.log(`hardware ceiling, pure-JS loop in 2 threads vs 1: ${ceiling.toFixed(2)}×`);

  const wasm = (model: ModelName, batch: number) =>
    rows.find((r) => r.backend === "wasm" && r.model === model && r.batch === batch);
  const worstOverhead = Math.max(...rows.map((r) => r.overhead));
  const checks = [
    ["CNN ≥ 150 samples/s at B=50 (wasm)", (wasm("cnn", 50)?.frameworkSamplesPerS ?? 0) >= 150],
    ["2NN ≥ 3000 samples/s at B=50 (wasm)", (wasm("mlp", 50)?.frameworkSamplesPerS ?? 0) >= 3000],
    ["framework ≤ 5 % over bare fit (every row)", worstOverhead <= 0.05],
    ["2 workers ≥ 1.6× one (CNN)", (pool[0]?.ratio ?? 0) >= 1.6],
  ] as const;
  console.log("\n## targets");
  for (const [what, ok] of checks) console.log(`${ok ? "met " : "MISS"}  ${what}`);
  if ((pool[0]?.ratio ?? 0) < 1.6) {
    note(
      `2 workers gave ${pool[0]?.ratio.toFixed(2)}× where the hardware gives ${ceiling.toFixed(2)}× on pure JS`,
    );
  }
  const loadAfter = loadavg();
  if (loadAfter[0]! > machine.cores * 0.75) {
    note(
      `load average ${loadAfter[0]!.toFixed(2)} on ${machine.cores} cores: other work ran, figures are noisy`,
    );
  }
  const totalS = (performance.now() - started) / 1000;
  console.log(`\n(${totalS.toFixed(0)} s)`);

  const out = process.env.BENCH_OUT;
  if (out) {
    const json = {
      machine: { ...machine, loadavgAfter: loadAfter },
      rows,
      pool,
      jsCeiling: ceiling,
      checks,
      notes,
      totalS,
    };
    await writeFile(out, `${JSON.stringify(json, null, 2)}\n`);
    console.log(`results written to ${out}`);
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
