/** Client ids bound to keys or secrets: replayed handshakes, hijacked ids, one key one slot. */
import { afterEach, describe, expect, it } from "vitest";
import type { Socket } from "socket.io-client";
import type { Coordinator } from "../coordinator/index.js";
import { CohortClient } from "../client/index.js";
import {
  generateIdentity,
  issueJoinToken,
  keyClientId,
  toBase64,
  type KeyPair,
} from "../aggregation/secure/index.js";
import { encode } from "../protocol/codec.js";
import { connectRaw, type RawClient, type RawIdentity } from "./helpers/raw-client.js";
import { mnistShards, startCoordinator } from "./helpers/federation.js";
import { until } from "./helpers/rogue-coordinator.js";

let coordinator: Coordinator | undefined;
let raws: RawClient[] = [];
let clients: CohortClient[] = [];

afterEach(async () => {
  raws.forEach((r) => r.close());
  raws = [];
  await Promise.all(clients.map((c) => c.close()));
  clients = [];
  await coordinator?.close();
  coordinator = undefined;
});

const handshake = (keys: KeyPair) => ({ identity: { publicKey: toBase64(keys.publicKey) } });

/** Connect raw as `clientId` with `keys`; resolves with the client, or the refusal's code and message. */
async function join(
  clientId: string,
  keys: KeyPair | null,
  answer?: RawIdentity["answer"],
): Promise<RawClient | { code?: string; message: string }> {
  try {
    const raw = await connectRaw(
      coordinator!.url,
      clientId,
      keys === null ? {} : handshake(keys),
      keys === null ? undefined : { keys, ...(answer ? { answer } : {}) },
    );
    raws.push(raw);
    return raw;
  } catch (error) {
    const e = error as Error & { data?: { code?: string } };
    return { code: e.data?.code, message: e.message };
  }
}

function authed(keys: KeyPair[], rateLimit?: { perSecond: number; burst: number }) {
  return startCoordinator({
    rounds: 1,
    minAvailableClients: 5,
    auth: { allowedKeys: keys.map((k) => toBase64(k.publicKey)) },
    runDir: null,
    ...(rateLimit ? { rateLimit } : {}),
  });
}

describe("challenge–response handshakes", () => {
  it("a captured handshake replayed at once is refused, and the genuine client stays connected", async () => {
    const alice = generateIdentity();
    coordinator = await authed([alice]);
    const genuine = (await join("alice", alice)) as RawClient;
    const captured = genuine.answers[0]!;
    // The attacker sends alice's handshake and answers its own challenge with alice's answer.
    const replay = await join("alice", alice, () => ({ signature: captured.signature }));
    expect(replay).toMatchObject({
      code: "UNAUTHORIZED",
      message: expect.stringMatching(/does not verify/),
    });
    expect(coordinator.clients()).toEqual(["alice"]);
    expect(genuine.socket.connected).toBe(true);
    expect(captured.challenge.nonce).toMatch(/^[A-Za-z0-9+/]{43}=$/);
  });
});

