/** IEEE 754 half precision: float32 → binary16 with round-to-nearest-even, and back by table. */

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** Largest finite half: finite values beyond it saturate to ±65504 rather than become ±Infinity. */
export const HALF_MAX = 65504;

/** The binary16 bits of `x`, rounded to nearest, ties to even (NaN stays NaN, ±Infinity stays). */
export function toHalf(x: number): number {
  f32[0] = x;
  const bits = u32[0]!;
  const sign = (bits >>> 16) & 0x8000;
  const abs = bits & 0x7fffffff;
  if (abs > 0x7f800000) return sign | 0x7e00; // NaN
  if (abs === 0x7f800000) return sign | 0x7c00; // Infinity
  if (abs > 0x477fe000) return sign | 0x7bff; // beyond 65504: saturate
  if (abs >= 0x38800000) {
    // Normal: rebias the exponent (127 → 15) and round the 13 dropped mantissa bits to even;
    // a carry out of the mantissa moves into the exponent, as it should.
    return sign | ((abs - 0x38000000 + 0x0fff + ((abs >>> 13) & 1)) >>> 13);
  }
  // Subnormal (or zero): a multiple of 2⁻²⁴, rounded half to even.
  f32[0] = Math.abs(x);
  const scaled = f32[0]! * 16777216;
  let q = Math.floor(scaled);
  const rest = scaled - q;
  if (rest > 0.5 || (rest === 0.5 && (q & 1) === 1)) q++;
  return sign | q;
}

/** Every half's float32 value, by its bits. */
export const HALF_TABLE: Float32Array = (() => {
  const table = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >>> 10) & 0x1f;
    const mant = h & 0x3ff;
    table[h] =
      exp === 0
        ? sign * mant * 2 ** -24
        : exp === 31
          ? mant === 0
            ? sign * Infinity
            : Number.NaN
          : sign * (1 + mant / 1024) * 2 ** (exp - 15);
  }
  return table;
})();

/** `values` as halves. */
export function encodeHalves(values: Float32Array): Uint16Array {
  const out = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = toHalf(values[i]!);
  return out;
}

/** Halves back as float32 values, into `out` from `at`. */
export function decodeHalves(halves: Uint16Array, out: Float32Array, at = 0): void {
  for (let i = 0; i < halves.length; i++) out[at + i] = HALF_TABLE[halves[i]!]!;
}
