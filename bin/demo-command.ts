/** `cohort demo`: a coordinator and N client processes on MNIST digits, end to end on this machine. */
import { spawn, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import { createCoordinator } from "../coordinator/index.js";
import { loadDataset } from "../models/datasets/index.js";
import { helpText, parseFlags, type CommandSpec, type FlagSpec } from "./args.js";

export const demoCommand = {
  name: "demo",
  summary:
    "Run a whole federation here: a coordinator plus N `cohort client` processes, FedAvg on MNIST digits.",
  flags: {
    clients: { type: "number", default: 3, description: "client processes to start" },
    rounds: { type: "number", default: 5, description: "rounds to run" },
    model: {
      type: "string",
      default: "mlp",
      placeholder: "NAME|PATH",
      description: "model to train",
    },
    secure: { type: "boolean", default: false, description: "secure aggregation (SecAgg+)" },
    dataset: {
      type: "string",
      default: "mnist",
      placeholder: "mnist|fashion-mnist|idx:DIR",
      description: "clients' data; its test split evaluates",
    },
    "run-dir": {
      type: "string",
      defaultText: "runs/<timestamp>",
      placeholder: "DIR",
      description: "where metrics.jsonl and checkpoints go",
    },
  },
} satisfies CommandSpec<Record<string, FlagSpec>>;

/** Run the command; resolves with the process exit code. */
export async function runDemo(argv: string[]): Promise<number> {
  const flags = parseFlags(demoCommand, argv);
  if (flags === null) {
    console.log(helpText(demoCommand));
    return 0;
  }
  const n = flags.clients;
  const coordinator = await createCoordinator({
    host: "127.0.0.1",
    model: flags.model,
    rounds: flags.rounds,
    minAvailableClients: n,
    minFitClients: n,
    secure: flags.secure,
    evalDataset: await loadDataset(flags.dataset, "test"),
    runDir: flags["run-dir"],
    // Only this machine can reach it (127.0.0.1): its demo client page may take a shard too.
    serveDemoData: true,
    log: (line) => console.log(`[coordinator] ${line}`),
  });
  console.log(`starting ${n} client processes`);
  const cli = fileURLToPath(new URL("./cohort.js", import.meta.url));
  const processes: ChildProcess[] = [];
  const children = Array.from({ length: n }, (_, i) => {
    const child = spawn(
      process.execPath,
      [
        cli,
        "client",
        "--url",
        coordinator.url,
        "--dataset",
        flags.dataset,
        "--client-index",
        String(i),
        "--num-clients",
        String(n),
        "--client-id",
        `demo-${i}`,
        // The demo's own cohort may be smaller than the clients' default floors: it is the
        // coordinator these clients were started by, so they accept its size knowingly.
        ...(flags.secure ? ["--secure-floors", `${n},${n - 1},${Math.floor(n / 2) + 1}`] : []),
      ],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    processes.push(child);
    child.stdout.setEncoding("utf8");
    child.stdout.on("data", (chunk: string) => {
      for (const line of chunk.split("\n")) if (line.trim()) console.log(`[client ${i}] ${line}`);
    });
    return new Promise<number>((resolve) => child.on("exit", (code) => resolve(code ?? 1)));
  });
  try {
    const summary = await coordinator.run();
    const codes = await Promise.all(children);
    const last = summary.rounds.at(-1);
    console.log(
      `done: ${summary.rounds.length} rounds, accuracy ${summary.initial?.accuracy?.toFixed(4)} → ${last?.accuracy?.toFixed(4)}; run directory ${summary.runDir}`,
    );
    return codes.every((c) => c === 0) ? 0 : 1;
  } finally {
    // After a failed run its clients would wait for a coordinator that is gone: stop them too.
    for (const child of processes) if (child.exitCode === null) child.kill();
    await coordinator.close();
  }
}
