/** Sybils over socket.io: a coordinator that fills a secure cohort with members of its own. */
import { afterEach, describe, expect, it } from "vitest";
import type { Coordinator } from "../coordinator/index.js";
import { CohortClient, type CohortClientOptions } from "../client/index.js";
import {
  generateIdentity,
  issueJoinToken,
  toBase64,
  type KeyPair,
} from "../aggregation/secure/index.js";
import { mnistShards, startCoordinator } from "./helpers/federation.js";

let coordinator: Coordinator | undefined;
let clients: CohortClient[] = [];

afterEach(async () => {
  await Promise.all(clients.map((c) => c.close()));
  clients = [];
  await coordinator?.close();
  coordinator = undefined;
});

const N = 5;

async function joinAll(keys: KeyPair[], options: (i: number) => Partial<CohortClientOptions>) {
  const { shards } = await mnistShards(N, 30);
  clients = keys.map(
    (identity, i) =>
      new CohortClient({
        url: coordinator!.url,
        data: shards[i]!,
        backend: "wasm",
        identity,
        seed: i,
        log: () => undefined,
        ...options(i),
      }),
  );
  await Promise.all(clients.map((c) => c.start()));
}

describe("membership vouched for by an issuer the clients trust", () => {
  it("honest members with the issuer's tokens run secure rounds with the consistency check", async () => {
    const issuer = generateIdentity();
    const keys = Array.from({ length: N }, () => generateIdentity());
    coordinator = await startCoordinator({
      rounds: 1,
      minAvailableClients: N,
      minFitClients: N,
      secure: true,
      auth: { tokenIssuerKey: toBase64(issuer.publicKey) },
      runDir: null,
    });
    await joinAll(keys, (i) => ({
      joinToken: issueJoinToken(issuer.secretKey, keys[i]!.publicKey, Date.now() + 60_000),
      trustedMembers: { issuerKey: toBase64(issuer.publicKey) },
    }));
    const summary = await coordinator.run();
    expect(summary.rounds[0]).toMatchObject({ participants: N, secure: true });
    expect(summary.rounds[0]!.aborted).toBeUndefined();
  });

  it("a coordinator that admits members of its own is refused by a client that trusts only the issuer: its update never enters the sum", async () => {
    const issuer = generateIdentity();
    const keys = Array.from({ length: N }, () => generateIdentity());
    const sybils = keys.slice(1);
    // The coordinator lists its own keys besides the issuer: nothing in the protocol stops it.
    coordinator = await startCoordinator({
      rounds: 1,
      minAvailableClients: N,
      minFitClients: N - 1,
      secure: true,
      auth: {
        tokenIssuerKey: toBase64(issuer.publicKey),
        allowedKeys: sybils.map((k) => toBase64(k.publicKey)),
      },
      runDir: null,
    });
    await joinAll(keys, (i) =>
      i === 0
        ? {
            joinToken: issueJoinToken(issuer.secretKey, keys[0]!.publicKey, Date.now() + 60_000),
            trustedMembers: { issuerKey: toBase64(issuer.publicKey) },
          }
        : {},
    );
    const victim = clients[0]!.options.clientId;
    const summary = await coordinator.run();
    const round = summary.rounds[0]!;
    expect(round.participants).toBe(N - 1);
    expect(round.failureReasons).toEqual([
      expect.objectContaining({
        clientId: victim,
        code: "SECAGG_SIGNATURE",
        message: expect.stringMatching(/is not a member this client trusts/),
      }),
    ]);
  });
});
