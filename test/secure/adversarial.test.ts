/** Bad actors and bad luck: both shares, tampering, forgeries, replays, duplicates, wrong phases. */
import { describe, expect, it } from "vitest";
import { generateKeyPair, getKeyAgreement } from "../../aggregation/crypto.js";
import { dealShares, openBox } from "../../aggregation/secure/dealer.js";
import { ShareLedger } from "../../aggregation/secure/ledger.js";
import { LABELS, shareBoxContext } from "../../aggregation/secure/transcript.js";
import type { AdvertiseKeys } from "../../aggregation/secure/index.js";
import { expectCohortError, expectRejectsCode } from "../helpers/errors.js";
import { maxDifference, plainMean, TestRound } from "./harness.js";

const range = (n: number) => Array.from({ length: n }, (_, i) => i);

async function expectCorrect(round: TestRound, contributors: number[]) {
  const result = await round.finish();
  const plain = plainMean(round.updates, contributors, round.params);
  expect(result.contributors).toEqual(contributors);
  expect(result.sumWeights).toBe(plain.sumWeights);
  expect(maxDifference(result.weightedMeanDelta, plain.mean)).toBeLessThanOrEqual(
    result.errorBound,
  );
}

describe("never both shares of one client", () => {
  it("the ledger refuses to build a request naming a client as survivor and dropped", () => {
    const ledger = new ShareLedger();
    expectCohortError(() => ledger.request(1, 0, [0, 1, 2], [2]), "SECAGG_BOTH_SHARES", /client 2/);
    expect(ledger.kindOf(0)).toBeUndefined(); // nothing recorded by the refused request
  });

  it("the ledger refuses a request that contradicts an earlier one", () => {
    const ledger = new ShareLedger();
    ledger.request(1, 0, [0, 1], [5]);
    expectCohortError(() => ledger.request(1, 1, [1, 5], []), "SECAGG_BOTH_SHARES", /client 5/);
    expectCohortError(() => ledger.request(1, 2, [2], [1]), "SECAGG_BOTH_SHARES", /client 1/);
    expect(ledger.request(1, 3, [3, 0], [5]).dropped).toEqual([5]);
  });

  it("the server's requests never cross, and a late masked input can't make a dropped client a survivor", async () => {
    const round = new TestRound({ n: 8, seed: 41 });
    round.advertise();
    await round.shareKeys();
    const requests = round.maskRequests();
    await round.masked([2, 6]);
    const late = await round.clients[2]!.maskedInput(
      requests.find((r) => r.index === 2)!,
      round.updates[2]!,
    );
    expectCohortError(() => round.server.receiveMaskedInput(late), "SECAGG_PHASE");
    const asked = round.unmaskRequests();
    const survivors = new Set(asked.flatMap((r) => r.survivors));
    const dropped = new Set(asked.flatMap((r) => r.dropped));
    expect([...dropped].sort()).toEqual([2, 6]);
    expect([...survivors].filter((c) => dropped.has(c))).toEqual([]);
    round.unmask();
    await expectCorrect(round, [0, 1, 3, 4, 5, 7]);
  });

  it("an honest client refuses to reveal both, or shares of strangers, and stays ready", async () => {
    const round = new TestRound({ n: 6, k: 4, seed: 42 });
    round.advertise();
    await round.shareKeys();
    await round.masked([5]);
    const request = round.unmaskRequests().find((r) => r.dropped.length > 0)!;
    const client = round.clients[request.index]!;
    const survivor = request.survivors.find((s) => s !== request.index)!;
    expectCohortError(
      () => client.unmask({ ...request, dropped: [...request.dropped, survivor] }),
      "SECAGG_BOTH_SHARES",
    );
    expectCohortError(
      () => client.unmask({ ...request, dropped: [...request.dropped, request.index] }),
      "SECAGG_BOTH_SHARES",
    );
    const stranger = range(6).find(
      (c) => c !== request.index && !round.server.graph.isNeighbour(request.index, c),
    )!;
    expectCohortError(
      () => client.unmask({ ...request, survivors: [...request.survivors, stranger] }),
      "NOT_IN_COHORT",
    );
    expectCohortError(
      () => client.unmask({ ...request, survivors: [request.index] }),
      "SECAGG_THRESHOLD",
    );
    expect(client.phase).toBe("unmask");
    round.unmask();
    await expectCorrect(round, [0, 1, 2, 3, 4]);
  });
});

