/** The one error class of Cohort: every failure carries a stable machine-readable code. */

/** Every error code Cohort emits, on the wire and in exceptions. */
export const ERROR_CODES = [
  "PROTOCOL_VERSION",
  "MALFORMED_PAYLOAD",
  "PAYLOAD_TOO_LARGE",
  "INVALID_MESSAGE",
  "SHAPE_MISMATCH",
  "NON_FINITE",
  "BAD_NUM_EXAMPLES",
  "STALE_ROUND",
  "FUTURE_ROUND",
  "NOT_IN_COHORT",
  "DUPLICATE_UPDATE",
  "NO_ACTIVE_ROUND",
  "UNKNOWN_CLIENT",
  "ROUND_FAILED",
  "INVALID_OPTION",
  "INVALID_MODEL",
  "DATASET_NOT_FOUND",
  "DATASET_INVALID",
  "BACKEND_UNAVAILABLE",
  "CONNECTION_FAILED",
  "UNAUTHORIZED",
  "BAD_SIGNATURE",
  "MODEL_SIGNATURE",
  "RATE_LIMITED",
  "CLIENT_DISCONNECTED",
  "DEADLINE_EXCEEDED",
  "NO_EVAL_DATA",
  "TIMEOUT",
  "CLOSED",
  "SECAGG_PHASE",
  "SECAGG_DUPLICATE",
  "SECAGG_THRESHOLD",
  "SECAGG_BOTH_SHARES",
  "SECAGG_SIGNATURE",
  "SECAGG_DECRYPT",
  "SECAGG_UNSAFE",
  "SECURE_REQUIRED",
  "BAD_KEY",
  "MODEL_TOO_LARGE",
  "BASE_MISMATCH",
  "STALE_UPDATE",
  "FENCED",
  "NODE_NOT_SERVING",
  "INTERNAL",
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

/** Narrow an unknown value to a known error code. */
export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === "string" && (ERROR_CODES as readonly string[]).includes(value);
}

/**
 * The error Cohort throws and reports. `code` is stable across versions; `message` is for people.
 *
 * @example new CohortError("SHAPE_MISMATCH", "layer 2 has shape [200] but [10] was expected")
 */
export class CohortError extends Error {
  override readonly name = "CohortError";
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    // Head the stack as Node heads its own coded errors (`TypeError [ERR_X]: …`), so an uncaught
    // one names its code on the first line it prints.
    const head = `${this.name}: `;
    if (typeof this.stack === "string" && this.stack.startsWith(head)) {
      this.stack = `${this.name} [${code}]: ${this.stack.slice(head.length)}`;
    }
  }

  /** The wire form of this error, as socket handlers answer it. */
  toReply(): Failure {
    return { ok: false, code: this.code, message: this.message };
  }
}

/** A negative answer on the wire. */
export interface Failure {
  ok: false;
  code: ErrorCode;
  message: string;
}

/** A positive answer on the wire. */
export interface Success<T> {
  ok: true;
  value: T;
}

/** What every acknowledged socket.io event answers. */
export type Reply<T> = Success<T> | Failure;

/** Wrap any thrown value into a CohortError, keeping the original as `cause`. */
export function toCohortError(error: unknown, fallback: ErrorCode = "INTERNAL"): CohortError {
  if (error instanceof CohortError) return error;
  const message = error instanceof Error ? error.message : String(error);
  return new CohortError(fallback, message, { cause: error });
}
