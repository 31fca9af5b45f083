/** Your own CSV through the CLI: clients train on `--dataset csv:FILE`, the coordinator evaluates on `--eval-dataset csv:FILE`. */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { tempRunDir } from "./helpers/federation.js";
import { startCli, type CliProcess } from "./helpers/cli.js";
import { tabularRows, writeCsv } from "./helpers/tabular.js";

describe("cohort CLI on a CSV file", () => {
  const started: CliProcess[] = [];
  afterEach(() => {
    for (const p of started) p.child.kill("SIGKILL");
    started.length = 0;
  });

  it("two clients with --dataset csv:FILE train the mlp sized from the file's test split; the loss falls", async () => {
    const dir = await tempRunDir("cohort-csv-cli-");
    const csv = join(dir, "data.csv");
    // Four features and a class id; the group column is left out of the features.
    await writeCsv(csv, tabularRows(100, 2), ["x0", "x1", "x2", "x3", "label", "clinic"]);
    const spec = `csv:${csv}?label=label&group=clinic`;
    const runDir = join(dir, "run");
    const coordinator = startCli([
      "coordinator",
      ...["--port", "0", "--host", "127.0.0.1", "--rounds", "3", "--min-clients", "2"],
      ...["--eval-dataset", spec, "--run-dir", runDir],
    ]);
    started.push(coordinator);
    const [, url] = await coordinator.waitForLine(/listening on (http:\/\/\S+)/);
    const clients = [0, 1].map((i) => {
      const p = startCli([
        "client",
        ...["--url", url!, "--dataset", spec, "--client-index", String(i), "--num-clients", "2"],
        ...["--backend", "wasm"],
      ]);
      started.push(p);
      return p;
    });
    expect(await coordinator.exit, coordinator.lines.join("\n")).toBe(0);
    expect(await Promise.all(clients.map((c) => c.exit))).toEqual([0, 0]);
    const rounds = (await readFile(join(runDir, "metrics.jsonl"), "utf8"))
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as { loss: number; accuracy: number; totalExamples: number });
    expect(rounds).toHaveLength(3);
    // 200 rows: 160 train (80 a client), 40 test.
    expect(rounds[0]!.totalExamples).toBe(160);
    const run = JSON.parse(await readFile(join(runDir, "run.json"), "utf8"));
    expect(run.options.evalDataset).toBe(`${spec}:test`);
    expect(run.model.numParameters).toBe(4 * 64 + 64 + 64 * 3 + 3);
    const initial = coordinator.lines.join("\n").match(/initial .*loss (\d+\.\d+)/);
    expect(initial).not.toBeNull();
    expect(rounds[2]!.loss).toBeLessThan(Number(initial![1]));
    expect(rounds[2]!.accuracy).toBeGreaterThan(0.6);
  });
});
