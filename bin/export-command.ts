/** `cohort export`: write a round's global model of a run directory as a tfjs model directory. */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { CohortError } from "../protocol/errors.js";
import { selectBackend } from "../models/backend.js";
import { loadModel, locateModel, saveModel } from "../models/files.js";
import { helpText, parseFlags, type CommandSpec, type FlagSpec } from "./args.js";

export const exportCommand = {
  name: "export",
  summary:
    "Write the global model of a run directory's round as model.json + weights.bin, for loadModel (cohort/models), cohort predict and browsers' tf.loadLayersModel(url).",
  flags: {
    "run-dir": {
      type: "string",
      placeholder: "DIR",
      description: "the run directory (a coordinator's --run-dir or a simulation's; required)",
    },
    round: {
      type: "number",
      defaultText: "the last round checkpointed",
      description: "the round whose global model to export (0 is the initial model)",
    },
    out: {
      type: "string",
      placeholder: "DIR",
      description: "where to write model.json and weights.bin (created; required)",
    },
  },
} satisfies CommandSpec<Record<string, FlagSpec>>;

/** The run id of a run directory's `run.json`, when it has one. */
async function runIdOf(runDir: string): Promise<string | null> {
  try {
    const run: unknown = JSON.parse(await readFile(join(runDir, "run.json"), "utf8"));
    const id = typeof run === "object" && run !== null ? (run as { runId?: unknown }).runId : null;
    return typeof id === "string" ? id : null;
  } catch {
    return null;
  }
}

/** Run the command; resolves with the process exit code. */
export async function runExport(argv: string[]): Promise<number> {
  const flags = parseFlags(exportCommand, argv);
  if (flags === null) {
    console.log(helpText(exportCommand));
    return 0;
  }
  const runDir = flags["run-dir"];
  const out = flags.out;
  if (runDir === undefined) throw new CohortError("INVALID_OPTION", "--run-dir is required");
  if (out === undefined) throw new CohortError("INVALID_OPTION", "--out is required");
  const where = await locateModel(runDir, flags.round === undefined ? {} : { round: flags.round });
  if (where.runDir === undefined || where.round === undefined) {
    throw new CohortError(
      "INVALID_OPTION",
      `${runDir} is a model, not a run directory (it has no checkpoints/)`,
    );
  }
  await selectBackend("auto");
  const model = await loadModel(where.modelJson);
  try {
    const runId = await runIdOf(runDir);
    model.setUserDefinedMetadata({ cohort: { round: where.round, ...(runId ? { runId } : {}) } });
    const saved = await saveModel(model, out);
    console.log(
      `round ${where.round} of ${runDir} (${model.countParams()} parameters) → ` +
        `${saved.modelJson} + ${saved.weightsBin} (${saved.weightBytes} bytes)`,
    );
  } finally {
    model.dispose();
  }
  return 0;
}
