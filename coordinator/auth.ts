/**
 * Who may join and under which id, and a rate limit per client. With authentication on, a
 * client names its Ed25519 key in the handshake and proves it holds it by signing a fresh
 * challenge; the coordinator admits listed keys, or holders of a join token signed by a trusted
 * issuer, binds each client id to one key, and requires every update to be signed by it.
 * Without authentication, a client id is bound to a secret the coordinator issued at its first
 * join.
 */
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import {
  checkJoinToken,
  fromBase64,
  keyClientId,
  toBase64,
  verifyChallenge,
  type HandshakeChallenge,
  type JoinToken,
} from "../aggregation/signing.js";
import { CohortError } from "../protocol/errors.js";
import { withDefaults } from "../protocol/options.js";

/** Authentication options of a coordinator. */
export interface AuthOptions {
  /** Base64 Ed25519 public keys admitted as they are. @default [] */
  allowedKeys: string[];
  /** Base64 public key of an issuer whose join tokens admit other keys. @default undefined */
  tokenIssuerKey: string | undefined;
  /** How long a client has to answer the handshake challenge, in ms. @default 10000 */
  challengeTimeoutMs: number;
}

/** The identity part of a client's handshake. */
export interface HandshakeIdentity {
  publicKey: string;
  token?: { expiresAt: number; signature: string };
}

/** Checks handshakes against the allowlist and the token issuer. */
export class Authenticator {
  private readonly options: AuthOptions;
  private readonly allowed: Set<string>;
  private readonly issuer: Uint8Array | null;

  constructor(options: Partial<AuthOptions>) {
    this.options = withDefaults<AuthOptions>(
      { allowedKeys: [], tokenIssuerKey: undefined, challengeTimeoutMs: 10_000 },
      options,
    );
    for (const k of this.options.allowedKeys) key(k, "allowedKeys entry");
    this.allowed = new Set(this.options.allowedKeys);
    this.issuer =
      this.options.tokenIssuerKey === undefined
        ? null
        : key(this.options.tokenIssuerKey, "tokenIssuerKey");
    if (this.allowed.size === 0 && this.issuer === null) {
      throw new CohortError(
        "INVALID_OPTION",
        "authentication needs allowedKeys or a tokenIssuerKey",
      );
    }
  }

  /** How long a client has to answer the challenge. */
  get challengeTimeoutMs(): number {
    return this.options.challengeTimeoutMs;
  }

  /**
   * Admit a handshake's key (listed, or with a valid join token) or throw `UNAUTHORIZED` saying
   * why. The client must still answer the challenge (`verify`) before it is let in.
   */
  admit(
    raw: unknown,
    now = Date.now(),
  ): { publicKey: Uint8Array; token: HandshakeIdentity["token"] } {
    const id = parseIdentity(raw);
    const publicKey = key(id.publicKey, "identity.publicKey", "UNAUTHORIZED");
    if (this.allowed.has(id.publicKey)) return { publicKey, token: undefined };
    if (this.issuer !== null && id.token !== undefined) {
      const token: JoinToken = {
        expiresAt: id.token.expiresAt,
        signature: bytes(id.token.signature, "token.signature"),
      };
      const verdict = checkJoinToken(this.issuer, publicKey, token, now);
      if (verdict === "ok") return { publicKey, token: id.token };
      throw new CohortError(
        "UNAUTHORIZED",
        verdict === "expired" ? "join token expired" : "join token is not valid for this key",
      );
    }
    throw new CohortError("UNAUTHORIZED", `key ${id.publicKey.slice(0, 12)}… is not admitted`);
  }

  /** A fresh challenge for one connection. */
  challenge(coordinatorKey: string | null): HandshakeChallenge {
    return { nonce: toBase64(randomBytes(32)), coordinatorKey };
  }

  /** Throw `UNAUTHORIZED` unless `answer` signs `challenge` with `publicKey` for `clientId`. */
  verify(
    publicKey: Uint8Array,
    challenge: HandshakeChallenge,
    clientId: string,
    answer: unknown,
  ): void {
    const signature = (answer as { signature?: unknown } | null)?.signature;
    if (!verifyChallenge(publicKey, challenge, clientId, bytes(signature, "answer.signature"))) {
      throw new CohortError(
        "UNAUTHORIZED",
        "the answer to the handshake challenge does not verify",
      );
    }
  }
}

/**
 * Which client id belongs to whom, for the run. With authentication, an id is bound to the
 * first key that proved it, and a key to the one id it first used; an id of the form
 * `key-…` is the one its key stands for (`keyClientId`). Without it, a connected id holds a
 * secret issued when it joined, which a connection taking it over must present.
 */
export class ClientBindings {
  private readonly keyOf = new Map<string, string>();
  private readonly idOf = new Map<string, string>();
  private readonly secretOf = new Map<string, Buffer>();

