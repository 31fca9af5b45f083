/**
 * Crash safety: kill -9 the coordinator mid-round, restart it with --resume, and the run ends
 * with every round in metrics.jsonl exactly once and the same final model as a run that never
 * crashed (same seeds).
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { cliPerTest, digitsClientArgs, fileLines } from "./helpers/cli.js";
import { tempRunDir } from "./helpers/federation.js";
import { until } from "./helpers/wait.js";
import { planEpsilon } from "./helpers/privacy.js";

const ROUNDS = 4;
const common = [
  "--rounds",
  String(ROUNDS),
  "--min-clients",
  "2",
  "--seed",
  "5",
  "--host",
  "127.0.0.1",
  "--round-timeout",
  "60",
  // A stateful server optimizer: its moments must survive the crash too.
  "--strategy",
  "fedadam",
  "--server-lr",
  "0.01",
];

function clientArgs(url: string, i: number): string[] {
  // Unequal shards: client 0 uploads quickly, client 1 is still training when the crash comes.
  return digitsClientArgs(url, i, 2, i === 0 ? 100 : 1500, [
    "--seed",
    String(11 + i),
    "--client-id",
    `c${i}`,
  ]);
}

describe("crash-safe coordinator", () => {
  const start = cliPerTest();

  it("resumes a FedAdam run after kill -9 mid-round with the uncrashed run's final model", async () => {
    // The reference: the same run without a crash.
    const refDir = await tempRunDir("cohort-ref-");
    const ref = start(["coordinator", "--port", "0", ...common, "--run-dir", refDir]);
    const [, refUrl] = await ref.waitForLine(/listening on (http:\/\/\S+)/);
    const refClients = [0, 1].map((i) => start(clientArgs(refUrl!, i)));
    expect(await ref.exit).toBe(0);
    expect(await Promise.all(refClients.map((c) => c.exit))).toEqual([0, 0]);

    const dir = await tempRunDir("cohort-crash-");
    const first = start(["coordinator", "--port", "0", ...common, "--run-dir", dir]);
    const [, url, port] = await first.waitForLine(/listening on (http:\/\/[^:]+:(\d+))/);
    const clients = [0, 1].map((i) => start(clientArgs(url!, i)));
    await until(() => first.lines.some((l) => /^round 2\/4/.test(l)), 60_000);
    await new Promise((r) => setTimeout(r, 250)); // round 3: client 0 has uploaded, client 1 trains
    first.child.kill("SIGKILL");
    await first.exit;
    const before = await fileLines(join(dir, "metrics.jsonl"));
    expect(before.length).toBeGreaterThanOrEqual(2);
    expect(before.length).toBeLessThan(ROUNDS);

    const second = start(["coordinator", "--port", port!, ...common, "--resume", dir]);
    await second.waitForLine(/resuming run .* after round \d/);
    expect(await second.exit).toBe(0);
    expect(await Promise.all(clients.map((c) => c.exit))).toEqual([0, 0]);

    const rounds = (await fileLines(join(dir, "metrics.jsonl"))).map((l) => JSON.parse(l).round);
    expect(rounds).toEqual([1, 2, 3, 4]);
    const final = await readFile(join(dir, "checkpoints", "round-0004", "weights.bin"));
    const expected = await readFile(join(refDir, "checkpoints", "round-0004", "weights.bin"));
    expect(final.equals(expected)).toBe(true);
    const ledger = JSON.parse(await readFile(join(dir, "ledger.json"), "utf8"));
    expect(ledger.completedRounds).toBe(4);
    expect(ledger.strategyArrays).toEqual(["m", "v"]);
    // The server optimizer's state is part of the record, and the same as the reference's.
    const refLedger = JSON.parse(await readFile(join(refDir, "ledger.json"), "utf8"));
    const state = await readFile(join(dir, "ledger", ledger.weightsFile));
    expect(state.equals(await readFile(join(refDir, "ledger", refLedger.weightsFile)))).toBe(true);
    expect(ledger.configHash).toBe(refLedger.configHash);
    // The version index survived too: every committed round once, a chain of parents.
    const index = JSON.parse(await readFile(join(dir, "versions", "index.json"), "utf8"));
    expect(index.versions.map((v: { version: number }) => v.version)).toEqual([0, 1, 2, 3, 4]);
    expect(index.versions.map((v: { parent: number | null }) => v.parent)).toEqual([
      null,
      0,
      1,
      2,
      3,
    ]);
    expect(index.promoted).toBe(4);
    expect(ledger.versions).toEqual({ latest: 4, current: 4, promoted: 4 });
  }, 180_000);

  it("an asynchronous (FedBuff) run killed -9 and resumed has every version once", async () => {
    const fedbuff = [
      ...["--mode", "async", "--buffer", "2", "--async-concurrency", "2", "--rounds", "5"],
      ...["--min-clients", "2", "--seed", "5", "--host", "127.0.0.1"],
      // A fit lost with the killed coordinator's connection is sent again after this.
      ...["--round-timeout", "15"],
    ];
    const dir = await tempRunDir("cohort-async-crash-");
    const first = start(["coordinator", "--port", "0", ...fedbuff, "--run-dir", dir]);
    const [, url, port] = await first.waitForLine(/listening on (http:\/\/[^:]+:(\d+))/);
    const clients = [0, 1].map((i) => start(clientArgs(url!, i)));
    await until(() => first.lines.some((l) => /^round 2\/5/.test(l)), 60_000);
    first.child.kill("SIGKILL");
    await first.exit;
    const second = start(["coordinator", "--port", port!, ...fedbuff, "--resume", dir]);
    // On a failure, the resumed coordinator's last lines say why.
    const exit = await second.exit;
    expect({ exit, last: exit === 0 ? [] : second.lines.slice(-10) }).toEqual({
      exit: 0,
      last: [],
    });
    expect(await Promise.all(clients.map((c) => c.exit))).toEqual([0, 0]);
    const metrics = (await fileLines(join(dir, "metrics.jsonl"))).map((l) => JSON.parse(l));
    expect(metrics.map((m) => m.round)).toEqual([1, 2, 3, 4, 5]);
    expect(metrics.every((m) => m.mode === "async" && m.participants === 2)).toBe(true);
    const index = JSON.parse(await readFile(join(dir, "versions", "index.json"), "utf8"));
    expect(index.versions.map((v: { version: number }) => v.version)).toEqual([0, 1, 2, 3, 4, 5]);
  }, 120_000);

  it("a differentially private run killed -9 and resumed reports the ε of one that never stopped", async () => {
    const dp = [
      ...["--rounds", "3", "--min-clients", "2", "--seed", "5", "--host", "127.0.0.1"],
      ...["--fraction-fit", "0.2", "--dp-clip", "1", "--dp-noise", "1.1", "--dp-population", "10"],
    ];
    const dir = await tempRunDir("cohort-dp-crash-");
    const first = start(["coordinator", "--port", "0", ...dp, "--run-dir", dir]);
    const [, url, port] = await first.waitForLine(/listening on (http:\/\/[^:]+:(\d+))/);
    const clients = [0, 1].map((i) => start(clientArgs(url!, i)));
    await until(() => first.lines.some((l) => /^round 1\/3/.test(l)), 60_000);
    first.child.kill("SIGKILL");
    await first.exit;
    const second = start(["coordinator", "--port", port!, ...dp, "--resume", dir]);
    expect(await second.exit).toBe(0);
    expect(await Promise.all(clients.map((c) => c.exit))).toEqual([0, 0]);
    const metrics = (await fileLines(join(dir, "metrics.jsonl"))).map((l) => JSON.parse(l));
    expect(metrics.map((m) => m.round)).toEqual([1, 2, 3]);
    // Both connected clients train every round: q = 1, whatever the population. Replace-one:
    // the sum moves by up to 2C, so the accountant sees z/2.
    const want = (r: number) => planEpsilon({ kind: "fixed", q: 1 }, 1.1 / 2, r);
    expect(metrics.map((m) => m.epsilon)).toEqual([want(1), want(2), want(3)]);
  }, 120_000);

  it("refuses to resume a different experiment", async () => {
    const dir = await tempRunDir("cohort-crash2-");
    const a = start([
      "coordinator",
      "--port",
      "0",
      ...common,
      "--rounds",
      "1",
      "--min-clients",
      "1",
      "--run-dir",
      dir,
    ]);
    const [, url] = await a.waitForLine(/listening on (http:\/\/\S+)/);
    start(clientArgs(url!, 0));
    expect(await a.exit).toBe(0);
    const b = start([
      "coordinator",
      ...["--port", "0", ...common, "--min-clients", "1", "--seed", "6"],
      ...["--strategy", "fedyogi", "--resume", dir],
    ]);
    expect(await b.exit).toBe(1);
    const said = b.lines.join("\n");
    expect(said).toMatch(
      /INVALID_OPTION: --resume: .* ran another experiment; differing options: /,
    );
    expect(said).toMatch(/seed \(was 5, now 6\)/);
    expect(said).toMatch(/strategy \(was .*fedadam.*, now .*fedyogi.*\)/);
    expect(said).not.toMatch(/learningRate/); // only what differs is named
  }, 60_000);
});
