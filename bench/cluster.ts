/**
 * Cluster benchmark (`npm run bench:cluster`, after `npm run build`; needs redis-server): 1, 2
 * and 4 coordinator nodes (`cohort coordinator --redis`, one process each) on this machine, and
 * 1,000 / 4,000 / 10,000 socket.io clients of a tiny model in separate load-generator processes
 * (each answers with a zero delta), spread evenly over the nodes. Per configuration: the
 * connect rate, round times, the peak RSS of every node, and the leader's inbound bytes per
 * round (its own clients' updates plus the followers' partial sums). Then the McMahan CNN with
 * 50 clients: the leader's inbound MiB per round at 1 and 4 nodes; and SecAgg+ rounds of the MLP
 * with 12 real `cohort client` processes at 1 and 4 nodes (followers send one masked sum each).
 * `CLUSTER_CNN=1,4,4l` picks the CNN's (`4l`: 4 nodes, the leader `--lead-only`).
 * Last, failover: `cohort cluster-demo` (2 nodes, 4 clients) with its leader killed after
 * round 2, plain and SecAgg+ (3 times each; `CLUSTER_FAILOVER=plain` picks), timed from the
 * kill to the lease taken and to the next round done, against the lease's TTL + a round.
 * `CLUSTER_SECURE=0` leaves the secure runs out; `CLUSTER_SECURE_NODES=1,4` picks their nodes
 * (an empty `CLUSTER_CLIENTS=` leaves the plain grid out).
 *
 * Every connected client trains each round; then (`CLUSTER_COHORT=900`, the default of a full
 * run; 0 leaves it out) a cohort of 900 sampled from 1,000 clients on one node and from 10,000
 * on four: what holding ten times the connections costs a round.
 *
 * `BENCH_QUICK=1`: 1 and 2 nodes with 1,000 clients only. `CLUSTER_CLIENTS=1000,4000` and
 * `CLUSTER_NODES=1,4` pick the grid. Writes `docs/figures/cluster.md` and `.json` (full run).
 */
import { fork, spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { io, type Socket } from "socket.io-client";
import { decode, encode } from "../protocol/codec.js";
import { openEnvelope } from "../aggregation/signing.js";
import { parseFitRequest } from "../protocol/guards.js";
import { PROTOCOL_VERSION } from "../protocol/version.js";
import { selectBackend } from "../models/index.js";
import { TINY_PARAMETERS, tinyModelFile } from "./tiny-model.js";
import { freePort, startRedis } from "../coordinator/cluster/redis-server.js";
import { median as medianOf } from "./stats.js";

const QUICK = process.env.BENCH_QUICK === "1";
const ROUNDS = 5;
const PER_GENERATOR = 2500;
/** `CLUSTER_PROFILE=DIR`: the nodes write V8 CPU profiles there (nodes that exit on their own). */
const PROFILE =
  process.env.CLUSTER_PROFILE === undefined
    ? []
    : ["--cpu-prof", `--cpu-prof-dir=${process.env.CLUSTER_PROFILE}`];
const CLI = fileURLToPath(new URL("../bin/cohort.js", import.meta.url));

function grid(name: string, fallback: number[]): number[] {
  const v = process.env[name];
  return v === undefined
    ? fallback
    : v
        .split(",")
        .map(Number)
        .filter((n) => n > 0);
}

/** How a configuration differs from the plain one. */
interface Variant {
  /** The leader serves no clients (`--lead-only`): they all connect to the followers. */
  leadOnly?: boolean;
  /**
   * Clients sampled a round, whatever the number connected (what holding more connections
   * costs a round); by default every connected client trains each round.
   */
  cohort?: number;
}

/** The sampling flags of a configuration. */
function cohortFlags(clients: number, cohort: number | undefined): string[] {
  return cohort === undefined
    ? ["--min-fit-clients", String(Math.floor(clients * 0.9))]
    : ["--min-fit-clients", String(Math.min(cohort, clients)), "--fraction-fit", "0.000001"];
}

/** A load generator: clients `from`…`to`−1, client i on `urls[i % urls.length]`. */
async function generator(urls: string[], from: number, to: number): Promise<void> {
  const started = performance.now();
  const connect = (i: number): Promise<Socket> =>
    new Promise((resolve) => {
      const socket = io(urls[i % urls.length]!, {
        auth: {
          protocolVersion: PROTOCOL_VERSION,
          clientId: `load-${i}`,
          platform: "load",
          backend: "none",
        },
        transports: ["websocket"],
        reconnection: true,
        reconnectionDelay: 500,
      });
      socket.on("round:fit", (payload: Uint8Array) => {
        const request = parseFitRequest(decode(openEnvelope(payload).body));
        const update = encode({
          round: request.round,
          numExamples: 10,
          delta: request.weights.map((w) => new Float32Array(w.length)),
          metrics: { loss: 1, accuracy: null, trainMs: 1, backend: "none" },
        });
        setTimeout(() => socket.emit("fit:result", update, () => undefined), Math.random() * 200);
      });
      socket.on("run:done", () => socket.disconnect());
      socket.once("connect", () => resolve(socket));
    });
  const sockets: Socket[] = [];
  const progress = setInterval(() => {
    if (process.connected)
      process.send?.({ progress: sockets.length, ms: performance.now() - started });
  }, 1000);
  for (let i = from; i < to; i += 100) {
    const batch = Array.from({ length: Math.min(100, to - i) }, (_, j) => connect(i + j));
    sockets.push(...(await Promise.all(batch)));
  }
  clearInterval(progress);
  process.send?.({ connectedMs: performance.now() - started });
  await new Promise<void>((resolve) => process.once("disconnect", () => resolve()));
  sockets.forEach((s) => s.disconnect());
}

/** Peak VmRSS of a process (sampled), in bytes. */
function rssOf(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m === null ? 0 : Number(m[1]) * 1024;
  } catch {
    return 0;
  }
}

