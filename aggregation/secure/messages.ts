/** SecAgg+ wire messages, one per phase and direction, and the guards that turn `unknown` into them. */
import { describe } from "../../protocol/codec.js";
import { fail, int, record, show, type Fields } from "../../protocol/fields.js";
import { KEY_BYTES, SIGNATURE_BYTES } from "../crypto.js";
import { MAX_COHORT, type DistributedNoise, type SecureQuantizer } from "./quantize.js";
import { SHARE_BOX_BYTES, SHARE_BYTES } from "./transcript.js";

/** Public parameters of one round, sent by the server to every cohort member with its index. */
export interface SecAggSetup {
  /** Run identifier, bound into signatures and keys so nothing carries over between runs. */
  session: string;
  round: number;
  /** Cohort size; clients are indices 0 … n − 1. */
  n: number;
  /** Neighbour degree (n − 1: original SecAgg). */
  k: number;
  /** Shamir threshold. */
  t: number;
  /** Public seed of the neighbour graph. */
  graphSeed: number;
  /** Delta coordinates are clipped to ±clip. */
  clip: number;
  /** FedAvg weights are capped at this many examples. */
  maxWeight: number;
  /** Values per tensor, in `model.getWeights()` order. */
  tensorSizes: number[];
  /**
   * Whether members sign the set of survivors before unmasking (Bonawitz et al.'s consistency
   * check), so the server cannot tell members different stories. Set where members have
   * identities. @default false
   */
  consistency?: boolean;
  /**
   * Distributed DP: members clip to L2 norm `dp.clip`, add their share of Skellam noise in the
   * integer domain, and refuse to unmask fewer than `dp.minContributors` survivors.
   * @default undefined (no noise from members)
   */
  dp?: DistributedNoise;
  /**
   * The task's quantizing codec in its linear form (rotation with the round's seed, one shared
   * scale from `clip`): masked words then take `bits + log₂ n` bits. @default undefined
   * (32-bit fixed point of the unrotated delta)
   */
  quantizer?: SecureQuantizer;
}

/**
 * Who a member is, as the server relays it with the member's keys: its Ed25519 identity key and
 * the join token that admitted it (null where the key is on a list). Clients that trust an
 * issuer (or hold a list) check it themselves: the server cannot invent members.
 */
export interface MemberCredential {
  identityKey: Uint8Array;
  token: { expiresAt: number; signature: Uint8Array } | null;
}

/** Phase advertise-keys, client → server (and relayed to its neighbours). */
export interface AdvertiseKeys {
  round: number;
  index: number;
  /** X25519 key for the share boxes. */
  cPublicKey: Uint8Array;
  /** X25519 key for the pairwise masks. */
  sPublicKey: Uint8Array;
  /** Ed25519 signature of the advertise transcript, or null when clients have no identities. */
  signature: Uint8Array | null;
  /** The member's credential, attached by the server when it relays the keys; null otherwise. */
  credential?: MemberCredential | null;
}

/** Phase share-keys, server → client `index`: its neighbours' advertisements. */
export interface NeighbourKeys {
  round: number;
  index: number;
  neighbours: AdvertiseKeys[];
}

/** A sealed share pair addressed `to` a neighbour. */
export interface OutgoingBox {
  to: number;
  box: Uint8Array;
}

/** Phase share-keys, client → server: one sealed share pair per neighbour. */
export interface ShareKeys {
  round: number;
  index: number;
  boxes: OutgoingBox[];
}

/** A sealed share pair `from` a neighbour. */
export interface IncomingBox {
  from: number;
  box: Uint8Array;
}

/** Phase collect-masked, server → client `index`: the boxes of the neighbours still in. */
export interface MaskRequest {
  round: number;
  index: number;
  boxes: IncomingBox[];
}

/**
 * Phase collect-masked, client → server: `[w, w·Δ]` plus masks, mod 2^32 — 32-bit words, or,
 * in a round with a quantizer, packed into its word width (`packing.ts`).
 */
export interface MaskedInput {
  round: number;
  index: number;
  masked: Uint32Array | Uint8Array;
}

/** Phase consistency, server → client `index`: every member whose masked input arrived. */
export interface ConsistencyRequest {
  round: number;
  index: number;
  survivors: number[];
}

/** Phase consistency, client → server: its signature of the survivors it was told of. */
export interface ConsistencyAttestation {
  round: number;
  index: number;
  signature: Uint8Array;
}

/** Phase unmask, server → client `index`: whose self-mask and whose mask-key shares to reveal. */
export interface UnmaskRequest {
  round: number;
  index: number;
  /** Clients whose masked input arrived: reveal their self-mask (b) shares. */
  survivors: number[];
  /** Neighbours that dropped after share-keys: reveal their mask-key (s) shares. */
  dropped: number[];
  /** In rounds with the consistency check: the neighbours' (and its own) signatures of the survivors. */
  attestations?: { index: number; signature: Uint8Array }[];
}

