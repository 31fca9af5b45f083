/** One round's collection of updates: validates each, keeps the good ones, records every failure. */
import { checkWeights } from "../aggregation/weights.js";
import type { RoundFailure, WeightedUpdate } from "../aggregation/fedavg.js";
import type { WeightedSum } from "../aggregation/aggregator.js";
import { byteLengthOf, decode } from "../protocol/codec.js";
import { CohortError, toCohortError, type Reply } from "../protocol/errors.js";
import { parseFitUpload } from "../protocol/guards.js";
import type { FitFailure, FitMetrics, TensorSpec, UpdateReceipt } from "../protocol/messages.js";
import type { UpdateCodec } from "../aggregation/codec.js";
import { resolveCodec } from "../aggregation/codecs/index.js";

const FLOAT32 = resolveCodec("float32");

type FitUpload = ReturnType<typeof parseFitUpload>;

/** An update that passed every check. */
export interface AcceptedUpdate extends WeightedUpdate {
  metrics: FitMetrics;
  bytes: number;
  /** Milliseconds the codec took to decode it. */
  decodeMs: number;
  /** The example count the client claimed, when it was above the cap (its weight is the cap). */
  claimedExamples?: number;
}

/** An accepted update as another coordinator node reports it: its delta is in the node's sum. */
export type UpdateSummary = Omit<AcceptedUpdate, "delta">;

/**
 * What another coordinator node collected of a round from its own clients: their accepted
 * updates summed (one partial sum), what each sent, and who failed.
 */
export interface NodePartial {
  round: number;
  results: UpdateSummary[];
  failures: RoundFailure[];
  /** Bytes of the update payloads the node received. */
  bytesUp: number;
  /** Σ nᵢ·Δᵢ and Σ nᵢ of `results` (null when there are none). */
  sum: WeightedSum | null;
}

/** What a round collected by the time it closed. */
export interface RoundOutcome {
  round: number;
  cohort: string[];
  /** The updates received here, with their deltas. */
  results: AcceptedUpdate[];
  /** Updates other nodes received and summed (`sums`). @default none */
  remote?: UpdateSummary[];
  /** The partial sums of other nodes. @default none */
  sums?: WeightedSum[];
  /** The bytes those partials arrived in, and the update bytes their nodes received. */
  partialBytes?: { wire: number; clients: number };
  failures: RoundFailure[];
  /** Bytes of every update payload received during the round, accepted or not. */
  bytesUp: number;
}

/** Every participant of a round, here or on another node. */
export function participants(outcome: RoundOutcome): UpdateSummary[] {
  return [...outcome.results, ...(outcome.remote ?? [])];
}

/** Limits a round enforces on updates. */
export interface RoundLimits {
  weightSpecs: readonly TensorSpec[];
  maxUploadBytes: number;
  /** An update's weight is at most this many examples, whatever it claims. */
  maxExamplesPerClient: number;
  deadlineMs: number;
  /** The task's codec: every update must be encoded with it. @default float32 */
  codec?: UpdateCodec;
  /** The round's shared codec seed (sent with the fit request). @default 0 */
  seed?: number;
}

/**
 * Collects the updates of one round. It closes when every cohort member has answered or
 * dropped, or at the deadline; members that did not contribute become failures.
 */
export class RoundCollector {
  readonly done: Promise<RoundOutcome>;
  private readonly pending: Set<string>;
  private readonly accepted = new Map<string, AcceptedUpdate>();
  private readonly remote = new Map<string, UpdateSummary>();
  private readonly sums: WeightedSum[] = [];
  private readonly partialBytes = { wire: 0, clients: 0 };
  private readonly reasons = new Map<string, RoundFailure>();
  private bytesUp = 0;
  private closed = false;
  private resolve!: (outcome: RoundOutcome) => void;
  private readonly timer: NodeJS.Timeout;
  /** The cohort, for membership checks in O(1) (one per update). */
  private readonly members: ReadonlySet<string>;

  constructor(
    readonly round: number,
    readonly cohort: readonly string[],
    readonly limits: RoundLimits,
  ) {
    this.pending = new Set(cohort);
    this.members = new Set(cohort);
    this.done = new Promise((resolve) => (this.resolve = resolve));
    this.timer = setTimeout(() => this.close(), limits.deadlineMs);
    if (this.pending.size === 0) this.close();
  }

  /** Whether the round still accepts updates. */
  get open(): boolean {
    return !this.closed;
  }

