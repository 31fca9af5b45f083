/**
 * FedBuff (Nguyen et al. 2022): asynchronous buffered aggregation. Up to `asyncConcurrency`
 * clients train at all times, each on the newest model when it was sent; what they send back
 * is scaled by its staleness — (1 + s)^-a for an update trained s server steps ago — into a
 * buffer, and every `buffer` updates the server step makes the next version from the
 * example-weighted mean of the scaled updates.
 *
 * The coordinator, not the client, records which version each client was sent (by the request's
 * round: the step it will make), so a client cannot claim a fresher base than it had. Requests
 * are named `round = steps so far + 1`; a client is never sent the same version twice (it would
 * train the same update again), and no more are kept in flight than could still arrive within
 * `maxStaleness` (with `buffer` = `asyncConcurrency` and no staleness allowed, a version is
 * exactly a synchronous FedAvg round over those clients).
 */
import { sampleWithoutReplacement, type Rng } from "../aggregation/random.js";
import type { RoundFailure } from "../aggregation/fedavg.js";
import { CohortError, toCohortError, type Reply } from "../protocol/errors.js";
import type { FitFailure, UpdateReceipt } from "../protocol/messages.js";
import type { CoordinatorOptions } from "./options.js";
import type { RoundBroadcast } from "./downlink.js";
import {
  checkRound,
  checkUpload,
  type AcceptedUpdate,
  type RoundLimits,
  type RoundOutcome,
} from "./round.js";
import type { CohortTransport, UpdateSink } from "./transport.js";

/** The weight of an update `staleness` steps old: (1 + s)^-exponent. */
export function stalenessWeight(staleness: number, exponent: number): number {
  return (1 + staleness) ** -exponent;
}

/** What one buffer collected: a round's outcome (deltas scaled by staleness) and more. */
export interface BufferOutcome extends RoundOutcome {
  /** Bytes of the requests sent while the buffer filled. */
  bytesDown: number;
  /** Updates of the buffer by staleness: `staleness[s]` were s steps old. */
  staleness: number[];
  /** The broadcast of the model the buffer's new dispatches were sent. */
  broadcast: RoundBroadcast;
  /** Examples of the buffer's updates. */
  examples: number;
}

/** What the driver needs of its engine. */
export interface FedBuffHost {
  transport: CohortTransport;
  opts: CoordinatorOptions;
  /** Limits every update is checked against; the codec seed is per request round. */
  limits: RoundLimits;
  seedOf(round: number): number;
  /** The fit requests of the current global model, named `round`. */
  broadcast(round: number): RoundBroadcast;
  /** The version the current global model is (after a rollback: the one it went back to). */
  baseVersion(): number;
  /** The run's sampling generator (its state is committed with every version). */
  rng: Rng;
  /** `work`, or a rejection once the engine stops. */
  unlessStopped<T>(work: Promise<T>): Promise<T>;
  /** Called as the buffer fills (for the dashboard). */
  progress(state: BufferProgress): void;
}

/** How full the buffer is, for the dashboard. */
export interface BufferProgress {
  /** The version the buffer will make. */
  version: number;
  fill: number;
  size: number;
  inFlight: number;
  /** The buffer's updates so far by staleness. */
  staleness: number[];
}

interface Dispatch {
  round: number;
  /** Server steps done when it was sent (its staleness counts from there). */
  step: number;
  /** The version it was sent, which its update is trained on. */
  base: number;
  timer: NodeJS.Timeout | null;
  /** Why its update is refused: its base version was abandoned by a rollback. */
  abandoned?: string;
}

type Arrival =
  | { kind: "update"; update: AcceptedUpdate; dispatch: Dispatch }
  | { kind: "failure"; failure: RoundFailure };

/** How long to wait for a client to connect before looking again, when none can be sent. */
const IDLE_POLL_MS = 100;
/** How often a buffer that waits on training clients looks for clients that joined. */
const JOIN_POLL_MS = 1000;

/** Runs the asynchronous rounds of one run; `next()` fills one buffer. */
export class FedBuffDriver {
  private readonly inFlight = new Map<string, Dispatch>();
  /** The clients sent this step's version: none is sent it twice, unless it lost the work. */
  private sentThisStep = new Set<string>();
  private readonly arrivals: Arrival[] = [];
  private wake: (() => void) | null = null;
  private bytesUp = 0;
  private round = 0;
  /** Since when nobody has trained and nobody could be sent the version (ms), or null. */
  private idleSince: number | null = null;
  /** The version whose starved buffer was last reported. */
  private warnedFor = 0;

  constructor(
    private readonly host: FedBuffHost,
    /** Server steps done before (a resumed run's completed versions). */
    private step: number,
  ) {}

  /** Clients training now. */
  get training(): number {
    return this.inFlight.size;
  }