/** One revealed share `of` a client. */
export interface RevealedShare {
  of: number;
  share: Uint8Array;
}

/** Phase unmask, client → server. */
export interface UnmaskResponse {
  round: number;
  index: number;
  selfMaskShares: RevealedShare[];
  maskKeyShares: RevealedShare[];
}

/** Most tensors a setup may describe; most values in one masked vector. */
const MAX_TENSORS = 4096;
const MAX_VECTOR = 2 ** 28;
const MAX_SESSION = 256;

function bytes(o: Fields, key: string, what: string, length: number): Uint8Array {
  const v = o[key];
  if (!(v instanceof Uint8Array) || v.length !== length) {
    fail(what, `\`${key}\` must be ${length} bytes, got ${describe(v)}`);
  }
  return v;
}

function list(o: Fields, key: string, what: string, max = MAX_COHORT): unknown[] {
  const v = o[key];
  if (!Array.isArray(v) || v.length > max) {
    fail(what, `\`${key}\` must be an array of at most ${max} items, got ${describe(v)}`);
  }
  return v;
}

function indices(o: Fields, key: string, what: string): number[] {
  return list(o, key, what).map((v, i) =>
    int({ v }, "v", `${what} \`${key}[${i}]\``, 0, MAX_COHORT - 1),
  );
}

const round = (o: Fields, what: string) => int(o, "round", what, 0, Number.MAX_SAFE_INTEGER);
const index = (o: Fields, key: string, what: string) => int(o, key, what, 0, MAX_COHORT - 1);

/** Validate a decoded `SecAggSetup` (structure and ranges; the machines check consistency). */
export function parseSecAggSetup(raw: unknown): SecAggSetup {
  const what = "secagg setup";
  const o = record(raw, what);
  const session = o.session;
  if (typeof session !== "string" || session.length > MAX_SESSION) {
    fail(what, `\`session\` must be a string of at most ${MAX_SESSION} chars`);
  }
  const n = int(o, "n", what, 2, MAX_COHORT);
  const k = int(o, "k", what, 1, n - 1);
  const clip = o.clip;
  if (typeof clip !== "number" || !Number.isFinite(clip) || clip <= 0) {
    fail(what, `\`clip\` must be a finite positive number, got ${show(clip)}`);
  }
  const tensorSizes = list(o, "tensorSizes", what, MAX_TENSORS).map((v, i) =>
    int({ v }, "v", `${what} \`tensorSizes[${i}]\``, 0, MAX_VECTOR),
  );
  if (tensorSizes.reduce((a, b) => a + b, 0) >= MAX_VECTOR) fail(what, "the model is too large");
  const t = int(o, "t", what, 1, n);
  let dp: DistributedNoise | undefined;
  if (o.dp !== undefined && o.dp !== null) {
    const d = record(o.dp, `${what} dp`);
    const number = (key: "clip" | "noise", positive: boolean) => {
      const v = d[key];
      if (typeof v !== "number" || !Number.isFinite(v) || v < 0 || (positive && v === 0)) {
        fail(
          what,
          `\`dp.${key}\` must be a finite number ${positive ? "> 0" : "≥ 0"}, got ${show(v)}`,
        );
      }
      return v;
    };
    dp = {
      clip: number("clip", true),
      noise: number("noise", false),
      minContributors: int(d, "minContributors", `${what} dp`, t, n),
    };
  }
  return {
    session,
    round: round(o, what),
    n,
    k,
    t,
    graphSeed: int(o, "graphSeed", what, 0, 0xffffffff),
    clip,
    maxWeight: int(o, "maxWeight", what, 1, 2 ** 31 - 1),
    tensorSizes,
    ...(o.consistency === true ? { consistency: true } : {}),
    ...(dp === undefined ? {} : { dp }),
    ...(o.quantizer === undefined || o.quantizer === null
      ? {}
      : { quantizer: parseQuantizer(o.quantizer, `${what} quantizer`) }),
  };
}

function parseQuantizer(raw: unknown, what: string): SecureQuantizer {
  const q = record(raw, what);
  return {
    bits: int(q, "bits", what, 2, 32),
    chunk: int(q, "chunk", what, 1, MAX_VECTOR),
    seed: int(q, "seed", what, 0, 0xffffffff),
  };
}

/** Validate a decoded `AdvertiseKeys`. */
export function parseAdvertiseKeys(raw: unknown, what = "advertise-keys"): AdvertiseKeys {
  const o = record(raw, what);
  const signature = o.signature === null || o.signature === undefined ? null : o.signature;
  return {
    round: round(o, what),
    index: index(o, "index", what),
    cPublicKey: bytes(o, "cPublicKey", what, KEY_BYTES),
    sPublicKey: bytes(o, "sPublicKey", what, KEY_BYTES),
    signature: signature === null ? null : bytes(o, "signature", what, SIGNATURE_BYTES),
    ...(o.credential === null || o.credential === undefined
      ? {}
      : { credential: parseCredential(o.credential, `${what} credential`) }),
  };
}

