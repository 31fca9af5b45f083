/** `cohort plot`: redraw `accuracy.svg` of a run directory from its `metrics.jsonl`. */
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { RoundMetrics } from "../coordinator/run-store.js";
import { CohortError } from "../protocol/errors.js";
import { runPlot } from "../simulations/simulate.js";
import type { SimulationSummary } from "../simulations/simulate.js";
import { helpText, parseFlags, type CommandSpec, type FlagSpec } from "./args.js";

export const plotCommand = {
  name: "plot",
  summary:
    "Redraw accuracy.svg of a run directory (a coordinator's or a simulation's) from its metrics.jsonl.",
  flags: {
    "run-dir": { type: "string", placeholder: "DIR", description: "the run directory (required)" },
    title: {
      type: "string",
      defaultText: "the simulation's name, or the directory",
      description: "plot title",
    },
  },
} satisfies CommandSpec<Record<string, FlagSpec>>;

/** Run the command; resolves with the process exit code. */
export async function runPlotCommand(argv: string[]): Promise<number> {
  const flags = parseFlags(plotCommand, argv);
  if (flags === null) {
    console.log(helpText(plotCommand));
    return 0;
  }
  const dir = flags["run-dir"];
  if (dir === undefined) throw new CohortError("INVALID_OPTION", "--run-dir is required");
  let text: string;
  try {
    text = await readFile(join(dir, "metrics.jsonl"), "utf8");
  } catch (cause) {
    throw new CohortError("INVALID_OPTION", `no metrics.jsonl in ${dir}`, { cause });
  }
  const rounds = text
    .split("\n")
    .filter((l) => l.trim() !== "")
    .map((l, i) => {
      try {
        return JSON.parse(l) as RoundMetrics;
      } catch (cause) {
        throw new CohortError("INVALID_OPTION", `${dir}/metrics.jsonl line ${i + 1} is not JSON`, {
          cause,
        });
      }
    });
  let summary: Partial<SimulationSummary> = {};
  try {
    summary = JSON.parse(await readFile(join(dir, "summary.json"), "utf8")) as SimulationSummary;
  } catch {
    // A coordinator's run has no summary: plot without baseline.
  }
  const initial =
    summary.initialAccuracy != null && summary.initialLoss != null
      ? { accuracy: summary.initialAccuracy, loss: summary.initialLoss }
      : null;
  const out = join(dir, "accuracy.svg");
  await writeFile(
    out,
    runPlot(flags.title ?? summary.name ?? dir, rounds, initial, summary.baseline ?? null),
  );
  console.log(out);
  return 0;
}
