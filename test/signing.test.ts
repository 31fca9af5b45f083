import { describe, expect, it } from "vitest";
import { randomBytes } from "../aggregation/crypto.js";
import {
  checkJoinToken,
  fromBase64,
  generateIdentity,
  identityFromSecret,
  issueJoinToken,
  signChallenge,
  signModel,
  signUpdate,
  toBase64,
  verifyChallenge,
  verifyModel,
  verifyUpdate,
} from "../aggregation/secure/index.js";

describe("signatures", () => {
  const alice = generateIdentity();
  const mallory = generateIdentity();
  const body = Uint8Array.from({ length: 1000 }, (_, i) => i % 251);
  const ctx = { runId: "run-1", round: 3, clientId: "alice" };

  it("binds an update to its run, round, client and bytes", () => {
    const sig = signUpdate(alice.secretKey, ctx, body);
    expect(verifyUpdate(alice.publicKey, ctx, body, sig)).toBe(true);
    expect(verifyUpdate(mallory.publicKey, ctx, body, sig)).toBe(false);
    expect(verifyUpdate(alice.publicKey, { ...ctx, round: 4 }, body, sig)).toBe(false);
    expect(verifyUpdate(alice.publicKey, { ...ctx, runId: "run-2" }, body, sig)).toBe(false);
    expect(verifyUpdate(alice.publicKey, { ...ctx, clientId: "bob" }, body, sig)).toBe(false);
    const tampered = body.slice();
    tampered[500] = tampered[500]! ^ 1;
    expect(verifyUpdate(alice.publicKey, ctx, tampered, sig)).toBe(false);
    expect(verifyUpdate(alice.publicKey, ctx, body, sig.subarray(0, 10))).toBe(false);
  });

  it("keeps model and update signatures apart", () => {
    const model = signModel(alice.secretKey, ctx, body);
    expect(verifyModel(alice.publicKey, ctx, body, model)).toBe(true);
    expect(verifyUpdate(alice.publicKey, ctx, body, model)).toBe(false);
  });

  it("proves key possession by signing the coordinator's challenge, for that challenge, id and coordinator only", () => {
    const challenge = { nonce: toBase64(randomBytes(32)), coordinatorKey: "K1" };
    const sig = signChallenge(alice.secretKey, challenge, "alice", alice.publicKey);
    expect(verifyChallenge(alice.publicKey, challenge, "alice", sig)).toBe(true);
    expect(verifyChallenge(alice.publicKey, challenge, "bob", sig)).toBe(false);
    const fresh = { ...challenge, nonce: toBase64(randomBytes(32)) };
    expect(verifyChallenge(alice.publicKey, fresh, "alice", sig)).toBe(false);
    expect(
      verifyChallenge(alice.publicKey, { ...challenge, coordinatorKey: "K2" }, "alice", sig),
    ).toBe(false);
  });

  it("checks join tokens: ok, expired, forged", () => {
    const issuer = generateIdentity();
    const token = issueJoinToken(issuer.secretKey, alice.publicKey, 1000);
    expect(checkJoinToken(issuer.publicKey, alice.publicKey, token, 999)).toBe("ok");
    expect(checkJoinToken(issuer.publicKey, alice.publicKey, token, 1001)).toBe("expired");
    expect(checkJoinToken(issuer.publicKey, mallory.publicKey, token, 999)).toBe("forged");
    expect(checkJoinToken(mallory.publicKey, alice.publicKey, token, 999)).toBe("forged");
    expect(
      checkJoinToken(issuer.publicKey, alice.publicKey, { ...token, expiresAt: 5000 }, 999),
    ).toBe("forged");
  });

  it("round-trips keys through base64 and secret keys", () => {
    expect(fromBase64(toBase64(alice.publicKey))).toEqual(alice.publicKey);
    expect(identityFromSecret(alice.secretKey).publicKey).toEqual(alice.publicKey);
    expect(() => fromBase64("%%%", "key")).toThrow(/key must be base64/);
  });
});