interface RoundLine {
  round: number;
  durationMs: number;
  bytesUp: number;
  participants: number;
  partials?: { nodes: number; bytes: number; clientBytes: number };
}

interface Result {
  nodes: number;
  clients: number;
  model: string;
  connectPerSecond: number;
  /** Set when the clients stopped connecting (no progress for a minute): how many had. */
  stalledAt?: number;
  roundMs: number[];
  rssMiB: number[];
  leaderInboundMiB: number;
  /** Of which the followers' partial sums. */
  fromFollowersMiB: number;
  modelMiB: number;
}

/** One configuration: `nodes` coordinator processes, `clients` load clients. */
async function runCluster(
  model: string,
  modelBytes: number,
  nodes: number,
  clients: number,
  how: Variant = {},
): Promise<Result> {
  const { leadOnly = false } = how;
  const redis = await startRedis();
  const runDir = mkdtempSync(join(tmpdir(), "cohort-bench-cluster-"));
  const ports = await Promise.all(Array.from({ length: nodes }, () => freePort()));
  const urls = ports.map((p) => `http://127.0.0.1:${p}`);
  const procs: ChildProcess[] = [];
  const peaks = ports.map(() => 0);
  const output: string[][] = ports.map(() => []);
  const node = (i: number) => {
    const child = spawn(
      process.execPath,
      [
        ...PROFILE,
        ...[
          CLI,
          "coordinator",
          "--port",
          String(ports[i]),
          "--host",
          "127.0.0.1",
          "--model",
          model,
        ],
        ...["--rounds", String(ROUNDS), "--seed", "1", "--round-timeout", "60"],
        ...["--min-clients", String(Math.floor(clients * 0.95))],
        ...cohortFlags(clients, how.cohort),
        ...["--max-connections-per-address", String(2 * clients + 100)],
        ...["--max-upload-mb", String(Math.max(64, Math.ceil((modelBytes * 2) / 2 ** 20)))],
        ...["--redis", redis.url, "--cluster", "bench", "--node", `n${i}`, "--run-dir", runDir],
        ...(leadOnly ? ["--lead-only"] : []),
      ],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    for (const stream of [child.stdout!, child.stderr!]) {
      stream.on("data", (b: Buffer) => output[i]!.push(...b.toString().split("\n").slice(-20)));
    }
    procs.push(child);
    return child;
  };
  const leader = node(0);
  const leaderExit = new Promise<number | null>((r) => leader.once("exit", (code) => r(code)));
  await outputMatches(leader, /listening on/);
  for (let i = 1; i < nodes; i++) await outputMatches(node(i), /serving the leader's run/);
  const sampler = setInterval(() => {
    procs.forEach((p, i) => (peaks[i] = Math.max(peaks[i]!, rssOf(p.pid!))));
  }, 100);
  const generators = Array.from({ length: Math.ceil(clients / PER_GENERATOR) }, (_, g) =>
    fork(
      fileURLToPath(import.meta.url),
      [
        "generate",
        (leadOnly ? urls.slice(1) : urls).join(","),
        String(g * PER_GENERATOR),
        String(Math.min(clients, (g + 1) * PER_GENERATOR)),
      ],
      { stdio: "inherit" },
    ),
  );
  const counts = generators.map(() => 0);
  const times = generators.map(() => 0);
  let lastGrowth = Date.now();
  const connecting = Promise.all(
    generators.map(
      (g, i) =>
        new Promise<number>((resolve) =>
          g.on("message", (m: { connectedMs?: number; progress?: number }) => {
            if (m.progress !== undefined && m.progress > counts[i]!) {
              counts[i] = m.progress;
              times[i] = (m as { ms: number }).ms;
              lastGrowth = Date.now();
            }
            if (m.connectedMs !== undefined) resolve(m.connectedMs);
          }),
        ),
    ),
  );
  let check: NodeJS.Timeout | undefined;
  const stalled = new Promise<"stalled">((resolve) => {
    check = setInterval(() => {
      if (Date.now() - lastGrowth > 60_000) resolve("stalled");
    }, 1000);
  });
  // A leader that stops before every client connected says why.
  const connected = await Promise.race([connecting, leaderExit.then(() => null), stalled]);
  clearInterval(check);
  // The run may end before the last clients connected (it starts at 95 %): the rate so far.
  const connectRate = Array.isArray(connected)
    ? clients / (Math.max(...connected) / 1000)
    : counts.reduce((a, b) => a + b, 0) / (Math.max(...times, 1) / 1000);
  if (connected === "stalled") {
    clearInterval(sampler);
    generators.forEach((g) => g.kill("SIGKILL"));
    for (const p of procs) p.kill("SIGKILL");
    await redis.stop("SIGKILL");
    const at = counts.reduce((a, b) => a + b, 0);
    return {
      ...empty(nodes, clients, model, modelBytes, how),
      stalledAt: at,
      rssMiB: peaks.map((b) => b / 2 ** 20),
    };
  }
  const exit = await leaderExit;
  clearInterval(sampler);
  // Generators still connecting (the run ended first) are stopped, not waited for.
  generators.forEach((g) => (g.disconnect(), g.kill("SIGKILL")));
  for (const p of procs) p.kill("SIGKILL");
  await redis.stop("SIGKILL");
  if (exit !== 0) {
    throw new Error(`the leader exited with ${exit}:\n${output[0]!.slice(-30).join("\n")}`);
  }
  const rounds = readFileSync(join(runDir, "metrics.jsonl"), "utf8")
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l) as RoundLine);
  // The leader's inbound: its own clients' updates and the followers' partials.
  const inbound = rounds.map(
    (r) => r.bytesUp - (r.partials?.clientBytes ?? 0) + (r.partials?.bytes ?? 0),
  );
  return {
    ...empty(nodes, clients, model, modelBytes, how),
    connectPerSecond: connectRate,
    roundMs: rounds.map((r) => r.durationMs),
    rssMiB: peaks.map((b) => b / 2 ** 20),
    leaderInboundMiB: inbound.reduce((a, b) => a + b, 0) / inbound.length / 2 ** 20,
    fromFollowersMiB:
      rounds.reduce((a, r) => a + (r.partials?.bytes ?? 0), 0) / rounds.length / 2 ** 20,
  };
}

