/**
 * The engine's state store on a real redis-server: a committed round reads back exactly, a
 * leader that lost its lease cannot commit, a malformed record is an error (never a fresh
 * start), and commits survive a kill -9 of Redis.
 */
import { describe, expect, it } from "vitest";
import { RedisLease, leaseKeys } from "../coordinator/cluster/lease.js";
import { RedisStateStore, stateKeys } from "../coordinator/cluster/redis-state.js";
import type { CommittedState } from "../coordinator/ledger.js";
import type { TensorSpec } from "../protocol/messages.js";
import { redisPerTest } from "./helpers/redis.js";
import { expectCohortError, expectRejectsCode } from "./helpers/errors.js";

const specs: TensorSpec[] = [
  { name: "w", shape: [3, 2] },
  { name: "b", shape: [2] },
];

function state(round: number): CommittedState {
  const weights = [
    Float32Array.from({ length: 6 }, (_, i) => i + round / 7),
    Float32Array.of(-round, 0.5),
  ];
  return {
    runId: "run-1",
    completedRounds: round,
    rngState: 1234 + round,
    weights,
    strategy: { arrays: { m: weights.map((w) => w.map((v) => v / 3)) }, values: { t: round } },
    config: { model: "mlp" } as unknown as CommittedState["config"],
    configHash: "abc",
    lastMetrics: null,
    versions: { latest: round, current: round, promoted: round - 1 },
  };
}

const redis = redisPerTest();

async function node(name: string, ttlMs: number) {
  const client = await redis.client();
  const lease = new RedisLease(client, { keys: leaseKeys("run"), node: name, ttlMs });
  return { client, lease, store: new RedisStateStore(client, "run", lease, specs) };
}

describe("the state store on Redis", () => {
  it("reads back what the leader committed; a node that lost the lease is refused", async () => {
    await redis.start();
    const a = await node("a", 800);
    expect(await a.store.head()).toBeNull();
    await expectRejectsCode(
      a.store.commit(state(1)),
      "FENCED",
      /does not hold the cluster's lease/,
    );
    expect(await a.lease.acquire()).toBe(1);
    await a.store.commit(state(1));
    await a.store.commit(state(2));
    expect(() => a.store.check()).not.toThrow();
    const back = await a.store.head();
    const want = state(2);
    expect(back).toMatchObject({
      runId: "run-1",
      completedRounds: 2,
      rngState: 1236,
      configHash: "abc",
      versions: want.versions,
    });
    expect(back!.weights).toEqual(want.weights);
    expect(back!.strategy).toEqual(want.strategy);
    // a pauses past its lease; b takes over and commits round 3.
    const b = await node("b", 800);
    await new Promise((r) => setTimeout(r, 1000));
    // Not renewed for a TTL, a may have lost the lease: it writes no more outputs.
    expectCohortError(() => a.store.check(), "FENCED", /a may no longer hold the cluster's lease/);
    expect(await b.lease.acquire()).toBe(2);
    expect(() => b.store.check()).not.toThrow();
    await b.store.commit(state(3));
    await expectRejectsCode(a.store.commit(state(3)), "FENCED", /token 1 of a/);
    expect((await a.store.head())!.completedRounds).toBe(3);
  });

  it("a malformed record is an error naming its key; commits survive kill -9 of Redis", async () => {
    await redis.start();
    const a = await node("a", 60_000);
    await a.lease.acquire();
    await a.store.commit(state(5));
    await redis.crashAndRestart();
    const b = await node("b", 60_000);
    expect((await b.store.head())!.completedRounds).toBe(5);
    expect((await b.store.head())!.weights).toEqual(state(5).weights);
    await b.client.sendCommand(["SET", stateKeys("run")[0], "{not json"]);
    await expectRejectsCode(
      b.store.head(),
      "INVALID_OPTION",
      /Redis key cohort:run:state is not a Cohort run ledger: invalid JSON/,
    );
    await b.client.sendCommand([
      "SET",
      stateKeys("run")[0],
      JSON.stringify({ version: 2, runId: "r" }),
    ]);
    await expectRejectsCode(b.store.head(), "INVALID_OPTION", /missing or invalid fields/);
  });
});
