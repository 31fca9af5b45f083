/**
 * `cohort cluster-demo`: a cluster on this machine — redis-server (started here unless
 * `--redis` names one), N coordinator nodes and M client processes spread over them — FedAvg on
 * MNIST digits; with `--kill-leader-after K`, the leader is killed -9 after round K to show a
 * follower taking the run over.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { freePort, startRedis, type RedisProcess } from "../coordinator/cluster/redis-server.js";
import { CohortError } from "../protocol/errors.js";
import { helpText, parseFlags, type CommandSpec, type FlagSpec } from "./args.js";

export const clusterDemoCommand = {
  name: "cluster-demo",
  summary:
    "Run a cluster here: redis-server, N coordinator nodes (`--redis`) and M clients spread over them.",
  flags: {
    nodes: { type: "number", default: 3, description: "coordinator nodes to start" },
    clients: { type: "number", default: 6, description: "client processes to start" },
    rounds: { type: "number", default: 5, description: "rounds to run" },
    secure: { type: "boolean", default: false, description: "secure aggregation (SecAgg+)" },
    "kill-leader-after": {
      type: "number",
      placeholder: "ROUND",
      defaultText: "never",
      description: "kill -9 the leader once it has logged this round: a follower takes over",
    },
    redis: {
      type: "string",
      placeholder: "redis://HOST:PORT",
      defaultText: "a redis-server started here (Debian's, on a free port)",
      description: "the Redis the nodes share",
    },
    "run-dir": {
      type: "string",
      defaultText: "a new temporary directory",
      placeholder: "DIR",
      description: "the nodes' shared run directory (metrics.jsonl, checkpoints)",
    },
  },
} satisfies CommandSpec<Record<string, FlagSpec>>;

/** Run the command; resolves with the process exit code. */
export async function runClusterDemo(argv: string[]): Promise<number> {
  const flags = parseFlags(clusterDemoCommand, argv);
  if (flags === null) {
    console.log(helpText(clusterDemoCommand));
    return 0;
  }
  const { nodes: n, clients: m, rounds } = flags;
  if (!(Number.isInteger(n) && n >= 1 && n <= 16 && Number.isInteger(m) && m >= 1)) {
    throw new CohortError("INVALID_OPTION", "--nodes must be 1 to 16 and --clients at least 1");
  }
  const killAfter = flags["kill-leader-after"];
  if (killAfter !== undefined && n < 2) {
    throw new CohortError("INVALID_OPTION", "--kill-leader-after needs --nodes 2 or more");
  }
  let redis: RedisProcess | null = null;
  if (flags.redis === undefined) {
    redis = await startRedis();
    console.log(`[redis] redis-server on port ${redis.port} (append-only, fsync always)`);
  }
  const redisUrl = flags.redis ?? redis!.url;
  const runDir = flags["run-dir"] ?? (await mkdtemp(join(tmpdir(), "cohort-cluster-demo-")));
  const cli = fileURLToPath(new URL("./cohort.js", import.meta.url));
  const ports = await Promise.all(Array.from({ length: n }, () => freePort()));
  const urls = ports.map((p) => `http://127.0.0.1:${p}`);
  const processes: ChildProcess[] = [];
  const start = (label: string, args: string[], onLine?: (line: string) => void) => {
    const child = spawn(process.execPath, [cli, ...args], { stdio: ["ignore", "pipe", "pipe"] });
    processes.push(child);
    for (const stream of [child.stdout, child.stderr]) {
      stream.setEncoding("utf8");
      stream.on("data", (chunk: string) => {
        for (const line of chunk.split("\n")) {
          if (line.trim() === "") continue;
          console.log(`[${label}] ${line}`);
          onLine?.(line);
        }
      });
    }
    return { child, exit: new Promise<number>((r) => child.on("exit", (c) => r(c ?? 1))) };
  };
  const node = (i: number, onLine?: (line: string) => void) =>
    start(
      `node ${i}`,
      [
        ...["coordinator", "--host", "127.0.0.1", "--port", String(ports[i])],
        ...["--rounds", String(rounds), "--min-clients", String(m), "--run-dir", runDir],
        ...["--redis", redisUrl, "--cluster", `demo-${process.pid}`, "--node", `node-${i}`],
        ...["--lease-ttl", "3", "--eval-dataset", "mnist", "--eval-size", "2000"],
        ...(flags.secure ? ["--secure", "--min-fit-clients", String(m)] : []),
      ],
      onLine,
    );
  try {
    // Node 0 first, so it leads; then the followers.
    let leader: ChildProcess | null = null;
    const first = node(0, (line) => {
      if (killAfter !== undefined && leader !== null && line.startsWith(`round ${killAfter}/`)) {
        console.log(`[demo] kill -9 of the leader (node 0) after round ${killAfter}`);
        leader.kill("SIGKILL");
        leader = null;
      }
    });
    leader = first.child;
    await new Promise((r) => setTimeout(r, 3000));
    const followers = Array.from({ length: n - 1 }, (_, i) => node(i + 1));
    console.log(`[demo] ${n} nodes on ${urls.join(", ")}; starting ${m} clients`);
    const clients = Array.from({ length: m }, (_, i) => {
      // Client i tries node i mod n first, then the others in turn.
      const own = [...urls.slice(i % n), ...urls.slice(0, i % n)].join(",");
      return start(`client ${i}`, [
        ...["client", "--url", own, "--dataset", "mnist", "--client-index", String(i)],
        ...["--num-clients", String(m), "--client-id", `demo-${i}`, "--max-examples", "1000"],
        ...(flags.secure ? ["--secure-floors", `${m},${m - 1},${Math.floor(m / 2) + 1}`] : []),
      ]);
    });
    const codes = await Promise.all([
      ...clients.map((c) => c.exit),
      ...followers.map((f) => f.exit),
      ...(killAfter === undefined ? [first.exit] : []),
    ]);
    const ok = codes.every((c) => c === 0);
    console.log(`[demo] ${ok ? "done" : "failed"}; the run directory: ${runDir}`);
    return ok ? 0 : 1;
  } finally {
    for (const child of processes) if (child.exitCode === null) child.kill();
    await redis?.stop();
  }
}
