/** The msgpack codec for binary messages: typed arrays travel as typed arrays, decoding yields `unknown`. */
import { Packr } from "msgpackr";
import { CohortError } from "./errors.js";

// `moreTypes` keeps Float32Array a Float32Array (the default decodes it as an unaligned Buffer);
// records are off so any msgpack peer can read our messages.
const packr = new Packr({ moreTypes: true, useRecords: false });

/** Encode a message to msgpack bytes. */
export function encode(message: unknown): Uint8Array {
  return packr.pack(message);
}

/**
 * Decode msgpack bytes. The result is `unknown`: only a guard turns it into a type.
 * Malformed, truncated or non-binary input throws `CohortError("MALFORMED_PAYLOAD")`.
 */
export function decode(bytes: unknown): unknown {
  const view = toBytes(bytes);
  if (view === null) {
    throw new CohortError("MALFORMED_PAYLOAD", `expected binary msgpack, got ${describe(bytes)}`);
  }
  if (view.byteLength === 0) throw new CohortError("MALFORMED_PAYLOAD", "empty payload");
  try {
    return packr.unpack(view);
  } catch (cause) {
    const reason = cause instanceof Error ? cause.message : String(cause);
    throw new CohortError("MALFORMED_PAYLOAD", `undecodable msgpack: ${reason}`, { cause });
  }
}

/** Byte length of a binary payload, or -1 when the value is not binary. */
export function byteLengthOf(bytes: unknown): number {
  return toBytes(bytes)?.byteLength ?? -1;
}

function toBytes(value: unknown): Uint8Array | null {
  if (value instanceof Uint8Array) return value; // includes Node's Buffer
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  return null;
}

/** A short description of a value's type for error messages. */
export function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return `array(${value.length})`;
  if (ArrayBuffer.isView(value)) return `${value.constructor.name}(${value.byteLength} bytes)`;
  return typeof value;
}