  /** Fill the next buffer: dispatch, collect `buffer` updates, and count the step made. */
  async next(): Promise<BufferOutcome> {
    const { opts } = this.host;
    this.round = this.step + 1;
    const broadcast = this.host.broadcast(this.round);
    const results: AcceptedUpdate[] = [];
    const failures: RoundFailure[] = [];
    const staleness = new Array<number>(opts.maxStaleness + 1).fill(0);
    const upBefore = this.bytesUp;
    let bytesDown = 0;
    let examples = 0;
    while (results.length < opts.buffer) {
      bytesDown += this.dispatch(broadcast, results.length);
      const arrival = await this.take(results.length);
      if (arrival === null) continue; // no one was training: dispatch again
      if (arrival.kind === "failure") {
        failures.push(arrival.failure);
        continue;
      }
      const { update, dispatch } = arrival;
      if (dispatch.abandoned !== undefined) {
        failures.push({
          clientId: update.clientId,
          code: "STALE_UPDATE",
          message: dispatch.abandoned,
        });
        continue;
      }
      const s = this.step - dispatch.step;
      if (s > opts.maxStaleness) {
        // Sent back in time, but the buffer before this one took the step it was due in.
        failures.push(tooStale(update.clientId, s, opts.maxStaleness));
        continue;
      }
      staleness[s]!++;
      examples += update.numExamples;
      // FedBuff's step is Σ nᵢ·w(sᵢ)·Δᵢ / Σ nᵢ: a stale update shrinks the step, it does not only
      // weigh less against the others (the decoded delta is this update's own: scaled in place).
      const w = stalenessWeight(s, opts.stalenessExponent);
      if (w !== 1) for (const t of update.delta) for (let i = 0; i < t.length; i++) t[i]! *= w;
      this.host.progress({
        version: this.round,
        fill: results.length + 1,
        size: opts.buffer,
        inFlight: this.inFlight.size,
        staleness: [...staleness],
      });
      results.push(update);
    }
    this.step++;
    // The next version is new to everyone (a set per step: departed clients are not kept).
    this.sentThisStep = new Set();
    return {
      round: this.round,
      cohort: results.map((r) => r.clientId),
      results,
      failures,
      bytesUp: this.bytesUp - upBefore,
      bytesDown,
      staleness,
      broadcast,
      examples,
    };
  }

  /**
   * A rollback to version `to` abandoned the versions after it (`rejected` the last): the
   * updates trained on them, in flight or waiting in the buffer's queue, are refused with
   * `STALE_UPDATE` when they arrive, never applied to the model training went back to.
   */
  abandon(to: number, rejected: number): void {
    const mark = (d: Dispatch) => {
      if (d.base > to)
        d.abandoned = `trained on version ${d.base}, abandoned when version ${rejected} was rejected and training rolled back to version ${to}`;
    };
    for (const d of this.inFlight.values()) mark(d);
    for (const a of this.arrivals) if (a.kind === "update") mark(a.dispatch);
  }

  /** The run is over or stopped: nothing more is accepted, timers end. */
  close(): void {
    for (const d of this.inFlight.values()) if (d.timer !== null) clearTimeout(d.timer);
    this.inFlight.clear();
    // A wait for arrivals ends with its timer.
    this.wake?.();
  }

  /** Send the current model to idle clients, as many as may usefully train now. Returns bytes. */
  private dispatch(broadcast: RoundBroadcast, fill: number): number {
    const { opts, transport, rng } = this.host;
    // More in flight than could arrive before they are too stale would be wasted work.
    const useful = (opts.maxStaleness + 1) * opts.buffer - fill;
    const room = Math.min(opts.asyncConcurrency, useful) - this.inFlight.size;
    if (room <= 0) return 0;
    const idle = [...transport.available()]
      .sort()
      .filter((id) => !this.inFlight.has(id) && !this.sentThisStep.has(id));
    const chosen = sampleWithoutReplacement(idle, room, rng);
    if (chosen.length === 0) return 0;
    const simulated = transport.simulated !== undefined;
    const base = this.host.baseVersion();
    for (const id of chosen) {
      const dispatch: Dispatch = { round: this.round, step: this.step, base, timer: null };
      if (!simulated) {
        // Simulated devices miss deadlines in simulated time (their transport says so).
        dispatch.timer = setTimeout(() => {
          this.settle(id, dispatch.round, {
            code: "DEADLINE_EXCEEDED",
            message: `no update within ${opts.roundTimeoutMs} ms`,
          });
        }, opts.roundTimeoutMs);
      }
      this.inFlight.set(id, dispatch);
      this.sentThisStep.add(id);
    }
    this.idleSince = null;
    return transport.startRound(this.sink(chosen), broadcast);
  }

