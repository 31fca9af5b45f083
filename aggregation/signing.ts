/**
 * Signatures that authenticate a federation: clients' handshakes and updates, the coordinator's
 * model broadcasts, and join tokens. Each signature covers a labelled, length-prefixed
 * transcript (run, round, client, SHA-512 of the payload), so it cannot be replayed into another
 * run, round, client or kind of message.
 */
import { decode, encode } from "../protocol/codec.js";
import { CohortError } from "../protocol/errors.js";
import { digest, sign, verify } from "./crypto.js";

const encoder = new TextEncoder();

/** A labelled transcript: each part length-prefixed so no two part lists collide. */
function transcript(label: string, ...parts: (string | number | Uint8Array)[]): Uint8Array {
  const chunks = [label, ...parts].map((p) =>
    p instanceof Uint8Array ? p : encoder.encode(typeof p === "number" ? `#${p}` : p),
  );
  const out = new Uint8Array(chunks.reduce((n, c) => n + 4 + c.length, 0));
  const view = new DataView(out.buffer);
  let at = 0;
  for (const c of chunks) {
    view.setUint32(at, c.length);
    out.set(c, at + 4);
    at += 4 + c.length;
  }
  return out;
}

/** Where an update or a model belongs. */
export interface SignedContext {
  runId: string;
  round: number;
}

/** A payload with its signature: the wire form of signed updates and model broadcasts. */
export interface SignedEnvelope {
  body: Uint8Array;
  signature: Uint8Array;
}

/** Sign a client's encoded update for (run, round, client). */
export function signUpdate(
  secretKey: Uint8Array,
  ctx: SignedContext & { clientId: string },
  body: Uint8Array,
): Uint8Array {
  return sign(
    transcript("cohort/update/v1", ctx.runId, ctx.round, ctx.clientId, digest(body)),
    secretKey,
  );
}

/** Whether `signature` is `publicKey`'s signature of this update. */
export function verifyUpdate(
  publicKey: Uint8Array,
  ctx: SignedContext & { clientId: string },
  body: Uint8Array,
  signature: Uint8Array,
): boolean {
  if (signature.length !== 64) return false;
  return verify(
    transcript("cohort/update/v1", ctx.runId, ctx.round, ctx.clientId, digest(body)),
    signature,
    publicKey,
  );
}

/** Sign the coordinator's encoded fit request (the global model) of a round. */
export function signModel(secretKey: Uint8Array, ctx: SignedContext, body: Uint8Array): Uint8Array {
  return sign(transcript("cohort/model/v1", ctx.runId, ctx.round, digest(body)), secretKey);
}

/** Whether `signature` is the coordinator's signature of this round's model. */
export function verifyModel(
  publicKey: Uint8Array,
  ctx: SignedContext,
  body: Uint8Array,
  signature: Uint8Array,
): boolean {
  if (signature.length !== 64) return false;
  return verify(
    transcript("cohort/model/v1", ctx.runId, ctx.round, digest(body)),
    signature,
    publicKey,
  );
}

/** JSON with object keys sorted at every level: the same value gives the same text everywhere. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (typeof value === "object" && value !== null) {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(",")}}`;
  }
  return JSON.stringify(value) ?? "null";
}

function taskTranscript(task: { signature?: unknown }): Uint8Array {
  const { signature: _signature, ...body } = task;
  return transcript("cohort/task/v1", digest(encoder.encode(canonicalJson(body))));
}

/** Sign a task (every field but `signature`): its mode and limits then travel as the coordinator's word. */
export function signTask(secretKey: Uint8Array, task: { signature?: unknown }): Uint8Array {
  return sign(taskTranscript(task), secretKey);
}

/** Whether `signature` is `publicKey`'s signature of this task. */
export function verifyTask(
  publicKey: Uint8Array,
  task: { signature?: unknown },
  signature: Uint8Array,
): boolean {
  if (signature.length !== 64 || publicKey.length !== 32) return false;
  return verify(taskTranscript(task), signature, publicKey);
}

