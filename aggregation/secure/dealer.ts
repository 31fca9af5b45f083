/** A client's share-keys work: pairwise keys with its neighbours, Shamir shares of b and s, sealed boxes. */
import { CohortError } from "../../protocol/errors.js";
import { getKeyAgreement, open, seal } from "../crypto.js";
import type { AdvertiseKeys, OutgoingBox } from "./messages.js";
import { split } from "./shamir.js";
import {
  LABELS,
  pairMaskContext,
  shareBoxContext,
  SHARE_BYTES,
  type RoundId,
} from "./transcript.js";

/** One holder's shares of one client: of the self-mask seed b and of the mask key s. */
export interface SharePair {
  selfMask: Uint8Array;
  maskKey: Uint8Array;
}

/** What a client keeps per neighbour after share-keys. */
export interface NeighbourLink {
  /** Opens the box that neighbour sealed for this client. */
  receiveKey: Uint8Array;
  /** Seed of the pairwise mask shared with that neighbour. */
  maskSeed: Uint8Array;
}

/** The outcome of dealing. */
export interface Dealt {
  boxes: OutgoingBox[];
  /** The shares this client holds of itself. */
  own: SharePair;
  links: Map<number, NeighbourLink>;
}

/** What dealing needs. */
export interface DealInput {
  id: RoundId;
  index: number;
  t: number;
  cSecretKey: Uint8Array;
  sSecretKey: Uint8Array;
  selfMaskSeed: Uint8Array;
  neighbours: ReadonlyMap<number, AdvertiseKeys>;
}

/**
 * Agree on keys with every neighbour, split b and s among the neighbours and this client
 * (point = index + 1, threshold t), and seal each neighbour's pair under a key bound to
 * (session, round, from, to). Throws `INVALID_MESSAGE` when a neighbour's key is low-order.
 */
export async function dealShares(input: DealInput): Promise<Dealt> {
  const { id, index, t, neighbours } = input;
  const order = [...neighbours.keys()].sort((a, b) => a - b);
  const ka = await getKeyAgreement();
  const cRaw = ka.sharedSecrets(
    input.cSecretKey,
    order.map((v) => neighbours.get(v)!.cPublicKey),
  );
  const sRaw = ka.sharedSecrets(
    input.sSecretKey,
    order.map((v) => neighbours.get(v)!.sPublicKey),
  );
  const bad = order.find((_, i) => cRaw[i] === null || sRaw[i] === null);
  if (bad !== undefined) {
    throw new CohortError("INVALID_MESSAGE", `neighbour ${bad} advertised a low-order key`);
  }
  const holders = [index, ...order].sort((a, b) => a - b);
  const xs = holders.map((h) => h + 1);
  const bShares = split(input.selfMaskSeed, xs, t);
  const sShares = split(input.sSecretKey, xs, t);
  const boxes: OutgoingBox[] = [];
  const links = new Map<number, NeighbourLink>();
  let own: SharePair | null = null;
  for (let h = 0; h < holders.length; h++) {
    const to = holders[h]!;
    const pair = { selfMask: bShares[h]!, maskKey: sShares[h]! };
    if (to === index) {
      own = pair;
      continue;
    }
    const i = order.indexOf(to);
    const c = cRaw[i]!;
    const send = ka.deriveKey(c, LABELS.shareBox, shareBoxContext(id, index, to));
    links.set(to, {
      receiveKey: ka.deriveKey(c, LABELS.shareBox, shareBoxContext(id, to, index)),
      maskSeed: ka.deriveKey(sRaw[i]!, LABELS.pairwiseMask, pairMaskContext(id, index, to)),
    });
    const plaintext = new Uint8Array(2 * SHARE_BYTES);
    plaintext.set(pair.selfMask);
    plaintext.set(pair.maskKey, SHARE_BYTES);
    boxes.push({ to, box: seal(send, plaintext) });
  }
  if (own === null) throw new Error("unreachable: the dealer is one of the holders");
  return { boxes, own, links };
}

/** Open a neighbour's box; `null` when it does not authenticate (tampered, replayed, misrouted). */
export function openBox(receiveKey: Uint8Array, box: Uint8Array): SharePair | null {
  const plaintext = open(receiveKey, box);
  if (plaintext === null || plaintext.length !== 2 * SHARE_BYTES) return null;
  return { selfMask: plaintext.slice(0, SHARE_BYTES), maskKey: plaintext.slice(SHARE_BYTES) };
}
