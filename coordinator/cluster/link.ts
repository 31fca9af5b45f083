/**
 * The link between a cluster's leader and its followers: a socket.io namespace on the leader's
 * server that followers connect to, admitted by the secret the leader put in Redis (whoever can
 * read the cluster's Redis is trusted with its state anyway). Followers hold their clients'
 * sockets and act for the leader: they report who is connected, relay fit requests and SecAgg+
 * steps, and send one partial sum per round instead of every update. Everything binary travels
 * as msgpack, and everything a follower sends is checked like a client's message.
 */
import { randomBytes, timingSafeEqual } from "node:crypto";
import type { WeightedSum } from "../../aggregation/aggregator.js";
import type { RoundFailure } from "../../aggregation/fedavg.js";
import {
  parseSecAggSetup,
  type MemberCredential,
  type SecAggSetup,
} from "../../aggregation/secure/messages.js";
import { checkWeights } from "../../aggregation/weights.js";
import { byteLengthOf, decode, encode } from "../../protocol/codec.js";
import { CohortError, isErrorCode } from "../../protocol/errors.js";
import type { FitMetrics, TensorSpec } from "../../protocol/messages.js";
import type { MaskedSum, MemberStep, RequestKind } from "../transport.js";
import type { NodePartial, UpdateSummary } from "../round.js";
import type { EnginePhase } from "../phases.js";
import type { RoundMetrics } from "../run-store.js";

/** The leader's namespace that followers connect to. */
export const LINK_NAMESPACE = "/cluster";

/** Where followers find the leader (a Redis key, written under the leader's fencing token). */
export interface LinkRecord {
  /** The leader's URL as followers reach it. */
  url: string;
  /** What a follower presents to be admitted. */
  secret: string;
  /** The leader's fencing token: a newer one is a newer leader. */
  token: number;
}

/** A fresh link secret. */
export function linkSecret(): string {
  return randomBytes(32).toString("base64url");
}

/** Whether a presented secret is the link's (in constant time). */
export function secretMatches(presented: unknown, secret: string): boolean {
  if (typeof presented !== "string") return false;
  const a = Buffer.from(presented);
  const b = Buffer.from(secret);
  return a.length === b.length && timingSafeEqual(a, b);
}

/** The record's JSON, checked. */
export function parseLinkRecord(raw: unknown): LinkRecord | null {
  if (typeof raw !== "string") return null;
  try {
    const o = JSON.parse(raw) as Partial<LinkRecord>;
    if (typeof o.url === "string" && typeof o.secret === "string" && Number.isInteger(o.token)) {
      return { url: o.url, secret: o.secret, token: o.token! };
    }
  } catch {
    // not a record
  }
  return null;
}

/** A client a follower holds. */
export interface MemberInfo {
  clientId: string;
  credential: MemberCredential | null;
}

/** A round's fit requests for a follower's members (leader → follower, msgpack). */
export interface RoundStart {
  round: number;
  /** The follower's members in the cohort. */
  cohort: string[];
  /** The sealed fit request (the full model: a follower's members hold no version). */
  request: Uint8Array;
  /** The round's codec seed. */
  seed: number;
  /** The follower sends its partial by then (ms from now), before the leader's deadline. */
  deadlineMs: number;
  maxExamplesPerClient: number;
}

/** One relayed request (leader → follower, msgpack): a SecAgg+ step or an evaluation. */
export interface RelayedRequest {
  clientId: string;
  payload: Uint8Array;
  timeoutMs: number;
  kind: RequestKind;
}

/** A relayed request's answer (follower → leader, msgpack). */
export type RelayedReply =
  { ok: true; payload: Uint8Array } | { ok: false; code: string; message: string };

/** A secure round's masked inputs, asked of a follower's members (leader → follower, msgpack). */
export interface MaskedRound {
  /** The round's setup: how the follower checks and sums what its members send. */
  setup: SecAggSetup;
  steps: MemberStep[];
  timeoutMs: number;
}

/** A follower's sum of its members' masked inputs (follower → leader, msgpack). */
export type MaskedReply = Omit<MaskedSum, "node" | "wireBytes">;

/** Events a follower sends the leader. */
export interface FollowerToLeader {
  members: (members: MemberInfo[]) => void;
  join: (member: MemberInfo) => void;
  leave: (clientId: string) => void;
  partial: (partial: Uint8Array) => void;
}