  /**
   * Validate and record an update. Never throws: the reply says what was wrong. A closed
   * round still answers (stale, duplicate) until the next round replaces it.
   */
  submit(clientId: string, payload: unknown): Reply<UpdateReceipt> {
    try {
      const update = this.validate(clientId, payload);
      this.accepted.set(clientId, update);
      this.reasons.delete(clientId);
      this.pending.delete(clientId);
      if (this.pending.size === 0) this.close();
      return { ok: true, value: { round: this.round } };
    } catch (error) {
      const e = toCohortError(error, "INVALID_MESSAGE");
      if (this.pending.has(clientId)) {
        this.reasons.set(clientId, { clientId, code: e.code, message: e.message });
      }
      return e.toReply();
    }
  }

  private validate(clientId: string, payload: unknown): AcceptedUpdate {
    return checkUpload(clientId, payload, this.limits, (result, bytes) => {
      this.bytesUp += bytes;
      if (result === null) return;
      if (this.closed && result.round === this.round) {
        if (this.accepted.has(clientId)) {
          throw new CohortError(
            "DUPLICATE_UPDATE",
            `client ${clientId} already sent round ${this.round}`,
          );
        }
        throw new CohortError("STALE_ROUND", `round ${this.round} is closed`);
      }
      checkRound(result.round, this.round);
      if (!this.members.has(clientId)) {
        throw new CohortError(
          "NOT_IN_COHORT",
          `client ${clientId} was not sampled for round ${this.round}`,
        );
      }
      if (this.accepted.has(clientId)) {
        throw new CohortError(
          "DUPLICATE_UPDATE",
          `client ${clientId} already sent round ${this.round}`,
        );
      }
    });
  }

  /**
   * Take another node's partial: its members' summaries and failures, and its sum. `members` are
   * the cohort members that node was asked for: a partial naming others, naming one twice, or
   * whose sum does not add up is refused whole (a CohortError) and changes nothing.
   */
  addPartial(partial: NodePartial, members: ReadonlySet<string>, wireBytes = 0): void {
    if (this.closed) {
      throw new CohortError("STALE_ROUND", `round ${this.round} is closed`);
    }
    checkRound(partial.round, this.round);
    const seen = new Set<string>();
    for (const { clientId } of [...partial.results, ...partial.failures]) {
      if (!members.has(clientId) || !this.pending.has(clientId) || seen.has(clientId)) {
        throw new CohortError(
          "INVALID_MESSAGE",
          `a partial names ${clientId}, which that node was not waiting for in round ${this.round}`,
        );
      }
      seen.add(clientId);
    }
    const weight = partial.results.reduce((n, r) => n + r.numExamples, 0);
    const sum = partial.sum;
    if (
      partial.results.some((r) => r.numExamples > this.limits.maxExamplesPerClient) ||
      (sum === null ? partial.results.length > 0 : sum.count !== partial.results.length) ||
      (sum !== null && Math.abs(sum.weight - weight) > 1e-6 * Math.max(1, weight))
    ) {
      throw new CohortError(
        "INVALID_MESSAGE",
        `a partial's sum does not match its ${partial.results.length} updates of ${weight} examples`,
      );
    }
    this.bytesUp += partial.bytesUp;
    this.partialBytes.wire += wireBytes;
    this.partialBytes.clients += partial.bytesUp;
    for (const r of partial.results) this.remote.set(r.clientId, r);
    for (const f of partial.failures) this.reasons.set(f.clientId, f);
    if (sum !== null) this.sums.push(sum);
    for (const id of seen) this.pending.delete(id);
    if (this.pending.size === 0) this.close();
  }

  /** A cohort member left (disconnected): it becomes a failure now rather than at the deadline. */
  drop(clientId: string, failure: Omit<RoundFailure, "clientId">): void {
    if (!this.pending.has(clientId) || this.closed) return;
    this.reasons.set(clientId, { clientId, ...failure });
    this.pending.delete(clientId);
    if (this.pending.size === 0) this.close();
  }

  /**
   * A cohort member says its fit of `report.round` failed: it becomes a failure now, with its
   * reason. Reports of other rounds, or from members that already answered, change nothing.
   */
  fail(clientId: string, report: FitFailure): void {
    if (report.round !== this.round) return;
    this.drop(clientId, {
      code: report.code,
      message: `the client's fit failed: ${report.message.slice(0, 512)}`,
    });
  }

