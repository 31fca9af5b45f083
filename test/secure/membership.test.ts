/** A server that invents members or tells members different stories, against clients that check. */
import { describe, expect, it } from "vitest";
import {
  generateIdentity,
  issueJoinToken,
  type AdvertiseKeys,
  type ConsistencyAttestation,
} from "../../aggregation/secure/index.js";
import { sign } from "../../aggregation/crypto.js";
import { advertiseTranscript } from "../../aggregation/secure/transcript.js";
import { expectCohortError, expectRejectsCode } from "../helpers/errors.js";
import { maxDifference, plainMean, runRound, TestRound } from "./harness.js";

describe("authenticated membership with the consistency check", () => {
  it("gives the plain result, with dropouts at every phase including the check", async () => {
    const { round, result } = await runRound(
      { n: 9, consistency: true, seed: 51 },
      { "share-keys": [2], "collect-masked": [5], consistency: [7], unmask: [8] },
    );
    // 7 and 8 sent their masked inputs: they are in the sum though they left afterwards.
    const contributors = [0, 1, 3, 4, 6, 7, 8];
    const plain = plainMean(round.updates, contributors, round.params);
    expect(result.contributors).toEqual(contributors);
    expect(result.sumWeights).toBe(plain.sumWeights);
    expect(maxDifference(result.weightedMeanDelta, plain.mean)).toBeLessThanOrEqual(
      result.errorBound,
    );
  });

  it("a server that plays the other members with identities it invented is refused before any share leaves", async () => {
    const round = new TestRound({ n: 5, consistency: true, seed: 52 });
    round.advertise();
    const message = round.neighbourKeys().find((m) => m.index === 0)!;
    // Sybils: fresh identities, their keys properly signed, tokens from the server's own issuer.
    const rogueIssuer = generateIdentity();
    const sybil = (ad: AdvertiseKeys): AdvertiseKeys => {
      const id = generateIdentity();
      return {
        ...ad,
        signature: sign(
          advertiseTranscript(round.setup, ad.index, ad.cPublicKey, ad.sPublicKey),
          id.secretKey,
        ),
        credential: {
          identityKey: id.publicKey,
          token: issueJoinToken(rogueIssuer.secretKey, id.publicKey, Date.now() + 60_000),
        },
      };
    };
    const client = round.clients[0]!;
    await expectRejectsCode(
      client.shareKeys({ ...message, neighbours: message.neighbours.map(sybil) }),
      "SECAGG_SIGNATURE",
      /neighbour \d+ has a join token that is forged/,
    );
    expect(client.phase).toBe("share-keys");
    await client.shareKeys(message); // the honest relay still works
  });

  it("one identity with a valid token cannot fill two slots of a neighbourhood", async () => {
    const issuer = generateIdentity();
    const round = new TestRound({ n: 5, consistency: true, seed: 55, issuer });
    round.advertise();
    const message = round.neighbourKeys().find((m) => m.index === 0)!;
    // A member the issuer really admitted, whose key signs the advertisements of two slots.
    const insider = generateIdentity();
    const credential = {
      identityKey: insider.publicKey,
      token: issueJoinToken(issuer.secretKey, insider.publicKey, Date.now() + 60_000),
    };
    const asInsider = (ad: AdvertiseKeys): AdvertiseKeys => ({
      ...ad,
      signature: sign(
        advertiseTranscript(round.setup, ad.index, ad.cPublicKey, ad.sPublicKey),
        insider.secretKey,
      ),
      credential,
    });
    const client = round.clients[0]!;
    await expectRejectsCode(
      client.shareKeys({
        ...message,
        neighbours: message.neighbours.map((ad, i) => (i < 2 ? asInsider(ad) : ad)),
      }),
      "SECAGG_SIGNATURE",
      /has an identity already in this neighbourhood/,
    );
    // The same insider in one slot is a member like any other.
    await client.shareKeys({
      ...message,
      neighbours: message.neighbours.map((ad, i) => (i === 0 ? asInsider(ad) : ad)),
    });
    expect(client.phase).toBe("collect-masked");
  });

  it("a server that tells one member another list of survivors cannot get both shares of anyone", async () => {
    const round = new TestRound({ n: 6, consistency: true, seed: 53 });
    round.advertise();
    await round.shareKeys();
    await round.masked();
    const victim = 0;
    const target = round.server.graph.neighbours(victim)[0]!;
    // The victim is told the target dropped; everyone else that it survived.
    const sent = round.attest([], (m) =>
      m.index === victim ? { ...m, survivors: m.survivors.filter((v) => v !== target) } : m,
    );
    const attestations = [...sent.values()].map((a: ConsistencyAttestation) => ({
      index: a.index,
      signature: a.signature,
    }));
    const client = round.clients[victim]!;
    const neighbours = round.server.graph.neighbours(victim);
    const forged = {
      round: round.setup.round,
      index: victim,
      survivors: [victim, ...neighbours.filter((v) => v !== target)].sort((a, b) => a - b),
      dropped: [target],
      attestations,
    };
    expectCohortError(
      () => client.unmask(forged),
      "SECAGG_SIGNATURE",
      /signed the survivors, t = /,
    );
    // The honest members signed the full list: a request naming the target dropped fails too.
    const other = neighbours.find(
      (v) => v !== target && round.server.graph.isNeighbour(v, target),
    )!;
    const honest = round.unmaskRequests().find((r) => r.index === other)!;
    expectCohortError(
      () =>
        round.clients[other]!.unmask({
          ...honest,
          survivors: honest.survivors.filter((v) => v !== target),
          dropped: [...honest.dropped, target],
        }),
      "SECAGG_BOTH_SHARES",
      /on the signed list of survivors but asked for as dropped/,
    );
  });

  it("without the neighbours' signatures a member refuses to unmask", async () => {
    const round = new TestRound({ n: 5, consistency: true, seed: 54 });
    round.advertise();
    await round.shareKeys();
    await round.masked();
    round.attest();
    const request = round.unmaskRequests()[0]!;
    const client = round.clients[request.index]!;
    expectCohortError(
      () => client.unmask({ ...request, attestations: request.attestations!.slice(0, 1) }),
      "SECAGG_SIGNATURE",
    );
    expect(client.unmask(request).selfMaskShares.length).toBeGreaterThan(0);
  });
});
