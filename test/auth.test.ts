/** Authenticated clients, signed updates, signed model broadcasts and rate limits. */
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { Server } from "socket.io";
import { afterEach, describe, expect, it } from "vitest";
import type { Coordinator } from "../coordinator/index.js";
import { CohortClient } from "../client/index.js";
import {
  generateIdentity,
  issueJoinToken,
  sealEnvelope,
  signModel,
  signUpdate,
  toBase64,
  type KeyPair,
} from "../aggregation/secure/index.js";
import { encode } from "../protocol/codec.js";
import { PROTOCOL_VERSION } from "../protocol/version.js";
import {
  connectRaw,
  roundConfig,
  updateFor,
  type RawClient,
  type RawIdentity,
} from "./helpers/raw-client.js";
import { mnistShards, startCoordinator } from "./helpers/federation.js";
import { expectRejectsCode } from "./helpers/errors.js";

/** The identity part of a handshake: the key, and a join token where the key is not listed. */
function proof(id: KeyPair, token?: { expiresAt: number; signature: Uint8Array }) {
  return {
    publicKey: toBase64(id.publicKey),
    ...(token
      ? { token: { expiresAt: token.expiresAt, signature: toBase64(token.signature) } }
      : {}),
  };
}

/** Connect with `identity` in the handshake and answer the challenge with `keys`. */
function refusal(
  url: string,
  clientId: string,
  identity: unknown,
  keys?: RawIdentity,
): Promise<{ code?: string; message: string }> {
  return connectRaw(url, clientId, identity === undefined ? {} : { identity }, keys).then(
    (c) => {
      c.close();
      return { message: "connected" };
    },
    (e: Error & { data?: { code?: string } }) => ({ code: e.data?.code, message: e.message }),
  );
}

