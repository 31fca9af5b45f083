/**
 * Running a shipped experiment whose data is built in code (a `Dataset` object): its JSON config
 * from this folder, a few overrides from the command line, the summary printed, the figure copied.
 */
import { existsSync, realpathSync } from "node:fs";
import { copyFile, readFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import type { Dataset } from "../../protocol/dataset.js";
import { CohortError, toCohortError } from "../../protocol/errors.js";
import { simulationInput, type SimulationInput } from "../config.js";
import { simulate } from "../simulate.js";

/** Whether the module at `url` is the script Node was started with. */
export function isMain(url: string): boolean {
  const script = process.argv[1];
  if (script === undefined) return false;
  try {
    return pathToFileURL(realpathSync(script)).href === url;
  } catch {
    return false;
  }
}

/**
 * The folder holding the experiments' JSON configs: this module's own (run from source), or the
 * source folder `simulations/experiments` beside `dist/` (run after `npm run build`).
 */
export function experimentsDir(config: string): string {
  const here = fileURLToPath(new URL(".", import.meta.url));
  return existsSync(join(here, config))
    ? here
    : join(here, "..", "..", "..", "simulations", "experiments");
}

const USAGE = "options: --rounds N, --run-dir DIR, --figure FILE (copy accuracy.svg there)";

/** `--rounds`, `--run-dir` and `--figure` from the command line. */
export function experimentFlags(argv: readonly string[]): {
  overrides: SimulationInput;
  figure: string | null;
} {
  const overrides: SimulationInput = {};
  let figure: string | null = null;
  for (let i = 0; i < argv.length; i += 2) {
    const [flag, value] = [argv[i]!, argv[i + 1]];
    if (value === undefined)
      throw new CohortError("INVALID_OPTION", `${flag} needs a value; ${USAGE}`);
    if (flag === "--rounds") overrides.rounds = Number(value);
    else if (flag === "--run-dir") overrides.runDir = value;
    else if (flag === "--figure") figure = value;
    else throw new CohortError("INVALID_OPTION", `unknown option ${flag}; ${USAGE}`);
  }
  return { overrides, figure };
}

/**
 * Simulate `config` (a file of this folder) on `data`; prints one JSON line with the final
 * metrics, rounds, devices and wall time. Resolves with the exit code (1 for a `CohortError`,
 * printed as `code: message`).
 */
export async function runExperiment(
  config: string,
  data: Dataset,
  argv: readonly string[],
  note = "",
): Promise<number> {
  try {
    const { overrides, figure } = experimentFlags(argv);
    const file = join(experimentsDir(config), config);
    const base = simulationInput(JSON.parse(await readFile(file, "utf8")));
    if (note !== "") process.stderr.write(`${note}\n`);
    const { summary } = await simulate({ ...base, ...overrides, dataset: data });
    if (figure !== null) await copyFile(join(summary.runDir, "accuracy.svg"), figure);
    console.log(
      JSON.stringify({
        name: summary.name,
        runDir: summary.runDir,
        devices: summary.devices,
        rounds: summary.rounds,
        finalLoss: summary.finalLoss,
        finalMetrics: summary.finalMetrics,
        baseline: summary.baseline?.metrics ?? null,
        wallTimeMs: Math.round(summary.wallTimeMs),
      }),
    );
    return 0;
  } catch (error) {
    const e = toCohortError(error);
    process.stderr.write(`${e.code}: ${e.message}\n`);
    return 1;
  }
}
