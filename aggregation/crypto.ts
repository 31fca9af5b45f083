/** The one module that imports tweetnacl: X25519 agreement, share boxes, Ed25519 signatures, randomness. */
import nacl from "tweetnacl";
import type { Rng } from "./random.js";

/** Bytes of an X25519 key, a derived key and a secret seed. */
export const KEY_BYTES = 32;
/** Bytes of an Ed25519 public key. */
export const IDENTITY_PUBLIC_BYTES = 32;
/** Bytes of an Ed25519 secret key (tweetnacl's seed ‖ public key form). */
export const IDENTITY_SECRET_BYTES = 64;
/** Bytes of an Ed25519 detached signature. */
export const SIGNATURE_BYTES = 64;
/** What `seal` adds to a plaintext: a 24-byte random nonce and a 16-byte Poly1305 tag. */
export const SEAL_OVERHEAD = nacl.secretbox.nonceLength + nacl.secretbox.overheadLength;

/** An X25519 (for key agreement) or Ed25519 (for identities) key pair. */
export interface KeyPair {
  publicKey: Uint8Array;
  secretKey: Uint8Array;
}

function checkBytes(value: unknown, name: string, length?: number): asserts value is Uint8Array {
  if (!(value instanceof Uint8Array) || (length !== undefined && value.length !== length)) {
    const size = length === undefined ? "" : `${length}-byte `;
    throw new TypeError(`${name} must be a ${size}Uint8Array`);
  }
}

/** `n` bytes from the platform CSPRNG (`crypto.getRandomValues` or Node's `randomBytes`). */
export function randomBytes(n: number): Uint8Array {
  if (!Number.isSafeInteger(n) || n < 0) throw new TypeError("n must be a non-negative integer");
  return nacl.randomBytes(n);
}

/**
 * A uniform `[0, 1)` source backed by the CSPRNG, buffered 4 KiB at a time; the production
 * source for stochastic rounding (tests pass a seeded `createRng` instead).
 */
export function cryptoRng(): Rng {
  const words = 1024;
  let buffer: Uint32Array = new Uint32Array(0);
  let next = 0;
  return () => {
    if (next >= buffer.length) {
      // randomBytes returns a fresh array at offset 0, so a 32-bit view is aligned.
      buffer = new Uint32Array(nacl.randomBytes(4 * words).buffer, 0, words);
      next = 0;
    }
    return buffer[next++]! / 4294967296;
  };
}

/** A fresh X25519 key pair (`nacl.box.keyPair`). */
export function generateKeyPair(): KeyPair {
  return nacl.box.keyPair();
}

/** Bytes of a hex string (constants written out in this file). */
function fromHex(hex: string): Uint8Array {
  return Uint8Array.from(hex.match(/../g)!, (b) => parseInt(b, 16));
}

/**
 * X25519 points of small order (0, 1, the two points of order 8, p − 1) and the non-canonical
 * encodings p and p + 1, little-endian, the top bit ignored as X25519 ignores it. A shared
 * secret with any of them is the same for every partner, so it hides nothing.
 */
const LOW_ORDER_POINTS = [
  "0000000000000000000000000000000000000000000000000000000000000000",
  "0100000000000000000000000000000000000000000000000000000000000000",
  "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
  "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
  "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
  "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
  "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
].map(fromHex);

/** Whether an X25519 public key is unusable: not 32 bytes, or a point of small order. */
export function isWeakPublicKey(key: Uint8Array): boolean {
  if (key.length !== KEY_BYTES) return true;
  return LOW_ORDER_POINTS.some((point) =>
    point.every((b, i) => b === (i === 31 ? key[i]! & 0x7f : key[i])),
  );
}

/** A fresh Ed25519 identity key pair (`nacl.sign.keyPair`). */
export function generateIdentity(): KeyPair {
  return nacl.sign.keyPair();
}

/** The identity key pair of a 64-byte Ed25519 secret key. */
export function identityFromSecret(secretKey: Uint8Array): KeyPair {
  checkBytes(secretKey, "secretKey", IDENTITY_SECRET_BYTES);
  return nacl.sign.keyPair.fromSecretKey(secretKey);
}