describe("authentication and signatures", () => {
  let coordinator: Coordinator | undefined;
  const clients: CohortClient[] = [];
  const raws: RawClient[] = [];
  afterEach(async () => {
    raws.splice(0).forEach((r) => r.close());
    await Promise.all(clients.splice(0).map((c) => c.close()));
    await coordinator?.close();
    coordinator = undefined;
  });

  it("admits listed keys and token holders; refuses unknown keys, forged proofs and expired tokens", async () => {
    const alice = generateIdentity();
    const bob = generateIdentity();
    const issuer = generateIdentity();
    const mallory = generateIdentity();
    coordinator = await startCoordinator({
      rounds: 1,
      minAvailableClients: 2,
      auth: {
        allowedKeys: [toBase64(alice.publicKey)],
        tokenIssuerKey: toBase64(issuer.publicKey),
      },
      runDir: null,
    });
    const url = coordinator.url;
    expect(await refusal(url, "anon", undefined)).toMatchObject({
      code: "UNAUTHORIZED",
      message: expect.stringMatching(/requires a client identity/),
    });
    expect(await refusal(url, "mallory", proof(mallory), { keys: mallory })).toMatchObject({
      code: "UNAUTHORIZED",
      message: expect.stringMatching(/not admitted/),
    });
    // Alice's key in the handshake, but the challenge answered by someone without her secret.
    const forged = { keys: mallory };
    expect(await refusal(url, "alice", proof(alice), forged)).toMatchObject({
      code: "UNAUTHORIZED",
      message: expect.stringMatching(/does not verify/),
    });
    const expired = issueJoinToken(issuer.secretKey, bob.publicKey, Date.now() - 1000);
    expect(await refusal(url, "bob", proof(bob, expired), { keys: bob })).toMatchObject({
      code: "UNAUTHORIZED",
      message: expect.stringMatching(/expired/),
    });
    const stolen = issueJoinToken(issuer.secretKey, bob.publicKey, Date.now() + 60_000);
    expect(await refusal(url, "mallory", proof(mallory, stolen), { keys: mallory })).toMatchObject({
      code: "UNAUTHORIZED",
    });
    expect(await refusal(url, "alice", proof(alice), { keys: alice })).toMatchObject({
      message: "connected",
    });
    expect(await refusal(url, "bob", proof(bob, stolen), { keys: bob })).toMatchObject({
      message: "connected",
    });

    // A CohortClient without an identity gets a clear refusal.
    const { shards } = await mnistShards(1, 50);
    const anonymous = new CohortClient({
      url,
      data: shards[0]!,
      backend: "wasm",
      log: () => undefined,
    });
    clients.push(anonymous);
    await expectRejectsCode(anonymous.start(), "UNAUTHORIZED");
  });

  it("trains with signed updates; refuses unsigned, mis-signed and replayed ones", async () => {
    const alice = generateIdentity();
    const eve = generateIdentity();
    coordinator = await startCoordinator({
      rounds: 2,
      minAvailableClients: 2,
      minFitClients: 2,
      auth: { allowedKeys: [toBase64(alice.publicKey), toBase64(eve.publicKey)] },
      runDir: null,
    });
    const { shards } = await mnistShards(1, 100);
    const client = new CohortClient({
      url: coordinator.url,
      data: shards[0]!,
      backend: "wasm",
      identity: alice,
      clientId: "alice",
      log: () => undefined,
    });
    clients.push(client);
    await client.start();
    const raw = await connectRaw(coordinator.url, "eve", { identity: proof(eve) }, { keys: eve });
    raws.push(raw);
    const running = coordinator.run();
    running.catch(() => undefined);
    const runId = coordinator.runId;
    const fit1 = await raw.nextFit();
    const body1 = updateFor(fit1);
    expect(await raw.send(body1)).toMatchObject({ ok: false, code: "INVALID_MESSAGE" }); // unsigned
    const wrongKey = sealEnvelope(
      body1,
      signUpdate(alice.secretKey, { runId, round: 1, clientId: "eve" }, body1),
    );
    expect(await raw.send(wrongKey)).toMatchObject({ ok: false, code: "BAD_SIGNATURE" });
    const signed1 = sealEnvelope(
      body1,
      signUpdate(eve.secretKey, { runId, round: 1, clientId: "eve" }, body1),
    );
    expect(await raw.send(signed1)).toMatchObject({ ok: true });
    const fit2 = await raw.nextFit();
    expect(fit2.round).toBe(2);
    expect(await raw.send(signed1)).toMatchObject({ ok: false, code: "BAD_SIGNATURE" }); // replay
    const body2 = updateFor(fit2);
    expect(
      await raw.send(
        sealEnvelope(body2, signUpdate(eve.secretKey, { runId, round: 2, clientId: "eve" }, body2)),
      ),
    ).toMatchObject({ ok: true });
    const summary = await running;
    expect(summary.rounds.map((r) => r.participants)).toEqual([2, 2]);
  });

  it("rate-limits a client that floods updates", async () => {
    coordinator = await startCoordinator({
      rounds: 1,
      minAvailableClients: 1,
      minFitClients: 1,
      rateLimit: { perSecond: 5, burst: 10 },
      runDir: null,
    });
    const raw = await connectRaw(coordinator.url, "flood");
    raws.push(raw);
    const replies = await Promise.all(
      Array.from({ length: 40 }, () => raw.send(encode({ round: 1 }))),
    );
    const limited = replies.filter((r) => !r.ok && r.code === "RATE_LIMITED").length;
    expect(limited).toBeGreaterThanOrEqual(25);
    expect(
      replies.filter((r) => !r.ok && r.code === "NO_ACTIVE_ROUND").length,
    ).toBeGreaterThanOrEqual(5);
  });

  it("clients refuse a tampered model broadcast and a coordinator whose key is not pinned", async () => {
    const real = generateIdentity();
    const impostor = generateIdentity();
    const reference = await startCoordinator({
      rounds: 1,
      runDir: null,
      signingKey: real.secretKey,
    });
    const task = { ...reference.task, coordinatorKey: toBase64(real.publicKey) };
    const weights = reference.weights().map((w) => Float32Array.from(w));
    await reference.close();

    // A fake coordinator that sends a broadcast signed by another key.
    const http = createServer();
    const io = new Server(http, { maxHttpBufferSize: 1e8 });
    await new Promise<void>((r) => http.listen(0, "127.0.0.1", r));
    const url = `http://127.0.0.1:${(http.address() as AddressInfo).port}`;
    const uploads: unknown[] = [];
    io.on("connection", (socket) => {
      socket.on("fit:result", (p: unknown) => uploads.push(p));
      socket.emit("task", task);
      const body = encode({ round: 1, weights, config: roundConfig() });
      socket.emit(
        "round:fit",
        sealEnvelope(body, signModel(impostor.secretKey, { runId: task.runId, round: 1 }, body)),
      );
    });
    const lines: string[] = [];
    const { shards } = await mnistShards(1, 50);
    const victim = new CohortClient({
      url,
      data: shards[0]!,
      backend: "wasm",
      log: (l) => lines.push(l),
    });
    clients.push(victim);
    await victim.start();
    await new Promise((r) => setTimeout(r, 500));
    expect(lines.join("\n")).toMatch(
      /MODEL_SIGNATURE: the model of round 1 is not signed by the coordinator/,
    );
    expect(uploads).toHaveLength(0);
    // In a secure round the model comes with the first step: the same check applies.
    const [socket] = await io.fetchSockets();
    const model = encode({ round: 1, weights, config: roundConfig() });
    const step = encode({
      phase: "advertise-keys",
      setup: {
        session: task.runId,
        round: 1,
        n: 5,
        k: 4,
        t: 3,
        graphSeed: 1,
        clip: 1,
        maxWeight: 100,
        tensorSizes: weights.map((w) => w.length),
      },
      index: 0,
      model: sealEnvelope(
        model,
        signModel(impostor.secretKey, { runId: task.runId, round: 1 }, model),
      ),
    });
    const reply = (await socket!.timeout(5000).emitWithAck("secagg:step", step)) as {
      ok: boolean;
      code?: string;
    };
    expect(reply).toMatchObject({ ok: false, code: "MODEL_SIGNATURE" });

    const pinned = new CohortClient({
      url,
      data: shards[0]!,
      backend: "wasm",
      coordinatorKey: toBase64(impostor.publicKey),
      log: () => undefined,
    });
    clients.push(pinned);
    await pinned.start().catch(() => undefined);
    await expectRejectsCode(pinned.done, "MODEL_SIGNATURE");
    io.close();
    expect(PROTOCOL_VERSION).toBe(5);
  });
});