  /** Throw `UNAUTHORIZED` when `publicKey` may not use `clientId`. */
  checkKey(clientId: string, publicKey: string): void {
    if (clientId.startsWith("key-") && clientId !== keyClientId(fromBase64(publicKey))) {
      throw new CohortError(
        "UNAUTHORIZED",
        `client id ${clientId} stands for another key (ids of the form key-… are derived from their key)`,
      );
    }
    const owner = this.keyOf.get(clientId);
    if (owner !== undefined && owner !== publicKey) {
      throw new CohortError("UNAUTHORIZED", `client id ${clientId} belongs to another key`);
    }
    const bound = this.idOf.get(publicKey);
    if (bound !== undefined && bound !== clientId) {
      throw new CohortError(
        "UNAUTHORIZED",
        `this key is bound to client id ${bound} for this run: one key, one client (and one cohort slot)`,
      );
    }
  }

  /** Bind `clientId` and `publicKey` to each other (after the key's proof checked out). */
  bindKey(clientId: string, publicKey: string): void {
    this.keyOf.set(clientId, publicKey);
    this.idOf.set(publicKey, clientId);
  }

  /**
   * Without authentication: throw `UNAUTHORIZED` when `clientId` is connected (`live`) and the
   * handshake does not carry its secret.
   */
  checkSecret(clientId: string, secret: string | undefined, live: boolean): void {
    const expected = this.secretOf.get(clientId);
    if (!live || expected === undefined) return;
    if (secret === undefined || !timingSafeEqual(expected, hashSecret(secret))) {
      throw new CohortError(
        "UNAUTHORIZED",
        `client id ${clientId} is connected: taking it over needs the secret issued when it joined`,
      );
    }
  }

  /**
   * The secret of an id joining now: null when it presented the one it holds (a connection
   * taking over its own id), otherwise a fresh one (only its hash is kept).
   */
  issueSecret(clientId: string, presented: string | undefined): string | null {
    const expected = this.secretOf.get(clientId);
    if (
      expected !== undefined &&
      presented !== undefined &&
      timingSafeEqual(expected, hashSecret(presented))
    ) {
      return null;
    }
    const secret = randomBytes(32).toString("base64");
    this.secretOf.set(clientId, hashSecret(secret));
    return secret;
  }

  /** The id is no longer connected: its secret goes (the next to join gets a new one). */
  forgetSecret(clientId: string): void {
    this.secretOf.delete(clientId);
  }
}

function hashSecret(secret: string): Buffer {
  return createHash("sha256").update(secret).digest();
}

function key(
  text: string,
  what: string,
  code: "INVALID_OPTION" | "UNAUTHORIZED" = "INVALID_OPTION",
): Uint8Array {
  let k: Uint8Array;
  try {
    k = fromBase64(text, what);
  } catch (cause) {
    throw new CohortError(code, `${what} must be a base64 Ed25519 public key`, { cause });
  }
  if (k.length !== 32) throw new CohortError(code, `${what} must be a 32-byte Ed25519 public key`);
  return k;
}

function bytes(text: unknown, what: string): Uint8Array {
  if (typeof text !== "string") throw new CohortError("UNAUTHORIZED", `${what} missing`);
  try {
    return fromBase64(text, what);
  } catch (cause) {
    throw new CohortError("UNAUTHORIZED", `${what} must be base64`, { cause });
  }
}

function parseIdentity(raw: unknown): HandshakeIdentity {
  const o = raw as Partial<HandshakeIdentity> | null;
  if (typeof o !== "object" || o === null)
    throw new CohortError("UNAUTHORIZED", "this coordinator requires a client identity");
  if (typeof o.publicKey !== "string") {
    throw new CohortError("UNAUTHORIZED", "identity must carry publicKey");
  }
  const t = o.token as { expiresAt?: unknown; signature?: unknown } | undefined;
  if (
    t !== undefined &&
    (typeof t !== "object" ||
      t === null ||
      typeof t.expiresAt !== "number" ||
      typeof t.signature !== "string")
  ) {
    throw new CohortError("UNAUTHORIZED", "identity.token must carry expiresAt and signature");
  }
  return {
    publicKey: o.publicKey,
    ...(t ? { token: t as { expiresAt: number; signature: string } } : {}),
  };
}

/**
 * A token bucket per client — per key where clients authenticate, per id otherwise — that
 * survives reconnects: `ratePerSecond` sustained, `burst` at once.
 */
export class RateLimiter {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();
  constructor(
    private readonly ratePerSecond: number,
    private readonly burst: number,
    /** Buckets kept before full (idle) ones are dropped. @default 100000 */
    private readonly maxBuckets = 100_000,
  ) {}

  /** Whether `who` may send one more message now. */
  take(who: string, now = performance.now()): boolean {
    const b = this.buckets.get(who) ?? { tokens: this.burst, at: now };
    b.tokens = Math.min(this.burst, b.tokens + ((now - b.at) / 1000) * this.ratePerSecond);
    b.at = now;
    this.buckets.set(who, b);
    if (this.buckets.size > this.maxBuckets) this.sweep(now);
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }

  /** Drop the buckets that are full again: forgetting them changes nothing. */
  private sweep(now: number): void {
    for (const [who, b] of this.buckets) {
      if (b.tokens + ((now - b.at) / 1000) * this.ratePerSecond >= this.burst) {
        this.buckets.delete(who);
      }
    }
  }
}
