/**
 * The masked vector on the wire: header words as 32-bit little-endian words, then every body
 * word's low `wordBits` bits, packed back to back (least significant bit first). Masks are
 * added modulo 2^32 and 2^wordBits divides 2^32, so dropping the high bits keeps the sum
 * correct modulo 2^wordBits — all the decoder reads — and a mask's low bits are still uniform.
 */
import { CohortError } from "../../protocol/errors.js";
import type { SecureParams } from "./quantize.js";

/** Bytes of a packed vector of `words` words under `params`. */
export function packedBytes(params: SecureParams, words: number): number {
  const body = words - params.headerWords;
  return 4 * params.headerWords + Math.ceil((body * params.wordBits) / 8);
}

/** `words` as it travels: itself at 32 bits, else packed into `packedBytes` bytes. */
export function packMasked(words: Uint32Array, params: SecureParams): Uint32Array | Uint8Array {
  const bits = params.wordBits;
  if (bits === 32) return words;
  const header = params.headerWords;
  const out = new Uint8Array(packedBytes(params, words.length));
  const view = new DataView(out.buffer);
  for (let i = 0; i < header; i++) view.setUint32(4 * i, words[i]!, true);
  let at = 4 * header;
  // Pending bits, least significant first; fewer than 8 between words, so `acc` stays < 2^24
  // when at most 16 new bits join it.
  let acc = 0;
  let held = 0;
  const lowBits = Math.min(bits, 16);
  const lowMask = 2 ** lowBits - 1;
  const highBits = bits - lowBits;
  for (let i = header; i < words.length; i++) {
    const w = words[i]!;
    acc |= (w & lowMask) << held;
    held += lowBits;
    while (held >= 8) {
      out[at++] = acc & 0xff;
      acc >>>= 8;
      held -= 8;
    }
    if (highBits > 0) {
      acc |= ((w >>> 16) & (2 ** highBits - 1)) << held;
      held += highBits;
      while (held >= 8) {
        out[at++] = acc & 0xff;
        acc >>>= 8;
        held -= 8;
      }
    }
  }
  if (held > 0) out[at] = acc & 0xff;
  return out;
}

/**
 * Add a masked vector as it travelled to `sum` (mod 2^32). Throws `SHAPE_MISMATCH` when its
 * type or length is not the round's (`what` names it in the message).
 */
export function addMasked(
  sum: Uint32Array,
  masked: Uint32Array | Uint8Array,
  params: SecureParams,
  what: string,
): void {
  const bits = params.wordBits;
  if (bits === 32) {
    if (!(masked instanceof Uint32Array) || masked.length !== sum.length) {
      throw new CohortError(
        "SHAPE_MISMATCH",
        `${what}: ${describe(masked)}, expected ${sum.length} 32-bit words`,
      );
    }
    for (let i = 0; i < masked.length; i++) sum[i]! += masked[i]!;
    return;
  }
  const bytes = packedBytes(params, sum.length);
  if (!(masked instanceof Uint8Array) || masked.length !== bytes) {
    throw new CohortError(
      "SHAPE_MISMATCH",
      `${what}: ${describe(masked)}, expected ${bytes} bytes of ${bits}-bit words`,
    );
  }
  const header = params.headerWords;
  const view = new DataView(masked.buffer, masked.byteOffset, masked.byteLength);
  for (let i = 0; i < header; i++) sum[i]! += view.getUint32(4 * i, true);
  let at = 4 * header;
  let acc = 0;
  let held = 0;
  for (let i = header; i < sum.length; i++) {
    // Gather at least `bits` bits; `acc` holds < 8 + 24 = 32 of them in a double-safe number.
    let word = 0;
    let got = 0;
    while (got < bits) {
      if (held === 0) {
        acc = masked[at++]!;
        held = 8;
      }
      const take = Math.min(held, bits - got);
      word += (acc & ((1 << take) - 1)) * 2 ** got;
      acc >>>= take;
      held -= take;
      got += take;
    }
    sum[i]! += word;
  }
}

function describe(masked: Uint32Array | Uint8Array): string {
  return masked instanceof Uint32Array ? `${masked.length} 32-bit words` : `${masked.length} bytes`;
}