describe("a client id bound to its key", () => {
  it("one admitted key cannot connect under a second id while the first is connected (one key, one cohort slot)", async () => {
    const alice = generateIdentity();
    coordinator = await authed([alice]);
    expect(await join("alice", alice)).toHaveProperty("socket");
    for (const id of ["alice-2", "alice-3", "bob"]) {
      expect(await join(id, alice)).toMatchObject({
        code: "UNAUTHORIZED",
        message: expect.stringMatching(
          /bound to client id alice for this run: one key, one client/,
        ),
      });
    }
    expect(coordinator.clients()).toEqual(["alice"]);
  });

  it("an admitted key cannot squat the id another key stands for (key-…), so its owner still gets in", async () => {
    const alice = generateIdentity();
    const mallory = generateIdentity();
    coordinator = await authed([alice, mallory]);
    const aliceId = keyClientId(alice.publicKey);
    expect(await join(aliceId, mallory)).toMatchObject({
      code: "UNAUTHORIZED",
      message: expect.stringMatching(/stands for another key/),
    });
    expect(await join(aliceId, alice)).toHaveProperty("socket");
  });

  it("another admitted key cannot take an id bound to a key, even while its owner is away", async () => {
    const alice = generateIdentity();
    const mallory = generateIdentity();
    coordinator = await authed([alice, mallory]);
    const first = (await join("alice", alice)) as RawClient;
    first.close();
    await until(() => coordinator!.clients().length === 0, 5000, "alice to leave");
    expect(await join("alice", mallory)).toMatchObject({
      code: "UNAUTHORIZED",
      message: expect.stringMatching(/belongs to another key/),
    });
    expect(await join("alice", alice)).toHaveProperty("socket"); // the owner comes back
  });

  it("a second connection proving the same key replaces the first, and a displaced client gets back in by itself", async () => {
    const alice = generateIdentity();
    coordinator = await authed([alice]);
    const { shards } = await mnistShards(1, 20);
    const lines: string[] = [];
    const client = new CohortClient({
      url: coordinator.url,
      data: shards[0]!,
      backend: "wasm",
      identity: alice,
      reconnectDelayMs: 50,
      log: (l) => lines.push(l),
    });
    clients.push(client);
    await client.start();
    const id = client.options.clientId;
    expect(id).toMatch(/^key-/);
    const second = (await join(id, alice)) as RawClient;
    await until(() => lines.some((l) => /replaced this one/.test(l)), 5000, "the displacement");
    // The displaced client reconnects with its own proof and takes its id back.
    await until(() => !second.socket.connected, 10_000, "the client to come back");
    await until(() => coordinator!.clients().includes(id), 5000, "the id to be connected");
    expect(coordinator.clients()).toEqual([id]);
  });

  it("a member whose join token expired during the run is let go before it is sampled", async () => {
    const issuer = generateIdentity();
    const bob = generateIdentity();
    coordinator = await startCoordinator({
      rounds: 1,
      minAvailableClients: 5,
      auth: { tokenIssuerKey: toBase64(issuer.publicKey) },
      runDir: null,
    });
    const token = issueJoinToken(issuer.secretKey, bob.publicKey, Date.now() + 600);
    const raw = await connectRaw(
      coordinator.url,
      "bob",
      {
        identity: {
          publicKey: toBase64(bob.publicKey),
          token: { expiresAt: token.expiresAt, signature: toBase64(token.signature) },
        },
      },
      { keys: bob },
    );
    raws.push(raw);
    const notices: unknown[] = [];
    raw.socket.on("notice", (n: unknown) => notices.push(n));
    expect(coordinator.clients()).toEqual(["bob"]);
    await new Promise((r) => setTimeout(r, 700));
    expect(coordinator.clients()).toEqual([]);
    await until(() => !raw.socket.connected, 5000, "bob to be let go");
    expect(notices).toEqual([{ code: "UNAUTHORIZED", message: "join token expired" }]);
  });

  it("rate limits follow the key across reconnects", async () => {
    const alice = generateIdentity();
    coordinator = await authed([alice], { perSecond: 0.01, burst: 5 });
    const first = (await join("alice", alice)) as RawClient;
    const flood = await Promise.all(Array.from({ length: 5 }, () => first.send(encode({}))));
    expect(flood.every((r) => !r.ok && r.code !== "RATE_LIMITED")).toBe(true);
    first.close();
    await until(() => coordinator!.clients().length === 0, 5000, "alice to leave");
    const again = (await join("alice", alice)) as RawClient;
    expect(await again.send(encode({}))).toMatchObject({ ok: false, code: "RATE_LIMITED" });
  });
});

describe("without authentication: an id bound to the secret of its first join", () => {
  it("an outsider reusing a listed id is refused; the owner stays, and gets back in after losing its connection", async () => {
    coordinator = await startCoordinator({ rounds: 1, minAvailableClients: 5, runDir: null });
    const { shards } = await mnistShards(1, 20);
    const owner = new CohortClient({
      url: coordinator.url,
      data: shards[0]!,
      backend: "wasm",
      clientId: "alice",
      reconnectDelayMs: 50,
      log: () => undefined,
    });
    clients.push(owner);
    await owner.start();
    await until(() => coordinator!.status().clients.length === 1, 5000, "alice to be listed");
    const listed = coordinator.status().clients[0]!.clientId;
    expect(await join(listed, null)).toMatchObject({
      code: "UNAUTHORIZED",
      message: expect.stringMatching(/is connected: taking it over needs the secret/),
    });
    expect(coordinator.clients()).toEqual(["alice"]);
    // The owner's connection drops; it comes back with the secret it was issued.
    const socket = (owner as unknown as { socket: Socket }).socket;
    socket.io.engine.close();
    await until(() => coordinator!.clients().length === 0, 5000, "the drop");
    await until(() => coordinator!.clients().includes("alice"), 10_000, "alice to come back");
  });
});
