/**
 * A real redis-server for cluster tests: Debian's binary on a free port, its data (AOF, fsync on
 * every write) in a temporary directory, so a restart on the same directory keeps what was
 * acknowledged. Tests skip nothing: without redis-server they fail, saying how to install it.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createClient } from "@redis/client";
import { afterEach } from "vitest";

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
    throw new Error(`${REDIS_SERVER} not found: apt-get install redis-server`);
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
      () => reject(new Error(`redis-server did not start:\n${output}`)),
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
      reject(new Error(`redis-server exited (${code}):\n${output}`));
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

/** A connected node-redis client. */
export async function redisClient(url: string) {
  const client = createClient({ url });
  client.on("error", () => undefined);
  await client.connect();
  return client;
}

/**
 * A redis-server for each test and clients of it, all gone after the test (clients destroyed,
 * not quit: a client of a killed server would wait to reconnect). Call in a test file's top level.
 */
export function redisPerTest() {
  let server: RedisProcess | null = null;
  const clients: { destroy(): void }[] = [];
  afterEach(async () => {
    for (const c of clients.splice(0)) c.destroy();
    await server?.stop("SIGKILL");
    server = null;
  });
  return {
    async start(): Promise<RedisProcess> {
      server = await startRedis();
      return server;
    },
    /**
     * kill -9 the server and start it again on the same port and data directory (after
     * `downMs`).
     */
    async crashAndRestart(downMs = 0): Promise<RedisProcess> {
      const { dir, port } = server!;
      await server!.stop("SIGKILL");
      if (downMs > 0) await new Promise((r) => setTimeout(r, downMs));
      server = await startRedis({ dir, port });
      return server;
    },
    async client() {
      const client = await redisClient(server!.url);
      clients.push(client);
      return client;
    },
  };
}
