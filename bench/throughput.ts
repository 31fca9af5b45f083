/**
 * Simulation throughput (`npm run bench:throughput`, after `npm run build`): cohort-batched
 * training against device-by-device training, side by side in one run on the wasm backend.
 *   1. The 2NN's training throughput, 10 devices × 600 examples, one epoch, B = 10 and 50:
 *      `trainLocal` device by device, `trainBatched` of all ten at once, and Debian's PyTorch
 *      (the system `python3` with `python3-torch`, one model at a time; skipped when absent).
 *   2. A McMahan 2NN round in the simulator (100 devices × 600, C = 0.1, E = 1, B = 10, lr 0.1):
 *      mean round time batched and one by one, and their accuracy curves over the same rounds.
 *   3. Worker threads × batching: the same rounds on two workers, batched and one by one.
 * Prints `batched vs per-device: N×` (the round time ratio); the full run writes
 * docs/figures/throughput.md and .json.
 *
 * `BENCH_QUICK=1`: 3 rounds, fewer repetitions. Flags: --rounds N (default 50), --workers N
 * (default 2).
 */
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { availableParallelism, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import * as tf from "@tensorflow/tfjs";
import {
  batchPlan,
  instantiate,
  readWeights,
  resolveModel,
  selectBackend,
  shareDataset,
  TrainPool,
  toTensors,
  trainBatched,
  trainLocal,
  writeWeights,
  type LocalTraining,
} from "../models/index.js";
import { loadDataset, subsetDataset, simulate } from "../simulations/index.js";
import type { RoundMetrics } from "../coordinator/run-store.js";
import type { Dataset } from "../protocol/dataset.js";
import { mcmahan2nn, mcmahanDataset } from "./mcmahan.js";
import { median } from "./stats.js";

const QUICK = process.env.BENCH_QUICK === "1";
const { values: args } = parseArgs({
  options: {
    rounds: { type: "string", default: QUICK ? "3" : "50" },
    workers: { type: "string", default: "2" },
  },
});
const ROUNDS = Number(args.rounds);
const WORKERS = Number(args.workers);
const DEVICES = 10;
const PER_DEVICE = 600;
const BATCHES = [10, 50];
const REPS = QUICK ? 3 : 7;
const SEED = 1;

function config(batchSize: number): LocalTraining {
  return { optimizer: "sgd", learningRate: 0.1, localEpochs: 1, batchSize };
}

interface ThroughputRow {
  batch: number;
  perDeviceSamplesPerS: number;
  batchedSamplesPerS: number;
  /** Batched, the devices split across the worker threads. */
  pooledSamplesPerS: number;
  /** PyTorch on one thread, as wasm trains here; and on every core. */
  torchSamplesPerS: number | null;
  torchAllCoresSamplesPerS: number | null;
}

/** Samples/s of ten devices' epochs, one by one and batched, alternating repetitions. */
async function throughput(shards: Dataset[]): Promise<ThroughputRow[]> {
  const loaded = await resolveModel("mlp", {
    inputShape: [...shards[0]!.sampleShape],
    numClasses: 10,
  });
  const model = await instantiate(loaded.spec, loaded.weights);
  const weights = loaded.weights;
  const tensors = shards.map((s) => toTensors(s));
  const shared = shards.map((s) => shareDataset(s));
  const pool = new TrainPool({ size: WORKERS });
  await pool.warmUp();
  const torch = pytorch(shards, 1);
  const torchAll = availableParallelism() > 1 ? pytorch(shards, availableParallelism()) : torch;
  const rows: ThroughputRow[] = [];
  try {
    for (const batch of BATCHES) {
      const cfg = config(batch);
      const plan = batchPlan(model, cfg);
      if (typeof plan === "string") throw new Error(`the 2NN does not batch: ${plan}`);
      const oneByOne = async () => {
        const t0 = performance.now();
        for (const [k, data] of tensors.entries()) {
          writeWeights(model, weights);
          await trainLocal(model, data, cfg, k);
          await readWeights(model);
        }
        return performance.now() - t0;
      };
      const pooled = async () => {
        const t0 = performance.now();
        const per = Math.ceil(DEVICES / WORKERS);
        await Promise.all(
          Array.from({ length: WORKERS }, (_, w) =>
            pool.trainBatch(
              loaded.spec,
              shared.slice(w * per, (w + 1) * per).map((data, j) => ({
                weights: [...weights],
                data,
                config: cfg,
                shuffleSeed: w * per + j,
              })),
            ),
          ),
        );
        return performance.now() - t0;
      };
      const batched = async () => {
        const t0 = performance.now();
        await trainBatched(
          plan,
          shards.map((data, k) => ({ weights, data, config: cfg, shuffleSeed: k })),
        );
        return performance.now() - t0;
      };
      await oneByOne();
      await batched();
      await pooled();
      const a: number[] = [];
      const b: number[] = [];
      const c: number[] = [];
      for (let r = 0; r < REPS; r++) {
        a.push(await oneByOne());
        b.push(await batched());
        c.push(await pooled());
      }
      const samples = DEVICES * PER_DEVICE;
      rows.push({
        batch,
        perDeviceSamplesPerS: (samples / median(a)) * 1000,
        batchedSamplesPerS: (samples / median(b)) * 1000,
        pooledSamplesPerS: (samples / median(c)) * 1000,
        torchSamplesPerS: torch?.samplesPerS[String(batch)] ?? null,
        torchAllCoresSamplesPerS: torchAll?.samplesPerS[String(batch)] ?? null,
      });
    }
  } finally {
    tensors.forEach((t) => t.dispose());
    model.dispose();
    await pool.close();
  }
  if (torch !== null) console.log(`note: PyTorch ${torch.torch}`);
  return rows;
}

interface TorchResult {
  torch: string;
  threads: number;
  samplesPerS: Record<string, number>;
}

/**
 * Debian's PyTorch on the first device's examples, one model at a time, on `threads` threads;
 * null where it is not installed.
 */
function pytorch(shards: Dataset[], threads: number): TorchResult | null {
  const python = "/usr/bin/python3";
  const probe = spawnSync(python, ["-c", "import torch"], { encoding: "utf8" });
  if (probe.status !== 0) {
    console.log("note: no python3-torch: the PyTorch row is skipped");
    return null;
  }
  const dir = mkdtempSync(join(tmpdir(), "cohort-torch-"));
  try {
    const data = shards[0]!;
    writeFileSync(join(dir, "x.bin"), data.features);
    writeFileSync(join(dir, "y.bin"), Int32Array.from(data.labels));
    const script = fileURLToPath(new URL("../../bench/torch-2nn.py", import.meta.url));
    const run = spawnSync(
      python,
      [
        script,
        join(dir, "x.bin"),
        join(dir, "y.bin"),
        String(PER_DEVICE),
        BATCHES.join(","),
        String(REPS * DEVICES),
        String(threads),
      ],
      { encoding: "utf8" },
    );
    if (run.status !== 0) {
      console.log(`note: the PyTorch run failed: ${run.stderr.trim().split("\n").at(-1)}`);
      return null;
    }
    return JSON.parse(run.stdout.trim().split("\n").at(-1)!) as TorchResult;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

interface RoundRow {
  run: string;
  workers: number;
  batched: boolean;
  meanRoundMs: number;
  meanTrainMs: number;
  finalAccuracy: number | null;
  accuracy: number[];
}

async function rounds(
  data: string,
  name: string,
  workers: number,
  batched: "auto" | "off",
  count: number,
): Promise<RoundRow> {
  process.stderr.write(`${name}\n`);
  const runDir = join("runs/bench-throughput", name.replace(/[^a-z0-9]+/gi, "-"));
  rmSync(runDir, { recursive: true, force: true });
  const { summary, rounds: done } = await simulate(
    {
      ...mcmahan2nn(data, SEED),
      name,
      devices: 100,
      fractionFit: 0.1,
      rounds: count,
      backend: "wasm",
      workers,
      batched,
      checkpointEvery: 0,
      runDir,
    },
    { progress: null },
  );
  rmSync(runDir, { recursive: true, force: true });
  const trainMs = (r: RoundMetrics) => r.durationMs - (r.evaluationMs ?? 0);
  return {
    run: name,
    workers,
    batched: summary.training.batched,
    meanRoundMs: summary.meanRoundMs,
    meanTrainMs: done.reduce((s, r) => s + trainMs(r), 0) / done.length,
    finalAccuracy: summary.finalAccuracy,
    accuracy: done.map((r) => r.accuracy ?? Number.NaN),
  };
}

function fmt(n: number | null, digits = 0): string {
  return n === null ? "–" : n.toLocaleString("en-US", { maximumFractionDigits: digits });
}

async function main(): Promise<void> {
  await selectBackend("wasm");
  console.log(`backend ${tf.getBackend()}; quick ${QUICK}; rounds ${ROUNDS}; workers ${WORKERS}`);
  const data = await mcmahanDataset();
  const train = await loadDataset(data, "train");
  const shards = Array.from({ length: DEVICES }, (_, k) =>
    subsetDataset(
      train,
      Array.from({ length: PER_DEVICE }, (_, i) => k * PER_DEVICE + i),
    ),
  );
  const tput = await throughput(shards);
  console.log("\n2NN training throughput (samples/s, 10 devices × 600, one epoch)");
  console.log(
    `B   | one by one | batched | batched, ${WORKERS} workers | PyTorch 1 thread | PyTorch ${availableParallelism()} threads | batched ÷ one by one | batched ÷ PyTorch 1 thread`,
  );
  for (const r of tput) {
    console.log(
      `${String(r.batch).padEnd(3)} | ${fmt(r.perDeviceSamplesPerS).padStart(10)} | ${fmt(r.batchedSamplesPerS).padStart(7)} | ${fmt(r.pooledSamplesPerS).padStart(7)} | ${fmt(r.torchSamplesPerS).padStart(7)} | ${fmt(r.torchAllCoresSamplesPerS).padStart(7)} | ` +
        `${(r.batchedSamplesPerS / r.perDeviceSamplesPerS).toFixed(2)}× | ${r.torchSamplesPerS === null ? "–" : `${(r.batchedSamplesPerS / r.torchSamplesPerS).toFixed(2)}×`}`,
    );
  }

  // The two training paths' rounds back to back, so the machine's load drifts on both alike.
  const off = await rounds(data, "2NN one by one", 0, "off", ROUNDS);
  const on = await rounds(data, "2NN batched", 0, "auto", ROUNDS);
  const poolOff = await rounds(
    data,
    `2NN one by one, ${WORKERS} workers`,
    WORKERS,
    "off",
    Math.min(ROUNDS, 10),
  );
  const poolOn = await rounds(
    data,
    `2NN batched, ${WORKERS} workers`,
    WORKERS,
    "auto",
    Math.min(ROUNDS, 10),
  );
  const table = [off, on, poolOff, poolOn];
  const gaps = on.accuracy.map((a, i) => Math.abs(a - off.accuracy[i]!));
  const gap = Math.max(...gaps);
  const meanGap = gaps.reduce((s, g) => s + g, 0) / gaps.length;
  const finalGap = gaps.at(-1)!;
  const gapText = `largest gap ${(gap * 100).toFixed(2)} points, mean ${(meanGap * 100).toFixed(2)}, final ${(finalGap * 100).toFixed(2)}`;
  console.log(`\nMcMahan 2NN rounds on ${data} (100 devices × 600, C = 0.1, E = 1, B = 10)`);
  console.log("run | mean round ms | of which training ms | final accuracy");
  for (const r of table)
    console.log(
      `${r.run} | ${fmt(r.meanRoundMs)} | ${fmt(r.meanTrainMs)} | ${fmt(r.finalAccuracy, 4)}`,
    );
  console.log(`accuracy curves over ${ROUNDS} rounds: ${gapText}`);
  console.log(
    `workers × batching: batched on ${WORKERS} workers vs one by one on ${WORKERS} workers: ${(poolOff.meanRoundMs / poolOn.meanRoundMs).toFixed(2)}×; vs batched in one thread: ${(on.meanRoundMs / poolOn.meanRoundMs).toFixed(2)}×`,
  );
  console.log(`batched vs per-device: ${(off.meanRoundMs / on.meanRoundMs).toFixed(2)}×`);

  if (QUICK) return;
  mkdirSync("docs/figures", { recursive: true });
  const md = [
    "# Simulation throughput: cohort-batched training",
    "",
    `\`npm run bench:throughput\` (wasm; ${data}; seed ${SEED}; this 2-core machine, shared: ratios measured side by side in one run).`,
    "",
    "## 2NN training throughput (10 devices × 600 examples, one epoch)",
    "",
    `| B | one by one (samples/s) | batched | batched, ${WORKERS} workers | Debian PyTorch, 1 thread | PyTorch, ${availableParallelism()} threads | batched ÷ one by one | batched ÷ PyTorch 1 thread |`,
    "|---|---|---|---|---|---|---|---|",
    ...tput.map(
      (r) =>
        `| ${r.batch} | ${fmt(r.perDeviceSamplesPerS)} | ${fmt(r.batchedSamplesPerS)} | ${fmt(r.pooledSamplesPerS)} | ${fmt(r.torchSamplesPerS)} | ${fmt(r.torchAllCoresSamplesPerS)} | ${(r.batchedSamplesPerS / r.perDeviceSamplesPerS).toFixed(2)}× | ${r.torchSamplesPerS === null ? "–" : `${(r.batchedSamplesPerS / r.torchSamplesPerS).toFixed(2)}×`} |`,
    ),
    "",
    `## McMahan 2NN rounds (100 devices × 600, C = 0.1, E = 1, B = 10, lr 0.1; ${ROUNDS} rounds in one thread, ${Math.min(ROUNDS, 10)} on workers)`,
    "",
    "| run | mean round (ms) | of which training (ms) | final accuracy |",
    "|---|---|---|---|",
    ...table.map(
      (r) =>
        `| ${r.run} | ${fmt(r.meanRoundMs)} | ${fmt(r.meanTrainMs)} | ${fmt(r.finalAccuracy, 4)} |`,
    ),
    "",
    `- batched vs per-device round time: **${(off.meanRoundMs / on.meanRoundMs).toFixed(2)}×**`,
    `- accuracy curves, batched vs one by one, over ${ROUNDS} rounds: ${gapText} (the same seed, so the same cohorts and shuffles: what differs is float rounding, which SGD amplifies round after round)`,
    `- batched on ${WORKERS} workers vs one by one on ${WORKERS} workers: ${(poolOff.meanRoundMs / poolOn.meanRoundMs).toFixed(2)}×`,
    "",
  ].join("\n");
  writeFileSync("docs/figures/throughput.md", md);
  writeFileSync(
    "docs/figures/throughput.json",
    JSON.stringify(
      { data, rounds: ROUNDS, throughput: tput, runs: table, accuracyGap: gap },
      null,
      2,
    ) + "\n",
  );
}

await main();