/** A secure round's figures: the leader's inbound per round against one masked vector. */
interface SecureResult {
  nodes: number;
  clients: number;
  roundMs: number[];
  leaderInboundMiB: number;
  fromFollowersMiB: number;
  /** What the followers' members sent them (in the leader's inbound at 1 node). */
  followersReceivedMiB: number;
  modelMiB: number;
}

/**
 * SecAgg+ rounds of the MLP (199,210 parameters) with real `cohort client` processes (digits,
 * wasm), spread evenly over `nodes` nodes: the leader's inbound bytes per round.
 */
async function runSecure(nodes: number, clients: number): Promise<SecureResult> {
  const redis = await startRedis();
  const runDir = mkdtempSync(join(tmpdir(), "cohort-bench-cluster-secure-"));
  const ports = await Promise.all(Array.from({ length: nodes }, () => freePort()));
  const urls = ports.map((p) => `http://127.0.0.1:${p}`);
  const procs: ChildProcess[] = [];
  const spawnCli = (args: string[]) => {
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ["ignore", "pipe", "pipe"] });
    child.stderr!.resume();
    procs.push(child);
    return child;
  };
  const node = (i: number) =>
    spawnCli([
      ...["coordinator", "--port", String(ports[i]), "--host", "127.0.0.1", "--secure"],
      ...["--rounds", String(ROUNDS), "--seed", "1", "--round-timeout", "120"],
      ...["--min-clients", String(clients), "--min-fit-clients", String(clients)],
      ...["--redis", redis.url, "--cluster", "bench", "--node", `n${i}`, "--run-dir", runDir],
    ]);
  const leader = node(0);
  const leaderExit = new Promise<number | null>((r) => leader.once("exit", (code) => r(code)));
  await outputMatches(leader, /listening on/);
  for (let i = 1; i < nodes; i++) await outputMatches(node(i), /serving the leader's run/);
  for (let c = 0; c < clients; c++) {
    const url = [...urls.slice(c % nodes), ...urls.slice(0, c % nodes)].join(",");
    spawnCli([
      ...["client", "--url", url, "--dataset", "mnist", "--backend", "wasm"],
      ...["--client-index", String(c), "--num-clients", String(clients), "--max-examples", "100"],
      ...["--secure-floors", `${clients},2,2`],
    ]).stdout!.resume();
  }
  const exit = await leaderExit;
  for (const p of procs) p.kill("SIGKILL");
  await redis.stop("SIGKILL");
  if (exit !== 0) throw new Error(`the secure leader exited with ${exit}`);
  const rounds = readFileSync(join(runDir, "metrics.jsonl"), "utf8")
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l) as RoundLine);
  const mean = (f: (r: RoundLine) => number) =>
    rounds.reduce((a, r) => a + f(r), 0) / rounds.length / 2 ** 20;
  return {
    nodes,
    clients,
    roundMs: rounds.map((r) => r.durationMs),
    leaderInboundMiB: mean(
      (r) => r.bytesUp - (r.partials?.clientBytes ?? 0) + (r.partials?.bytes ?? 0),
    ),
    fromFollowersMiB: mean((r) => r.partials?.bytes ?? 0),
    followersReceivedMiB: mean((r) => r.partials?.clientBytes ?? 0),
    modelMiB: ((199_210 + 1) * 4) / 2 ** 20,
  };
}