  /** Close the round now; members still pending fail with `DEADLINE_EXCEEDED`. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.timer);
    const failures: RoundFailure[] = [];
    for (const clientId of this.cohort) {
      if (this.accepted.has(clientId) || this.remote.has(clientId)) continue;
      failures.push(
        this.reasons.get(clientId) ?? {
          clientId,
          code: "DEADLINE_EXCEEDED",
          message: `no update within ${this.limits.deadlineMs} ms`,
        },
      );
    }
    this.resolve({
      round: this.round,
      cohort: [...this.cohort],
      results: this.cohort.flatMap((id) => this.accepted.get(id) ?? []),
      ...(this.remote.size === 0
        ? {}
        : {
            remote: this.cohort.flatMap((id) => this.remote.get(id) ?? []),
            sums: this.sums,
            partialBytes: { ...this.partialBytes },
          }),
      failures,
      bytesUp: this.bytesUp,
    });
  }
}

/** `STALE_ROUND` or `FUTURE_ROUND` unless an update's round is the one open. */
export function checkRound(got: number, open: number): void {
  if (got < open)
    throw new CohortError("STALE_ROUND", `update for round ${got}; round ${open} is open`);
  if (got > open)
    throw new CohortError("FUTURE_ROUND", `update for round ${got}; round ${open} is open`);
}

/**
 * Check an uploaded update end to end: binary, within the size limit, a well-formed upload,
 * then `admit` (the round and who may send it: it throws to refuse; called first with null
 * when only the size is known, so the bytes are counted; it may return the upload's codec seed,
 * else `limits.seed`), then the codec, shapes and values,
 * the example cap. Throws a CohortError saying what was wrong.
 */
export function checkUpload(
  clientId: string,
  payload: unknown,
  limits: RoundLimits,
  admit: (upload: FitUpload | null, bytes: number) => number | void,
): AcceptedUpdate {
  const bytes = byteLengthOf(payload);
  if (bytes < 0) throw new CohortError("MALFORMED_PAYLOAD", "update must be binary msgpack");
  admit(null, bytes);
  if (bytes > limits.maxUploadBytes) {
    throw new CohortError(
      "PAYLOAD_TOO_LARGE",
      `update of ${bytes} bytes exceeds the limit of ${limits.maxUploadBytes} bytes`,
    );
  }
  const result = parseFitUpload(decode(payload));
  const seed = admit(result, 0) ?? limits.seed ?? 0;
  const { codec = FLOAT32, weightSpecs } = limits;
  if (result.body.codec !== codec.name) {
    throw new CohortError(
      "INVALID_MESSAGE",
      `update encoded with ${result.body.codec}; this run's codec is ${codec.label}`,
    );
  }
  const started = performance.now();
  const delta = codec.decode(
    "delta" in result.body ? result.body.delta : result.body.update,
    weightSpecs,
    { round: result.round, seed },
  );
  const decodeMs = performance.now() - started;
  checkWeights(delta, weightSpecs, "delta");
  // One client must not outweigh the cohort by claiming more data than it can hold.
  const cap = limits.maxExamplesPerClient;
  return {
    clientId,
    delta,
    numExamples: Math.min(result.numExamples, cap),
    metrics: result.metrics,
    bytes,
    decodeMs,
    ...(result.numExamples > cap ? { claimedExamples: result.numExamples } : {}),
  };
}

/** A round's codec figures (`metrics.jsonl`): the codec, float32 bytes over sent bytes, and timings. */
export interface CodecFigures {
  codec: string;
  /** Float32 bytes of the accepted updates' values over the bytes they were sent in. */
  compressionRatio: number | null;
  /** Mean milliseconds a client took to encode (as the clients report it; float32: none). */
  encodeMs: number | null;
  /** Mean milliseconds the coordinator took to decode one update. */
  decodeMs: number | null;
}

/** The codec figures of the accepted updates of a round. */
export function codecFigures(
  codec: UpdateCodec,
  results: readonly UpdateSummary[],
  numParameters: number,
): CodecFigures {
  const n = results.length;
  const sent = results.reduce((s, r) => s + r.bytes, 0);
  const encodes = results.flatMap((r) =>
    r.metrics.encodeMs === undefined ? [] : [r.metrics.encodeMs],
  );
  return {
    codec: codec.label,
    compressionRatio: n === 0 || sent === 0 ? null : (4 * numParameters * n) / sent,
    encodeMs: encodes.length === 0 ? null : encodes.reduce((s, v) => s + v, 0) / encodes.length,
    decodeMs: n === 0 ? null : results.reduce((s, r) => s + r.decodeMs, 0) / n,
  };
}
