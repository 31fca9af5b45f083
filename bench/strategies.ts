/**
 * Strategy benchmark (`npm run bench:strategies`, after `npm run build`): McMahan et al.'s 2NN
 * protocol on Fashion-MNIST (100 devices × 600, C = 0.1, E = 1, B = 10), IID and 2-shard, the
 * same seed for every strategy; the 2-shard split with half the devices doing a random
 * fraction of their work (FedProx's heterogeneity); robust aggregators against 2 of 10
 * attackers; and the cost of FedAdam's server step on the CNN. Writes a table, a JSON summary
 * and plots under docs/figures/. Each run's result is kept under runs/bench-strategies/, so an
 * interrupted benchmark continues where it stopped (delete that folder to start over).
 *
 * Flags: --rounds N (default 100), --robust-rounds N (default 20), --workers N (default 2),
 * --only SUBSTRING (runs whose label contains it), --skip-cnn.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { simulate, type SimulationSummary } from "../simulations/index.js";
import type { RoundMetrics } from "../coordinator/run-store.js";
import { accuracyLossSvg, type Series } from "../simulations/plot.js";
import { aggregateRound, resolveStrategy, serverStep } from "../aggregation/index.js";
import { createRng } from "../aggregation/random.js";
import {
  instantiate,
  resolveModel,
  readWeights,
  selectBackend,
  toTensors,
  trainLocal,
  writeWeights,
} from "../models/index.js";
import { loadDataset, takeExamples } from "../models/datasets/index.js";
import { mcmahan2nn } from "./mcmahan.js";

const { values: args } = parseArgs({
  options: {
    rounds: { type: "string", default: "100" },
    "robust-rounds": { type: "string", default: "20" },
    workers: { type: "string", default: "2" },
    only: { type: "string" },
    "skip-cnn": { type: "boolean", default: false },
  },
});
const ROUNDS = Number(args.rounds);
const ROBUST_ROUNDS = Number(args["robust-rounds"]);
const WORKERS = Number(args.workers);
const CACHE = "runs/bench-strategies";
const OUT = "docs/figures";
const SEED = 1;

type Ref = string | { name: string; params: Record<string, number | boolean> };
interface Run {
  group: "iid" | "shards" | "hetero" | "robust";
  label: string;
  strategy: Ref;
  config: Record<string, unknown>;
}

const mcmahan = {
  ...mcmahan2nn("fashion-mnist", SEED),
  devices: 100,
  fractionFit: 0.1,
  targets: [0.7, 0.8, 0.85],
  workers: WORKERS,
};

const strategies: [string, Ref][] = [
  ["FedAvg", "fedavg"],
  [
    "FedAvgM (β 0.9, η 0.3)",
    { name: "fedavgm", params: { momentum: 0.9, serverLearningRate: 0.3 } },
  ],
  ["FedAdam (η 0.01)", { name: "fedadam", params: { serverLearningRate: 0.01 } }],
  ["FedYogi (η 0.01)", { name: "fedyogi", params: { serverLearningRate: 0.01 } }],
  ["FedAdagrad (η 0.03)", { name: "fedadagrad", params: { serverLearningRate: 0.03 } }],
  ...[0.001, 0.01, 0.1, 1].map((mu): [string, Ref] => [
    `FedProx (μ ${mu})`,
    { name: "fedprox", params: { proximalMu: mu } },
  ]),
];

const runs: Run[] = [
  ...strategies.map(([label, strategy]) => ({
    group: "iid" as const,
    label: `IID · ${label}`,
    strategy,
    config: {
      ...mcmahan,
      partition: "iid",
      rounds: ROUNDS,
      baselineEpochs: label === "FedAvg" ? 5 : 0,
    },
  })),
  ...strategies.map(([label, strategy]) => ({
    group: "shards" as const,
    label: `2-shard · ${label}`,
    strategy,
    config: { ...mcmahan, partition: "shards:2", rounds: ROUNDS },
  })),
  ...strategies
    .filter(([label]) => /FedAvg$|μ 0.01|μ 1\)/.test(label))
    .map(([label, strategy]) => ({
      group: "hetero" as const,
      label: `2-shard, half partial work · ${label}`,
      strategy,
      config: { ...mcmahan, partition: "shards:2", rounds: ROUNDS, partialWork: 0.5 },
    })),
  ...robustRuns(),
];

function robustRuns(): Run[] {
  const base = {
    ...mcmahan,
    devices: 10,
    fractionFit: 1,
    partition: "iid",
    rounds: ROBUST_ROUNDS,
    evalSize: 5000,
  };
  const aggregators: [string, Ref][] = [
    ["FedAvg", "fedavg"],
    ["median", "median"],
    ["trimmed mean (β 0.2)", { name: "trimmed-mean", params: { beta: 0.2 } }],
    ["Krum (f 2)", { name: "krum", params: { f: 2 } }],
  ];
  const out: Run[] = aggregators.map(([label, strategy]) => ({
    group: "robust",
    label: `robust · no attack · ${label}`,
    strategy,
    config: base,
  }));
  for (const kind of ["sign-flip", "little-is-enough"] as const) {
    for (const [label, strategy] of aggregators) {
      out.push({
        group: "robust",
        label: `robust · ${kind === "sign-flip" ? "sign flip ×10" : "a little is enough"} · ${label}`,
        strategy,
        config: { ...base, attack: { devices: 2, kind, scale: 10 } },
      });
    }
  }
  return out;
}

interface Result {
  label: string;
  group: Run["group"];
  summary: SimulationSummary;
  accuracy: (number | null)[];
  trainLoss: (number | null)[];
}

function cacheFile(run: Run): string {
  return join(CACHE, `${run.label.replace(/[^a-zA-Z0-9.]+/g, "_")}-${run.config.rounds}.json`);
}

async function runOne(run: Run, index: number, total: number): Promise<Result> {
  const file = cacheFile(run);
  if (existsSync(file)) return JSON.parse(readFileSync(file, "utf8")) as Result;
  process.stderr.write(`[${index + 1}/${total}] ${run.label}\n`);
  const { summary, rounds } = await simulate({
    ...run.config,
    name: run.label,
    strategy: run.strategy,
    runDir: join(CACHE, "dirs", String(index)),
  });
  const result: Result = {
    label: run.label,
    group: run.group,
    summary,
    accuracy: rounds.map((r: RoundMetrics) => r.accuracy ?? null),
    trainLoss: rounds.map((r: RoundMetrics) => r.trainLoss),
  };
  writeFileSync(file, JSON.stringify(result));
  return result;
}

const pct = (v: number | null | undefined) => (v == null ? "–" : `${(100 * v).toFixed(1)} %`);

function table(results: Result[], baseline: number | null): string {
  // The group's FedAvg run (the first, no attack) sets the bar: when does each run reach its final accuracy?
  const bar = results.find((r) => / · FedAvg$/.test(r.label))?.summary.finalAccuracy ?? null;
  const rows = results.map((r) => {
    const s = r.summary;
    const t = s.roundsToTarget;
    const reach = bar === null ? null : r.accuracy.findIndex((a) => a !== null && a >= bar);
    return `| ${r.label} | ${t["0.8"] ?? "–"} | ${t["0.85"] ?? "–"} | ${reach === null || reach < 0 ? "–" : reach + 1} | ${pct(s.finalAccuracy)} | ${pct(s.bestAccuracy)} | ${(s.meanRoundMs / 1000).toFixed(2)} s |`;
  });
  return [
    `| run | rounds to 80 % | rounds to 85 % | rounds to FedAvg's final (${pct(bar)}) | final | best | mean round |`,
    `|---|---|---|---|---|---|---|`,
    ...rows,
    ...(baseline === null
      ? []
      : [`| centralised (5 epochs on the pooled data) | | | | ${pct(baseline)} | | |`]),
  ].join("\n");
}

const COLORS = [
  "#1f77b4",
  "#ff7f0e",
  "#2ca02c",
  "#d62728",
  "#9467bd",
  "#8c564b",
  "#e377c2",
  "#7f7f7f",
  "#bcbd22",
  "#17becf",
  "#393b79",
  "#637939",
];

function plot(title: string, results: Result[], baseline: number | null): string {
  const rounds = Math.max(...results.map((r) => r.accuracy.length));
  const series = (pick: (r: Result) => (number | null)[]): Series[] =>
    results.map((r, i) => ({
      label: r.label.split(" · ").slice(1).join(" · "),
      color: COLORS[i % COLORS.length]!,
      points: pick(r).map((y, k) => ({ x: k + 1, y: y ?? Number.NaN })),
    }));
  const base: Series[] =
    baseline === null
      ? []
      : [
          {
            label: "centralised",
            color: "#000000",
            dashed: true,
            points: [
              { x: 0, y: baseline },
              { x: rounds, y: baseline },
            ],
          },
        ];
  return accuracyLossSvg(
    title,
    [...series((r) => r.accuracy), ...base],
    series((r) => r.trainLoss),
    rounds,
  );
}

/** FedAdam's server step on the McMahan CNN against an estimate of its round's time. */
async function cnnServerStep(): Promise<string> {
  await selectBackend("wasm");
  const { spec, weights } = await resolveModel("cnn", { seed: SEED });
  const rng = createRng(5);
  const updates = Array.from({ length: 10 }, (_, c) => ({
    clientId: `c${c}`,
    numExamples: 600,
    delta: weights.map((w) => Float32Array.from(w, () => (rng() - 0.5) * 1e-3)),
  }));
  const adam = resolveStrategy({ name: "fedadam", params: { serverLearningRate: 0.01 } });
  const avg = resolveStrategy("fedavg");
  const time = (s: typeof adam) => {
    const state = s.optimizer.init(weights);
    const t0 = performance.now();
    for (let i = 0; i < 3; i++)
      serverStep(s, weights, state, aggregateRound(s, weights, updates)!, 1);
    return (performance.now() - t0) / 3;
  };
  const adamMs = time(adam);
  const avgMs = time(avg);
  // One device's local epoch (600 examples, B = 10) on this machine's CPU backend, side by side.
  const data = takeExamples(await loadDataset("fashion-mnist", "train"), 600);
  const model = await instantiate(spec, weights);
  const tensors = toTensors({ ...data, sampleShape: [28, 28, 1] });
  writeWeights(model, weights);
  const t0 = performance.now();
  await trainLocal(
    model,
    tensors,
    { optimizer: "sgd", learningRate: 0.05, localEpochs: 1, batchSize: 10 },
    1,
  );
  const epochMs = performance.now() - t0;
  await readWeights(model);
  tensors.dispose();
  model.dispose();
  // McMahan's CNN round: 10 devices × E = 5 epochs, trained one after another on one core.
  const roundMs = epochMs * 5 * 10;
  return [
    `FedAdam server step on the CNN (${spec.numParameters.toLocaleString("en")} parameters, 10 updates): ${adamMs.toFixed(0)} ms (FedAvg: ${avgMs.toFixed(0)} ms)`,
    `one device-epoch of the CNN (600 examples, B = 10, wasm): ${(epochMs / 1000).toFixed(1)} s → a round of 10 devices × E = 5: ≈ ${(roundMs / 1000).toFixed(0)} s`,
    `FedAdam's step / round: ${((100 * adamMs) / roundMs).toFixed(3)} % (target ≤ 2 %)`,
  ].join("\n");
}

