/** The crypto module: both X25519 paths agree, boxes fail closed, misuse names the argument. */
import { describe, expect, it } from "vitest";
import nacl from "tweetnacl";
import {
  deriveKey,
  ed25519Ready,
  generateIdentity,
  generateKeyPair,
  getKeyAgreement,
  isWeakPublicKey,
  naclKeyAgreement,
  open,
  randomBytes,
  seal,
  SEAL_OVERHEAD,
  sign,
  verify,
} from "../../aggregation/crypto.js";
import { createHash } from "node:crypto";

describe("key agreement", () => {
  it("uses node:crypto in Node, and it gives tweetnacl's secrets byte for byte", async () => {
    const fast = await getKeyAgreement();
    expect(fast.kind).toBe("node");
    const me = generateKeyPair();
    const others = Array.from({ length: 20 }, () => generateKeyPair());
    const a = fast.sharedSecrets(
      me.secretKey,
      others.map((o) => o.publicKey),
    );
    const b = naclKeyAgreement.sharedSecrets(
      me.secretKey,
      others.map((o) => o.publicKey),
    );
    expect(a).toEqual(b);
    // and the other side of each pair derives the same secret
    others.forEach((o, i) => {
      expect(fast.sharedSecrets(o.secretKey, [me.publicKey])[0]).toEqual(a[i]);
    });
    expect(fast.publicKeyOf(me.secretKey)).toEqual(me.publicKey);
    expect(naclKeyAgreement.publicKeyOf(me.secretKey)).toEqual(me.publicKey);
  });

  it("derives keys identically (SHA-512 of label ‖ 0 ‖ context ‖ raw, truncated)", async () => {
    const fast = await getKeyAgreement();
    const raw = randomBytes(32);
    const context = Uint8Array.of(1, 2, 3);
    const expected = createHash("sha512")
      .update(Buffer.concat([Buffer.from("label"), Buffer.of(0), context, raw]))
      .digest()
      .subarray(0, 32);
    expect(fast.deriveKey(raw, "label", context)).toEqual(new Uint8Array(expected));
    expect(naclKeyAgreement.deriveKey(raw, "label", context)).toEqual(new Uint8Array(expected));
    expect(deriveKey(raw, "other", context)).not.toEqual(new Uint8Array(expected));
  });

  it("returns null for a low-order public key on both paths", async () => {
    const fast = await getKeyAgreement();
    const me = generateKeyPair();
    const zero = new Uint8Array(32);
    expect(fast.sharedSecrets(me.secretKey, [zero])).toEqual([null]);
    expect(naclKeyAgreement.sharedSecrets(me.secretKey, [zero])).toEqual([null]);
  });

  it("throws a TypeError naming the argument on misuse", async () => {
    const fast = await getKeyAgreement();
    expect(() => fast.sharedSecrets(new Uint8Array(31), [])).toThrow(/secretKey/);
    expect(() => naclKeyAgreement.sharedSecrets(new Uint8Array(32), [new Uint8Array(5)])).toThrow(
      /publicKeys\[0\]/,
    );
    expect(() => naclKeyAgreement.sharedSecrets(new Uint8Array(31), [])).toThrow(TypeError);
  });
});

describe("seal / open", () => {
  const key = randomBytes(32);
  const message = Uint8Array.from({ length: 64 }, (_, i) => i);

  it("round-trips with a fresh nonce each time", () => {
    const a = seal(key, message);
    const b = seal(key, message);
    expect(a.length).toBe(64 + SEAL_OVERHEAD);
    expect(a).not.toEqual(b);
    expect(open(key, a)).toEqual(message);
  });

  it("returns null when tampered, truncated or under another key", () => {
    const box = seal(key, message);
    for (const at of [0, 30, box.length - 1]) {
      const bad = box.slice();
      bad[at]! ^= 1;
      expect(open(key, bad)).toBeNull();
    }
    expect(open(key, box.subarray(0, 10))).toBeNull();
    expect(open(randomBytes(32), box)).toBeNull();
  });

  it("throws a TypeError naming the argument on misuse", () => {
    expect(() => seal(new Uint8Array(16), message)).toThrow(/key must be a 32-byte/);
    expect(() => open(key, "box" as unknown as Uint8Array)).toThrow(/sealed/);
  });
});

describe("signatures", () => {
  it("verify what was signed and nothing else", () => {
    const id = generateIdentity();
    const message = randomBytes(100);
    const signature = sign(message, id.secretKey);
    expect(verify(message, signature, id.publicKey)).toBe(true);
    const other = message.slice();
    other[0]! ^= 1;
    expect(verify(other, signature, id.publicKey)).toBe(false);
    expect(verify(message, signature, generateIdentity().publicKey)).toBe(false);
    expect(() => sign(message, id.publicKey)).toThrow(/secretKey/);
    expect(() => verify(message, signature.subarray(1), id.publicKey)).toThrow(/signature/);
  });
});

describe("isWeakPublicKey", () => {
  it("knows every point of small order, with or without the top bit, and passes real keys", () => {
    const p = 2n ** 255n - 19n;
    const order8 = [
      325606250916557431795983626356110631294008115727848805560023387167927233504n,
      39382357235489614581723060781553021112529911719440698176882885853963445705823n,
    ];
    const le = (v: bigint) => {
      const out = new Uint8Array(32);
      for (let i = 0; i < 32; i++) out[i] = Number((v >> BigInt(8 * i)) & 0xffn);
      return out;
    };
    for (const v of [0n, 1n, ...order8, p - 1n, p, p + 1n]) {
      const key = le(v);
      expect(isWeakPublicKey(key)).toBe(true);
      key[31]! |= 0x80;
      expect(isWeakPublicKey(key)).toBe(true);
    }
    expect(isWeakPublicKey(new Uint8Array(31))).toBe(true);
    for (let i = 0; i < 50; i++) expect(isWeakPublicKey(generateKeyPair().publicKey)).toBe(false);
  });
});

describe("Ed25519", () => {
  it("uses node:crypto's in Node, signing exactly as tweetnacl does and refusing what it refuses", async () => {
    expect(await ed25519Ready()).toBe("node");
    const id = generateIdentity();
    const message = randomBytes(100);
    const signature = sign(message, id.secretKey);
    expect(Buffer.from(signature)).toEqual(Buffer.from(nacl.sign.detached(message, id.secretKey)));
    expect(verify(message, signature, id.publicKey)).toBe(true);
    const tampered = Uint8Array.from(signature);
    tampered[10]! ^= 1;
    expect(verify(message, tampered, id.publicKey)).toBe(false);
    expect(verify(message, signature, generateIdentity().publicKey)).toBe(false);
    expect(verify(message, signature, new Uint8Array(32))).toBe(false);
  });
});
