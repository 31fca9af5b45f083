/**
 * SecAgg+ server cost (`npm run bench:secagg`, after `npm run build`): one round in memory with
 * n clients and m = 100,000 values, dropouts after the masked-input phase (the costly case: the
 * server rebuilds the dropped clients' mask keys and regenerates their pairwise masks). Reports
 * the server's unmasking time (`finish()`) and its whole share of the round; the clients' work
 * is done too but not counted. Bonawitz et al. 2017 (Java, one thread, n = 500, m = 100K,
 * complete graph) report ≈2 s / 62 s / 143 s at 0 / 10 / 30 % dropouts.
 * SECAGG_FULL=1 adds n = 500 on the complete graph (the clients' side takes minutes).
 */
import {
  SecAggClient,
  SecAggServer,
  logarithmicDegree,
  majorityThreshold,
  type SecAggSetup,
} from "../aggregation/secure/index.js";
import { createRng } from "../aggregation/random.js";

const M = 100_000;

async function round(
  n: number,
  k: number,
  dropFraction: number,
): Promise<{ unmaskMs: number; serverMs: number; clientMs: number }> {
  const setup: SecAggSetup = {
    session: "bench",
    round: 1,
    n,
    k,
    t: majorityThreshold(k),
    graphSeed: 7,
    clip: 1,
    maxWeight: 1000,
    tensorSizes: [M],
  };
  const rng = createRng(n * 100 + Math.round(dropFraction * 100));
  let serverMs = 0;
  let clientMs = 0;
  const server = async <T>(f: () => T | Promise<T>): Promise<T> => {
    const t0 = performance.now();
    const out = await f();
    serverMs += performance.now() - t0;
    return out;
  };
  const client = async <T>(f: () => T | Promise<T>): Promise<T> => {
    const t0 = performance.now();
    const out = await f();
    clientMs += performance.now() - t0;
    return out;
  };
  const srv = new SecAggServer(setup);
  const clients = Array.from({ length: n }, (_, index) => new SecAggClient(setup, { index, rng }));
  for (const c of clients) {
    const ad = await client(() => c.advertise());
    await server(() => srv.receiveAdvertisement(ad));
  }
  const neighbourKeys = await server(() => srv.closeAdvertise());
  for (const nk of neighbourKeys) {
    const shares = await client(() => clients[nk.index]!.shareKeys(nk));
    await server(() => srv.receiveShareKeys(shares));
  }
  const maskRequests = await server(() => srv.closeShareKeys());
  const dropped = new Set(
    Array.from({ length: n }, (_, i) => i)
      .sort(() => rng() - 0.5)
      .slice(0, Math.round(dropFraction * n)),
  );
  for (const mr of maskRequests) {
    if (dropped.has(mr.index)) continue;
    const update = {
      delta: [Float32Array.from({ length: M }, () => rng() - 0.5)],
      numExamples: 100,
    };
    const masked = await client(() => clients[mr.index]!.maskedInput(mr, update));
    await server(() => srv.receiveMaskedInput(masked));
  }
  const unmaskRequests = await server(() => srv.closeMaskedInput());
  for (const ur of unmaskRequests) {
    const response = await client(() => clients[ur.index]!.unmask(ur));
    await server(() => srv.receiveUnmask(response));
  }
  const t0 = performance.now();
  const result = await srv.finish();
  const unmaskMs = performance.now() - t0;
  serverMs += unmaskMs;
  if (result.contributors.length !== n - dropped.size) throw new Error("unexpected contributors");
  return { unmaskMs, serverMs, clientMs };
}

async function main(): Promise<void> {
  const configs: [number, number][] = [
    [100, 99],
    [500, logarithmicDegree(500)],
  ];
  if (process.env.SECAGG_FULL === "1") configs.push([500, 499]);
  console.log(
    `# SecAgg+ server cost, m = ${M.toLocaleString()} values, dropouts after masked input`,
  );
  for (const [n, k] of configs) {
    for (const d of [0, 0.1, 0.3]) {
      const r = await round(n, k, d).catch((error: Error & { code?: string }) => {
        if (error.code !== "SECAGG_THRESHOLD") throw error;
        return error;
      });
      if (r instanceof Error) {
        console.log(
          `n=${n} k=${k} dropouts ${Math.round(d * 100)} %: round aborted (${r.message})`,
        );
        continue;
      }
      console.log(
        `n=${n} k=${k}${k === n - 1 ? " (complete)" : " (SecAgg+)"} dropouts ${Math.round(d * 100)} %: ` +
          `server unmasking ${(r.unmaskMs / 1000).toFixed(2)} s, server total ${(r.serverMs / 1000).toFixed(2)} s ` +
          `(clients' work ${(r.clientMs / 1000).toFixed(1)} s, not counted)`,
      );
    }
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