/** The identity key pair of a 32-byte seed (reproducible identities for benchmarks and tests). */
export function identityFromSeed(seed: Uint8Array): KeyPair {
  checkBytes(seed, "seed", 32);
  return nacl.sign.keyPair.fromSeed(seed);
}

/** SHA-512 of `message` (64 bytes). */
export function digest(message: Uint8Array): Uint8Array {
  checkBytes(message, "message");
  return ed25519.hash(message);
}

/** Ed25519 signing and verification: tweetnacl, or node:crypto's where it exists. */
interface Ed25519 {
  kind: "tweetnacl" | "node";
  /** SHA-512, which signatures over whole updates and models spend most of their time in. */
  hash(message: Uint8Array): Uint8Array;
  sign(message: Uint8Array, secretKey: Uint8Array): Uint8Array;
  verify(message: Uint8Array, signature: Uint8Array, publicKey: Uint8Array): boolean;
}

const naclEd25519: Ed25519 = {
  kind: "tweetnacl",
  hash: (message) => nacl.hash(message),
  sign: (message, secretKey) => nacl.sign.detached(message, secretKey),
  verify: (message, signature, publicKey) =>
    nacl.sign.detached.verify(message, signature, publicKey),
};

/**
 * The Ed25519 in use. tweetnacl takes milliseconds per signature; node:crypto's takes tens of
 * microseconds, which is what lets one coordinator check a thousand handshakes and updates a
 * round. It replaces tweetnacl's as soon as the dynamic import below resolves (Node only).
 */
let ed25519: Ed25519 = naclEd25519;
const ed25519Loaded = loadNodeEd25519().then((e) => {
  ed25519 = e;
});

/** Resolves once the fastest Ed25519 available is in use (for benchmarks and tests). */
export function ed25519Ready(): Promise<"tweetnacl" | "node"> {
  return ed25519Loaded.then(() => ed25519.kind);
}

/** Ed25519 detached signature of `message` with a 64-byte identity secret key. */
export function sign(message: Uint8Array, secretKey: Uint8Array): Uint8Array {
  checkBytes(message, "message");
  checkBytes(secretKey, "secretKey", IDENTITY_SECRET_BYTES);
  return ed25519.sign(message, secretKey);
}

/** Whether `signature` is a valid Ed25519 signature of `message` by `publicKey`. */
export function verify(message: Uint8Array, signature: Uint8Array, publicKey: Uint8Array): boolean {
  checkBytes(message, "message");
  checkBytes(signature, "signature", SIGNATURE_BYTES);
  checkBytes(publicKey, "publicKey", IDENTITY_PUBLIC_BYTES);
  return ed25519.verify(message, signature, publicKey);
}

/** Authenticated encryption (XSalsa20-Poly1305, `nacl.secretbox`): random nonce ‖ box. */
export function seal(key: Uint8Array, plaintext: Uint8Array): Uint8Array {
  checkBytes(key, "key", KEY_BYTES);
  checkBytes(plaintext, "plaintext");
  const nonce = nacl.randomBytes(nacl.secretbox.nonceLength);
  const box = nacl.secretbox(plaintext, nonce, key);
  const out = new Uint8Array(nonce.length + box.length);
  out.set(nonce);
  out.set(box, nonce.length);
  return out;
}

/** Open a `seal`ed message; `null` when it fails to authenticate (tampered, wrong key or context). */
export function open(key: Uint8Array, sealed: Uint8Array): Uint8Array | null {
  checkBytes(key, "key", KEY_BYTES);
  checkBytes(sealed, "sealed");
  if (sealed.length < SEAL_OVERHEAD) return null;
  const nonceLength = nacl.secretbox.nonceLength;
  return nacl.secretbox.open(sealed.subarray(nonceLength), sealed.subarray(0, nonceLength), key);
}

const encoder = new TextEncoder();

function kdfInput(raw: Uint8Array, label: string, context: Uint8Array): Uint8Array {
  const tag = encoder.encode(label);
  const input = new Uint8Array(tag.length + 1 + context.length + raw.length);
  input.set(tag);
  input.set(context, tag.length + 1); // the 0x00 after the label keeps labels prefix-free
  input.set(raw, tag.length + 1 + context.length);
  return input;
}

