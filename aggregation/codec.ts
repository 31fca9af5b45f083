/** The update codec seam: how a client's delta is encoded for the wire and decoded by the coordinator. */
import type { TensorSpec } from "../protocol/messages.js";

/** Parameters of a codec: what travels in the task under `codec.params`. */
export type CodecParams = Record<string, number | string | boolean>;

/** A codec by name, as it travels in options, the task, worker messages and `run.json`. */
export interface CodecRef {
  name: string;
  params: CodecParams;
}

/** What a round tells every codec, on both sides of the wire. */
export interface CodecContext {
  round: number;
  /**
   * The round's shared seed, chosen by the coordinator and sent with the fit request: every
   * client of the round draws the same shared randomness (a rotation) from it.
   */
  seed: number;
}

/** What only the encoding client adds to the round's context. */
export interface EncodeContext extends CodecContext {
  /** Seed of this client's own randomness (stochastic rounding); fresh per client and round. */
  noiseSeed: number;
  /**
   * The client's memory across rounds for this run (error feedback): a codec that keeps a
   * residual reads and replaces it. Absent: the codec keeps nothing.
   */
  memory?: CodecMemory;
}

/** A client's codec memory, kept across the rounds of one run. */
export interface CodecMemory {
  /** What earlier rounds left unsent, flattened in the order of the weight specs. */
  residual: Float32Array | null;
}

/** Encodes and decodes weight deltas. One codec a file, resolved by name from the registry. */
export interface UpdateCodec {
  readonly name: string;
  /** Every parameter, defaults included. */
  readonly params: CodecParams;
  /** `name` or `name:ARG`, as `--codec` takes it and round metrics show it. */
  readonly label: string;
  /**
   * Whether the codec has a form whose encodings add: `decode(Σ encode(Δᵢ)) ≈ Σ Δᵢ` within the
   * bound, so a secure sum may add them. float32 is linear (the secure path's 32-bit fixed point
   * applies to it unchanged); the quantizers are linear in their `secure` form. Non-linear
   * codecs are refused with secure aggregation when the configuration is checked.
   */
  readonly linear: boolean;
  /**
   * The codec's linear form in secure rounds: rotation by the round's seed in chunks of `chunk`,
   * one scale shared by the cohort, stochastic rounding to `bits` bits per member
   * (`aggregation/secure/quantize.ts`). Absent: secure rounds use 32-bit fixed point.
   */
  readonly secure?: { bits: number; chunk: number };
  /** The stated error bound of one round trip, in words (README and `--help` quote it). */
  readonly bound: string;
  /** A msgpack-able payload (typed arrays and numbers) for the update `delta`. */
  encode(delta: readonly Float32Array[], ctx: EncodeContext): unknown;
  /**
   * The delta a payload stands for, shaped by `specs`. The payload is untrusted: every length,
   * width, scale and index is checked first (`INVALID_MESSAGE`, `SHAPE_MISMATCH`, `NON_FINITE`,
   * `MALFORMED_PAYLOAD`), never a crash.
   */
  decode(payload: unknown, specs: readonly TensorSpec[], ctx: CodecContext): Float32Array[];
}