/** A configuration's result with nothing measured yet (all a stalled one has). */
function empty(
  nodes: number,
  clients: number,
  model: string,
  modelBytes: number,
  how: Variant = {},
): Result {
  return {
    nodes,
    clients,
    model:
      (model === "cnn" ? "McMahan CNN" : "tiny") +
      (how.leadOnly === true ? " (--lead-only)" : "") +
      (how.cohort === undefined ? "" : ` (cohort ${how.cohort})`),
    connectPerSecond: 0,
    roundMs: [],
    rssMiB: [],
    leaderInboundMiB: 0,
    fromFollowersMiB: 0,
    modelMiB: modelBytes / 2 ** 20,
  };
}

async function main(): Promise<void> {
  if (process.argv[2] === "generate") {
    return generator(process.argv[3]!.split(","), Number(process.argv[4]), Number(process.argv[5]));
  }
  await selectBackend("wasm");
  const tinyFile = await tinyModelFile("cohort-bench-model-");
  const results: Result[] = [];
  const show = (r: Result) => {
    if (r.stalledAt !== undefined) {
      console.log(
        `${r.model}, ${r.nodes} node(s), ${r.clients} clients: stopped connecting at ${r.stalledAt} clients (no progress for 60 s); RSS ${r.rssMiB.map((m) => m.toFixed(0)).join(" / ")} MiB`,
      );
      results.push(r);
      return;
    }
    const median = medianOf(r.roundMs);
    console.log(
      `${r.model}, ${r.nodes} node(s), ${r.clients} clients: connect ${r.connectPerSecond.toFixed(0)} clients/s; ` +
        `round median ${median.toFixed(0)} ms (${r.roundMs.map((m) => m.toFixed(0)).join(", ")}); ` +
        `RSS ${r.rssMiB.map((m) => m.toFixed(0)).join(" / ")} MiB; leader inbound ${r.leaderInboundMiB.toFixed(2)} MiB/round ` +
        `(${(r.leaderInboundMiB / r.modelMiB).toFixed(1)} × the model), of which followers' partials ${(r.fromFollowersMiB / r.modelMiB).toFixed(2)} × the model`,
    );
    results.push(r);
  };
  const tinyBytes = TINY_PARAMETERS * 4;
  for (const clients of grid("CLUSTER_CLIENTS", QUICK ? [1000] : [1000, 4000, 10000])) {
    for (const nodes of grid("CLUSTER_NODES", QUICK ? [1, 2] : [1, 2, 4])) {
      show(await runCluster(tinyFile, tinyBytes, nodes, clients));
    }
  }
  // The same cohort of 900 a round with 1,000 clients on one node and 10,000 on four.
  const cohort = Number(process.env.CLUSTER_COHORT ?? (QUICK ? 0 : 900));
  if (cohort > 0) {
    show(await runCluster(tinyFile, tinyBytes, 1, 1000, { cohort }));
    show(await runCluster(tinyFile, tinyBytes, 4, 10_000, { cohort }));
  }
  const secure: SecureResult[] = [];
  if (process.env.CLUSTER_SECURE !== "0") {
    for (const nodes of grid("CLUSTER_SECURE_NODES", QUICK ? [1, 2] : [1, 4])) {
      const r = await runSecure(nodes, 12);
      const median = medianOf(r.roundMs);
      console.log(
        `secure MLP, ${r.nodes} node(s), ${r.clients} clients: round median ${median.toFixed(0)} ms; ` +
          `leader inbound ${r.leaderInboundMiB.toFixed(2)} MiB/round (${(r.leaderInboundMiB / r.modelMiB).toFixed(1)} × one masked vector), ` +
          `of which followers' masked sums ${(r.fromFollowersMiB / r.modelMiB).toFixed(2)} × (their members sent them ${(r.followersReceivedMiB / r.modelMiB).toFixed(1)} ×)`,
      );
      secure.push(r);
    }
  }
  // The CNN's configurations: "4" is 4 nodes, "4l" 4 nodes with a --lead-only leader.
  const cnn = (process.env.CLUSTER_CNN ?? (QUICK ? "" : "1,4,4l")).split(",").filter(Boolean);
  for (const c of cnn) {
    show(
      await runCluster("cnn", 1_663_370 * 4, parseInt(c, 10), 50, { leadOnly: c.endsWith("l") }),
    );
  }
  const failovers: FailoverResult[] = [];
  for (const kind of (process.env.CLUSTER_FAILOVER ?? "plain,secure").split(",").filter(Boolean)) {
    for (let i = 0; i < (QUICK ? 1 : 3); i++) {
      const r = await runFailover(kind === "secure");
      console.log(
        `failover (${kind}): lease taken ${r.leaseS.toFixed(2)} s after the kill -9, next round done ${r.nextRoundS.toFixed(2)} s after it; ` +
          `TTL ${FAILOVER_TTL_S} s + round median ${r.roundS.toFixed(2)} s = ${(FAILOVER_TTL_S + r.roundS).toFixed(2)} s: ` +
          `${r.ofTarget.toFixed(2)} × the target`,
      );
      failovers.push(r);
    }
  }
  if (!QUICK) {
    const table = [
      "| model | nodes | clients | connect (clients/s) | round median (ms) | RSS per node (MiB) | leader inbound (MiB/round) | × model | followers' partials (× model) |",
      "|---|---|---|---|---|---|---|---|---|",
      ...results.map((r) => {
        if (r.stalledAt !== undefined) {
          return `| ${r.model} | ${r.nodes} | ${r.clients} | stopped at ${r.stalledAt} | – | ${r.rssMiB.map((m) => m.toFixed(0)).join(" / ")} | – | – | – |`;
        }
        const median = medianOf(r.roundMs);
        return `| ${r.model} | ${r.nodes} | ${r.clients} | ${r.connectPerSecond.toFixed(0)} | ${median.toFixed(0)} | ${r.rssMiB.map((m) => m.toFixed(0)).join(" / ")} | ${r.leaderInboundMiB.toFixed(2)} | ${(r.leaderInboundMiB / r.modelMiB).toFixed(1)} | ${(r.fromFollowersMiB / r.modelMiB).toFixed(2)} |`;
      }),
    ];
    const figures = fileURLToPath(new URL("../../docs/figures/", import.meta.url));
    const secureTable = [
      "| nodes | clients | round median (ms) | leader inbound (MiB/round) | × masked vector | followers' sums (× vector) | followers' members sent (× vector) |",
      "|---|---|---|---|---|---|---|",
      ...secure.map((r) => {
        const median = medianOf(r.roundMs);
        return `| ${r.nodes} | ${r.clients} | ${median.toFixed(0)} | ${r.leaderInboundMiB.toFixed(2)} | ${(r.leaderInboundMiB / r.modelMiB).toFixed(1)} | ${(r.fromFollowersMiB / r.modelMiB).toFixed(2)} | ${(r.followersReceivedMiB / r.modelMiB).toFixed(1)} |`;
      }),
    ];
    const failoverTable = [
      "| aggregation | lease taken after the kill (s) | next round done after the kill (s) | round median (s) | × (TTL + round) |",
      "|---|---|---|---|---|",
      ...failovers.map(
        (r) =>
          `| ${r.secure ? "SecAgg+" : "plain"} | ${r.leaseS.toFixed(2)} | ${r.nextRoundS.toFixed(2)} | ${r.roundS.toFixed(2)} | ${r.ofTarget.toFixed(2)} |`,
      ),
    ];
    writeFileSync(
      join(figures, "cluster.md"),
      `# bench:cluster\n\n${table.join("\n")}\n\n## SecAgg+ (MLP, real clients)\n\n${secureTable.join("\n")}\n\n` +
        `## Failover (\`cohort cluster-demo\`: 2 nodes, 4 clients, lease TTL ${FAILOVER_TTL_S} s, kill -9 of the leader after round 2)\n\n${failoverTable.join("\n")}\n`,
    );
    writeFileSync(
      join(figures, "cluster.json"),
      JSON.stringify({ plain: results, secure, failovers }, null, 2) + "\n",
    );
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});

