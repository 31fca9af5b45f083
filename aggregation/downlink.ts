/**
 * The compressed downlink's maths, shared by the coordinator and every client: which codecs may
 * encode the broadcast model's differences, the model checksum, the per-version seeds, and the
 * one addition that turns a held model and a decoded difference into the next version.
 */
import { CohortError } from "../protocol/errors.js";
import type { CodecRef, UpdateCodec } from "./codec.js";
import { parseCodecSpec, resolveCodec } from "./codecs/index.js";
import { createRng } from "./random.js";

/**
 * Codecs a downlink may use. Dense codecs only: the chain sends every round's whole difference
 * (error feedback lives on the coordinator), so a sparsifier's dropped coordinates would be
 * re-sent next round at best; q4 and q2 give every client a model further from the global one
 * than training noise and are left out until measured.
 */
export const DOWNLINK_CODECS = ["float32", "f16", "q8"] as const;

/**
 * Encoded differences the coordinator keeps: a client whose model is at most this many versions
 * old may get the chain of differences (when it is smaller than the full model).
 */
export const DOWNLINK_WINDOW = 8;

/**
 * The downlink codec of `ref`.
 *
 * @throws CohortError `INVALID_OPTION` for a codec not in {@link DOWNLINK_CODECS} or a bad argument.
 */
export function resolveDownlinkCodec(ref: string | CodecRef): UpdateCodec {
  const name = typeof ref === "string" ? parseCodecSpec(ref).name : ref?.name;
  if (!(DOWNLINK_CODECS as readonly string[]).includes(name)) {
    throw new CohortError(
      "INVALID_OPTION",
      `downlink codec ${String(name)} is not one of ${DOWNLINK_CODECS.join(", ")} ` +
        "(the model's differences are sent dense; README: Update codecs, Downlink)",
    );
  }
  return resolveCodec(ref);
}

/**
 * 32-bit FNV-1a of the weights' float32 bytes (in the platform's byte order, little-endian on
 * every platform tfjs runs on), tensor after tensor: cheap, and enough to notice a client
 * whose base differs from the coordinator's. Integrity against an attacker is the model
 * signature's job, not this.
 */
export function modelChecksum(weights: readonly Float32Array[]): number {
  let h = 0x811c9dc5;
  for (const t of weights) {
    const bytes = new Uint8Array(t.buffer, t.byteOffset, t.byteLength);
    for (let i = 0; i < bytes.length; i++) {
      h ^= bytes[i]!;
      h = Math.imul(h, 0x01000193);
    }
  }
  return h >>> 0;
}

/**
 * The seeds of the difference that makes `version` (its shared rotation, its rounding noise),
 * drawn from the run's seed: a retried or resumed round encodes the same bytes again.
 */
export function downlinkSeeds(
  runSeed: number,
  version: number,
): { seed: number; noiseSeed: number } {
  const rng = createRng((Math.imul(runSeed ^ 0x6a09e667, 0x9e3779b1) + version * 0xc2b2ae35) | 0);
  rng();
  return { seed: Math.floor(rng() * 2 ** 32), noiseSeed: Math.floor(rng() * 2 ** 32) };
}

/** `a − b`, tensor by tensor (float32). */
export function subtractWeights(
  a: readonly Float32Array[],
  b: readonly Float32Array[],
): Float32Array[] {
  return a.map((t, i) => {
    const u = b[i]!;
    const out = new Float32Array(t.length);
    for (let j = 0; j < t.length; j++) out[j] = t[j]! - u[j]!;
    return out;
  });
}

/**
 * `base + diff`, tensor by tensor, rounded to float32 once per value: the coordinator and every
 * client compute the next version with exactly this, so they agree bit for bit.
 */
export function addWeights(
  base: readonly Float32Array[],
  diff: readonly Float32Array[],
): Float32Array[] {
  if (base.length !== diff.length) {
    throw new CohortError(
      "SHAPE_MISMATCH",
      `${diff.length} tensors for a ${base.length}-tensor model`,
    );
  }
  return base.map((t, i) => {
    const d = diff[i]!;
    if (d.length !== t.length) {
      throw new CohortError("SHAPE_MISMATCH", `tensor ${i}: ${d.length} values for ${t.length}`);
    }
    const out = new Float32Array(t.length);
    for (let j = 0; j < t.length; j++) out[j] = t[j]! + d[j]!;
    return out;
  });
}
