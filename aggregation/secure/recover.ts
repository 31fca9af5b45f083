/** Server-side unmasking: rebuild b and s from t shares, strip every mask from the sum, decode the result. */
import { CohortError } from "../../protocol/errors.js";
import { getKeyAgreement } from "../crypto.js";
import type { NeighbourGraph } from "./graph.js";
import type { UnmaskResponse } from "./messages.js";
import type { SecAggPhase } from "./phases.js";
import { applyMasks, type Mask } from "./prg.js";
import { decodeSum, maxQuantizationError, type SecureParams } from "./quantize.js";
import { combineWithBasis, lagrangeAtZero, type ShamirShare } from "./shamir.js";
import { LABELS, pairMaskContext, type RoundId } from "./transcript.js";

/** A client that left the round: dropouts are data. */
export interface SecAggDropout {
  index: number;
  /** The phase whose message never came (or, for `insufficient-neighbours`, was set aside). */
  phase: SecAggPhase;
  reason: "absent" | "insufficient-neighbours";
}

/** The outcome of a completed round. */
export interface SecAggResult {
  round: number;
  /** Σ of the contributors' capped example counts. */
  sumWeights: number;
  /** Σ w·Δ / Σ w, one Float32Array per tensor in the model's layout. */
  weightedMeanDelta: Float32Array[];
  /** Σ w·Δ in float64 (the sum a linear aggregator takes). */
  weightedSum: Float64Array[];
  /** Clients whose input is in the aggregate, ascending. */
  contributors: number[];
  dropouts: SecAggDropout[];
  /**
   * Largest quantization error of any coordinate (see `maxQuantizationError`); with a
   * quantizer, of any rotated coordinate (the L2 error of a chunk of c values is at most √c
   * times it).
   */
  errorBound: number;
  /** With a quantizer: the contributors' mean RMS of their (unclipped) deltas. */
  meanRms?: number;
}

/** What unmasking needs, all of it already checked by the server machine. */
export interface RecoveryInput {
  id: RoundId;
  t: number;
  graph: NeighbourGraph;
  /** Clients whose masked input is in `sum` (U3). */
  survivors: readonly number[];
  /** Clients that completed share-keys but sent no masked input (U2 \ U3). */
  dropped: readonly number[];
  /** Advertised mask public keys by client. */
  sPublicKeys: ReadonlyMap<number, Uint8Array>;
  responses: Iterable<UnmaskResponse>;
  /** Σ of the survivors' masked inputs mod 2^32; unmasked in place. */
  sum: Uint32Array;
  concurrency: number;
}

/** What decoding the result needs besides the unmasking. */
export interface AggregateInput extends RecoveryInput {
  params: SecureParams;
  tensorSizes: readonly number[];
  dropouts: SecAggDropout[];
}

/** Group revealed shares by the client they belong to; share point x = holder index + 1. */
function collect(responses: Iterable<UnmaskResponse>): {
  selfMask: Map<number, ShamirShare[]>;
  maskKey: Map<number, ShamirShare[]>;
} {
  const selfMask = new Map<number, ShamirShare[]>();
  const maskKey = new Map<number, ShamirShare[]>();
  const add = (into: Map<number, ShamirShare[]>, of: number, share: ShamirShare) => {
    const list = into.get(of);
    if (list) list.push(share);
    else into.set(of, [share]);
  };
  for (const r of responses) {
    for (const s of r.selfMaskShares) add(selfMask, s.of, { x: r.index + 1, y: s.share });
    for (const s of r.maskKeyShares) add(maskKey, s.of, { x: r.index + 1, y: s.share });
  }
  return { selfMask, maskKey };
}

/**
 * Rebuild one secret per client from the t lowest-point shares, caching the Lagrange basis per
 * point set (with few dropouts most clients share the same one). Fewer than t: `SECAGG_THRESHOLD`.
 */
function reconstructAll(
  clients: readonly number[],
  shares: ReadonlyMap<number, ShamirShare[]>,
  t: number,
  kind: string,
): Map<number, Uint8Array> {
  const bases = new Map<string, Uint16Array>();
  const out = new Map<number, Uint8Array>();
  for (const c of clients) {
    const available = shares.get(c) ?? [];
    if (available.length < t) {
      throw new CohortError(
        "SECAGG_THRESHOLD",
        `only ${available.length} of the t = ${t} ${kind} shares of client ${c} arrived`,
      );
    }
    const chosen = [...available].sort((a, b) => a.x - b.x).slice(0, t);
    const key = chosen.map((s) => s.x).join(",");
    let basis = bases.get(key);
    if (basis === undefined) {
      basis = lagrangeAtZero(chosen.map((s) => s.x));
      bases.set(key, basis);
    }
    out.set(
      c,
      combineWithBasis(
        basis,
        chosen.map((s) => s.y),
      ),
    );
  }
  return out;
}

/**
 * Remove all masks from `input.sum`: each survivor's self-mask PRG(b_v), and for each dropped
 * client u the pairwise masks its surviving neighbours added, recomputed from the reconstructed
 * s_u (checked against u's advertised key) with the fast key agreement.
 */
export async function removeMasks(input: RecoveryInput): Promise<void> {
  const { id, t, graph, survivors, dropped, sPublicKeys, sum } = input;
  const shares = collect(input.responses);
  const selfMasks = reconstructAll(survivors, shares.selfMask, t, "self-mask");
  const maskKeys = reconstructAll(dropped, shares.maskKey, t, "mask-key");
  const ka = await getKeyAgreement();
  const alive = new Set(survivors);
  const masks: Mask[] = survivors.map((v) => ({ seed: selfMasks.get(v)!, sign: -1 }));
  for (const u of dropped) {
    const secretKey = maskKeys.get(u)!;
    const expected = sPublicKeys.get(u)!;
    const actual = ka.publicKeyOf(secretKey);
    if (!actual.every((b, i) => b === expected[i])) {
      throw new CohortError(
        "ROUND_FAILED",
        `the mask key rebuilt for client ${u} does not match its advertised key: corrupt shares`,
      );
    }
    const partners = graph.neighbours(u).filter((v) => alive.has(v));
    const raw = ka.sharedSecrets(
      secretKey,
      partners.map((v) => sPublicKeys.get(v)!),
    );
    partners.forEach((v, i) => {
      const secret = raw[i];
      if (secret === null || secret === undefined) {
        throw new CohortError("ROUND_FAILED", `client ${v} advertised a low-order mask key`);
      }
      const seed = ka.deriveKey(secret, LABELS.pairwiseMask, pairMaskContext(id, u, v));
      // v added +PRG when v < u and −PRG otherwise; take back exactly that.
      masks.push({ seed, sign: v < u ? -1 : 1 });
    });
  }
  await applyMasks(sum, masks, input.concurrency);
}

/** Unmask `input.sum` and decode it into the round's result. */
export async function recoverAggregate(input: AggregateInput): Promise<SecAggResult> {
  await removeMasks(input);
  const { rmsSum, ...decoded } = decodeSum(input.sum, input.params, input.tensorSizes);
  const contributors = [...input.survivors];
  return {
    round: input.id.round,
    ...decoded,
    ...(rmsSum === undefined ? {} : { meanRms: rmsSum / Math.max(1, contributors.length) }),
    contributors,
    dropouts: input.dropouts,
    errorBound: maxQuantizationError(input.params, {
      contributors: contributors.length,
      sumWeights: decoded.sumWeights,
    }),
  };
}
