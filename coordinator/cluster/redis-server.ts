/**
 * Debian's redis-server as a child process: on a free port, its data (AOF, fsync on every
 * write) in a directory of its own, so a restart on the same directory keeps what was
 * acknowledged. For `cohort cluster-demo`, benchmarks and tests.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CohortError } from "../../protocol/errors.js";

export const REDIS_SERVER = "/usr/bin/redis-server";

/** A free TCP port on 127.0.0.1 (redis-server cannot take port 0). */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** A running redis-server. */
export interface RedisProcess {
  url: string;
  port: number;
  dir: string;
  process: ChildProcess;
  /** Stop it (SIGTERM, or `signal`) and wait for it to exit. */
  stop(signal?: NodeJS.Signals): Promise<void>;
}

/** Start redis-server on a free port (or `port`), with its data in `dir` (a new one by default). */
export async function startRedis(
  options: { dir?: string; port?: number } = {},
): Promise<RedisProcess> {
  if (!existsSync(REDIS_SERVER)) {
    throw new CohortError(
      "INVALID_OPTION",
      `${REDIS_SERVER} not found: install Redis (Debian: apt-get install redis-server)`,
    );
  }
  const dir = options.dir ?? (await mkdtemp(join(tmpdir(), "cohort-redis-")));
  const port = options.port ?? (await freePort());
  const child = spawn(
    REDIS_SERVER,
    [
      "--port",
      String(port),
      "--bind",
      "127.0.0.1",
      "--dir",
      dir,
      "--save",
      "",
      "--appendonly",
      "yes",
      "--appendfsync",
      "always",
      "--protected-mode",
      "no",
    ],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  let output = "";
  child.stdout!.on("data", (b: Buffer) => (output += b.toString()));
  child.stderr!.on("data", (b: Buffer) => (output += b.toString()));
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new CohortError("INTERNAL", `redis-server did not start:\n${output}`)),
      10_000,
    );
    const check = () => {
      if (/Ready to accept connections/.test(output)) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout!.on("data", check);
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new CohortError("INTERNAL", `redis-server exited (${code}):\n${output}`));
    });
  });
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    dir,
    process: child,
    async stop(signal: NodeJS.Signals = "SIGTERM") {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      await exited;
    },
  };
}
