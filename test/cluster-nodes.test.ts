/**
 * Several coordinator nodes serving one run, on a real redis-server: clients connect to every
 * node, followers relay the leader's requests and send one partial sum per round, and the run
 * gives the model one node gives with the same seeds and cohort. A follower's death is a set of
 * dropouts; a link without the cluster's secret, or a follower that lies, changes nothing.
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { io } from "socket.io-client";
import { describe, expect, it } from "vitest";
import { cliPerTest, digitsClientArgs, fileLines, type CliProcess } from "./helpers/cli.js";
import { tempRunDir } from "./helpers/federation.js";
import { freePort, redisPerTest } from "./helpers/redis.js";
import { until } from "./helpers/wait.js";
import { maxDiff } from "./helpers/weights.js";
import { encodePartial } from "../coordinator/cluster/link.js";
import type { StatusSnapshot } from "../coordinator/http/status.js";

const ROUNDS = 3;

/** Wait until `check` resolves true (every 100 ms), or fail after `timeoutMs`. */
async function poll(check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
const base = [
  ...["--rounds", String(ROUNDS), "--seed", "5", "--host", "127.0.0.1", "--round-timeout", "60"],
];

/** The model of a run directory after `round` (the last by default), as one Float32Array. */
async function finalWeights(dir: string, round = ROUNDS): Promise<Float32Array[]> {
  const bytes = await readFile(join(dir, "checkpoints", `round-000${round}`, "weights.bin"));
  return [new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4)];
}