/** Events the leader sends a follower. */
export interface LeaderToFollower {
  /** The run's task, and what the followers' dashboards say of the run. */
  task: (task: unknown, run: { strategy: string; rounds: number }) => void;
  "round:start": (start: Uint8Array) => void;
  request: (request: Uint8Array, ack: (reply: Uint8Array) => void) => void;
  masked: (round: Uint8Array, ack: (reply: Uint8Array) => void) => void;
  forget: (clientId: string) => void;
  phase: (round: number, phase: EnginePhase) => void;
  "round:done": (metrics: RoundMetrics) => void;
  /** The rounds the leader completed before the follower listened (without `clients`). */
  "round:history": (rounds: RoundMetrics[]) => void;
  done: (info: { runId: string; rounds: number }) => void;
}

/**
 * A partial as it travels: the sum as its mean (float32, one model's bytes) and its weight,
 * so the leader's inbound bytes per node are one model's, not the float64 sum's two; and its
 * members' summaries column by column (`SummaryColumns`), each member named by its place in
 * `cohort`, the list the leader sent the node for the round.
 */
export function encodePartial(partial: NodePartial, cohort: readonly string[]): Uint8Array {
  const { sum } = partial;
  return encode({
    round: partial.round,
    results: summaryColumns(partial.results, cohort),
    failures: partial.failures,
    bytesUp: partial.bytesUp,
    sum:
      sum === null
        ? null
        : {
            mean: sum.weighted.map((t) => Float32Array.from(t, (v) => v / sum.weight)),
            weight: sum.weight,
            count: sum.count,
          },
  });
}

/** A column of numbers: the narrowest typed array that holds each value exactly. */
type Column = Uint8Array | Uint16Array | Uint32Array | Float32Array | Float64Array;

/**
 * Accepted updates' summaries as columns (30–55 bytes a member, where records with their keys
 * and client ids took 110–190): `member` indexes the node's cohort list; NaN stands for an
 * absent accuracy, encode time or claimed example count; `backend` indexes `backends`.
 */
interface SummaryColumns {
  member: Column;
  numExamples: Column;
  loss: Column;
  accuracy: Column;
  trainMs: Column;
  encodeMs: Column;
  bytes: Column;
  decodeMs: Column;
  claimed: Column;
  backends: string[];
  backend: Column;
}

const NUMBER_COLUMNS = [
  "member",
  "numExamples",
  "loss",
  "accuracy",
  "trainMs",
  "encodeMs",
  "bytes",
  "decodeMs",
  "claimed",
  "backend",
] as const;

/** `values` in the narrowest typed array that holds every one exactly (NaN included). */
export function packColumn(values: readonly number[]): Column {
  let max = 0;
  let whole = true;
  for (const v of values) {
    if (!Number.isInteger(v) || v < 0) whole = false;
    else if (v > max) max = v;
  }
  if (whole && max < 2 ** 8) return Uint8Array.from(values);
  if (whole && max < 2 ** 16) return Uint16Array.from(values);
  if (whole && max < 2 ** 32) return Uint32Array.from(values);
  if (values.every((v) => Number.isNaN(v) || Math.fround(v) === v)) {
    return Float32Array.from(values);
  }
  return Float64Array.from(values);
}

function summaryColumns(results: readonly UpdateSummary[], cohort: readonly string[]) {
  const place = new Map(cohort.map((id, i) => [id, i] as const));
  const backends: string[] = [];
  const column = (f: (r: UpdateSummary) => number) => packColumn(results.map(f));
  const columns: SummaryColumns = {
    member: column((r) => {
      const i = place.get(r.clientId);
      if (i === undefined) {
        throw new CohortError("INTERNAL", `${r.clientId} is not in this node's cohort`);
      }
      return i;
    }),
    numExamples: column((r) => r.numExamples),
    loss: column((r) => r.metrics.loss),
    accuracy: column((r) => r.metrics.accuracy ?? Number.NaN),
    trainMs: column((r) => r.metrics.trainMs),
    encodeMs: column((r) => r.metrics.encodeMs ?? Number.NaN),
    bytes: column((r) => r.bytes),
    decodeMs: column((r) => r.decodeMs),
    claimed: column((r) => r.claimedExamples ?? Number.NaN),
    backends,
    backend: column((r) => {
      const i = backends.indexOf(r.metrics.backend);
      return i >= 0 ? i : backends.push(r.metrics.backend) - 1;
    }),
  };
  return columns;
}

/**
 * A follower's partial, checked: shapes, finite values, fields. `cohortOf(round)` is the list
 * the leader sent that node for the round, or null when the round is not the open one
 * (`STALE_ROUND`). `INVALID_MESSAGE` otherwise.
 */
