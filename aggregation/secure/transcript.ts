/** Byte strings that bind signatures, share boxes and mask seeds to a session, a round and the parties. */
import { SEAL_OVERHEAD, verify } from "../crypto.js";

/** KDF and signature labels; the version lets a future protocol change never reuse a key. */
export const LABELS = {
  advertise: "cohort/secagg/v1/advertise",
  shareBox: "cohort/secagg/v1/share-box",
  pairwiseMask: "cohort/secagg/v1/pairwise-mask",
  consistency: "cohort/secagg/v1/consistency",
} as const;

/** Bytes of one Shamir share of a 32-byte secret. */
export const SHARE_BYTES = 32;
/** A share box holds the self-mask share and the mask-key share: 64 bytes plus nonce and tag. */
export const SHARE_BOX_BYTES = SEAL_OVERHEAD + 2 * SHARE_BYTES;

/** What identifies a round everywhere: the run's session id and the round number. */
export interface RoundId {
  session: string;
  round: number;
}

const encoder = new TextEncoder();

function build(
  id: RoundId,
  label: string,
  ints: readonly number[],
  keys: Uint8Array[],
): Uint8Array {
  const tag = encoder.encode(label);
  const session = encoder.encode(id.session);
  const size = tag.length + 1 + 4 + session.length + 8 + 4 * ints.length;
  const out = new Uint8Array(size + keys.reduce((n, k) => n + k.length, 0));
  const view = new DataView(out.buffer);
  out.set(tag);
  let at = tag.length + 1; // 0x00 separator
  view.setUint32(at, session.length); // length-prefixed, so no two sessions encode alike
  out.set(session, at + 4);
  at += 4 + session.length;
  view.setUint32(at, Math.floor(id.round / 2 ** 32));
  view.setUint32(at + 4, id.round >>> 0);
  at += 8;
  for (const v of ints) {
    view.setUint32(at, v);
    at += 4;
  }
  for (const k of keys) {
    out.set(k, at);
    at += k.length;
  }
  return out;
}

/** What an identity key signs: (session, round, index, c public key, s public key). */
export function advertiseTranscript(
  id: RoundId,
  index: number,
  cPublicKey: Uint8Array,
  sPublicKey: Uint8Array,
): Uint8Array {
  return build(id, LABELS.advertise, [index], [cPublicKey, sPublicKey]);
}

/** What a member signs in the consistency check: (session, round, the sorted survivors). */
export function consistencyTranscript(id: RoundId, survivors: readonly number[]): Uint8Array {
  return build(id, LABELS.consistency, [survivors.length, ...survivors], []);
}

/** KDF context of the box `from` → `to`: a box replayed to another round or recipient fails. */
export function shareBoxContext(id: RoundId, from: number, to: number): Uint8Array {
  return build(id, "", [from, to], []);
}

/** KDF context of the pairwise mask of `a` and `b` (order-free: both derive the same seed). */
export function pairMaskContext(id: RoundId, a: number, b: number): Uint8Array {
  return build(id, "", [Math.min(a, b), Math.max(a, b)], []);
}

/**
 * Whether an advertisement is signed by `identity` (an Ed25519 public key). With no identity
 * on record, or no signature, it is not.
 */
export function isSignedBy(
  id: RoundId,
  ad: {
    index: number;
    cPublicKey: Uint8Array;
    sPublicKey: Uint8Array;
    signature: Uint8Array | null;
  },
  identity: Uint8Array | undefined,
): boolean {
  if (identity === undefined || ad.signature === null) return false;
  return verify(
    advertiseTranscript(id, ad.index, ad.cPublicKey, ad.sPublicKey),
    ad.signature,
    identity,
  );
}