describe("a cluster of coordinator nodes serves one run", () => {
  const redis = redisPerTest();
  const start = cliPerTest();

  /** Client `i` of `n` (seeded, named c<i>), trying `urls` in turn. */
  const client = (urls: string, i: number, n: number, examples: number, extra: string[] = []) =>
    start(
      digitsClientArgs(urls, i, n, examples, [
        ...["--seed", String(11 + i), "--client-id", `c${i}`],
        ...extra,
      ]),
    );

  /** The same run on one coordinator: its run directory. */
  async function reference(args: string[], clients: (url: string) => CliProcess[]) {
    const dir = await tempRunDir("cohort-nodes-ref-");
    const ref = start(["coordinator", "--port", "0", ...args, "--run-dir", dir]);
    const [, url] = await ref.waitForLine(/listening on (http:\/\/\S+)/);
    const cs = clients(url!);
    expect(await ref.exit).toBe(0);
    expect(await Promise.all(cs.map((c) => c.exit))).toEqual(cs.map(() => 0));
    return dir;
  }

  /** Nodes a (the leader), b, c…; `urls[i]` lists node i first, then the others. */
  async function cluster(args: string[], names: string[]) {
    const server = await redis.start();
    const dir = await tempRunDir("cohort-nodes-");
    const ports = await Promise.all(names.map(() => freePort()));
    const node = (name: string, i: number) =>
      start([
        ...["coordinator", "--port", String(ports[i]), ...args, "--run-dir", dir],
        ...["--redis", server.url, "--cluster", "n", "--node", name, "--lease-ttl", "2"],
      ]);
    // The first leads; the others follow it.
    const nodes = [node(names[0]!, 0)];
    await nodes[0]!.waitForLine(/listening on/);
    for (const [i, name] of names.entries()) {
      if (i === 0) continue;
      nodes.push(node(name, i));
      await nodes[i]!.waitForLine(new RegExp(`follower ${name} serving`));
    }
    const all = ports.map((p) => `http://127.0.0.1:${p}`);
    const urls = all.map((_, i) => [...all.slice(i), ...all.slice(0, i)].join(","));
    return { nodes, dir, urls, redisUrl: server.url, ports };
  }

  it("three nodes, a client on each: the model of one node, and one partial per follower", async () => {
    const args = [...base, "--min-clients", "3"];
    const refDir = await reference(args, (url) => [0, 1, 2].map((i) => client(url, i, 3, 300)));
    const { nodes, dir, urls, ports } = await cluster(args, ["a", "b", "c"]);
    const clients = [0, 1, 2].map((i) => client(urls[i]!, i, 3, 300));
    expect(await nodes[0]!.exit).toBe(0);
    expect(await Promise.all(clients.map((c) => c.exit))).toEqual([0, 0, 0]);
    expect(await Promise.all(nodes.slice(1).map((n) => n.exit))).toEqual([0, 0]);
    // Each client trained through its own node.
    clients.forEach((c, i) =>
      expect(c.lines.join("\n")).toContain(`connected to http://127.0.0.1:${ports[i]}`),
    );
    const metrics = (await fileLines(join(dir, "metrics.jsonl"))).map((l) => JSON.parse(l));
    expect(metrics.map((m) => m.round)).toEqual([1, 2, 3]);
    const modelBytes = 199_210 * 4;
    for (const m of metrics) {
      expect(m.participants).toBe(3);
      expect(m.partials.nodes).toBe(2);
      // The leader received one model's bytes per follower, not one per client.
      expect(m.partials.bytes).toBeGreaterThan(2 * modelBytes);
      expect(m.partials.bytes).toBeLessThan(2 * modelBytes * 1.01);
    }
    // The followers' sums travel as float32 means: the model of one node within float error.
    expect(maxDiff(await finalWeights(dir), await finalWeights(refDir))).toBeLessThan(1e-6);
  }, 180_000);

  it("every node's dashboard status and /metrics show every node: role, clients, partial sizes, the lease", async () => {
    const args = [...base, "--rounds", "2", "--min-clients", "2", "--min-fit-clients", "2"];
    const { nodes, urls, ports } = await cluster(args, ["a", "b"]);
    const status = async (port: number) =>
      (await (await fetch(`http://127.0.0.1:${port}/api/status`)).json()) as StatusSnapshot;
    const metrics = async (port: number) =>
      await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    // One client on the follower: the leader waits for a second.
    const first = client(urls[1]!, 0, 2, 200);
    const seen = async (port: number) => {
      const c = (await status(port)).cluster;
      return c?.nodes.find((n) => n.node === "b")?.clients === 1 && c.leader === "a";
    };
    await poll(async () => (await seen(ports[0]!)) && (await seen(ports[1]!)), 30_000);
    for (const [i, port] of ports.entries()) {
      const c = (await status(port)).cluster!;
      expect(c.node).toBe(["a", "b"][i]);
      expect(c.nodes.map((n) => [n.node, n.role, n.clients])).toEqual([
        ["a", "leader", 0],
        ["b", "follower", 1],
      ]);
      expect(c.leaseHeldMs).toBeGreaterThanOrEqual(0);
      expect(c.leaseRenewedMsAgo).toBeLessThanOrEqual(2000);
      const text = await metrics(port);
      expect(text).toContain('cohort_cluster_node_clients{cluster="n",node="b"} 1');
      expect(text).toContain('cohort_cluster_leader_info{cluster="n",node="a"} 1');
      expect(text).toMatch(/cohort_cluster_lease_ttl_seconds\{cluster="n"\} 2\n/);
    }
    // The second client, on the leader, trains long each round.
    const second = client(urls[0]!, 1, 2, 3000);
    const reported = async () => {
      const s = await status(ports[1]!);
      const b = s.cluster?.nodes.find((n) => n.node === "b");
      return s.history.length >= 1 && b?.partial?.round === 1 ? s : null;
    };
    await poll(async () => (await reported()) !== null, 60_000);
    const s = (await reported())!;
    // The follower's page shows the leader's rounds, and what it sent for round 1.
    expect(s.history[0]!.participants).toBe(2);
    const b = s.cluster!.nodes.find((n) => n.node === "b")!;
    const modelBytes = 199_210 * 4;
    expect(b.partial!.bytes).toBeGreaterThan(modelBytes);
    expect(b.partial!.bytes).toBeLessThan(modelBytes * 1.01);
    expect(b.partial!.clientBytes).toBeGreaterThan(modelBytes);
    // The leader's /metrics has it too, once it read b's report (every third of the TTL).
    const partialLine = /cohort_cluster_node_partial_bytes\{cluster="n",node="b"\} (\d+)\n/;
    await poll(async () => partialLine.test(await metrics(ports[0]!)), 10_000);
    const [, shown] = partialLine.exec(await metrics(ports[0]!))!;
    expect(Number(shown)).toBeGreaterThan(modelBytes);
    expect(await nodes[0]!.exit).toBe(0);
    expect(await Promise.all([first.exit, second.exit])).toEqual([0, 0]);
  }, 180_000);

  it("a follower that links mid-run shows the rounds completed before it linked, each once", async () => {
    const args = [...base, "--rounds", "4", "--min-clients", "1", "--min-fit-clients", "1"];
    const { nodes, dir, urls, redisUrl } = await cluster(args, ["a"]);
    const only = client(urls[0]!, 0, 1, 3000);
    await nodes[0]!.waitForLine(/^round 1\//, 60_000);
    const port = await freePort();
    const late = start([
      ...["coordinator", "--port", String(port), ...args, "--run-dir", dir],
      ...["--redis", redisUrl, "--cluster", "n", "--node", "b", "--lease-ttl", "2"],
    ]);
    await late.waitForLine(/follower b serving/, 30_000);
    const rounds = async () =>
      (
        (await (await fetch(`http://127.0.0.1:${port}/api/status`)).json()) as StatusSnapshot
      ).history.map((h) => h.round);
    await poll(async () => (await rounds()).length > 0, 10_000);
    const shown = await rounds();
    expect(shown[0]).toBe(1);
    expect(shown).toEqual([...Array(shown.length).keys()].map((k) => k + 1));
    expect(await nodes[0]!.exit).toBe(0);
    expect(await only.exit).toBe(0);
  }, 120_000);

  it("a secure round across three nodes: one masked sum per follower, and the model of one node within its quantization bound", async () => {
    // One round: after it, both models are within the round's error bound of the exact mean
    // (members round stochastically, so two secure runs are not equal bit for bit).
    const args = [
      ...base,
      ...["--rounds", "1", "--secure", "--min-clients", "4", "--min-fit-clients", "4"],
    ];
    const floors = ["--secure-floors", "4,2,2"];
    const refDir = await reference(args, (url) =>
      [0, 1, 2, 3].map((i) => client(url, i, 4, 200, floors)),
    );
    const { nodes, dir, urls } = await cluster(args, ["a", "b", "c"]);
    // Node b holds two members: its masked sum stands for both.
    const clients = [0, 1, 1, 2].map((node, i) => client(urls[node]!, i, 4, 200, floors));
    const exit = await nodes[0]!.exit;
    expect({ exit, last: exit === 0 ? [] : nodes[0]!.lines.slice(-10) }).toEqual({
      exit: 0,
      last: [],
    });
    expect(await Promise.all(clients.map((c) => c.exit))).toEqual([0, 0, 0, 0]);
    const [m] = (await fileLines(join(dir, "metrics.jsonl"))).map((l) => JSON.parse(l));
    const [ref] = (await fileLines(join(refDir, "metrics.jsonl"))).map((l) => JSON.parse(l));
    expect([m.round, m.secure, m.participants]).toEqual([1, true, 4]);
    // Three members' masked vectors reached the followers; two sums reached the leader.
    const masked = (199_210 + 1) * 4;
    expect(m.partials.nodes).toBe(2);
    expect(m.partials.bytes).toBeGreaterThan(2 * masked);
    expect(m.partials.bytes).toBeLessThan(2 * masked * 1.01);
    expect(m.partials.clientBytes).toBeGreaterThan(3 * masked);
    const bound = m.secureErrorBound + ref.secureErrorBound;
    expect(bound).toBeGreaterThan(0);
    expect(bound).toBeLessThan(1e-2);
    const diff = maxDiff(await finalWeights(dir, 1), await finalWeights(refDir, 1));
    expect(diff).toBeLessThanOrEqual(bound + 1e-6);
  }, 180_000);

  it("a --lead-only leader serves no clients: they train through the followers, and it receives one partial per follower", async () => {
    const args = [...base, "--rounds", "2", "--min-clients", "3", "--min-fit-clients", "3"];
    const { nodes, dir, urls, ports } = await cluster([...args, "--lead-only"], ["a", "b", "c"]);
    // Every client lists the leader first: it is refused there and moves on.
    const leaderFirst = (i: number) =>
      [`http://127.0.0.1:${ports[0]}`, `http://127.0.0.1:${ports[1 + (i % 2)]}`].join(",");
    const clients = [0, 1, 2].map((i) => client(leaderFirst(i), i, 3, 200));
    // One that knows only the leader is told why it cannot train there.
    const lost = client(urls[0]!.split(",")[0]!, 3, 4, 100);
    expect(await lost.exit).toBe(1);
    expect(lost.lines.join("\n")).toMatch(/NODE_NOT_SERVING.*serves no clients \(--lead-only\)/);
    expect(await nodes[0]!.exit).toBe(0);
    expect(await Promise.all(clients.map((c) => c.exit))).toEqual([0, 0, 0]);
    clients.forEach((c) =>
      expect(c.lines.join("\n")).toMatch(/serves no clients.*trying the next node/),
    );
    const metrics = (await fileLines(join(dir, "metrics.jsonl"))).map((l) => JSON.parse(l));
    const modelBytes = 199_210 * 4;
    for (const m of metrics) {
      expect(m.participants).toBe(3);
      expect(m.partials.nodes).toBe(2);
      // Every update reached a follower: the leader's inbound is the two partials alone.
      expect(m.partials.clientBytes).toBe(m.bytesUp);
      expect(m.bytesUp - m.partials.clientBytes + m.partials.bytes).toBeLessThan(
        2 * modelBytes * 1.01,
      );
    }
  }, 180_000);

  it("a --lead-only leader runs a secure round on the followers' masked sums alone", async () => {
    const args = [
      ...base,
      ...["--rounds", "1", "--secure", "--min-clients", "4", "--min-fit-clients", "4"],
    ];
    const { nodes, dir, ports } = await cluster([...args, "--lead-only"], ["a", "b", "c"]);
    const followers = (i: number) => `http://127.0.0.1:${ports[1 + (i % 2)]}`;
    const clients = [0, 1, 2, 3].map((i) =>
      client(followers(i), i, 4, 200, ["--secure-floors", "4,2,2"]),
    );
    expect(await nodes[0]!.exit).toBe(0);
    expect(await Promise.all(clients.map((c) => c.exit))).toEqual([0, 0, 0, 0]);
    const [m] = (await fileLines(join(dir, "metrics.jsonl"))).map((l) => JSON.parse(l));
    expect([m.round, m.secure, m.participants]).toEqual([1, true, 4]);
    // Four members' masked vectors reached the followers; two sums reached the leader.
    const masked = (199_210 + 1) * 4;
    expect(m.partials.nodes).toBe(2);
    expect(m.partials.bytes).toBeLessThan(2 * masked * 1.01);
    expect(m.partials.clientBytes).toBeGreaterThan(4 * masked);
  }, 180_000);

  it("a follower killed -9 mid-round: its clients are that round's dropouts, then train elsewhere", async () => {
    const args = [...base, "--min-clients", "3", "--min-fit-clients", "2"];
    const { nodes, dir, urls } = await cluster(args, ["a", "b", "c"]);
    // Client 2, on node c, trains long enough for the kill to land mid-fit.
    const clients = [0, 1, 2].map((i) => client(urls[i]!, i, 3, i === 2 ? 3000 : 200));
    await until(() => nodes[0]!.lines.some((l) => /^round 1\//.test(l)), 60_000);
    nodes[2]!.child.kill("SIGKILL");
    expect(await nodes[0]!.exit).toBe(0);
    expect(await Promise.all(clients.map((c) => c.exit))).toEqual([0, 0, 0]);
    const metrics = (await fileLines(join(dir, "metrics.jsonl"))).map((l) => JSON.parse(l));
    expect(metrics.map((m) => m.round)).toEqual([1, 2, 3]);
    const round2 = metrics[1];
    expect(round2.participants).toBe(2);
    expect(round2.failureReasons).toEqual([
      expect.objectContaining({ clientId: "c2", code: "CLIENT_DISCONNECTED" }),
    ]);
    expect(round2.failureReasons[0].message).toMatch(/its node c went away/);
    // Back through another node for the last round.
    expect(metrics[2].participants).toBe(3);
  }, 180_000);

  it("refuses a link without the cluster's secret, and a follower's lying partial", async () => {
    const args = [...base, "--rounds", "1", "--min-clients", "2", "--min-fit-clients", "1"];
    const { nodes, dir, ports, redisUrl } = await cluster(args, ["a"]);
    const leader = `http://127.0.0.1:${ports[0]}/cluster`;
    const refused = io(leader, { auth: { node: "x", secret: "guess" }, reconnection: false });
    const why = await new Promise<string>((resolve) =>
      refused.on("connect_error", (e) => resolve(e.message)),
    );
    expect(why).toMatch(/not a node of this cluster/);
    // A follower holding the secret (it can read Redis) still cannot slip in a bogus sum.
    const { createClient } = await import("@redis/client");
    const r = createClient({ url: redisUrl });
    await r.connect();
    const record = JSON.parse((await r.get("cohort:n:link"))!) as { secret: string };
    await r.quit();
    const rogue = io(leader, {
      auth: { node: "rogue", secret: record.secret },
      reconnection: false,
    });
    await new Promise<void>((resolve) => rogue.on("connect", () => resolve()));
    rogue.on("round:start", () => {
      // It claims a member it never had, with a sum of the wrong shape.
      rogue.emit(
        "partial",
        encodePartial(
          {
            round: 1,
            results: [],
            failures: [{ clientId: "someone-else", code: "X", message: "" }],
            bytesUp: 0,
            sum: { weighted: [new Float64Array(3)], weight: 1, count: 0 },
          },
          [],
        ),
      );
    });
    rogue.emit("members", [{ clientId: "ghost", credential: null }]);
    const honest = client(`http://127.0.0.1:${ports[0]}`, 0, 2, 100);
    expect(await nodes[0]!.exit).toBe(0);
    expect(await honest.exit).toBe(0);
    rogue.disconnect();
    expect(nodes[0]!.lines.join("\n")).toMatch(
      /refused a partial from rogue: SHAPE_MISMATCH: partial sum has 1 tensors/,
    );

    const [m] = (await fileLines(join(dir, "metrics.jsonl"))).map((l) => JSON.parse(l));
    // The ghost is a dropout; the honest client's update made the round.
    expect(m.participants).toBe(1);
    expect(m.failureReasons).toEqual([expect.objectContaining({ clientId: "ghost" })]);
  }, 120_000);
  it("a follower lost while it owes an answer: its member fails at once, not at the deadline", async () => {
    const args = [...base, "--rounds", "1", "--secure", "--min-clients", "4"];
    const { nodes, dir, ports, redisUrl } = await cluster(
      [...args, "--min-fit-clients", "4"],
      ["a"],
    );
    const { createClient } = await import("@redis/client");
    const r = createClient({ url: redisUrl });
    await r.connect();
    const record = JSON.parse((await r.get("cohort:n:link"))!) as { secret: string };
    await r.quit();
    const rogue = io(`http://127.0.0.1:${ports[0]}/cluster`, {
      auth: { node: "rogue", secret: record.secret },
      reconnection: false,
    });
    await new Promise<void>((resolve) => rogue.on("connect", () => resolve()));
    // Asked for its member's first SecAgg+ step, it goes away without answering.
    rogue.on("request", () => rogue.disconnect());
    rogue.emit("members", [{ clientId: "ghost", credential: null }]);
    const url = `http://127.0.0.1:${ports[0]}`;
    const honest = [0, 1, 2].map((i) => client(url, i, 3, 100, ["--secure-floors", "3,2,2"]));
    const exit = await nodes[0]!.exit;
    expect({ exit, last: exit === 0 ? [] : nodes[0]!.lines.slice(-10) }).toEqual({
      exit: 0,
      last: [],
    });
    expect(await Promise.all(honest.map((c) => c.exit))).toEqual([0, 0, 0]);
    const [m] = (await fileLines(join(dir, "metrics.jsonl"))).map((l) => JSON.parse(l));
    expect(m.participants).toBe(3);
    expect(m.failureReasons).toEqual([
      expect.objectContaining({ clientId: "ghost", code: "CLIENT_DISCONNECTED" }),
    ]);
    // The round did not wait out the 60 s round timeout for the lost node's answer.
    expect(m.durationMs).toBeLessThan(30_000);
  }, 120_000);
});

describe("cohort cluster-demo", () => {
  const start = cliPerTest();

  it("runs redis-server, nodes and clients here, and survives the leader's kill -9", async () => {
    const dir = await tempRunDir("cohort-cluster-demo-");
    const demo = start([
      ...["cluster-demo", "--nodes", "2", "--clients", "2", "--rounds", "3"],
      ...["--kill-leader-after", "1", "--run-dir", dir],
    ]);
    const exit = await demo.exit;
    expect({ exit, last: exit === 0 ? [] : demo.lines.slice(-15) }).toEqual({ exit: 0, last: [] });
    const said = demo.lines.join("\n");
    expect(said).toMatch(/\[demo\] kill -9 of the leader \(node 0\) after round 1/);
    expect(said).toMatch(/\[node 1\] cluster demo-\d+: node node-1 leads/);
    const rounds = (await fileLines(join(dir, "metrics.jsonl"))).map((l) => JSON.parse(l).round);
    expect(rounds).toEqual([1, 2, 3]);
  }, 120_000);
});
