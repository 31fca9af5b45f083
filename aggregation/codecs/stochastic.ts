/**
 * `q8`, `q4`, `q2`: stochastic quantization to b bits after the round's shared random rotation
 * (`rotation.ts`), with one float32 scale per chunk. In the rotated domain each value y of a
 * chunk with scale s = max|y| is rounded at random to one of the 2^b levels −s + k·2s/(2^b − 1),
 * up with probability equal to the distance from the level below, so E[ŷ] = y: the codec is
 * unbiased, and averaging many clients' updates averages the rounding noise away
 * (Suresh et al. 2017, "Distributed mean estimation with limited communication").
 */
import { CohortError } from "../../protocol/errors.js";
import type { TensorSpec } from "../../protocol/messages.js";
import type { UpdateCodec } from "../codec.js";
import { fixedField, flatten, payloadObject, totalSize, typedField, unflatten } from "./layout.js";
import { chunksOf, rotateBorrowed, unrotate, type Chunks } from "./rotation.js";
import type { CodecDefinition } from "./registry.js";

/** Parameters of the quantizing codecs. */
export interface QuantizedParams extends Record<string, number> {
  /** Values per rotated chunk (a power of two); each chunk carries one float32 scale. */
  chunk: number;
}

/** The default chunk: 1,024 values, so a scale costs 4 bytes per 1,024 codes. */
export const DEFAULT_CHUNK = 1024;
const MIN_CHUNK = 16;
const MAX_CHUNK = 1 << 20;

function checkChunk(name: string, chunk: number): void {
  if (
    !Number.isInteger(chunk) ||
    chunk < MIN_CHUNK ||
    chunk > MAX_CHUNK ||
    (chunk & (chunk - 1)) !== 0
  ) {
    throw new CohortError(
      "INVALID_OPTION",
      `codec ${name}: chunk must be a power of two in [${MIN_CHUNK}, ${MAX_CHUNK}], got ${chunk}`,
    );
  }
}

/** Bytes of `padded` codes at `bits` each. */
function codeBytes(padded: number, bits: number): number {
  return Math.ceil((padded * bits) / 8);
}

/** Quantize the rotated chunks of `y`: their scales and packed codes. */
function quantize(
  y: Float32Array,
  chunks: Chunks,
  bits: number,
  noiseSeed: number,
): { scales: Float32Array; codes: Uint8Array } {
  const levels = (1 << bits) - 1;
  const scales = new Float32Array(chunks.count);
  const codes = new Uint8Array(codeBytes(chunks.padded, bits));
  const perByte = 8 / bits;
  // xorshift32: the client's own randomness for the rounding (never zero).
  let r = noiseSeed >>> 0 || 0x9e3779b9;
  for (let c = 0; c < chunks.count; c++) {
    const at = c * chunks.size;
    const end = at + (c === chunks.count - 1 ? chunks.lastSize : chunks.size);
    let s = 0;
    for (let i = at; i < end; i++) {
      const a = Math.abs(y[i]!);
      if (a > s) s = a;
    }
    scales[c] = s;
    if (s === 0) continue; // every code decodes to 0 when the scale is 0
    const toUnits = levels / (2 * s);
    // A byte at a time: chunks hold a multiple of 4 values, but for a last one of 1 or 2 (whose
    // missing values read as undefined and code 0). Each value goes to floor(u + U), U uniform
    // in [0, 1) — up with probability equal to u's fraction — held to the top level (u can
    // pass it by a rounding error).
    for (let i = at; i < end; i += perByte) {
      let byte = 0;
      for (let k = 0; k < perByte; k++) {
        r ^= r << 13;
        r ^= r >>> 17;
        r ^= r << 5;
        let q = ((y[i + k]! + s) * toUnits + (r >>> 0) * 2.3283064365386963e-10) | 0;
        if (q > levels) q = levels;
        byte |= q << (k * bits);
      }
      codes[(i * bits) >>> 3] = byte;
    }
  }
  return { scales, codes };
}

/** The rotated values the codes stand for. */
function dequantize(
  scales: Float32Array,
  codes: Uint8Array,
  chunks: Chunks,
  bits: number,
): Float32Array {
  const levels = (1 << bits) - 1;
  const perByte = 8 / bits;
  const y = new Float32Array(chunks.padded);
  // A chunk's levels, looked up a byte at a time (a last chunk of 1 or 2 values writes past
  // the vector's end, which a typed array ignores).
  const table = new Float64Array(levels + 1);
  for (let c = 0; c < chunks.count; c++) {
    const at = c * chunks.size;
    const end = at + (c === chunks.count - 1 ? chunks.lastSize : chunks.size);
    const s = scales[c]!;
    const step = (2 * s) / levels;
    for (let q = 0; q <= levels; q++) table[q] = q * step - s;
    for (let i = at; i < end; i += perByte) {
      let byte = codes[(i * bits) >>> 3]!;
      for (let k = 0; k < perByte; k++) {
        y[i + k] = table[byte & levels]!;
        byte >>>= bits;
      }
    }
  }
  return y;
}

function quantizer(bits: 8 | 4 | 2): CodecDefinition<QuantizedParams> {
  const name = `q${bits}`;
  return {
    name,
    summary: `stochastic ${bits}-bit after a shared random rotation, a scale per chunk, unbiased, ≈${Math.round(32 / bits)}×; secure rounds: one shared scale, ${bits} + log₂ n bits a word`,
    linear: true,
    defaults: { chunk: DEFAULT_CHUNK },
    argument: {
      placeholder: "CHUNK",
      parse: (arg) => ({ chunk: Number(arg) }),
      format: (p) => (p.chunk === DEFAULT_CHUNK ? null : String(p.chunk)),
    },
    check: (p) => checkChunk(name, p.chunk),
    create: (params, label): UpdateCodec => ({
      name,
      params,
      label,
      // Plain rounds: each client picks its own scales. Secure rounds: the linear form, one
      // scale for the cohort, so the codes add.
      linear: true,
      secure: { bits, chunk: params.chunk },
      bound:
        `unbiased (E[x̂] = x); per chunk of n values ‖x̂ − x‖₂ ≤ 2s·√n/${(1 << bits) - 1}, ` +
        "s the chunk's largest rotated |value|",
      encode(delta, ctx) {
        const flat = flatten(delta);
        const chunks = chunksOf(flat.length, params.chunk);
        const y = rotateBorrowed(flat, chunks, ctx.seed);
        return { bits, chunk: params.chunk, ...quantize(y, chunks, bits, ctx.noiseSeed) };
      },
      decode(payload: unknown, specs: readonly TensorSpec[], ctx) {
        const o = payloadObject(payload, name);
        fixedField(o, "bits", bits, name);
        fixedField(o, "chunk", params.chunk, name);
        const chunks = chunksOf(totalSize(specs), params.chunk);
        const scales = typedField(o, "scales", Float32Array, chunks.count, name);
        for (let c = 0; c < scales.length; c++) {
          const s = scales[c]!;
          if (!Number.isFinite(s)) {
            throw new CohortError("NON_FINITE", `${name} update: scale ${c} is ${s}`);
          }
          if (s < 0) {
            throw new CohortError(
              "MALFORMED_PAYLOAD",
              `${name} update: scale ${c} is negative (${s})`,
            );
          }
        }
        const codes = typedField(o, "codes", Uint8Array, codeBytes(chunks.padded, bits), name);
        const y = dequantize(scales, codes, chunks, bits);
        return unflatten(unrotate(y, chunks, ctx.seed), specs);
      },
    }),
  };
}

export const q8 = quantizer(8);
export const q4 = quantizer(4);
export const q2 = quantizer(2);