describe("tampered and misrouted share boxes", () => {
  it("a flipped byte is rejected (SECAGG_DECRYPT) and the round completes without that share", async () => {
    const round = new TestRound({ n: 6, seed: 43 });
    round.advertise();
    await round.shareKeys();
    const to2 = round.maskRequests().find((r) => r.index === 2)!;
    const fromZero = to2.boxes.find((b) => b.from === 0)!;
    fromZero.box = fromZero.box.slice();
    fromZero.box[40]! ^= 0x80;
    await round.masked([0]); // 0 drops too: its mask key must come from the other holders
    expect(round.clients[2]!.rejections).toEqual([
      expect.objectContaining({ from: 0, code: "SECAGG_DECRYPT" }),
    ]);
    const replies = round.unmask();
    expect(replies.get(2)!.maskKeyShares.map((s) => s.of)).not.toContain(0);
    await expectCorrect(round, [1, 2, 3, 4, 5]);
  });

  it("a box delivered to the wrong recipient does not open", async () => {
    const round = new TestRound({ n: 5, seed: 44 });
    round.advertise();
    const sent = await round.shareKeys();
    const to3 = round.maskRequests().find((r) => r.index === 3)!;
    const meantFor1 = sent.get(0)!.boxes.find((b) => b.to === 1)!.box;
    to3.boxes.find((b) => b.from === 0)!.box = meantFor1;
    await round.masked();
    expect(round.clients[3]!.rejections.map((r) => r.from)).toEqual([0]);
    round.unmask();
    await expectCorrect(round, range(5));
  });

  it("a box sealed for another round does not open, even under the same keys", async () => {
    const ka = await getKeyAgreement();
    const [c0, s0, c1, s1] = [0, 0, 0, 0].map(() => generateKeyPair());
    const ad = (index: number, c: typeof c0, s: typeof c0): AdvertiseKeys => ({
      round: 7,
      index,
      cPublicKey: c!.publicKey,
      sPublicKey: s!.publicKey,
      signature: null,
    });
    const dealt = await dealShares({
      id: { session: "s", round: 7 },
      index: 0,
      t: 2,
      cSecretKey: c0!.secretKey,
      sSecretKey: s0!.secretKey,
      selfMaskSeed: new Uint8Array(32).fill(9),
      neighbours: new Map([[1, ad(1, c1, s1)]]),
    });
    const raw = ka.sharedSecrets(c1!.secretKey, [c0!.publicKey])[0]!;
    const keyFor = (round: number) =>
      ka.deriveKey(raw, LABELS.shareBox, shareBoxContext({ session: "s", round }, 0, 1));
    const box = dealt.boxes[0]!.box;
    expect(openBox(keyFor(7), box)).not.toBeNull();
    expect(openBox(keyFor(8), box)).toBeNull();
    expect(openBox(dealt.links.get(1)!.receiveKey, box)).toBeNull(); // 1→0 key, not 0→1
  });
});

