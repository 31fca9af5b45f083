/**
 * `topk:FRACTION[:f16]`: top-k sparsification with client-side error feedback. A client sends
 * the k = ⌈FRACTION·n⌉ coordinates of largest magnitude (sorted indices and their values, as
 * float32 or half precision) and keeps what it left out: the next round it sends the top k of
 * its new delta plus that residual (Stich et al. 2018, "Sparsified SGD with memory";
 * Lin et al. 2018, "Deep gradient compression"). Biased within a round, so plain rounds only.
 */
import { CohortError } from "../../protocol/errors.js";
import type { TensorSpec } from "../../protocol/messages.js";
import type { UpdateCodec } from "../codec.js";
import { HALF_TABLE, toHalf } from "./half.js";
import { fixedField, flatten, payloadObject, totalSize, typedField, unflatten } from "./layout.js";
import { numberArg, type CodecDefinition } from "./registry.js";

/** Parameters of `topk`. */
export interface TopKParams extends Record<string, number | string> {
  /** Share of the coordinates sent each round, in (0, 1]. */
  fraction: number;
  /** How the kept values travel: `f32` (exact) or `f16` (half the bytes, relative error 2⁻¹¹). */
  values: "f32" | "f16";
}

/** Coordinates sent for `n` values at `fraction`. */
export function keptCount(n: number, fraction: number): number {
  return Math.min(n, Math.max(1, Math.ceil(fraction * n)));
}

/** The k-th largest of `a` (1-based), reordering `a` (quickselect, Hoare partition). */
function kthLargest(a: Float32Array, k: number): number {
  let lo = 0;
  let hi = a.length - 1;
  const want = k - 1;
  while (lo < hi) {
    const pivot = a[(lo + hi) >>> 1]!;
    let i = lo;
    let j = hi;
    while (i <= j) {
      while (a[i]! > pivot) i++;
      while (a[j]! < pivot) j--;
      if (i <= j) {
        const t = a[i]!;
        a[i] = a[j]!;
        a[j] = t;
        i++;
        j--;
      }
    }
    if (want <= j) hi = j;
    else if (want >= i) lo = i;
    else return a[want]!;
  }
  return a[want]!;
}

/** Sorted indices of the `k` values of largest magnitude (ties broken by lower index). */
export function topIndices(e: Float32Array, k: number): Uint32Array {
  return fromCandidates(e, k) ?? exactTop(e, k);
}

/** The k largest by a quickselect over every magnitude. */
function exactTop(e: Float32Array, k: number): Uint32Array {
  const mags = new Float32Array(e.length);
  for (let i = 0; i < e.length; i++) mags[i] = Math.abs(e[i]!);
  return pick(e, k, kthLargest(mags, k), null);
}

/**
 * The k largest found among candidates: a strided sample of the magnitudes gives a threshold
 * that about twice k values pass; the exact k-th largest is then selected among those alone.
 * Null where the sample misjudged (fewer than k or far more pass): the exact path decides.
 */
function fromCandidates(e: Float32Array, k: number): Uint32Array | null {
  const n = e.length;
  const m = 16_384;
  if (n < 8 * m || k > n / 8) return null;
  const sample = new Float32Array(m);
  for (let j = 0; j < m; j++) sample[j] = Math.abs(e[Math.floor((j * n) / m)]!);
  // Aim at 2k passing (and 3 standard deviations more, for the sample's error).
  const rank = Math.min(m, Math.ceil((2 * k * m) / n + 3 * Math.sqrt((2 * k * m) / n) + 1));
  const low = kthLargest(sample, rank);
  const cap = 8 * k + 1024;
  const candidates = new Uint32Array(cap);
  let count = 0;
  for (let i = 0; i < n; i++) {
    if (Math.abs(e[i]!) >= low) {
      if (count === cap) return null;
      candidates[count++] = i;
    }
  }
  if (count < k) return null;
  const mags = new Float32Array(count);
  for (let j = 0; j < count; j++) mags[j] = Math.abs(e[candidates[j]!]!);
  return pick(e, k, kthLargest(mags, k), candidates.subarray(0, count));
}

