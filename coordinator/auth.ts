/**
 * Client authentication (opt-in): who may join, and a rate limit per client. A client proves it
 * holds an Ed25519 identity in the handshake; the coordinator admits listed keys, or holders of
 * a join token signed by a trusted issuer, and then requires every update to be signed by it.
 */
import {
  checkJoinToken,
  fromBase64,
  verifyHandshake,
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
  /** How far a handshake's time may be from the coordinator's, in ms. @default 300000 */
  maxClockSkewMs: number;
}

/** The identity part of a client's handshake. */
export interface HandshakeIdentity {
  publicKey: string;
  issuedAt: number;
  signature: string;
  token?: { expiresAt: number; signature: string };
}

/** Checks handshakes against the allowlist and the token issuer. */
export class Authenticator {
  private readonly options: AuthOptions;
  private readonly allowed: Set<string>;
  private readonly issuer: Uint8Array | null;

  constructor(options: Partial<AuthOptions>) {
    this.options = withDefaults<AuthOptions>(
      { allowedKeys: [], tokenIssuerKey: undefined, maxClockSkewMs: 300_000 },
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

  /**
   * Admit a client or throw `UNAUTHORIZED` saying why. Returns the client's public key, which
   * must sign its updates.
   */
  admit(clientId: string, raw: unknown, now = Date.now()): Uint8Array {
    const id = parseIdentity(raw);
    const publicKey = key(id.publicKey, "identity.publicKey", "UNAUTHORIZED");
    const signature = bytes(id.signature, "identity.signature");
    if (Math.abs(now - id.issuedAt) > this.options.maxClockSkewMs) {
      throw new CohortError(
        "UNAUTHORIZED",
        `handshake issued ${Math.round((now - id.issuedAt) / 1000)} s from now; clocks differ or it is replayed`,
      );
    }
    if (!verifyHandshake(publicKey, clientId, id.issuedAt, signature)) {
      throw new CohortError("UNAUTHORIZED", "handshake signature does not verify");
    }
    if (this.allowed.has(id.publicKey)) return publicKey;
    if (this.issuer !== null && id.token !== undefined) {
      const token: JoinToken = {
        expiresAt: id.token.expiresAt,
        signature: bytes(id.token.signature, "token.signature"),
      };
      const verdict = checkJoinToken(this.issuer, publicKey, token, now);
      if (verdict === "ok") return publicKey;
      throw new CohortError(
        "UNAUTHORIZED",
        verdict === "expired" ? "join token expired" : "join token is not valid for this key",
      );
    }
    throw new CohortError("UNAUTHORIZED", `key ${id.publicKey.slice(0, 12)}… is not admitted`);
  }
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
  if (
    typeof o.publicKey !== "string" ||
    typeof o.signature !== "string" ||
    typeof o.issuedAt !== "number" ||
    !Number.isFinite(o.issuedAt)
  ) {
    throw new CohortError("UNAUTHORIZED", "identity must carry publicKey, issuedAt and signature");
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
    issuedAt: o.issuedAt,
    signature: o.signature,
    ...(t ? { token: t as { expiresAt: number; signature: string } } : {}),
  };
}

/** A token bucket per client: `ratePerSecond` sustained, `burst` at once. */
export class RateLimiter {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();
  constructor(
    private readonly ratePerSecond: number,
    private readonly burst: number,
  ) {}

  /** Whether `clientId` may send one more message now. */
  take(clientId: string, now = performance.now()): boolean {
    const b = this.buckets.get(clientId) ?? { tokens: this.burst, at: now };
    b.tokens = Math.min(this.burst, b.tokens + ((now - b.at) / 1000) * this.ratePerSecond);
    b.at = now;
    this.buckets.set(clientId, b);
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }

  forget(clientId: string): void {
    this.buckets.delete(clientId);
  }
}