describe("forged signatures", () => {
  it("the server refuses a forged advertisement; the round completes without it", async () => {
    const round = new TestRound({ n: 6, identities: true, seed: 45 });
    const forged = round.clients[4]!.advertise();
    forged.cPublicKey = generateKeyPair().publicKey; // a man in the middle swaps a key
    expectCohortError(() => round.server.receiveAdvertisement(forged), "SECAGG_SIGNATURE");
    const unsigned = { ...forged, signature: null };
    expectCohortError(() => round.server.receiveAdvertisement(unsigned), "SECAGG_SIGNATURE");
    round.advertise([4]);
    await round.shareKeys();
    await round.masked();
    round.unmask();
    await expectCorrect(round, [0, 1, 2, 3, 5]);
  });

  it("a client refuses relayed keys that its neighbour did not sign, and accepts the genuine ones", async () => {
    const round = new TestRound({ n: 5, identities: true, seed: 46 });
    round.advertise();
    const message = round.neighbourKeys().find((m) => m.index === 1)!;
    const genuine = message.neighbours[0]!;
    const swapped = { ...genuine, sPublicKey: generateKeyPair().publicKey };
    const forgedMessage = { ...message, neighbours: [swapped, ...message.neighbours.slice(1)] };
    await expectRejectsCode(round.clients[1]!.shareKeys(forgedMessage), "SECAGG_SIGNATURE");
    expect(round.clients[1]!.phase).toBe("share-keys");
    await round.shareKeys();
    await round.masked();
    round.unmask();
    await expectCorrect(round, range(5));
  });
});

describe("wrong round, duplicates, out of phase", () => {
  it("are refused with clear codes, state unharmed, and the round completes", async () => {
    const round = new TestRound({ n: 5, seed: 47 });
    const { server, clients } = round;
    // out of phase before anything
    expectCohortError(() => server.closeShareKeys(), "SECAGG_PHASE");
    await expectRejectsCode(server.finish(), "SECAGG_PHASE");
    expectCohortError(
      () => clients[0]!.unmask({ round: 3, index: 0, survivors: [0], dropped: [] }),
      "SECAGG_PHASE",
    );

    const ads = round.advertise();
    expectCohortError(() => server.receiveAdvertisement(ads.get(1)!), "SECAGG_PHASE");
    expectCohortError(() => clients[1]!.advertise(), "SECAGG_PHASE");

    const toClient0 = round.neighbourKeys().find((m) => m.index === 0)!;
    await expectRejectsCode(clients[0]!.shareKeys({ ...toClient0, round: 2 }), "STALE_ROUND");
    await expectRejectsCode(clients[0]!.shareKeys({ ...toClient0, index: 1 }), "INVALID_MESSAGE");
    const shares = await round.shareKeys([], (m) => m);
    const first = shares.get(0)!;
    expectCohortError(() => server.receiveShareKeys(first), "SECAGG_PHASE"); // closed already
    expect(clients[0]!.phase).toBe("collect-masked");

    const request0 = round.maskRequests().find((r) => r.index === 0)!;
    await expectRejectsCode(
      clients[0]!.maskedInput({ ...request0, round: 4 }, round.updates[0]!),
      "FUTURE_ROUND",
    );
    const masked = await round.masked();
    expectCohortError(() => server.receiveMaskedInput(masked.get(0)!), "SECAGG_PHASE");

    const unmask0 = round.unmaskRequests().find((r) => r.index === 0)!;
    expectCohortError(() => clients[0]!.unmask({ ...unmask0, round: 99 }), "FUTURE_ROUND");
    const replies = round.unmask();
    expectCohortError(() => server.receiveUnmask(replies.get(0)!), "SECAGG_DUPLICATE");
    expectCohortError(() => clients[0]!.unmask(unmask0), "SECAGG_PHASE");
    await expectCorrect(round, range(5));
    await expectRejectsCode(server.finish(), "SECAGG_PHASE");
  });

  it("duplicates within a phase are refused and counted once", async () => {
    const round = new TestRound({ n: 4, seed: 48 });
    const { server, clients } = round;
    const ad = clients[0]!.advertise();
    server.receiveAdvertisement(ad);
    expectCohortError(() => server.receiveAdvertisement(ad), "SECAGG_DUPLICATE");
    expectCohortError(() => server.receiveAdvertisement({ ...ad, round: 2 }), "STALE_ROUND");
    expectCohortError(() => server.receiveAdvertisement({ ...ad, index: 9 }), "NOT_IN_COHORT");
    for (const c of clients.slice(1)) server.receiveAdvertisement(c.advertise());
    const keys = server.closeAdvertise();
    const shares = await Promise.all(keys.map((m) => clients[m.index]!.shareKeys(m)));
    expectCohortError(
      () => server.receiveMaskedInput({ round: 3, index: 0, masked: new Uint32Array(18) }),
      "SECAGG_PHASE",
    );
    expectCohortError(() => server.receiveShareKeys({ ...shares[0]!, round: 4 }), "FUTURE_ROUND");
    for (const s of shares) server.receiveShareKeys(s);
    expectCohortError(() => server.receiveShareKeys(shares[0]!), "SECAGG_DUPLICATE");
    const requests = server.closeShareKeys();
    const inputs = await Promise.all(
      requests.map((r) => clients[r.index]!.maskedInput(r, round.updates[r.index]!)),
    );
    server.receiveMaskedInput(inputs[0]!);
    expectCohortError(() => server.receiveMaskedInput(inputs[0]!), "SECAGG_DUPLICATE");
    expectCohortError(
      () => server.receiveMaskedInput({ ...inputs[1]!, masked: new Uint32Array(3) }),
      "SHAPE_MISMATCH",
    );
    for (const m of inputs.slice(1)) server.receiveMaskedInput(m);
    for (const r of server.closeMaskedInput()) server.receiveUnmask(clients[r.index]!.unmask(r));
    await expectCorrect(round, range(4));
  });

  it("a share-keys reply that skips a neighbour is refused", async () => {
    const round = new TestRound({ n: 4, seed: 49 });
    round.advertise();
    await expectRejectsCode(
      round.shareKeys([], (m) => (m.index === 1 ? { ...m, boxes: m.boxes.slice(1) } : m)),
      "INVALID_MESSAGE",
      /boxes must go to its 3 neighbours/,
    );
  });

  it("a client busy computing refuses a second call", async () => {
    const round = new TestRound({ n: 3, seed: 50 });
    round.advertise();
    const message = round.neighbourKeys()[0]!;
    const client = round.clients[message.index]!;
    const first = client.shareKeys(message);
    await expectRejectsCode(client.shareKeys(message), "SECAGG_PHASE", /still computing/);
    await first;
    expect(client.phase).toBe("collect-masked");
  });
});