export function decodePartial(
  bytes: unknown,
  specs: readonly TensorSpec[],
  cohortOf: (round: number) => readonly string[] | null,
): NodePartial {
  const o = record(decode(bytes), "partial");
  const round = o.round;
  const bytesUp = o.bytesUp;
  if (!Number.isInteger(round) || typeof bytesUp !== "number" || !(bytesUp >= 0)) {
    throw bad("partial: round and bytesUp must be numbers");
  }
  const cohort = cohortOf(round as number);
  if (cohort === null) {
    throw new CohortError("STALE_ROUND", `a partial of round ${String(round)}, which is not open`);
  }
  if (!Array.isArray(o.failures)) throw bad("partial: failures must be a list");
  const results = parseSummaries(o.results, cohort);
  const failures = o.failures.map(parseFailure);
  let sum: WeightedSum | null = null;
  if (o.sum !== null) {
    const s = record(o.sum, "partial sum");
    const { weight, count } = s;
    if (
      typeof weight !== "number" ||
      !(weight > 0) ||
      !Number.isFinite(weight) ||
      !Number.isInteger(count) ||
      !Array.isArray(s.mean) ||
      !s.mean.every((t) => t instanceof Float32Array)
    ) {
      throw bad("partial sum: mean (Float32Array list), weight > 0 and count required");
    }
    const mean = s.mean as Float32Array[];
    checkWeights(mean, specs, "partial sum");
    sum = {
      weighted: mean.map((t) => Float64Array.from(t, (v) => v * weight)),
      weight,
      count: count as number,
    };
  }
  return { round: round as number, results, failures, bytesUp, sum };
}

const nonNegative = (v: number) => Number.isFinite(v) && v >= 0;

const isColumn = (v: unknown): v is Column =>
  v instanceof Uint8Array ||
  v instanceof Uint16Array ||
  v instanceof Uint32Array ||
  v instanceof Float32Array ||
  v instanceof Float64Array;

/** The summaries' columns, checked, back as one summary per member. */
function parseSummaries(raw: unknown, cohort: readonly string[]): UpdateSummary[] {
  const o = record(raw, "partial results");
  const n = isColumn(o.member) ? o.member.length : -1;
  if (n < 0 || !NUMBER_COLUMNS.every((k) => isColumn(o[k]) && o[k].length === n)) {
    throw bad(`partial results: ${NUMBER_COLUMNS.join(", ")} must be typed arrays of one length`);
  }
  const backends = o.backends;
  if (
    !Array.isArray(backends) ||
    backends.length > 256 ||
    !backends.every((b) => typeof b === "string")
  ) {
    throw bad("partial results: backends must be a list of names");
  }
  const c = o as unknown as SummaryColumns;
  const summaries: UpdateSummary[] = [];
  for (let i = 0; i < n; i++) {
    const member = c.member[i]!;
    const numExamples = c.numExamples[i]!;
    const [loss, accuracy, trainMs, encodeMs] = [c.loss, c.accuracy, c.trainMs, c.encodeMs].map(
      (col) => col[i]!,
    ) as [number, number, number, number];
    const backend = backends[c.backend[i]!] as string | undefined;
    if (
      // What a client's update may hold (as the follower checked it), and what the follower measured.
      !Number.isInteger(member) ||
      member < 0 ||
      member >= cohort.length ||
      !nonNegative(numExamples) ||
      !Number.isFinite(loss) ||
      !(Number.isNaN(accuracy) || Number.isFinite(accuracy)) ||
      !Number.isFinite(trainMs) ||
      !(Number.isNaN(encodeMs) || nonNegative(encodeMs)) ||
      !nonNegative(c.bytes[i]!) ||
      !nonNegative(c.decodeMs[i]!) ||
      !(Number.isNaN(c.claimed[i]!) || nonNegative(c.claimed[i]!)) ||
      backend === undefined
    ) {
      throw bad(
        `partial result ${i}: member, numExamples, loss, trainMs, bytes, decodeMs and backend required`,
      );
    }
    const metrics: FitMetrics = {
      loss,
      accuracy: Number.isNaN(accuracy) ? null : accuracy,
      trainMs,
      backend: backend.slice(0, 64),
      ...(Number.isNaN(encodeMs) ? {} : { encodeMs }),
    };
    const claimed = c.claimed[i]!;
    summaries.push({
      clientId: cohort[member]!,
      numExamples,
      metrics,
      bytes: c.bytes[i]!,
      decodeMs: c.decodeMs[i]!,
      ...(Number.isNaN(claimed) ? {} : { claimedExamples: claimed }),
    });
  }
  return summaries;
}

function parseFailure(raw: unknown): RoundFailure {
  const o = record(raw, "partial failure");
  if (typeof o.clientId !== "string" || typeof o.code !== "string") {
    throw bad("partial failure: clientId and code required");
  }
  return {
    clientId: o.clientId,
    code: o.code.slice(0, 64),
    message: typeof o.message === "string" ? o.message.slice(0, 1024) : "",
  };
}

