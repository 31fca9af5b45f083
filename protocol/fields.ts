/** Field checks shared by every guard: each failure is an `INVALID_MESSAGE` naming the field. */
import { CohortError } from "./errors.js";
import { describe } from "./codec.js";

/** A decoded object whose fields are still unknown. */
export type Fields = Record<string, unknown>;

/** Throw `INVALID_MESSAGE` about `what`. */
export function fail(what: string, message: string): never {
  throw new CohortError("INVALID_MESSAGE", `${what}: ${message}`);
}

/** A plain object (not null, an array or a typed array). */
export function record(raw: unknown, what: string): Fields {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw) || ArrayBuffer.isView(raw)) {
    fail(what, `expected an object, got ${describe(raw)}`);
  }
  return raw as Fields;
}

/** An integer field within `[min, max]`. */
export function int(
  o: Fields,
  key: string,
  what: string,
  min: number,
  max = Number.MAX_SAFE_INTEGER,
): number {
  const v = o[key];
  if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max) {
    fail(what, `\`${key}\` must be an integer in [${min}, ${max}], got ${show(v)}`);
  }
  return v;
}

/** A value as shown in an error message. */
export function show(v: unknown): string {
  return typeof v === "number" || typeof v === "boolean" ? String(v) : describe(v);
}