describe("public keys of small order", () => {
  it("the server leaves out a member whose advertised key is all zeros, and the round completes", async () => {
    const round = new TestRound({ n: 5, seed: 43 });
    const zero = new Uint8Array(32);
    const ads = round.clients.map((c) => c.advertise());
    expectCohortError(
      () => round.server.receiveAdvertisement({ ...ads[0]!, cPublicKey: zero }),
      "BAD_KEY",
      /small order/,
    );
    for (const ad of ads.slice(1)) round.server.receiveAdvertisement(ad);
    const neighbours = round.server.closeAdvertise();
    expect(neighbours.map((m) => m.index)).toEqual([1, 2, 3, 4]);
    expect(round.server.dropouts).toEqual([
      expect.objectContaining({ index: 0, phase: "advertise-keys" }),
    ]);
  });

  it("a client refuses neighbour keys of small order that a deviating server relays", async () => {
    const round = new TestRound({ n: 4, seed: 44 });
    round.advertise();
    const message = round.neighbourKeys()[0]!;
    const p = 2n ** 255n - 19n;
    const bad = (p - 1n).toString(16).padStart(64, "0").match(/../g)!.reverse();
    const key = Uint8Array.from(bad, (b) => parseInt(b, 16));
    const tampered = {
      ...message,
      neighbours: message.neighbours.map((ad, i) => (i === 0 ? { ...ad, sPublicKey: key } : ad)),
    };
    const client = round.clients[message.index]!;
    await expectRejectsCode(client.shareKeys(tampered), "BAD_KEY");
    expect(client.phase).toBe("share-keys"); // unchanged: the honest message still works
    await client.shareKeys(message);
  });
});