function parseCredential(raw: unknown, what: string): MemberCredential {
  const o = record(raw, what);
  const token = o.token === null || o.token === undefined ? null : record(o.token, `${what} token`);
  const expiresAt = token?.expiresAt;
  if (token !== null && (typeof expiresAt !== "number" || !Number.isFinite(expiresAt))) {
    fail(what, "`token.expiresAt` must be a finite number");
  }
  return {
    identityKey: bytes(o, "identityKey", what, KEY_BYTES),
    token:
      token === null
        ? null
        : {
            expiresAt: expiresAt as number,
            signature: bytes(token, "signature", `${what} token`, SIGNATURE_BYTES),
          },
  };
}

/** Validate a decoded `ConsistencyRequest`. */
export function parseConsistencyRequest(raw: unknown): ConsistencyRequest {
  const what = "consistency request";
  const o = record(raw, what);
  return {
    round: round(o, what),
    index: index(o, "index", what),
    survivors: indices(o, "survivors", what),
  };
}

/** Validate a decoded `ConsistencyAttestation`. */
export function parseConsistencyAttestation(raw: unknown): ConsistencyAttestation {
  const what = "consistency attestation";
  const o = record(raw, what);
  return {
    round: round(o, what),
    index: index(o, "index", what),
    signature: bytes(o, "signature", what, SIGNATURE_BYTES),
  };
}

/** Validate a decoded `NeighbourKeys`. */
export function parseNeighbourKeys(raw: unknown): NeighbourKeys {
  const what = "neighbour-keys";
  const o = record(raw, what);
  return {
    round: round(o, what),
    index: index(o, "index", what),
    neighbours: list(o, "neighbours", what).map((v, i) =>
      parseAdvertiseKeys(v, `${what} neighbour ${i}`),
    ),
  };
}

function boxes<K extends "to" | "from">(
  o: Fields,
  what: string,
  key: K,
): ({ box: Uint8Array } & Record<K, number>)[] {
  return list(o, "boxes", what).map((v, i) => {
    const b = record(v, `${what} box ${i}`);
    return {
      [key]: index(b, key, `${what} box ${i}`),
      box: bytes(b, "box", `${what} box ${i}`, SHARE_BOX_BYTES),
    } as { box: Uint8Array } & Record<K, number>;
  });
}

/** Validate a decoded `ShareKeys`. */
export function parseShareKeys(raw: unknown): ShareKeys {
  const what = "share-keys";
  const o = record(raw, what);
  return { round: round(o, what), index: index(o, "index", what), boxes: boxes(o, what, "to") };
}

/** Validate a decoded `MaskRequest`. */
export function parseMaskRequest(raw: unknown): MaskRequest {
  const what = "mask request";
  const o = record(raw, what);
  return { round: round(o, what), index: index(o, "index", what), boxes: boxes(o, what, "from") };
}

/** Validate a decoded `MaskedInput` (its length is checked against the round by the server). */
export function parseMaskedInput(raw: unknown): MaskedInput {
  const what = "masked input";
  const o = record(raw, what);
  const masked = o.masked;
  if (
    !(masked instanceof Uint32Array || masked instanceof Uint8Array) ||
    masked.byteLength > 4 * MAX_VECTOR
  ) {
    fail(what, `\`masked\` must be a Uint32Array or packed bytes, got ${describe(masked)}`);
  }
  return { round: round(o, what), index: index(o, "index", what), masked };
}

/** Validate a decoded `UnmaskRequest`. */
export function parseUnmaskRequest(raw: unknown): UnmaskRequest {
  const what = "unmask request";
  const o = record(raw, what);
  return {
    round: round(o, what),
    index: index(o, "index", what),
    survivors: indices(o, "survivors", what),
    dropped: indices(o, "dropped", what),
    ...(o.attestations === undefined
      ? {}
      : {
          attestations: list(o, "attestations", what).map((v, i) => {
            const a = record(v, `${what} attestation ${i}`);
            return {
              index: index(a, "index", `${what} attestation ${i}`),
              signature: bytes(a, "signature", `${what} attestation ${i}`, SIGNATURE_BYTES),
            };
          }),
        }),
  };
}

function revealed(o: Fields, key: string, what: string): RevealedShare[] {
  return list(o, key, what).map((v, i) => {
    const r = record(v, `${what} \`${key}[${i}]\``);
    return {
      of: index(r, "of", `${what} \`${key}[${i}]\``),
      share: bytes(r, "share", `${what} \`${key}[${i}]\``, SHARE_BYTES),
    };
  });
}

/** Validate a decoded `UnmaskResponse`. */
export function parseUnmaskResponse(raw: unknown): UnmaskResponse {
  const what = "unmask response";
  const o = record(raw, what);
  return {
    round: round(o, what),
    index: index(o, "index", what),
    selfMaskShares: revealed(o, "selfMaskShares", what),
    maskKeyShares: revealed(o, "maskKeyShares", what),
  };
}
