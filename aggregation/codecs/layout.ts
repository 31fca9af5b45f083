/** What codecs share: the flat layout of a delta and the checks of an untrusted payload's fields. */
import { CohortError } from "../../protocol/errors.js";
import { describe } from "../../protocol/codec.js";
import type { TensorSpec } from "../../protocol/messages.js";
import { sizeOf } from "../weights.js";

/** Values of every tensor of `specs` together. */
export function totalSize(specs: readonly TensorSpec[]): number {
  let n = 0;
  for (const spec of specs) n += sizeOf(spec.shape);
  return n;
}

/** The tensors laid end to end, in order. */
export function flatten(delta: readonly Float32Array[]): Float32Array {
  let n = 0;
  for (const t of delta) n += t.length;
  const flat = new Float32Array(n);
  let at = 0;
  for (const t of delta) {
    flat.set(t, at);
    at += t.length;
  }
  return flat;
}

/** `flat` cut into the tensors of `specs` (views, no copy). */
export function unflatten(flat: Float32Array, specs: readonly TensorSpec[]): Float32Array[] {
  const out: Float32Array[] = [];
  let at = 0;
  for (const spec of specs) {
    const n = sizeOf(spec.shape);
    out.push(flat.subarray(at, at + n));
    at += n;
  }
  return out;
}

/** A decoded payload's fields, still unknown. */
export type PayloadFields = Record<string, unknown>;

/** The payload as an object of fields (`INVALID_MESSAGE` otherwise). */
export function payloadObject(raw: unknown, codec: string): PayloadFields {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw) || ArrayBuffer.isView(raw)) {
    throw new CohortError(
      "INVALID_MESSAGE",
      `${codec} update: expected an object, got ${describe(raw)}`,
    );
  }
  return raw as PayloadFields;
}

type TypedCtor<T> = { new (length: number): T; readonly name: string };

/** A typed-array field of exactly `length` elements (`INVALID_MESSAGE`, `SHAPE_MISMATCH`). */
export function typedField<T extends ArrayLike<number>>(
  o: PayloadFields,
  key: string,
  ctor: TypedCtor<T>,
  length: number,
  codec: string,
): T {
  const v = o[key];
  if (!(v instanceof (ctor as unknown as abstract new (...args: never[]) => unknown))) {
    throw new CohortError(
      "INVALID_MESSAGE",
      `${codec} update: \`${key}\` must be a ${ctor.name}, got ${describe(v)}`,
    );
  }
  const arr = v as T;
  if (arr.length !== length) {
    throw new CohortError(
      "SHAPE_MISMATCH",
      `${codec} update: \`${key}\` has ${arr.length} elements; the model needs ${length}`,
    );
  }
  return arr;
}

/** A number field that must equal what the task says (`MALFORMED_PAYLOAD` otherwise). */
export function fixedField(o: PayloadFields, key: string, want: number, codec: string): void {
  if (o[key] !== want) {
    throw new CohortError(
      "MALFORMED_PAYLOAD",
      `${codec} update: \`${key}\` must be ${want}, got ${JSON.stringify(o[key]) ?? "nothing"}`,
    );
  }
}
