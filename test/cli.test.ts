import { existsSync } from "node:fs";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { CohortClient } from "../client/index.js";
import { coordinatorCommand } from "../bin/coordinator-command.js";
import { clientCommand } from "../bin/client-command.js";
import { mnistShards, tempRunDir } from "./helpers/federation.js";
import {
  digitsClientArgs,
  expectHelpListsFlags,
  runCli,
  startCli,
  type CliProcess,
} from "./helpers/cli.js";
import { until } from "./helpers/wait.js";
import type { StatusSnapshot } from "../coordinator/http/status.js";
import { connectRaw } from "./helpers/raw-client.js";

describe("cohort CLI", () => {
  const started: CliProcess[] = [];
  afterEach(() => {
    for (const p of started) p.child.kill("SIGKILL");
    started.length = 0;
  });
  /** `n` `cohort client` processes, each holding shard i of n with at most `examples` digits. */
  const startDigitsClients = (url: string, n: number, examples: number) =>
    Array.from({ length: n }, (_, i) => {
      const p = startCli(digitsClientArgs(url, i, n, examples));
      started.push(p);
      return p;
    });

  it("--help lists every flag with its default", async () => {
    await expectHelpListsFlags("coordinator", coordinatorCommand.flags);
    await expectHelpListsFlags("client", clientCommand.flags);
  });

  it("rejects unknown flags and bad numbers with a clear error", async () => {
    const unknown = await runCli(["coordinator", "--rouns", "3"]);
    expect(unknown.code).toBe(1);
    expect(unknown.output).toMatch(/INVALID_OPTION.*rouns/);
    const nan = await runCli(["coordinator", "--rounds", "many"]);
    expect(nan.output).toMatch(/--rounds must be a number/);
    const missing = await runCli([
      "client",
      "--dataset",
      "idx:/nonexistent",
      "--url",
      "http://localhost:1",
    ]);
    expect(missing.code).toBe(1);
    expect(missing.output).toMatch(/DATASET_NOT_FOUND/);
  });

  it("every command ends on a CohortError with `error CODE: message` and exit 1, no stack", async () => {
    const dir = await tempRunDir("cohort-cli-errors-");
    const notToken = join(dir, "not-a-token.json");
    await writeFile(notToken, JSON.stringify({ expiresAt: 1, signature: "!!" }));
    const cases: [string[], RegExp][] = [
      [["coordinator", "--rounds", "0"], /INVALID_OPTION: rounds must be an integer/],
      [["coordinator", "--model", join(dir, "none.json")], /INVALID_MODEL: model must be/],
      [
        ["client", "--url", "http://127.0.0.1:1", "--dataset", "idx:/nonexistent"],
        /DATASET_NOT_FOUND/,
      ],
      [
        ["client", "--url", "http://127.0.0.1:1", "--join-token", notToken],
        /INVALID_OPTION: .* is not a join token/,
      ],
      [
        ["client", "--url", "http://127.0.0.1:1", "--coordinator-key", "!!"],
        /INVALID_OPTION: coordinatorKey must be a base64 Ed25519 public key/,
      ],
      [["simulate", "--devices", "0"], /INVALID_OPTION: devices must be/],
      [["demo", "--dataset", "nope"], /INVALID_OPTION: unknown dataset "nope"/],
      [["plot", "--run-dir", join(dir, "none")], /INVALID_OPTION: no metrics.jsonl/],
      [["keygen"], /INVALID_OPTION: --out is required/],
      [
        ["token", "--issuer", notToken, "--key", "AAAA", "--out", join(dir, "t.json")],
        /INVALID_OPTION: --key must be a base64 Ed25519 public key/,
      ],
      [
        [
          "token",
          "--issuer",
          notToken,
          "--key",
          "AAAA",
          "--out",
          join(dir, "t.json"),
          "--hours=-1",
        ],
        /INVALID_OPTION: --hours must be a positive number/,
      ],
    ];
    for (const [args, message] of cases) {
      const { code, output } = await runCli(args);
      expect(code, args.join(" ")).toBe(1);
      expect(output).toMatch(new RegExp(`^error ${message.source}`, "m"));
      expect(output, args.join(" ")).not.toMatch(/^\s+at /m);
    }
  }, 120_000);

  it("a run that fails after the coordinator started ends with `error ROUND_FAILED: …` and exit 1", async () => {
    const coordinator = startCli([
      "coordinator",
      ...["--port", "0", "--host", "127.0.0.1", "--run-dir", await tempRunDir()],
      ...[
        "--min-clients",
        "1",
        "--rounds",
        "1",
        "--round-timeout",
        "1",
        "--max-round-attempts",
        "1",
      ],
    ]);
    started.push(coordinator);
    const [, url] = await coordinator.waitForLine(/listening on (http:\/\/\S+)/);
    // A client that joins and never answers: the round has no results by its deadline.
    const silent = await connectRaw(url!, "silent");
    try {
      expect(await coordinator.exit).toBe(1);
    } finally {
      silent.close();
    }
    expect(coordinator.lines).toContainEqual(expect.stringMatching(/^error ROUND_FAILED: /));
    expect(coordinator.lines.join("\n")).not.toMatch(/^\s+at /m);
  });

  it("--api-token refuses an empty file and a token shorter than 16 characters", async () => {
    const dir = await tempRunDir("cohort-token-");
    for (const [content, message] of [
      ["\n  \n", /INVALID_OPTION: --api-token .*empty/],
      ["short-token\n", /INVALID_OPTION: --api-token .*11 characters; it needs at least 16/],
    ] as const) {
      const file = join(dir, "token");
      await writeFile(file, content);
      const { code, output } = await runCli(["coordinator", "--port", "0", "--api-token", file]);
      expect(code).toBe(1);
      expect(output).toMatch(message);
      expect(output).not.toContain("short-token");
    }
  });

  it("--api-token, --cors-origin and --serve-demo-data guard the HTTP routes", async () => {
    const dir = await tempRunDir("cohort-token-");
    const token = "cli-token-0123456789abcdef";
    await writeFile(join(dir, "token"), `  ${token}\n`); // the file's whitespace is no part of it
    const coordinator = startCli([
      "coordinator",
      ...["--port", "0", "--host", "127.0.0.1", "--run-dir", join(dir, "run")],
      ...["--api-token", join(dir, "token"), "--serve-demo-data"],
      ...[
        "--cors-origin",
        "https://a.example,https://b.example",
        "--cors-origin",
        "https://c.example",
      ],
    ]);
    started.push(coordinator);
    const [, url] = await coordinator.waitForLine(/listening on (http:\/\/\S+)/);
    const get = (path: string, headers: Record<string, string> = {}) =>
      fetch(`${url}${path}`, { headers });
    expect((await get("/api/status")).status).toBe(401);
    const auth = { Authorization: `Bearer ${token}` };
    expect((await get("/api/status", auth)).status).toBe(200);
    expect((await get("/data/mnist-shard?index=0&count=2&limit=3", auth)).status).toBe(200);
    for (const origin of ["https://b.example", "https://c.example"]) {
      const response = await get("/metrics", { ...auth, Origin: origin });
      expect(response.headers.get("access-control-allow-origin")).toBe(origin);
    }
    const other = await get("/metrics", { ...auth, Origin: "https://d.example" });
    expect(other.headers.get("access-control-allow-origin")).toBeNull();
    await until(() => existsSync(join(dir, "run", "run.json")));
    coordinator.child.kill("SIGINT");
    await coordinator.exit;
    expect(coordinator.lines.join("\n")).not.toContain(token);
    expect(await readFile(join(dir, "run", "run.json"), "utf8")).not.toContain(token);
  });

  it("runs a coordinator and two clients to completion, exiting 0", async () => {
    const runDir = await tempRunDir();
    const coordinator = startCli([
      "coordinator",
      "--port",
      "0",
      "--host",
      "127.0.0.1",
      "--rounds",
      "2",
      "--min-clients",
      "2",
      "--eval-dataset",
      "mnist",
      "--eval-size",
      "500",
      "--run-dir",
      runDir,
    ]);
    started.push(coordinator);
    const [, url] = await coordinator.waitForLine(/listening on (http:\/\/\S+)/);
    const clients = startDigitsClients(url!, 2, 400);
    expect(await coordinator.exit).toBe(0);
    expect(await Promise.all(clients.map((c) => c.exit))).toEqual([0, 0]);
    expect(coordinator.lines.filter((l) => /^round \d\/2 .*accuracy/.test(l))).toHaveLength(2);
    const metrics = (await readFile(join(runDir, "metrics.jsonl"), "utf8")).trim().split("\n");
    expect(metrics).toHaveLength(2);
    expect(clients[0]!.lines.join("\n")).toMatch(/backend wasm/);
  });

  it("--keep-serving keeps the dashboard and API up after the last round, until SIGINT (exit 0)", async () => {
    const runDir = await tempRunDir();
    const coordinator = startCli([
      "coordinator",
      ...["--port", "0", "--host", "127.0.0.1", "--rounds", "2", "--min-clients", "2"],
      ...["--eval-dataset", "mnist", "--eval-size", "200", "--run-dir", runDir, "--keep-serving"],
    ]);
    started.push(coordinator);
    const [, url] = await coordinator.waitForLine(/listening on (http:\/\/\S+)/);
    const clients = startDigitsClients(url!, 2, 200);
    expect(await Promise.all(clients.map((c) => c.exit))).toEqual([0, 0]);
    await coordinator.waitForLine(/^run finished; still serving the dashboard and API at http/);
    // Past the 3 s it used to wait for clients before closing: still up, still showing round 2.
    await new Promise((r) => setTimeout(r, 3500));
    const status = (await (await fetch(`${url}/api/status`)).json()) as StatusSnapshot;
    expect(status.roundsCompleted).toBe(2);
    expect(status.phase).toBe("done");
    expect(status.history.map((p) => p.round)).toEqual([1, 2]);
    expect(status.history[1]!.accuracy).toBeGreaterThan(0);
    const last = (await (await fetch(`${url}/api/rounds?since=1`)).json()) as { round: number }[];
    expect(last.map((m) => m.round)).toEqual([2]);
    expect(await (await fetch(`${url}/metrics`)).text()).toMatch(
      /^cohort_rounds_completed_total 2$/m,
    );
    expect((await fetch(`${url}/`)).status).toBe(200);
    coordinator.child.kill("SIGINT");
    expect(await coordinator.exit).toBe(0);
    expect(coordinator.lines).toContain("SIGINT; closing");
  });

  it("a client rejoins by itself after the coordinator is killed and restarted", async () => {
    const first = startCli([
      "coordinator",
      "--port",
      "0",
      "--host",
      "127.0.0.1",
      "--rounds",
      "1000",
      "--min-clients",
      "1",
      "--run-dir",
      await tempRunDir(),
    ]);
    started.push(first);
    const [, url, port] = await first.waitForLine(/listening on (http:\/\/[^:]+:(\d+))/);
    const { shards } = await mnistShards(1, 200);
    const client = new CohortClient({
      url: url!,
      data: shards[0]!,
      backend: "wasm",
      reconnectDelayMs: 100,
      reconnectDelayMaxMs: 400,
      log: () => undefined,
    });
    const rounds: number[] = [];
    client.onRound((r) => rounds.push(r.round));
    await client.start();
    await first.waitForLine(/^round 1\/1000/);
    first.child.kill("SIGKILL");
    await first.exit;
    const second = startCli([
      "coordinator",
      "--port",
      port!,
      "--host",
      "127.0.0.1",
      "--rounds",
      "2",
      "--min-clients",
      "1",
      "--run-dir",
      await tempRunDir(),
    ]);
    started.push(second);
    const done = await client.done;
    expect(done.rounds).toBe(2);
    expect(await second.exit).toBe(0);
    expect(rounds.filter((r) => r <= 2).length).toBeGreaterThanOrEqual(3);
    await client.close();
  });
});
