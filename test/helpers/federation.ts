/** Shared test helpers: a coordinator on port 0 with clients over real socket.io. */
import { mkdtemp } from "node:fs/promises";
import { afterEach } from "vitest";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  createCoordinator,
  type Coordinator,
  type CoordinatorOptions,
} from "../../coordinator/index.js";
import { CohortClient, type CohortClientOptions } from "../../client/index.js";
import { loadMnistDigits, shardDataset, takeExamples } from "../../models/datasets/index.js";
import type { Dataset } from "../../protocol/dataset.js";

/** A fresh temporary run directory. */
export async function tempRunDir(prefix = "cohort-run-"): Promise<string> {
  return mkdtemp(join(tmpdir(), prefix));
}

/** MNIST digit shards for `n` clients and a held-out evaluation set. */
export async function mnistShards(
  n: number,
  perClient?: number,
  evalSize = 1000,
): Promise<{ shards: Dataset[]; evalSet: Dataset }> {
  const train = await loadMnistDigits("train");
  const test = await loadMnistDigits("test");
  const shards = Array.from({ length: n }, (_, i) => {
    const shard = shardDataset(train, i, n);
    return perClient === undefined ? shard : takeExamples(shard, perClient);
  });
  return { shards, evalSet: takeExamples(test, evalSize) };
}

/** Start a coordinator on an ephemeral port with quiet logs. */
export async function startCoordinator(options: Partial<CoordinatorOptions>): Promise<Coordinator> {
  return createCoordinator({ port: 0, host: "127.0.0.1", log: () => undefined, ...options });
}

/** Start one client per shard, connected to `url`. */
export async function startClients(
  url: string,
  shards: Dataset[],
  prefix = "client",
  options: Partial<CohortClientOptions> = {},
): Promise<CohortClient[]> {
  const clients = shards.map(
    (data, i) =>
      new CohortClient({
        url,
        data,
        clientId: `${prefix}-${i}`,
        backend: "wasm",
        log: () => undefined,
        ...options,
      }),
  );
  await Promise.all(clients.map((c) => c.start()));
  return clients;
}

/** What a socket test started: closed after each test (raw clients, clients, then the coordinator). */
export interface Started {
  coordinator: Coordinator | undefined;
  clients: CohortClient[];
  raws: { close(): void }[];
}

/** Register the closing of what each test of the file (or `describe`) starts. */
export function closeAfterEach(): Started {
  const started: Started = { coordinator: undefined, clients: [], raws: [] };
  afterEach(async () => {
    for (const r of started.raws) r.close();
    await Promise.all(started.clients.map((c) => c.close()));
    await started.coordinator?.close();
    started.coordinator = undefined;
    started.clients = [];
    started.raws = [];
  });
  return started;
}