  /**
   * The next arrival: delivered in simulated order, or awaited from the network; null after a
   * short wait without one (clients may have connected since: dispatch again).
   */
  private async take(fill: number): Promise<Arrival | null> {
    const { transport, opts } = this.host;
    for (;;) {
      const first = this.arrivals.shift();
      if (first !== undefined) return first;
      if (transport.simulated !== undefined) {
        if (await this.host.unlessStopped(transport.simulated.deliverNext())) continue;
        if (this.inFlight.size > 0) {
          throw new CohortError("INTERNAL", `${this.inFlight.size} fits in flight, none delivered`);
        }
        throw new CohortError(
          "ROUND_FAILED",
          `no device can train version ${this.round}: ${transport.available().length} devices, a buffer of ${this.host.opts.buffer}, and none is sent the same version twice`,
        );
      }
      if (this.inFlight.size === 0) {
        // Nobody is training and nobody could be sent: wait for clients to connect, saying so,
        // and give up after a round's timeout.
        const now = Date.now();
        this.idleSince ??= now;
        const why = this.starved(fill);
        if (now - this.idleSince >= opts.roundTimeoutMs) {
          throw new CohortError(
            "ROUND_FAILED",
            `${why} for ${opts.roundTimeoutMs} ms (roundTimeoutMs); connect more clients or lower --buffer`,
          );
        }
        if (this.warnedFor !== this.round) {
          this.warnedFor = this.round;
          opts.log(`${why}: waiting up to ${opts.roundTimeoutMs} ms for clients to connect`);
        }
      }
      // While clients train, look again now and then: clients that joined since are sent the
      // version without waiting for the next arrival.
      const waitMs = this.inFlight.size === 0 ? IDLE_POLL_MS : JOIN_POLL_MS;
      await this.host.unlessStopped(
        new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, waitMs);
          this.wake = () => {
            clearTimeout(timer);
            resolve();
          };
        }),
      );
      this.wake = null;
      if (this.arrivals.length === 0) return null;
    }
  }

  /** Why the buffer cannot fill now: no client left to send this version. */
  private starved(fill: number): string {
    const available = this.host.transport.available();
    const sent = available.filter((id) => this.sentThisStep.has(id)).length;
    return `version ${this.round}: ${fill} of ${this.host.opts.buffer} updates and no client to send it to (${available.length} connected, ${sent} of them already sent this version; a client trains each version once)`;
  }

  private push(arrival: Arrival): void {
    this.idleSince = null;
    this.arrivals.push(arrival);
    this.wake?.();
  }

  /** A dispatch of `round` to `clientId` ended without an update: free its slot. */
  private settle(clientId: string, round: number, failure: Omit<RoundFailure, "clientId">): void {
    const d = this.inFlight.get(clientId);
    if (d === undefined || d.round !== round) return;
    if (d.timer !== null) clearTimeout(d.timer);
    this.inFlight.delete(clientId);
    // A client whose connection went, or whose update never came, lost the work: it may be
    // sent this version again (it trains a retried version as a retried round). A client that
    // failed its fit or had its update refused is not, or it would be sent it again at once.
    // (Simulated devices draw the same fate for the same version: never again for them.)
    if (
      d.step === this.step &&
      this.host.transport.simulated === undefined &&
      (failure.code === "CLIENT_DISCONNECTED" || failure.code === "DEADLINE_EXCEEDED")
    ) {
      this.sentThisStep.delete(clientId);
    }
    this.push({ kind: "failure", failure: { clientId, ...failure } });
  }

  private submit(clientId: string, payload: unknown): Reply<UpdateReceipt> {
    let dispatch: Dispatch | undefined;
    try {
      const update = checkUpload(clientId, payload, this.host.limits, (upload, bytes) => {
        this.bytesUp += bytes;
        if (upload === null) return;
        const d = this.inFlight.get(clientId);
        if (d === undefined) {
          throw new CohortError("NOT_IN_COHORT", `client ${clientId} has no fit in flight`);
        }
        checkRound(upload.round, d.round);
        dispatch = d;
        if (d.abandoned !== undefined) throw new CohortError("STALE_UPDATE", d.abandoned);
        const s = this.step - d.step;
        if (s > this.host.opts.maxStaleness) {
          const f = tooStale(clientId, s, this.host.opts.maxStaleness);
          throw new CohortError("STALE_UPDATE", f.message);
        }
        return this.host.seedOf(upload.round);
      });
      const d = dispatch!;
      if (d.timer !== null) clearTimeout(d.timer);
      this.inFlight.delete(clientId);
      this.push({ kind: "update", update, dispatch: d });
      return { ok: true, value: { round: d.round } };
    } catch (error) {
      const e = toCohortError(error, "INVALID_MESSAGE");
      // A refused update of a fit in flight ends it: the client sends no other.
      if (dispatch !== undefined)
        this.settle(clientId, dispatch.round, { code: e.code, message: e.message });
      return e.toReply();
    }
  }

  /** The transport's view of one dispatch; every view feeds this buffer. */
  private sink(cohort: readonly string[]): UpdateSink {
    return {
      round: this.round,
      cohort,
      submit: (clientId, payload) => this.submit(clientId, payload),
      roundFor: (clientId) => this.inFlight.get(clientId)?.round ?? this.round,
      drop: (clientId, failure) => {
        const d = this.inFlight.get(clientId);
        if (d !== undefined) this.settle(clientId, d.round, failure);
      },
      fail: (clientId, report: FitFailure) =>
        this.settle(clientId, report.round, {
          code: report.code,
          message: `the client's fit failed: ${report.message.slice(0, 512)}`,
        }),
    };
  }
}

function tooStale(clientId: string, s: number, max: number): RoundFailure {
  return {
    clientId,
    code: "STALE_UPDATE",
    message: `trained on a version ${s} steps old; at most ${max} are accepted (maxStaleness)`,
  };
}