/** The k indices (of `among`, or of all, in order) whose magnitude beats `threshold`, ties first come. */
function pick(
  e: Float32Array,
  k: number,
  threshold: number,
  among: Uint32Array | null,
): Uint32Array {
  const size = among === null ? e.length : among.length;
  const at = (j: number) => (among === null ? j : among[j]!);
  let above = 0;
  for (let j = 0; j < size; j++) if (Math.abs(e[at(j)]!) > threshold) above++;
  let ties = k - above;
  const out = new Uint32Array(k);
  let n = 0;
  for (let j = 0; j < size && n < k; j++) {
    const i = at(j);
    const v = Math.abs(e[i]!);
    if (v > threshold || (v === threshold && ties-- > 0)) out[n++] = i;
  }
  return out;
}

function parseArg(arg: string): Partial<TopKParams> {
  const [fraction = "", values, ...rest] = arg.split(":");
  if (rest.length > 0 || (values !== undefined && values !== "f32" && values !== "f16")) {
    throw new CohortError(
      "INVALID_OPTION",
      `codec topk takes FRACTION[:f32|f16], got "topk:${arg}"`,
    );
  }
  return {
    fraction: numberArg("topk", "fraction", fraction, 0, 1),
    ...(values === undefined ? {} : { values }),
  };
}

export const topk: CodecDefinition<TopKParams> = {
  name: "topk",
  summary: "the largest FRACTION of the coordinates, with client-side error feedback",
  linear: false,
  defaults: { fraction: 0.01, values: "f32" },
  argument: {
    placeholder: "FRACTION[:f16]",
    parse: parseArg,
    format: (p) => `${p.fraction}${p.values === "f16" ? ":f16" : ""}`,
  },
  check(p) {
    if (!(p.fraction > 0 && p.fraction <= 1)) {
      throw new CohortError(
        "INVALID_OPTION",
        `codec topk: fraction must be in (0, 1], got ${p.fraction}`,
      );
    }
    if (p.values !== "f32" && p.values !== "f16") {
      throw new CohortError(
        "INVALID_OPTION",
        `codec topk: values must be f32 or f16, got ${String(p.values)}`,
      );
    }
  },
  create: (params, label): UpdateCodec => {
    const half = params.values === "f16";
    return {
      name: "topk",
      params,
      label,
      linear: false,
      bound:
        "the k kept coordinates exact (f32) or within 2⁻¹¹ relative (f16), the rest 0; " +
        "with error feedback what is left out is sent in later rounds",
      encode(delta, ctx) {
        const e = flatten(delta);
        const residual = ctx.memory?.residual;
        if (residual !== null && residual !== undefined && residual.length === e.length) {
          for (let i = 0; i < e.length; i++) e[i] = e[i]! + residual[i]!;
        }
        const k = keptCount(e.length, params.fraction);
        const indices = topIndices(e, k);
        const values = half ? new Uint16Array(k) : new Float32Array(k);
        for (let j = 0; j < k; j++) {
          const i = indices[j]!;
          values[j] = half ? toHalf(e[i]!) : e[i]!;
          // What the coordinator gets is subtracted; the rest stays for later rounds.
          e[i] = half ? e[i]! - HALF_TABLE[values[j]!]! : 0;
        }
        if (ctx.memory !== undefined) ctx.memory.residual = e;
        return { k, indices, values };
      },
      decode(payload: unknown, specs: readonly TensorSpec[]) {
        const o = payloadObject(payload, "topk");
        const n = totalSize(specs);
        const k = keptCount(n, params.fraction);
        fixedField(o, "k", k, "topk");
        const indices = typedField(o, "indices", Uint32Array, k, "topk");
        const values = half
          ? typedField(o, "values", Uint16Array, k, "topk")
          : typedField(o, "values", Float32Array, k, "topk");
        const flat = new Float32Array(n);
        let last = -1;
        for (let j = 0; j < k; j++) {
          const i = indices[j]!;
          if (i >= n) {
            throw new CohortError(
              "SHAPE_MISMATCH",
              `topk update: index ${i} is beyond the model's ${n} values`,
            );
          }
          if (i <= last) {
            throw new CohortError(
              "MALFORMED_PAYLOAD",
              `topk update: indices must be strictly increasing; ${i} follows ${last}${i === last ? " (repeated)" : ""}`,
            );
          }
          last = i;
          flat[i] = half ? HALF_TABLE[values[j]!]! : values[j]!;
        }
        return unflatten(flat, specs);
      },
    };
  },
};