/**
 * Key derivation: the first 32 bytes of SHA-512(label ‖ 0x00 ‖ context ‖ raw). The label
 * separates uses (box keys vs mask seeds) and the context binds session, round and parties.
 */
export function deriveKey(raw: Uint8Array, label: string, context: Uint8Array): Uint8Array {
  checkBytes(raw, "raw");
  checkBytes(context, "context");
  return nacl.hash(kdfInput(raw, label, context)).slice(0, KEY_BYTES);
}

/**
 * X25519 key agreement and key derivation, in one of two implementations that give identical
 * results: node:crypto (OpenSSL, ~20× faster, for the server's bulk unmasking) or tweetnacl.
 */
export interface KeyAgreement {
  readonly kind: "node" | "tweetnacl";
  /** Raw X25519 secrets of `secretKey` with each public key; `null` for a low-order public key. */
  sharedSecrets(secretKey: Uint8Array, publicKeys: readonly Uint8Array[]): (Uint8Array | null)[];
  /** The X25519 public key of a secret key. */
  publicKeyOf(secretKey: Uint8Array): Uint8Array;
  /** Same as the module's `deriveKey`. */
  deriveKey(raw: Uint8Array, label: string, context: Uint8Array): Uint8Array;
}

function checkAgreement(secretKey: Uint8Array, publicKeys: readonly Uint8Array[]): void {
  checkBytes(secretKey, "secretKey", KEY_BYTES);
  publicKeys.forEach((key, i) => checkBytes(key, `publicKeys[${i}]`, KEY_BYTES));
}

function isZero(bytes: Uint8Array): boolean {
  let acc = 0;
  for (const b of bytes) acc |= b;
  return acc === 0;
}

/** The portable implementation (browsers): `nacl.scalarMult`, ~0.7 ms per agreement. */
export const naclKeyAgreement: KeyAgreement = {
  kind: "tweetnacl",
  sharedSecrets(secretKey, publicKeys) {
    checkAgreement(secretKey, publicKeys);
    return publicKeys.map((pk) => {
      const shared = nacl.scalarMult(secretKey, pk);
      return isZero(shared) ? null : shared; // an all-zero secret means a low-order point
    });
  },
  publicKeyOf(secretKey) {
    checkBytes(secretKey, "secretKey", KEY_BYTES);
    return nacl.scalarMult.base(secretKey);
  },
  deriveKey,
};

type NodeCrypto = typeof import("node:crypto");

// PKCS#8 and SPKI DER prefixes of an X25519 key (RFC 8410). A JWK private key would need the
// public `x` too, which costs a base-point multiplication; DER needs only the 32 raw bytes.
const PKCS8_X25519 = Uint8Array.from([
  0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x04, 0x22, 0x04, 0x20,
]);

function nodeKeyAgreement(node: NodeCrypto): KeyAgreement {
  const privateKey = (secretKey: Uint8Array) =>
    node.createPrivateKey({
      key: Buffer.concat([PKCS8_X25519, secretKey]),
      format: "der",
      type: "pkcs8",
    });
  const b64 = (bytes: Uint8Array) => Buffer.from(bytes).toString("base64url");
  return {
    kind: "node",
    sharedSecrets(secretKey, publicKeys) {
      checkAgreement(secretKey, publicKeys);
      const own = privateKey(secretKey);
      return publicKeys.map((pk) => {
        try {
          const publicKey = node.createPublicKey({
            key: { kty: "OKP", crv: "X25519", x: b64(pk) },
            format: "jwk",
          });
          return new Uint8Array(node.diffieHellman({ privateKey: own, publicKey }));
        } catch {
          return null; // OpenSSL refuses an all-zero result, i.e. a low-order public key
        }
      });
    },
    publicKeyOf(secretKey) {
      checkBytes(secretKey, "secretKey", KEY_BYTES);
      const jwk = privateKey(secretKey).export({ format: "jwk" });
      return new Uint8Array(Buffer.from(jwk.x ?? "", "base64url"));
    },
    deriveKey(raw, label, context) {
      checkBytes(raw, "raw");
      checkBytes(context, "context");
      const digest = node
        .createHash("sha512")
        .update(kdfInput(raw, label, context))
        .digest();
      return new Uint8Array(digest.subarray(0, KEY_BYTES));
    },
  };
}

