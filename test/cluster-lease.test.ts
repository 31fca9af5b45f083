/**
 * The cluster's leader lease and fenced state on a real redis-server: one leader at a time, a
 * token that only grows, and a paused leader (SIGSTOP past its TTL) that cannot commit after
 * SIGCONT; the committed state survives a kill -9 of Redis (AOF, fsync on every write).
 */
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { FencedStore, RedisLease, leaseKeys } from "../coordinator/cluster/lease.js";
import { redisPerTest } from "./helpers/redis.js";
import { expectRejectsCode } from "./helpers/errors.js";

const HOLDER = fileURLToPath(new URL("./fixtures/lease-holder.mjs", import.meta.url));
const keys = leaseKeys("test");
const STATE = "cohort:test:state";

const redis = redisPerTest();

async function node(name: string, ttlMs: number) {
  const client = await redis.client();
  return {
    lease: new RedisLease(client, { keys, node: name, ttlMs }),
    store: new FencedStore(client, keys, [STATE]),
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("leader lease on Redis", () => {
  it("one node leads at a time; a lapsed lease goes to the next node with a larger token", async () => {
    await redis.start();
    const a = await node("a", 1000);
    const b = await node("b", 1000);
    expect(await a.lease.acquire()).toBe(1);
    expect(await b.lease.acquire()).toBeNull();
    expect(await a.lease.renew()).toBe(true);
    expect((await b.lease.current())?.holder).toBe("a:1");
    await a.store.commit(a.lease, 1, ["round 1"]);
    // a stops renewing (it crashed): b takes over once the TTL has passed.
    await sleep(1200);
    expect(await b.lease.acquire()).toBe(2);
    expect(await a.lease.renew()).toBe(false);
    await expectRejectsCode(a.store.commit(a.lease, 1, ["stale"]), "FENCED", /token 1 of a/);
    await b.store.commit(b.lease, 2, ["round 2"]);
    expect(await b.store.read()).toEqual(["round 2"]);
    // A clean handover: released, the lease is free at once.
    await b.lease.release();
    expect(await a.lease.acquire()).toBe(3);
  });

  it("a leader paused past its lease (SIGSTOP) cannot commit after SIGCONT", async () => {
    const server = await redis.start();
    const child = spawn(process.execPath, [HOLDER, server.url, "500"], {
      stdio: ["pipe", "pipe", "inherit"],
    });
    let out = "";
    child.stdout!.on("data", (b: Buffer) => (out += b.toString()));
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    try {
      for (let i = 0; i < 200 && !/leader \d+/.test(out); i++) await sleep(50);
      expect(out).toMatch(/^leader 1$/m);
      child.kill("SIGSTOP");
      const b = await node("b", 500);
      let token: number | null = null;
      for (let i = 0; i < 40 && token === null; i++) {
        token = await b.lease.acquire();
        if (token === null) await sleep(50);
      }
      expect(token).toBe(2);
      await b.store.commit(b.lease, 2, ["state written by the new leader"]);
      child.kill("SIGCONT");
      child.stdin!.write("commit\n");
      await exited;
      expect(out).toMatch(/^refused FENCED$/m);
      expect(await b.store.read()).toEqual(["state written by the new leader"]);
    } finally {
      if (child.exitCode === null) child.kill("SIGKILL");
    }
  });

  it("what was committed survives a kill -9 of Redis: the token and the state are kept", async () => {
    await redis.start();
    const a = await node("a", 60_000);
    expect(await a.lease.acquire()).toBe(1);
    await a.store.commit(a.lease, 1, ["round 7"]);
    await redis.crashAndRestart();
    const b = await node("b", 60_000);
    expect(await b.store.read()).toEqual(["round 7"]);
    // The lease survived too (its TTL is long): b waits; the next token is still fresh.
    expect(await b.lease.acquire()).toBeNull();
    expect((await b.lease.current())?.holder).toBe("a:1");
  });
});
