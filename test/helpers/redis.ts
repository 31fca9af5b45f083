/**
 * A real redis-server for cluster tests: Debian's binary on a free port, its data (AOF, fsync on
 * every write) in a temporary directory, so a restart on the same directory keeps what was
 * acknowledged. Tests skip nothing: without redis-server they fail, saying how to install it.
 */
import { createClient } from "@redis/client";
import { startRedis, type RedisProcess } from "../../coordinator/cluster/redis-server.js";

export {
  freePort,
  startRedis,
  REDIS_SERVER,
  type RedisProcess,
} from "../../coordinator/cluster/redis-server.js";
import { afterEach } from "vitest";

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