/** A challenge of the coordinator, answered by a client to prove it holds its key. */
export interface HandshakeChallenge {
  /** 32 fresh random bytes (base64), used once. */
  nonce: string;
  /** The coordinator's base64 model-signing key, so an answer is valid for it alone. */
  coordinatorKey: string | null;
}

function challengeTranscript(
  challenge: HandshakeChallenge,
  clientId: string,
  publicKey: Uint8Array,
): Uint8Array {
  return transcript(
    "cohort/handshake/v2",
    challenge.nonce,
    challenge.coordinatorKey ?? "",
    clientId,
    publicKey,
  );
}

/** Proof of key possession: the coordinator's fresh nonce signed for (client id, key, coordinator). */
export function signChallenge(
  secretKey: Uint8Array,
  challenge: HandshakeChallenge,
  clientId: string,
  publicKey: Uint8Array,
): Uint8Array {
  return sign(challengeTranscript(challenge, clientId, publicKey), secretKey);
}

/** Whether `signature` answers `challenge` for this client id and key. */
export function verifyChallenge(
  publicKey: Uint8Array,
  challenge: HandshakeChallenge,
  clientId: string,
  signature: Uint8Array,
): boolean {
  if (signature.length !== 64 || publicKey.length !== 32) return false;
  return verify(challengeTranscript(challenge, clientId, publicKey), signature, publicKey);
}

/** The client id an identity key stands for by default: `key-` and 16 characters of its hash. */
export function keyClientId(publicKey: Uint8Array): string {
  return `key-${toBase64(digest(publicKey).subarray(0, 12)).replace(/\+/g, "-").replace(/\//g, "_")}`;
}

/** A token by which an issuer admits one client key until a time (ms since the epoch). */
export interface JoinToken {
  expiresAt: number;
  signature: Uint8Array;
}

/** Issue a join token for `clientKey`. */
export function issueJoinToken(
  issuerSecret: Uint8Array,
  clientKey: Uint8Array,
  expiresAt: number,
): JoinToken {
  return {
    expiresAt,
    signature: sign(transcript("cohort/join/v1", clientKey, expiresAt), issuerSecret),
  };
}

/** Check a join token: `ok`, `expired`, or `forged` (not the issuer's, or for another key). */
export function checkJoinToken(
  issuerKey: Uint8Array,
  clientKey: Uint8Array,
  token: JoinToken,
  now: number,
): "ok" | "expired" | "forged" {
  if (token.signature.length !== 64 || clientKey.length !== 32) return "forged";
  if (!verify(transcript("cohort/join/v1", clientKey, token.expiresAt), token.signature, issuerKey))
    return "forged";
  return now <= token.expiresAt ? "ok" : "expired";
}

/** Base64 of bytes (keys and signatures in JSON, flags and handshakes). */
export function toBase64(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}

/** Bytes of a base64 string; throws a TypeError naming `what` on bad input. */
export function fromBase64(text: string, what = "value"): Uint8Array {
  try {
    return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
  } catch {
    throw new TypeError(`${what} must be base64`);
  }
}

/** Encode a signed envelope for the wire. */
export function sealEnvelope(body: Uint8Array, signature: Uint8Array): Uint8Array {
  return encode({ body, signature });
}

/**
 * Decode a signed envelope. Throws `MALFORMED_PAYLOAD` for undecodable bytes and
 * `INVALID_MESSAGE` when it is not `{ body, signature }` with a 64-byte signature.
 */
export function openEnvelope(payload: unknown): SignedEnvelope {
  const raw = decode(payload) as { body?: unknown; signature?: unknown } | null;
  if (
    typeof raw !== "object" ||
    raw === null ||
    !(raw.body instanceof Uint8Array) ||
    !(raw.signature instanceof Uint8Array) ||
    raw.signature.length !== 64
  ) {
    throw new CohortError(
      "INVALID_MESSAGE",
      "expected a signed envelope { body, signature (64 bytes) }",
    );
  }
  return { body: raw.body, signature: raw.signature };
}
