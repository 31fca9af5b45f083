/**
 * The run ledger: after each completed round, one server-state record — the global weights,
 * the strategy's state (optimizer moments, momentum), the sampling generator, the round, and
 * the configuration that decides the result with its hash — committed atomically, so
 * `--resume` continues exactly where a crashed coordinator stopped. Files:
 * `ledger/round-NNNN.bin` (weights, then every state array), then `ledger.json` (the commit
 * point, renamed into place), each fsynced. Version-1 ledgers (weights only) still read.
 */
import { mkdir, open, readFile, readdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { CohortError } from "../protocol/errors.js";
import type { TensorSpec } from "../protocol/messages.js";
import { sizeOf } from "../aggregation/weights.js";
import type { Scalar, StateRecord } from "../aggregation/state.js";
import type { RoundMetrics } from "./run-store.js";
import { packWeights, readFloat32, writeAtomic } from "../models/model-file.js";
import type { ExperimentConfig } from "./experiment.js";
import type { VersionPointers } from "./version-gate.js";

/** The server state after a round, as the engine holds it. */
export interface ServerState {
  runId: string;
  completedRounds: number;
  /** State of the cohort-sampling generator after the round. */
  rngState: number;
  weights: Float32Array[];
  strategy: StateRecord;
  /** The options that decide the result, and their hash; null in a version-1 ledger. */
  config: ExperimentConfig | null;
  configHash: string | null;
  /** The round's line of `metrics.jsonl`, to repair the file after a crash between the two. */
  lastMetrics: RoundMetrics | null;
  /** The newest version, the one the weights are, and the promoted one (absent before versions). */
  versions?: VersionPointers;
}

/** `ledger.json`, version 2. */
interface LedgerFile {
  version: 2;
  runId: string;
  completedRounds: number;
  rngState: number;
  configHash: string;
  config: ExperimentConfig;
  /** Strategy scalars, and the names of its arrays in the order they follow the weights. */
  strategyValues: Record<string, Scalar>;
  strategyArrays: string[];
  /** File under `ledger/`: the weights, then each strategy array, in the model's layout. */
  weightsFile: string;
  lastMetrics: RoundMetrics | null;
  versions?: VersionPointers;
}

async function syncDir(dir: string): Promise<void> {
  const handle = await open(dir, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * The weights and then each named state array, packed one copy of the model's layout after
 * another (a ledger or a version file); `SHAPE_MISMATCH` when the size is not that.
 */
export function unpackState(
  bytes: Uint8Array,
  specs: readonly TensorSpec[],
  names: readonly string[],
  what: string,
): { weights: Float32Array[]; arrays: Record<string, Float32Array[]> } {
  const perCopy = specs.reduce((n, s) => n + sizeOf(s.shape) * 4, 0);
  const expected = perCopy * (1 + names.length);
  if (bytes.byteLength !== expected) {
    throw new CohortError(
      "SHAPE_MISMATCH",
      `${what} holds ${bytes.byteLength} bytes; the model and ${names.length} strategy arrays need ${expected}`,
    );
  }
  let at = 0;
  const readCopy = () =>
    specs.map((s) => {
      const n = sizeOf(s.shape);
      const t = readFloat32(bytes, at, n);
      at += n * 4;
      return t;
    });
  const weights = readCopy();
  const arrays: Record<string, Float32Array[]> = {};
  for (const name of names) arrays[name] = readCopy();
  return { weights, arrays };
}

/** The state a commit takes: the configuration and its hash are always known by then. */
export type CommittedState = ServerState & { config: ExperimentConfig; configHash: string };

/** A state as its record (the ledger's fields) and its bytes (weights, then state arrays). */
export function encodeState(state: CommittedState): {
  record: Omit<LedgerFile, "weightsFile">;
  bytes: Uint8Array;
} {
  const names = Object.keys(state.strategy.arrays).sort();
  const arrays = [...state.weights, ...names.flatMap((n) => state.strategy.arrays[n]!)];
  return {
    record: {
      version: 2,
      runId: state.runId,
      completedRounds: state.completedRounds,
      rngState: state.rngState,
      configHash: state.configHash,
      config: state.config,
      strategyValues: state.strategy.values,
      strategyArrays: names,
      lastMetrics: state.lastMetrics,
      ...(state.versions === undefined ? {} : { versions: state.versions }),
    },
    bytes: packWeights(arrays),
  };
}

/** Commit the state after a round: the arrays first, then the pointer to them. */
export async function commitLedger(runDir: string, state: CommittedState): Promise<void> {
  const dir = join(runDir, "ledger");
  await mkdir(dir, { recursive: true });
  const weightsFile = `round-${String(state.completedRounds).padStart(4, "0")}.bin`;
  const { record, bytes } = encodeState(state);
  await writeAtomic(join(dir, weightsFile), bytes);
  const file: LedgerFile = { ...record, weightsFile };
  await writeAtomic(join(runDir, "ledger.json"), JSON.stringify(file));
  await syncDir(runDir);
  // Older rounds are no longer referenced.
  for (const name of await readdir(dir)) {
    if (name !== weightsFile && name.endsWith(".bin")) await rm(join(dir, name), { force: true });
  }
}

function isPointers(v: unknown): v is VersionPointers {
  const o = v as Partial<Record<keyof VersionPointers, unknown>> | null;
  return (
    typeof o === "object" &&
    o !== null &&
    Number.isInteger(o.latest) &&
    Number.isInteger(o.current) &&
    Number.isInteger(o.promoted)
  );
}

function notALedger(where: string, why: string, cause?: unknown): CohortError {
  return new CohortError("INVALID_OPTION", `${where} is not a Cohort run ledger: ${why}`, {
    cause,
  });
}

/**
 * Read the last committed state; `null` only when there is no `ledger.json` (the run never
 * completed a round). An unreadable or malformed ledger is an error, never a fresh start.
 */
export async function loadLedger(
  runDir: string,
  specs: readonly TensorSpec[],
): Promise<ServerState | null> {
  let raw: string;
  try {
    raw = await readFile(join(runDir, "ledger.json"), "utf8");
  } catch (cause) {
    if ((cause as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw new CohortError(
      "INVALID_OPTION",
      `cannot read ${runDir}/ledger.json: ${(cause as Error).message}`,
      {
        cause,
      },
    );
  }
  const where = `${runDir}/ledger.json`;
  const parsed = parseRecord(raw, where);
  checkRecord(parsed, where);
  const file = parsed.weightsFile;
  if (typeof file !== "string" || /[/\\]/.test(file)) {
    throw notALedger(where, "missing or invalid fields");
  }
  return decodeState(parsed, await readFile(join(runDir, "ledger", file)), specs, where);
}

/** A ledger record's JSON, parsed; `INVALID_OPTION` naming `where` when it is not JSON. */
export function parseRecord(raw: string, where: string): Record<string, unknown> {
  try {
    const parsed: unknown = JSON.parse(raw);
    if (typeof parsed === "object" && parsed !== null) return parsed as Record<string, unknown>;
  } catch (cause) {
    throw notALedger(where, "invalid JSON", cause);
  }
  throw notALedger(where, "not an object");
}

/** Check a record's fields; the names of its state arrays. */
function checkRecord(parsed: Record<string, unknown>, where: string): string[] {
  const version = parsed.version;
  if (
    (version !== 1 && version !== 2) ||
    typeof parsed.runId !== "string" ||
    !Number.isInteger(parsed.completedRounds) ||
    typeof parsed.rngState !== "number"
  ) {
    throw notALedger(where, "missing or invalid fields");
  }
  const names = version === 2 ? (parsed.strategyArrays as unknown) : [];
  if (!Array.isArray(names) || !names.every((n) => typeof n === "string")) {
    throw notALedger(where, "strategyArrays must be a list of names");
  }
  return names as string[];
}

/**
 * The state of a ledger record and its bytes (see {@link encodeState}), checked: a malformed
 * record or bytes of the wrong size are an error naming `where`, never a fresh start.
 */
export function decodeState(
  parsed: Record<string, unknown>,
  bytes: Uint8Array,
  specs: readonly TensorSpec[],
  where: string,
): ServerState {
  const names = checkRecord(parsed, where);
  const { weights, arrays } = unpackState(bytes, specs, names, "ledger");
  const v2 = parsed.version === 2;
  return {
    runId: parsed.runId as string,
    completedRounds: parsed.completedRounds as number,
    rngState: parsed.rngState as number,
    weights,
    strategy: { arrays, values: v2 ? (parsed.strategyValues as Record<string, Scalar>) : {} },
    config: v2 ? (parsed.config as ExperimentConfig) : null,
    configHash: v2 ? (parsed.configHash as string) : null,
    lastMetrics: (parsed.lastMetrics as RoundMetrics | null) ?? null,
    ...(isPointers(parsed.versions) ? { versions: parsed.versions } : {}),
  };
}

/**
 * Make `metrics.jsonl` hold exactly rounds 1 … `completed`, once each: drop lines of rounds the
 * ledger never committed (a crash after the append), add the ledger's last round if its line
 * is missing (a crash before the append), and drop duplicates.
 */
export async function repairMetrics(
  runDir: string,
  state: Pick<ServerState, "completedRounds" | "lastMetrics">,
): Promise<void> {
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
