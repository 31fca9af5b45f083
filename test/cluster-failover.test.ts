/**
 * Coordinator nodes on a real redis-server: the lease holder leads, a standby takes over when
 * it dies (kill -9), is paused past its lease (SIGSTOP), or loses Redis for longer than the
 * lease — and the run ends with every round in metrics.jsonl exactly once and the final model
 * of a run that never failed over (same seeds). Clients list every node's URL.
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { cliPerTest, digitsClientArgs, fileLines, runCli } from "./helpers/cli.js";
import { tempRunDir } from "./helpers/federation.js";
import { freePort, redisPerTest } from "./helpers/redis.js";
import { until } from "./helpers/wait.js";

const ROUNDS = 4;
// Three seconds: on a machine loaded by parallel tests, Redis (fsync on every write) or a node
// can stall for a second or two, and a shorter lease lapses under it before the scenario begins.
const TTL_S = 3;
const base = [
  ...["--rounds", String(ROUNDS), "--seed", "5", "--host", "127.0.0.1", "--round-timeout", "60"],
  ...["--strategy", "fedadam", "--server-lr", "0.01"],
];
const common = [...base, "--min-clients", "2"];

function clientArgs(urls: string, i: number, extra: string[] = []): string[] {
  // Unequal shards: client 0 uploads quickly, client 1 is still training when the leader goes.
  return digitsClientArgs(urls, i, 2, i === 0 ? 100 : 1500, [
    ...["--seed", String(11 + i), "--client-id", `c${i}`],
    ...extra,
  ]);
}

const roundLine = (n: number) => new RegExp(`^round ${n}/${ROUNDS}`);

describe("a cluster of coordinator nodes fails over", () => {
  const redis = redisPerTest();
  const start = cliPerTest();

  /** The final weights of the same run on one coordinator that never failed. */
  async function reference(args: string[], clients: number, extra: string[] = []) {
    const dir = await tempRunDir("cohort-cluster-ref-");
    const ref = start(["coordinator", "--port", "0", ...args, "--run-dir", dir]);
    const [, url] = await ref.waitForLine(/listening on (http:\/\/\S+)/);
    const cs = Array.from({ length: clients }, (_, i) => start(clientArgs(url!, i, extra)));
    expect(await ref.exit).toBe(0);
    expect(await Promise.all(cs.map((c) => c.exit))).toEqual(cs.map(() => 0));
    return readFile(join(dir, "checkpoints", `round-000${ROUNDS}`, "weights.bin"));
  }

  /** Nodes a and b of one cluster (a leads, b stands by), and the clients' URL list. */
  async function cluster(args: string[], ttl = TTL_S, bArgs = args) {
    const server = await redis.start();
    const dir = await tempRunDir("cohort-cluster-");
    const ports = [await freePort(), await freePort()];
    const node = (name: string, port: number) =>
      start([
        ...["coordinator", "--port", String(port), ...(name === "b" ? bArgs : args)],
        ...["--run-dir", dir],
        ...["--redis", server.url, "--cluster", "t", "--node", name, "--lease-ttl", String(ttl)],
      ]);
    const a = node("a", ports[0]!);
    await a.waitForLine(/listening on/);
    const b = node("b", ports[1]!);
    await b.waitForLine(/follower b serving the leader.s run/);
    const urls = ports.map((p) => `http://127.0.0.1:${p}`).join(",");
    return { a, b, dir, urls, redisUrl: server.url };
  }

  /** A cluster of `common` with two clients, once its leader has logged `round`. */
  async function clusterAt(round: number, ttl = TTL_S) {
    const run = await cluster(common, ttl);
    const clients = [0, 1].map((i) => start(clientArgs(run.urls, i)));
    await until(() => run.a.lines.some((l) => roundLine(round).test(l)), 60_000).catch(() => {
      const last = (p: { lines: string[] }) => p.lines.slice(-8).join("\n");
      throw new Error(
        `no round ${round} on a within 60 s:\n[a]\n${last(run.a)}\n[b]\n${last(run.b)}\n` +
          clients.map((c, i) => `[client ${i}]\n${last(c)}`).join("\n"),
      );
    });
    return { ...run, clients };
  }

  /** Every round once, and the final model of the reference. */
  async function expectWholeRun(dir: string, expected: Buffer): Promise<void> {
    const rounds = (await fileLines(join(dir, "metrics.jsonl"))).map((l) => JSON.parse(l).round);
    expect(rounds).toEqual([1, 2, 3, 4]);
    const final = await readFile(join(dir, "checkpoints", `round-000${ROUNDS}`, "weights.bin"));
    expect(final.equals(expected)).toBe(true);
  }

  it("kill -9 of the leader mid-round: the standby restores the last commit and finishes the run", async () => {
    const expected = await reference(common, 2);
    const { a, b, dir, clients } = await clusterAt(2);
    await new Promise((r) => setTimeout(r, 250)); // round 3: client 0 uploaded, client 1 trains
    a.child.kill("SIGKILL");
    await b.waitForLine(/cluster t: node b leads \(lease token 2\)/, 10_000);
    await b.waitForLine(/resuming run .* after round [23]/);
    expect(await b.exit).toBe(0);
    expect(await Promise.all(clients.map((c) => c.exit))).toEqual([0, 0]);
    await expectWholeRun(dir, expected);
    // One run throughout: the standby took the leader's run id, not a new one.
    const runIds = new Set(
      [a, b].flatMap((n) => n.lines.flatMap((l) => l.match(/^run ([0-9a-f-]{36}):/)?.[1] ?? [])),
    );
    expect(runIds.size).toBe(1);
  }, 180_000);

  it("after the leader's kill -9 the follower holds its clients and admits the leader's until it leads", async () => {
    // A long lease, so the time it takes to lapse is plainly longer than a client's way back.
    const { a, b, dir, urls } = await cluster(common, 5);
    const [aUrl, bUrl] = urls.split(",");
    const onB = start(clientArgs(`${bUrl},${aUrl}`, 0));
    const onA = start(clientArgs(urls, 1));
    await until(() => a.lines.some((l) => roundLine(1).test(l)), 60_000);
    a.child.kill("SIGKILL");
    await b.waitForLine(/stopped following: .*holding 1 client\(s\) until a node leads/, 10_000);
    // The dead leader's client is admitted by b (a second task) while a's lease still stands.
    const tasks = () => onA.lines.filter((l) => /^task: /.test(l)).length;
    await until(() => tasks() >= 2, 10_000);
    expect(b.lines.filter((l) => /node b leads/.test(l))).toEqual([]);
    // b's own client kept its connection through the leader's death.
    expect(onB.lines.filter((l) => /^disconnected/.test(l))).toEqual([]);
    await b.waitForLine(/cluster t: node b leads \(lease token 2\)/, 15_000);
    const exit = await b.exit;
    expect({ exit, last: exit === 0 ? [] : b.lines.slice(-10) }).toEqual({ exit: 0, last: [] });
    expect(await Promise.all([onA.exit, onB.exit])).toEqual([0, 0]);
    const rounds = (await fileLines(join(dir, "metrics.jsonl"))).map((l) => JSON.parse(l).round);
    expect(rounds).toEqual([1, 2, 3, 4]);
  }, 180_000);

  it("clients pinned to the cluster's key follow a failover when every node signs with it, and refuse a node that signs with another", async () => {
    const keys = await tempRunDir("cohort-cluster-keys-");
    const [key, other] = [join(keys, "cluster.key"), join(keys, "other.key")];
    const made = await runCli(["keygen", "--out", key]);
    expect((await runCli(["keygen", "--out", other])).code).toBe(0);
    const pinned = ["--coordinator-key", made.output.trim().split("\n").pop()!];
    const signed = [...common, "--signing-key", key];

    // Every node signs with the cluster's key: the run survives its leader.
    const same = await cluster(signed);
    const clients = [0, 1].map((i) => start(clientArgs(same.urls, i, pinned)));
    await until(() => same.a.lines.some((l) => roundLine(1).test(l)), 60_000);
    same.a.child.kill("SIGKILL");
    const exit = await same.b.exit;
    expect({ exit, last: exit === 0 ? [] : same.b.lines.slice(-10) }).toEqual({
      exit: 0,
      last: [],
    });
    expect(await Promise.all(clients.map((c) => c.exit))).toEqual([0, 0]);
    const rounds = (await fileLines(join(same.dir, "metrics.jsonl"))).map((l) => JSON.parse(l));
    expect(rounds.map((m) => m.round)).toEqual([1, 2, 3, 4]);

    // The node that takes over signs with another key: pinned clients train for it no more.
    const mixed = await cluster(signed, TTL_S, [...common, "--signing-key", other]);
    const refusing = [0, 1].map((i) => start(clientArgs(mixed.urls, i, pinned)));
    await until(() => mixed.a.lines.some((l) => roundLine(1).test(l)), 60_000);
    mixed.a.child.kill("SIGKILL");
    await mixed.b.waitForLine(/cluster t: node b leads/, 15_000);
    expect(await Promise.all(refusing.map((c) => c.exit))).toEqual([1, 1]);
    for (const c of refusing) {
      expect(c.lines.join("\n")).toMatch(/MODEL_SIGNATURE: .*not the pinned key/);
    }
    const after = (await fileLines(join(mixed.dir, "metrics.jsonl"))).map((l) => JSON.parse(l));
    expect(after.every((m) => m.round <= 2)).toBe(true);
  }, 180_000);

  it("kill -9 of the leader in a secure round: the standby runs the round again", async () => {
    const secure = [...base, "--secure", "--min-clients", "3", "--min-fit-clients", "3"];
    const floors = ["--secure-floors", "3,2,2"];
    const three = (urls: string) =>
      [0, 1, 2].map((i) =>
        start(
          digitsClientArgs(urls, i, 3, 200, [
            ...["--seed", String(11 + i), "--client-id", `c${i}`],
            ...floors,
          ]),
        ),
      );
    const { a, b, dir, urls } = await cluster(secure);
    const clients = three(urls);
    await until(() => a.lines.some((l) => roundLine(1).test(l)), 60_000);
    a.child.kill("SIGKILL");
    await b.waitForLine(/resuming run .* after round [12]/, 20_000);
    const exit = await b.exit;
    expect({ exit, last: exit === 0 ? [] : b.lines.slice(-10) }).toEqual({ exit: 0, last: [] });
    expect(await Promise.all(clients.map((c) => c.exit))).toEqual([0, 0, 0]);
    const metrics = (await fileLines(join(dir, "metrics.jsonl"))).map((l) => JSON.parse(l));
    expect(metrics.map((m) => m.round)).toEqual([1, 2, 3, 4]);
    expect(metrics.every((m) => m.secure === true && m.participants === 3)).toBe(true);
  }, 180_000);

  it("a leader paused past its lease (SIGSTOP) cannot commit after SIGCONT: it stops with FENCED", async () => {
    const expected = await reference(common, 2);
    const { a, b, dir, clients } = await clusterAt(1);
    a.child.kill("SIGSTOP");
    await b.waitForLine(/cluster t: node b leads/, 10_000);
    await b.waitForLine(/resuming run .* after round \d/);
    const committed = (await fileLines(join(dir, "metrics.jsonl"))).length;
    // Its clients still hold their connections to the paused node; it wakes believing it leads.
    a.child.kill("SIGCONT");
    expect(await a.exit).toBe(1);
    const said = a.lines.join("\n");
    expect(said).toMatch(/FENCED: .*(lost the lease|no longer the leader's)/);
    // Nothing it did after waking reached the run: no round line past what was committed.
    const aRounds = a.lines.filter((l) => /^round \d+\/\d+ /.test(l)).length;
    expect(aRounds).toBe(committed);
    expect(await b.exit).toBe(0);
    expect(await Promise.all(clients.map((c) => c.exit))).toEqual([0, 0]);
    await expectWholeRun(dir, expected);
  }, 180_000);

  it("Redis out of reach for longer than the lease: the leader stops, a node resumes once it is back", async () => {
    const expected = await reference(common, 2);
    const { a, b, dir, clients } = await clusterAt(1);
    // AOF with fsync on every write: what Redis acknowledged survives its kill -9.
    const restarted = redis.crashAndRestart(3 * TTL_S * 1000);
    expect(await a.exit).toBe(1);
    expect(a.lines.join("\n")).toMatch(/FENCED: lost the lease of cluster t: redis out of reach/);
    await restarted;
    await b.waitForLine(/cluster t: node b leads/, 20_000);
    const exit = await b.exit;
    expect({ exit, last: exit === 0 ? [] : b.lines.slice(-12) }).toEqual({ exit: 0, last: [] });
    const exits = await Promise.all(clients.map((c) => c.exit));
    expect({
      exits,
      last: exits.some((e) => e !== 0) ? clients.map((c) => c.lines.slice(-5)) : [],
    }).toEqual({ exits: [0, 0], last: [] });
    await expectWholeRun(dir, expected);
  }, 180_000);

  it("a short Redis restart (within the lease) does not interrupt the run", async () => {
    const { a, b, dir, clients } = await clusterAt(1, 5);
    await redis.crashAndRestart();
    expect(await a.exit).toBe(0);
    expect(a.lines.join("\n")).toMatch(/connected again/);
    expect(await Promise.all(clients.map((c) => c.exit))).toEqual([0, 0]);
    const rounds = (await fileLines(join(dir, "metrics.jsonl"))).map((l) => JSON.parse(l).round);
    expect(rounds).toEqual([1, 2, 3, 4]);
    // The follower never led; it ends with the run.
    expect(b.lines.join("\n")).not.toMatch(/resuming run .* after round [123]\b/);
    expect(await b.exit).toBe(0);
  }, 120_000);

  it("refuses a node of another experiment, and --resume beside --redis", async () => {
    const { a, b, dir, urls, redisUrl } = await cluster([
      ...base,
      "--rounds",
      "1",
      "--min-clients",
      "1",
    ]);
    start(clientArgs(urls, 0));
    expect(await a.exit).toBe(0);
    expect(a.lines.find((l) => /redis:\/\//.test(l))).toBeUndefined();
    // The run is registered in Redis: a node with another seed may not lead it.
    expect(await b.exit).toBe(0);
    const other = start([
      ...[
        "coordinator",
        "--port",
        "0",
        ...base,
        "--rounds",
        "1",
        "--min-clients",
        "1",
        "--seed",
        "6",
      ],
      ...["--run-dir", dir, "--redis", redisUrl, "--cluster", "t", "--node", "c"],
    ]);
    expect(await other.exit).toBe(1);
    expect(other.lines.join("\n")).toMatch(
      /INVALID_OPTION: cluster "t" ran another experiment; differing options: .*seed \(was 5, now 6\)/,
    );
    const resume = start(["coordinator", "--redis", redisUrl, "--resume", dir]);
    expect(await resume.exit).toBe(1);
    expect(resume.lines.join("\n")).toMatch(/INVALID_OPTION: --resume and --redis go apart/);
  }, 60_000);
});