// The PKCS#8 DER prefix of an Ed25519 private key (RFC 8410): the 32-byte seed follows.
const PKCS8_ED25519 = Uint8Array.from([
  0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
]);

function nodeEd25519(node: NodeCrypto): Ed25519 {
  return {
    kind: "node",
    hash: (message) => new Uint8Array(node.createHash("sha512").update(message).digest()),
    sign(message, secretKey) {
      const key = node.createPrivateKey({
        key: Buffer.concat([PKCS8_ED25519, secretKey.subarray(0, 32)]),
        format: "der",
        type: "pkcs8",
      });
      return new Uint8Array(node.sign(null, message, key));
    },
    verify(message, signature, publicKey) {
      try {
        const key = node.createPublicKey({
          key: { kty: "OKP", crv: "Ed25519", x: Buffer.from(publicKey).toString("base64url") },
          format: "jwk",
        });
        return node.verify(null, message, key, signature);
      } catch {
        return false; // not a point on the curve
      }
    },
  };
}

async function loadNodeEd25519(): Promise<Ed25519> {
  try {
    const specifier = "node:crypto";
    const node = (await import(/* @vite-ignore */ specifier)) as NodeCrypto;
    const probe = nodeEd25519(node);
    // RFC 8032's first test vector (empty message): a fixed answer, so the check costs no
    // tweetnacl arithmetic at start.
    const seed = fromHex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60");
    const publicKey = fromHex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a");
    const expected = fromHex(
      "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    );
    const empty = new Uint8Array(0);
    const signature = probe.sign(empty, Uint8Array.from([...seed, ...publicKey]));
    if (
      nacl.verify(signature, expected) &&
      probe.verify(empty, expected, publicKey) &&
      !probe.verify(Uint8Array.of(1), expected, publicKey)
    ) {
      return probe;
    }
  } catch {
    // not Node, or an OpenSSL without Ed25519: tweetnacl's
  }
  return naclEd25519;
}

let fastest: Promise<KeyAgreement> | undefined;

/**
 * The fastest key agreement available: node:crypto when present (checked once, at run time,
 * by a dynamic import), tweetnacl otherwise. Both give byte-identical secrets.
 */
export function getKeyAgreement(): Promise<KeyAgreement> {
  fastest ??= loadNodeAgreement();
  return fastest;
}

async function loadNodeAgreement(): Promise<KeyAgreement> {
  try {
    // A computed specifier keeps browser bundlers from trying to resolve node:crypto.
    const specifier = "node:crypto";
    const node = (await import(/* @vite-ignore */ specifier)) as NodeCrypto;
    const probe = nodeKeyAgreement(node);
    const a = nacl.box.keyPair();
    const b = nacl.box.keyPair();
    const secret = probe.sharedSecrets(a.secretKey, [b.publicKey])[0];
    if (secret && nacl.verify(secret, nacl.scalarMult(a.secretKey, b.publicKey))) return probe;
  } catch {
    // not Node, or an OpenSSL without X25519: the portable path below
  }
  return naclKeyAgreement;
}

/**
 * The XSalsa20 keystream of tweetnacl (`lowlevel.crypto_stream`, zero nonce): the baseline the
 * PRG benchmark compares AES-CTR with. Not used by the protocol.
 */
export function xsalsa20Stream(seed: Uint8Array, byteLength: number): Uint8Array {
  checkBytes(seed, "seed", KEY_BYTES);
  const lowlevel = (nacl as unknown as { lowlevel: NaclLowlevel }).lowlevel;
  const out = new Uint8Array(byteLength);
  lowlevel.crypto_stream(out, 0, byteLength, new Uint8Array(24), seed);
  return out;
}

interface NaclLowlevel {
  crypto_stream(c: Uint8Array, cpos: number, d: number, n: Uint8Array, k: Uint8Array): number;
}
