/**
 * Simulator benchmark (`npm run bench:simulate`, after `npm run build`):
 * 1. framework overhead: simulation time / bare tfjs `model.fit` for the same sample-passes;
 * 2. population scaling: per-round wall time and peak memory at 1,000 / 10,000 / 100,000
 *    devices with a fixed cohort of 10 (each population in its own process).
 * Ratios are measured side by side in one run; absolute times drift on a shared machine.
 * `--overhead` runs the first part alone.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import * as tf from "@tensorflow/tfjs";
import { simulate } from "../simulations/index.js";
import { loadDataset, takeExamples } from "../models/datasets/index.js";
import { instantiate, resolveModel, selectBackend, toTensors } from "../models/index.js";

const dataset = process.env.BENCH_DATASET ?? "fashion-mnist";

async function overhead(): Promise<void> {
  const backend = await selectBackend("auto");
  const devices = 100;
  const perDevice = 600;
  const rounds = 5;
  const cohort = 10;
  const run = await simulate(
    {
      name: "overhead",
      devices,
      examplesPerDevice: perDevice,
      // 60,000 examples on Fashion-MNIST; with BENCH_DATASET=mnist (8,000) devices share them.
      allowOversampling: true,
      fractionFit: cohort / devices,
      rounds,
      dataset,
      model: "mlp",
      evalSize: 1000,
      baselineEpochs: 0,
      runDir: mkdtempSync(join(tmpdir(), "cohort-bench-")),
    },
    { progress: null },
  );
  const simMs = run.rounds.reduce((s, r) => s + r.durationMs, 0);
  const evalMs = run.rounds.reduce((s, r) => s + r.evaluationMs, 0);
  const trainMs = run.rounds.reduce((s, r) => s + r.clients.reduce((t, c) => t + c.trainMs, 0), 0);
  // Bare tfjs: the same number of sample-passes, one model.fit per device-round.
  const train = takeExamples(await loadDataset(dataset, "train"), perDevice);
  const { spec, weights } = await resolveModel("mlp");
  const model = await instantiate(spec, weights);
  const t = toTensors(train);
  model.compile({
    optimizer: tf.train.sgd(0.1),
    loss: "categoricalCrossentropy",
    metrics: ["accuracy"],
  });
  const start = performance.now();
  for (let i = 0; i < rounds * cohort; i++) {
    await model.fit(t.x, t.targets("sparse-categorical-crossentropy"), {
      epochs: 1,
      batchSize: 10,
      shuffle: true,
      verbose: 0,
    });
  }
  const bareMs = performance.now() - start;
  t.dispose();
  model.dispose();
  const passes = rounds * cohort * perDevice;
  console.log(
    `## framework overhead (2NN, ${dataset}, ${backend.name}, ${rounds} rounds × ${cohort} devices × ${perDevice} examples = ${passes} sample-passes)`,
  );
  console.log(
    `bare model.fit: ${bareMs.toFixed(0)} ms (${((passes / bareMs) * 1000).toFixed(0)} samples/s)`,
  );
  console.log(
    `simulation rounds: ${simMs.toFixed(0)} ms, of which evaluation ${evalMs.toFixed(0)} ms, client training ${trainMs.toFixed(0)} ms`,
  );
  console.log(
    `ratio (rounds − evaluation) / bare = ${((simMs - evalMs) / bareMs).toFixed(3)}; rounds incl. evaluation / bare = ${(simMs / bareMs).toFixed(3)}`,
  );
}

/** Simulation round time in this thread vs two worker threads, same experiment (both models). */
async function parallel(): Promise<void> {
  console.log(`\n## training in worker threads (wasm), mean round time, same seed and results`);
  for (const model of ["mlp", "cnn"] as const) {
    const run = async (workers: number) => {
      const r = await simulate(
        {
          name: `workers-${workers}`,
          devices: 20,
          examplesPerDevice: model === "cnn" ? 150 : 600,
          allowOversampling: true, // 12,000 examples: more than BENCH_DATASET=mnist has
          fractionFit: 0.2,
          rounds: 3,
          dataset,
          model,
          evalSize: 500,
          baselineEpochs: 0,
          workers,
          runDir: mkdtempSync(join(tmpdir(), "cohort-bench-")),
        },
        { progress: null },
      );
      const steady = r.rounds.slice(1);
      return steady.reduce((t, x) => t + x.durationMs, 0) / steady.length;
    };
    const one = await run(0);
    const two = await run(2);
    console.log(
      `${model}: this thread ${one.toFixed(0)} ms, 2 workers ${two.toFixed(0)} ms per round → ${(one / two).toFixed(2)}×`,
    );
  }
}

/** One population in this process; prints JSON. */
async function population(devices: number): Promise<void> {
  let peak = 0;
  const sample = () => (peak = Math.max(peak, process.memoryUsage().rss));
  const timer = setInterval(sample, 20);
  const run = await simulate(
    {
      name: `population-${devices}`,
      devices,
      examplesPerDevice: 60,
      // Up to 100,000 devices × 60 examples: far more than the dataset, on purpose.
      allowOversampling: true,
      fractionFit: 10 / devices,
      minFitClients: 10,
      rounds: 4,
      dataset,
      model: "mlp",
      evalSize: 1000,
      baselineEpochs: 0,
      runDir: mkdtempSync(join(tmpdir(), "cohort-bench-")),
    },
    { progress: null },
  );
  clearInterval(timer);
  sample();
  const steady = run.rounds.slice(1);
  const mean = steady.reduce((s, r) => s + r.durationMs, 0) / steady.length;
  console.log(
    JSON.stringify({
      devices,
      cohort: run.rounds[0]!.cohortSize,
      meanRoundMs: mean,
      peakRssMiB: peak / 2 ** 20,
    }),
  );
}

async function main(): Promise<void> {
  const child = process.argv[2];
  if (child === "--overhead") return overhead(); // the first part alone
  if (child !== undefined) return population(Number(child));
  await overhead();
  await parallel();
  console.log(
    `\n## population scaling (2NN, cohort of 10, 60 examples per device; one process each)`,
  );
  const self = fileURLToPath(import.meta.url);
  const rows = [1_000, 10_000, 100_000].map((n) =>
    JSON.parse(
      execFileSync(process.execPath, [self, String(n)], { encoding: "utf8" })
        .trim()
        .split("\n")
        .at(-1)!,
    ),
  );
  const base = rows[0].meanRoundMs as number;
  for (const r of rows) {
    console.log(
      `${String(r.devices).padStart(7)} devices: cohort ${r.cohort}, ${r.meanRoundMs.toFixed(0)} ms per round (×${(r.meanRoundMs / base).toFixed(2)} of 1,000), peak RSS ${r.peakRssMiB.toFixed(0)} MiB`,
    );
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