/** The lease TTL `cohort cluster-demo` gives its nodes. */
const FAILOVER_TTL_S = 3;

interface FailoverResult {
  secure: boolean;
  /** From the kill -9 to the lease taken by the other node, and to its first round done. */
  leaseS: number;
  nextRoundS: number;
  /** The median time of rounds 2 to 4, as the nodes logged them. */
  roundS: number;
  /** `nextRoundS` against the target: the lease's TTL + one round. */
  ofTarget: number;
}

/**
 * `cohort cluster-demo` with the leader killed after round 2: each line timed as it arrives.
 * Node 1 takes the lease and runs round 3.
 */
async function runFailover(secure: boolean): Promise<FailoverResult> {
  const child = spawn(
    process.execPath,
    [
      ...[CLI, "cluster-demo", "--nodes", "2", "--clients", "4", "--rounds", "4"],
      ...["--kill-leader-after", "2", ...(secure ? ["--secure"] : [])],
    ],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  child.stderr!.resume();
  const lines: { t: number; line: string }[] = [];
  let rest = "";
  child.stdout!.on("data", (b: Buffer) => {
    const t = performance.now();
    const parts = (rest + b.toString()).split("\n");
    rest = parts.pop()!;
    for (const line of parts) lines.push({ t, line });
  });
  const code = await new Promise<number | null>((r) => child.once("exit", r));
  const at = (pattern: RegExp) => {
    const found = lines.find((l) => pattern.test(l.line));
    if (found === undefined) {
      throw new Error(
        `cluster-demo (exit ${code}) never said ${pattern}; its last lines:\n${lines
          .slice(-10)
          .map((l) => l.line)
          .join("\n")}`,
      );
    }
    return found.t;
  };
  const killed = at(/\[demo\] kill -9 of the leader/);
  // Every round but the first (it warms up), as the node that ran it logged it.
  const roundS = lines.flatMap((l) => {
    const m = /^\[node \d\] round (\d+)\/\d+ .* (\d+\.\d+) s {2}up/.exec(l.line);
    return m === null || m[1] === "1" ? [] : [Number(m[2])];
  });
  const nextRoundS = (at(/\[node 1\] round 3\//) - killed) / 1000;
  const round = medianOf(roundS);
  return {
    secure,
    leaseS: (at(/\[node 1\] .*node node-1 leads/) - killed) / 1000,
    nextRoundS,
    roundS: round,
    ofTarget: nextRoundS / (FAILOVER_TTL_S + round),
  };
}

/** Resolves once `child`'s output so far matches `pattern`. */
function outputMatches(child: ChildProcess, pattern: RegExp): Promise<void> {
  return new Promise((resolve) => {
    let text = "";
    child.stdout!.on("data", (b: Buffer) => {
      text += b.toString();
      if (pattern.test(text)) resolve();
    });
  });
}
