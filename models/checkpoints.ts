/** Where a run directory keeps the global model of each round: `checkpoints/round-NNNN/model.json` + `weights.bin`. */
import { existsSync } from "node:fs";
import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { CohortError } from "../protocol/errors.js";
import { MODEL_JSON } from "./file-handler.js";

/** The folder of a run directory that holds one folder per checkpointed round. */
export const CHECKPOINTS = "checkpoints";
const ROUND_DIR = /^round-(\d+)$/;

/** The directory of round `round`'s checkpoint (`round-0000` is the initial model). */
export function checkpointDir(runDir: string, round: number): string {
  return join(runDir, CHECKPOINTS, `round-${String(round).padStart(4, "0")}`);
}

/** Whether `dir` looks like a run directory: it has `checkpoints/` or `run.json`. */
export function isRunDir(dir: string): boolean {
  return existsSync(join(dir, CHECKPOINTS)) || existsSync(join(dir, "run.json"));
}

/**
 * The rounds a run directory holds a complete checkpoint of, in order. A round directory without
 * `model.json` (a crash between its two renames) does not count.
 */
export async function checkpointRounds(runDir: string): Promise<number[]> {
  let names: string[];
  try {
    names = await readdir(join(runDir, CHECKPOINTS));
  } catch {
    return [];
  }
  return names
    .map((name) => ROUND_DIR.exec(name))
    .filter((m): m is RegExpExecArray => m !== null)
    .filter((m) => existsSync(join(runDir, CHECKPOINTS, m[0], MODEL_JSON)))
    .map((m) => Number(m[1]))
    .sort((a, b) => a - b);
}

/** `0, 2, 4–9`: rounds with runs of three or more shortened. */
export function formatRounds(rounds: readonly number[]): string {
  const parts: string[] = [];
  for (let i = 0; i < rounds.length;) {
    let j = i;
    while (j + 1 < rounds.length && rounds[j + 1] === rounds[j]! + 1) j++;
    if (j - i >= 2) parts.push(`${rounds[i]}–${rounds[j]}`);
    else for (let k = i; k <= j; k++) parts.push(String(rounds[k]));
    i = j + 1;
  }
  return parts.join(", ");
}

/** A checkpoint found in a run directory. */
export interface Checkpoint {
  round: number;
  /** The path of its `model.json`. */
  modelJson: string;
}

/**
 * The checkpoint of `round` in a run directory, or its last one when `round` is undefined. No
 * checkpoints, or none of that round, is an `INVALID_MODEL` saying which rounds exist.
 */
export async function findCheckpoint(runDir: string, round?: number): Promise<Checkpoint> {
  if (round !== undefined && !(Number.isInteger(round) && round >= 0)) {
    throw new CohortError("INVALID_OPTION", `round must be a whole number ≥ 0, got ${round}`);
  }
  const rounds = await checkpointRounds(runDir);
  if (rounds.length === 0) {
    throw new CohortError(
      "INVALID_MODEL",
      `${runDir} holds no checkpoints (${CHECKPOINTS}/round-NNNN/${MODEL_JSON})`,
    );
  }
  const chosen = round ?? rounds[rounds.length - 1]!;
  if (!rounds.includes(chosen)) {
    throw new CohortError(
      "INVALID_MODEL",
      `${runDir} has no checkpoint of round ${chosen}; it has round${rounds.length > 1 ? "s" : ""} ` +
        formatRounds(rounds),
    );
  }
  return { round: chosen, modelJson: join(checkpointDir(runDir, chosen), MODEL_JSON) };
}
