#!/usr/bin/env node
/** The `cohort` command line: coordinator, client, simulator, demo, model files and keys. */
import { CohortError } from "../protocol/errors.js";
import { clientCommand, runClient } from "./client-command.js";
import { coordinatorCommand, runCoordinator } from "./coordinator-command.js";
import { demoCommand, runDemo } from "./demo-command.js";
import { clusterDemoCommand, runClusterDemo } from "./cluster-demo-command.js";
import { runSimulate, simulateCommand } from "./simulate-command.js";
import { plotCommand, runPlotCommand } from "./plot-command.js";
import { exportCommand, runExport } from "./export-command.js";
import { predictCommand, runPredict } from "./predict-command.js";
import { keygenCommand, runKeygen, runToken, tokenCommand } from "./keys.js";

const commands: Record<string, { summary: string; run: (argv: string[]) => Promise<number> }> = {
  coordinator: { summary: coordinatorCommand.summary, run: runCoordinator },
  client: { summary: clientCommand.summary, run: runClient },
  simulate: { summary: simulateCommand.summary, run: runSimulate },
  demo: { summary: demoCommand.summary, run: runDemo },
  "cluster-demo": { summary: clusterDemoCommand.summary, run: runClusterDemo },
  plot: { summary: plotCommand.summary, run: runPlotCommand },
  export: { summary: exportCommand.summary, run: runExport },
  predict: { summary: predictCommand.summary, run: runPredict },
  keygen: { summary: keygenCommand.summary, run: runKeygen },
  token: { summary: tokenCommand.summary, run: runToken },
};

function usage(): string {
  const rows = Object.entries(commands).map(([name, c]) => `  ${name.padEnd(12)} ${c.summary}`);
  return [
    "Usage: cohort <command> [flags]",
    "",
    "Commands:",
    ...rows,
    "",
    'Run "cohort <command> --help" for its flags.',
  ].join("\n");
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === "--help" || name === "-h" || name === "help") {
    console.log(usage());
    return name === undefined ? 1 : 0;
  }
  const command = commands[name];
  if (command === undefined) {
    console.error(`unknown command "${name}"\n\n${usage()}`);
    return 2;
  }
  return command.run(rest);
}

/** Print a failure as `error CODE: message` (a CohortError) or in full (anything else); exit 1. */
function fail(error: unknown): never {
  if (error instanceof CohortError) console.error(`error ${error.code}: ${error.message}`);
  else console.error(error);
  process.exit(1);
}

// A command's promise carries most failures; these carry the ones raised later, off its chain
// (a listener, a timer), so they end the same way instead of as a bare stack trace.
process.on("uncaughtException", fail);
process.on("unhandledRejection", fail);

main(process.argv.slice(2)).then((code) => process.exit(code), fail);