/** A relayed reply, checked; a refusal becomes the CohortError it names. */
export function openReply(bytes: unknown): Uint8Array {
  const o = record(decode(bytes), "relayed reply");
  if (o.ok === true && o.payload instanceof Uint8Array) return o.payload;
  if (o.ok === false && typeof o.message === "string") {
    const code = isErrorCode(o.code) ? o.code : "INTERNAL";
    throw new CohortError(code, o.message.slice(0, 1024));
  }
  throw bad("relayed reply: ok with payload, or code and message");
}

/** A relayed request, checked. */
export function parseRelayedRequest(bytes: unknown): RelayedRequest {
  const o = record(decode(bytes), "relayed request");
  if (
    typeof o.clientId !== "string" ||
    !(o.payload instanceof Uint8Array) ||
    typeof o.timeoutMs !== "number" ||
    (o.kind !== "secure" && o.kind !== "evaluate")
  ) {
    throw bad("relayed request: clientId, payload, timeoutMs and kind required");
  }
  return { clientId: o.clientId, payload: o.payload, timeoutMs: o.timeoutMs, kind: o.kind };
}

/** A round start, checked. */
export function parseRoundStart(bytes: unknown): RoundStart {
  const o = record(decode(bytes), "round start");
  if (
    !Number.isInteger(o.round) ||
    !Array.isArray(o.cohort) ||
    !o.cohort.every((id) => typeof id === "string") ||
    !(o.request instanceof Uint8Array) ||
    typeof o.seed !== "number" ||
    typeof o.deadlineMs !== "number" ||
    typeof o.maxExamplesPerClient !== "number"
  ) {
    throw bad("round start: round, cohort, request, seed, deadlineMs, maxExamplesPerClient");
  }
  return o as unknown as RoundStart;
}

/** A masked round, checked. */
export function parseMaskedRound(bytes: unknown): MaskedRound {
  const o = record(decode(bytes), "masked round");
  const steps = Array.isArray(o.steps)
    ? o.steps.map((s: unknown) => record(s, "masked step"))
    : null;
  if (
    steps === null ||
    typeof o.timeoutMs !== "number" ||
    !steps.every(
      (s) =>
        typeof s.clientId === "string" &&
        Number.isInteger(s.index) &&
        s.payload instanceof Uint8Array,
    )
  ) {
    throw bad("masked round: setup, steps (clientId, index, payload) and timeoutMs required");
  }
  return {
    setup: parseSecAggSetup(o.setup),
    steps: steps as unknown as MemberStep[],
    timeoutMs: o.timeoutMs,
  };
}

/**
 * A follower's masked sum, checked against what it was asked (`asked`: SecAgg index by client):
 * only asked indices, each once; asked members it does not account for are failures.
 */
export function parseMaskedReply(
  bytes: unknown,
  asked: ReadonlyMap<string, number>,
  node: string,
): MaskedSum {
  const o = record(decode(bytes), "masked sum");
  if (o.ok === false) openReply(bytes); // throws the refusal it names
  const { indices, masked, bytesUp } = o;
  if (
    !Array.isArray(indices) ||
    !indices.every((i) => Number.isInteger(i)) ||
    !(masked === null || masked instanceof Uint8Array || masked instanceof Uint32Array) ||
    (masked === null) !== (indices.length === 0) ||
    !Array.isArray(o.failures) ||
    typeof bytesUp !== "number" ||
    !(bytesUp >= 0)
  ) {
    throw bad("masked sum: indices, masked (null for none), failures and bytesUp required");
  }
  const byIndex = new Map([...asked].map(([id, i]) => [i, id] as const));
  const summed = new Set<number>();
  for (const i of indices as number[]) {
    if (!byIndex.has(i) || summed.has(i)) {
      throw bad(`masked sum: index ${i} was not asked of this node, or is listed twice`);
    }
    summed.add(i);
  }
  const failed = new Map<string, RoundFailure>();
  for (const f of o.failures.map(parseFailure)) {
    const index = asked.get(f.clientId);
    if (index !== undefined && !summed.has(index)) failed.set(f.clientId, f);
  }
  for (const [clientId, index] of asked) {
    if (!summed.has(index) && !failed.has(clientId)) {
      failed.set(clientId, {
        clientId,
        code: "CLIENT_DISCONNECTED",
        message: `its node ${node} sent no masked input of it`,
      });
    }
  }
  return {
    node,
    indices: [...summed],
    masked: masked as Uint32Array | Uint8Array | null,
    failures: [...failed.values()],
    bytesUp,
    wireBytes: byteLengthOf(bytes),
  };
}

function record(raw: unknown, what: string): Record<string, unknown> {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    throw bad(`${what} must be a map`);
  }
  return raw as Record<string, unknown>;
}

function bad(message: string): CohortError {
  return new CohortError("INVALID_MESSAGE", message);
}