async function main(): Promise<void> {
  mkdirSync(CACHE, { recursive: true });
  mkdirSync(OUT, { recursive: true });
  const chosen = runs.filter((r) => args.only === undefined || r.label.includes(args.only));
  const results: Result[] = [];
  for (const [i, run] of chosen.entries()) results.push(await runOne(run, i, chosen.length));
  const baseline =
    results.find((r) => r.summary.baseline !== null)?.summary.baseline?.accuracy ?? null;
  const groups: [Run["group"], string][] = [
    ["iid", "Fashion-MNIST 2NN, IID"],
    ["shards", "Fashion-MNIST 2NN, 2 shards per device"],
    ["hetero", "2 shards, half the devices doing partial work"],
    ["robust", "2NN IID, 10 devices, 2 attackers"],
  ];
  const sections: string[] = [];
  for (const [group, title] of groups) {
    const rs = results.filter((r) => r.group === group);
    if (rs.length === 0) continue;
    const withBase = group === "robust" ? null : baseline;
    writeFileSync(join(OUT, `strategies-${group}.svg`), plot(title, rs, withBase));
    sections.push(
      `### ${title}\n\n${table(rs, withBase)}\n\n![${title}](strategies-${group}.svg)\n`,
    );
  }
  const cnn = args["skip-cnn"] ? null : await cnnServerStep();
  const md = [
    "# Strategy benchmark",
    "",
    `\`npm run bench:strategies\` (rounds: ${ROUNDS}, robust: ${ROBUST_ROUNDS}; seed ${SEED}; ${WORKERS} worker threads, wasm).`,
    "",
    ...sections,
    ...(cnn === null ? [] : ["### Server step cost", "", "```", cnn, "```", ""]),
  ].join("\n");
  writeFileSync(join(OUT, "strategies.md"), md);
  writeFileSync(
    join(OUT, "strategies.json"),
    JSON.stringify(
      results.map((r) => ({
        label: r.label,
        finalAccuracy: r.summary.finalAccuracy,
        bestAccuracy: r.summary.bestAccuracy,
        roundsToTarget: r.summary.roundsToTarget,
        meanRoundMs: r.summary.meanRoundMs,
      })),
      null,
      2,
    ) + "\n",
  );
  console.log(md);
}

await main();
