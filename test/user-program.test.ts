import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { installedProject, runChild, type ChildResult } from "./helpers/installed.js";

/** A coordinator on a free port, which selects the tfjs backend (wasm here) before it listens. */
const START = `import { createCoordinator } from "cohort/coordinator";
import { CohortError } from "cohort/protocol";
const coordinator = await createCoordinator({ port: 0, host: "127.0.0.1", runDir: null });
`;

describe("a user's own Node program", () => {
  let project = "";
  beforeAll(async () => {
    project = await installedProject(["mnist"]);
  }, 120_000);

  /** Run `source` as an ES module file of the user's project. */
  async function program(name: string, source: string): Promise<ChildResult> {
    const file = join(project, `${name}.mjs`);
    await writeFile(file, source);
    return runChild(process.execPath, [file], project);
  }

  it("an uncaught CohortError after the wasm backend started exits 1, naming its code, with no wasm frames", async () => {
    const thrown = await program(
      "thrown",
      START +
        `setTimeout(() => { throw new CohortError("INVALID_OPTION", "the user's own mistake"); }, 10);`,
    );
    const rejected = await program(
      "rejected",
      START + `await Promise.reject(new CohortError("ROUND_FAILED", "never handled"));`,
    );
    for (const [result, line] of [
      [thrown, "CohortError [INVALID_OPTION]: the user's own mistake"],
      [rejected, "CohortError [ROUND_FAILED]: never handled"],
    ] as const) {
      expect(result.code, result.stderr).toBe(1);
      expect(result.stderr).toContain(line);
      expect(result.stderr).not.toMatch(/tfjs-backend-wasm|wasm-function|\.wasm/);
    }
    // The coordinator had started on wasm: the listeners its glue adds were there to remove.
    expect(thrown.stdout).toMatch(/coordinator listening on http:\/\/127\.0\.0\.1:\d+/);
  });

  it("the program's own uncaught-exception listener still decides: nothing is swallowed", async () => {
    const result = await program(
      "own-handler",
      `process.on("uncaughtException", (e) => { console.log("handled " + e.code); process.exit(3); });\n` +
        START +
        `setTimeout(() => { throw new CohortError("INVALID_MODEL", "mine"); }, 10);`,
    );
    expect(result.code, result.stderr).toBe(3);
    expect(result.stdout).toContain("handled INVALID_MODEL");
  });

  it("a programmatic coordinator prints its URL and one line per round unless log says otherwise", async () => {
    // Two in-process clients on random data: enough for the coordinator to run its rounds.
    const run = (log: string) =>
      program(
        `rounds-${log === "" ? "default" : "silent"}`,
        `import { createCoordinator } from "cohort/coordinator";
import { CohortClient } from "cohort/client";
const coordinator = await createCoordinator({
  port: 0, host: "127.0.0.1", runDir: null, rounds: 2, minAvailableClients: 2, ${log}
});
const data = (seed) => ({
  name: "noise-" + seed,
  features: Float32Array.from({ length: 20 * 784 }, (_, i) => ((i * 7919 + seed) % 101) / 100),
  labels: Uint8Array.from({ length: 20 }, (_, i) => (i + seed) % 10),
  sampleShape: [28, 28, 1],
  numClasses: 10,
});
const clients = [1, 2].map((s) => new CohortClient({ url: coordinator.url, data: data(s), backend: "wasm", log: () => {} }));
await Promise.all(clients.map((c) => c.start()));
await coordinator.run();
await Promise.all(clients.map((c) => c.close()));
await coordinator.close();
`,
      );
    const loud = await run("");
    expect(loud.code, loud.stderr).toBe(0);
    const lines = loud.stdout.trim().split("\n");
    expect(lines[0]).toMatch(/^coordinator listening on http:\/\/127\.0\.0\.1:\d+$/);
    expect(lines.filter((l) => /^round [12]\/2 /.test(l))).toHaveLength(2);
    const silent = await run("log: () => {},");
    expect(silent.code, silent.stderr).toBe(0);
    expect(silent.stdout).toBe("");
  });
});
