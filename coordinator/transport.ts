/** How the round engine reaches clients: over socket.io in production, in-process in simulations. */
import type { FitFailure, RunDone, UpdateReceipt } from "../protocol/messages.js";
import type { Reply } from "../protocol/errors.js";
import type { MemberCredential, SecAggSetup } from "../aggregation/secure/messages.js";
import type { RoundFailure } from "../aggregation/fedavg.js";
import type { RoundBroadcast } from "./downlink.js";

/**
 * Where a transport delivers what clients send back: a round's `RoundCollector`, or in
 * asynchronous mode the buffer's view of one dispatch (`round`, `cohort`: the requests being
 * sent now; updates of earlier dispatches still reach the same buffer).
 */
export interface UpdateSink {
  readonly round: number;
  readonly cohort: readonly string[];
  /** Validate and record an update; never throws: the reply says what was wrong. */
  submit(clientId: string, payload: unknown): Reply<UpdateReceipt>;
  /** A member left (disconnected). */
  drop(clientId: string, failure: Omit<RoundFailure, "clientId">): void;
  /** A member says its fit failed. */
  fail(clientId: string, report: FitFailure): void;
  /** The round `clientId` was sent (its update is signed for it); absent: `round`. */
  roundFor?(clientId: string): number;
}

/**
 * Simulated time, where a transport simulates it (the in-process transport with device
 * speeds): arrivals are delivered in the order of their simulated finish.
 */
export interface SimulatedTime {
  /** Simulated milliseconds since the run started. */
  now(): number;
  /**
   * Deliver the next arrival (an update or a failure) once every training started so far has
   * finished: false when nothing is in flight.
   */
  deliverNext(): Promise<boolean>;
}

/** One member's step of a secure phase, as `request` would send it. */
export interface MemberStep {
  clientId: string;
  /** Its SecAgg index. */
  index: number;
  payload: Uint8Array;
}

/** The masked inputs of several members, summed by the node that holds them. */
export interface MaskedSum {
  node: string;
  /** The SecAgg indices whose masked inputs are in `masked`. */
  indices: number[];
  /** Their sum (mod 2^32 per word), packed as one member's masked vector; null: nobody's. */
  masked: Uint32Array | Uint8Array | null;
  /** Members that did not answer with a masked input, and why. */
  failures: RoundFailure[];
  /** Bytes the members sent their node. */
  bytesUp: number;
  /** Bytes the sum arrived in. */
  wireBytes: number;
}

/** Members a transport asks through another node: that node answers with one sum. */
export interface MaskedGroup {
  clientIds: readonly string[];
  /** Rejects (with a CohortError) when the node's sum is lost or refused: all its members failed. */
  sum: Promise<MaskedSum>;
}

/** What a request asks for: a SecAgg+ step (the default) or an evaluation of a model. */
export type RequestKind = "secure" | "evaluate";

/**
 * A transport delivers fit requests to a cohort and feeds what comes back into the round's
 * collector: updates through `collector.submit`, lost clients through `collector.drop`.
 */
export interface CohortTransport {
  /** Ids of the clients that can be sampled now. */
  available(): string[];
  /** Resolves once at least `n` clients are available. */
  waitForAvailable(n: number): Promise<void>;
  /**
   * Send each member of the collector's cohort its fit request (`broadcast.requestFor` the
   * model version that connection was last sent, sealed like any model), then record the
   * round's version as what it holds; later updates go to this collector. A connection that
   * is new, or whose member reported a failed fit (`BASE_MISMATCH` among others), holds
   * nothing. Returns the bytes sent.
   */
  startRound(collector: UpdateSink, broadcast: RoundBroadcast): number;
  /**
   * Ask one client for a secure-aggregation step or an evaluation (msgpack in, msgpack out).
   * Rejects with a CohortError: `DEADLINE_EXCEEDED`, `CLIENT_DISCONNECTED`, or the client's own
   * refusal code.
   */
  request(
    clientId: string,
    payload: Uint8Array,
    timeoutMs: number,
    kind?: RequestKind,
  ): Promise<Uint8Array>;
  /** The encoded fit request of `round` as clients receive it: signed where models are signed. */
  sealModel(round: number, request: Uint8Array): Uint8Array;
  /**
   * One member's fit request of a secure round (its first step carries it): as `startRound`
   * picks it, by the version that connection holds, sealed, and recorded as what it holds now.
   */
  modelFor(clientId: string, broadcast: RoundBroadcast): Uint8Array;
  /**
   * Where members sit behind other nodes (a cluster's followers): ask them for their masked
   * inputs through their node, which checks and sums them, so one vector per node arrives, not
   * one per member. Returns a group per node; members in none are asked one by one. Absent:
   * every member is asked one by one.
   */
  requestMasked?(
    steps: readonly MemberStep[],
    timeoutMs: number,
    setup: SecAggSetup,
  ): MaskedGroup[];
  /** Forget what a member holds (its step with the model failed): its next model is full. */
  forgetModel(clientId: string): void;
  /**
   * Who a client is, where clients authenticate: its identity key and the join token that
   * admitted it, relayed to its neighbours in secure rounds. Null (or absent) otherwise.
   */
  credentialOf?(clientId: string): MemberCredential | null;
  /** The run is over: tell every client. */
  finish(info: RunDone): void;
  /** Present where time is simulated: asynchronous mode then moves by arrivals, not timers. */
  readonly simulated?: SimulatedTime;
}
