/**
 * The run ledger: after each completed round, the global model, the sampling generator's state
 * and the round's metrics, committed atomically, so `--resume` continues exactly where a crashed
 * coordinator stopped. Files: `ledger/round-NNNN.bin` (the weights), then `ledger.json` (the
 * commit point, renamed into place), each fsynced.
 */
import { mkdir, open, readFile, readdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { CohortError } from "../protocol/errors.js";
import type { TensorSpec } from "../protocol/messages.js";
import { sizeOf } from "../aggregation/weights.js";
import type { RoundMetrics } from "./run-store.js";
import { packWeights, readFloat32, writeAtomic } from "../models/model-file.js";

/** What the ledger records after a round. */
export interface LedgerState {
  version: 1;
  runId: string;
  completedRounds: number;
  /** State of the cohort-sampling generator after the round. */
  rngState: number;
  /** Server optimizer state; plain FedAvg (step η) has none. */
  serverOptimizer: null;
  /** File under `ledger/` holding the global weights after the round. */
  weightsFile: string;
  /** The round's line of `metrics.jsonl`, to repair the file after a crash between the two. */
  lastMetrics: RoundMetrics | null;
}

async function syncDir(dir: string): Promise<void> {
  const handle = await open(dir, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Commit the state after a round: weights first, then the pointer to them. */
export async function commitLedger(
  runDir: string,
  state: Omit<LedgerState, "version" | "weightsFile">,
  weights: readonly Float32Array[],
): Promise<void> {
  const dir = join(runDir, "ledger");
  await mkdir(dir, { recursive: true });
  const weightsFile = `round-${String(state.completedRounds).padStart(4, "0")}.bin`;
  await writeAtomic(join(dir, weightsFile), packWeights(weights));
  const full: LedgerState = { version: 1, ...state, weightsFile };
  await writeAtomic(join(runDir, "ledger.json"), JSON.stringify(full));
  await syncDir(runDir);
  // Older weights are no longer referenced.
  for (const name of await readdir(dir)) {
    if (name !== weightsFile && name.endsWith(".bin")) await rm(join(dir, name), { force: true });
  }
}

/** Read the last committed state and its weights; `null` when the run never completed a round. */
export async function loadLedger(
  runDir: string,
  specs: readonly TensorSpec[],
): Promise<{ state: LedgerState; weights: Float32Array[] } | null> {
  let raw: string;
  try {
    raw = await readFile(join(runDir, "ledger.json"), "utf8");
  } catch {
    return null;
  }
  const state = JSON.parse(raw) as LedgerState;
  if (
    state.version !== 1 ||
    !Number.isInteger(state.completedRounds) ||
    typeof state.weightsFile !== "string"
  ) {
    throw new CohortError("INVALID_OPTION", `${runDir}/ledger.json is not a Cohort run ledger`);
  }
  const bytes = await readFile(join(runDir, "ledger", state.weightsFile));
  const expected = specs.reduce((n, s) => n + sizeOf(s.shape) * 4, 0);
  if (bytes.byteLength !== expected) {
    throw new CohortError(
      "SHAPE_MISMATCH",
      `ledger weights hold ${bytes.byteLength} bytes; the model needs ${expected}`,
    );
  }
  const weights: Float32Array[] = [];
  let at = 0;
  for (const s of specs) {
    const n = sizeOf(s.shape);
    weights.push(readFloat32(bytes, at, n));
    at += n * 4;
  }
  return { state, weights };
}

/**
 * Make `metrics.jsonl` hold exactly rounds 1 … `completed`, once each: drop lines of rounds the
 * ledger never committed (a crash after the append), add the ledger's last round if its line
 * is missing (a crash before the append), and drop duplicates.
 */
export async function repairMetrics(runDir: string, state: LedgerState): Promise<void> {
  const path = join(runDir, "metrics.jsonl");
  let text = "";
  try {
    text = await readFile(path, "utf8");
  } catch {
    // No metrics yet.
  }
  const byRound = new Map<number, string>();
  for (const line of text.split("\n")) {
    if (line.trim() === "") continue;
    let round: unknown;
    try {
      round = (JSON.parse(line) as { round?: unknown }).round;
    } catch {
      continue; // a torn last line
    }
    if (typeof round === "number" && round <= state.completedRounds && !byRound.has(round))
      byRound.set(round, line);
  }
  if (state.lastMetrics !== null && !byRound.has(state.completedRounds)) {
    byRound.set(state.completedRounds, JSON.stringify(state.lastMetrics));
  }
  const lines = [...byRound.entries()].sort((a, b) => a[0] - b[0]).map(([, l]) => l);
  await writeAtomic(path, lines.map((l) => l + "\n").join(""));
}
