/**
 * A follower node: it serves the leader's task to its own clients and acts for the leader.
 * It links to the leader (the URL and secret the leader put in Redis), reports who is
 * connected, relays each round's fit request (one copy from the leader, one emit per version
 * here), validates its members' updates exactly as the leader would and sums them into one
 * partial, and relays SecAgg+ steps and evaluations one client at a time. It ends when the
 * run is done, or when its link to the leader is lost (the node then looks for the lease or
 * the next leader); its clients then reconnect to another node.
 */
import type { Server as HttpServer } from "node:http";
import { io as connect, type Socket as ClientSocket } from "socket.io-client";
import { weightedMean } from "../../aggregation/aggregators/mean.js";
import { resolveCodec } from "../../aggregation/codecs/index.js";
import type { RoundFailure } from "../../aggregation/fedavg.js";
import {
  addMasked,
  encodedWords,
  packMasked,
  parseMaskedInput,
  secureParams,
} from "../../aggregation/secure/index.js";
import { decode, encode } from "../../protocol/codec.js";
import { CohortError, toCohortError } from "../../protocol/errors.js";
import { parseTaskSpec } from "../../protocol/guards.js";
import type { RunDone, TaskSpec } from "../../protocol/messages.js";
import { listen, serverFor, socketTransport } from "../coordinator.js";
import { RoundBroadcast } from "../downlink.js";
import type { CoordinatorOptions } from "../options.js";
import { RoundCollector, type NodePartial, type RoundOutcome } from "../round.js";
import type { SocketTransport } from "../socket-transport.js";
import {
  accessPolicy,
  createHttpHandler,
  locateAssets,
  StatusTracker,
  type ClusterStatus,
} from "../http/index.js";
import { ENGINE_PHASES, type EnginePhase } from "../phases.js";
import type { RoundMetrics } from "../run-store.js";
import type { NodeReport } from "./roster.js";
import {
  encodePartial,
  LINK_NAMESPACE,
  parseMaskedRound,
  parseRelayedRequest,
  parseRoundStart,
  type FollowerToLeader,
  type LeaderToFollower,
  type LinkRecord,
  type MaskedReply,
  type RelayedReply,
} from "./link.js";

type Link = ClientSocket<LeaderToFollower, FollowerToLeader>;

/** How a follower's time as one ended. */
export type FollowerEnd = { done: RunDone } | { lost: string };

export class Follower {
  /** Resolves when the run is done or the link to the leader is lost. */
  readonly ended: Promise<FollowerEnd>;
  private end!: (how: FollowerEnd) => void;
  private transport: SocketTransport | null = null;
  private http: HttpServer | null = null;
  private closed = false;
  private url: string | null = null;
  /** Linked to its leader; once the link is lost, it only holds its clients' sockets. */
  private linked = true;
  /** What this node last sent the leader for a round. */
  private lastPartial: NodeReport["partial"] = null;

  private constructor(
    private readonly link: Link,
    private readonly opts: CoordinatorOptions,
    private readonly node: string,
  ) {
    this.ended = new Promise((resolve) => (this.end = resolve));
  }

  /**
   * Link to the leader and, once it sent the task, serve it on this node's port.
   *
   * @throws CohortError `CONNECTION_FAILED` when the leader cannot be reached
   */
  static async start(
    record: LinkRecord,
    opts: CoordinatorOptions,
    node: string,
    /** The cluster's nodes, for this node's dashboard and `/metrics`. */
    view: () => ClusterStatus | null = () => null,
    /** Called once linked, just before listening (the node's previous server lets the port go). */
    beforeListen: () => Promise<void> = async () => undefined,
  ): Promise<Follower> {
    const link: Link = connect(new URL(LINK_NAMESPACE, record.url).toString(), {
      auth: { node, secret: record.secret },
      transports: ["websocket"],
      reconnection: false,
    });
    const follower = new Follower(link, opts, node);
    const task = await new Promise<{ task: TaskSpec; run: RunShown }>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new CohortError("CONNECTION_FAILED", `no task from the leader within 10 s`)),
        10_000,
      );
      link.once("task", (raw: unknown, run: unknown) => {
        clearTimeout(timer);
        try {
          const r = (typeof run === "object" && run !== null ? run : {}) as Partial<RunShown>;
          resolve({
            task: parseTaskSpec(raw),
            run: {
              strategy: typeof r.strategy === "string" ? r.strategy.slice(0, 64) : "",
              rounds: typeof r.rounds === "number" ? r.rounds : 0,
            },
          });
        } catch (error) {
          reject(toCohortError(error, "INVALID_MESSAGE"));
        }
      });
      link.once("connect_error", (error: Error) => {
        clearTimeout(timer);
        reject(new CohortError("CONNECTION_FAILED", `cannot link to the leader: ${error.message}`));
      });
    }).catch((error: unknown) => {
      link.disconnect();
      throw error;
    });
    try {
      await follower.serve(task.task, task.run, view, beforeListen);
    } catch (error) {
      await follower.close();
      throw error;
    }
    return follower;
  }

  private async serve(
    task: TaskSpec,
    run: RunShown,
    view: () => ClusterStatus | null,
    beforeListen: () => Promise<void>,
  ): Promise<void> {
    const { opts, link } = this;
    // The dashboard and `/metrics` here show the leader's run (its phases and rounds, sent
    // over the link), this node's clients and the cluster's nodes.
    const status = new StatusTracker({
      runId: task.runId,
      model: { name: task.model.name, numParameters: task.model.numParameters },
      secure: task.secure,
      ...run,
    });
    status.cluster = view;
    const http = serverFor(
      opts,
      createHttpHandler({
        status,
        assets: locateAssets(),
        access: accessPolicy(opts),
        models: null,
      }),
    );
    // No signing key here: the leader seals every model, and this node forwards its bytes.
    const transport = socketTransport(http, task, opts, null);
    this.http = http;
    this.transport = transport;
    transport.on("join", (c) => status.join(c));
    transport.on("leave", (c) => status.leave(c));
    transport.on("rejected", (r) => status.reject(r));
    link.on("phase", (round: unknown, phase: unknown) => {
      if (typeof round === "number" && ENGINE_PHASES.includes(phase as EnginePhase)) {
        status.phase(round, phase as EnginePhase);
      }
    });
    // Each round once, in order (one may come live before the history that also holds it).
    let shown = 0;
    const show = (m: unknown) => {
      if (!isRoundMetrics(m) || m.round <= shown) return;
      shown = m.round;
      status.completed(m);
    };
    // Live rounds wait for the history (the rounds before this node listened), then follow it.
    let early: unknown[] | null = [];
    link.on("round:done", (m: unknown) => (early === null ? show(m) : early.push(m)));
    link.on("round:history", (rounds: unknown) => {
      if (early === null) return;
      if (Array.isArray(rounds)) rounds.forEach(show);
      early.forEach(show);
      early = null;
    });
    const member = (clientId: string) => ({
      clientId,
      credential: transport.credentialOf(clientId),
    });
    // Once unlinked it only holds its clients: nothing more goes to the old leader.
    transport.on("join", (c) => this.linked && link.emit("join", member(c.clientId)));
    transport.on("leave", (c) => this.linked && link.emit("leave", c.clientId));
    link.on("round:start", (bytes: unknown) => this.onRound(task, bytes));
    // The leader's requests that want an answer: do the work, answer with its encoded reply.
    const answer = (event: "request" | "masked", work: (bytes: unknown) => Promise<object>) =>
      link.on(event, (bytes: unknown, ack: unknown) => {
        if (typeof ack !== "function") return;
        void work(bytes)
          .catch((error: unknown) => toCohortError(error).toReply())
          .then((reply) => (ack as (r: Uint8Array) => void)(encode(reply)));
      });
    answer("request", (bytes) => this.relay(bytes));
    answer("masked", (bytes) => this.sumMasked(bytes));
    link.on("forget", (clientId: unknown) => {
      if (typeof clientId === "string") transport.forgetModel(clientId);
    });
    link.on("done", (info: RunDone) => {
      transport.finish(info);
      this.end({ done: info });
    });
    link.on("disconnect", (reason: string) => {
      this.linked = false;
      this.end({ lost: `link to the leader lost (${reason})` });
    });
    await beforeListen();
    const { url } = await listen(http, opts);
    this.url = url;
    opts.log(`follower ${this.node} serving the leader's run ${task.runId} on ${url}`);
    link.emit("members", transport.available().map(member));
  }

  private onRound(task: TaskSpec, bytes: unknown): void {
    const transport = this.transport!;
    let start;
    try {
      start = parseRoundStart(bytes);
    } catch (error) {
      this.opts.log(`refused a round start from the leader: ${toCohortError(error).message}`);
      return;
    }
    const collector = new RoundCollector(start.round, start.cohort, {
      weightSpecs: task.model.weightSpecs,
      maxUploadBytes: task.limits.maxUploadBytes,
      maxExamplesPerClient: start.maxExamplesPerClient,
      deadlineMs: start.deadlineMs,
      codec: resolveCodec(task.codec),
      seed: start.seed,
    });
    transport.startRound(collector, RoundBroadcast.plain(start.round, start.request));
    void collector.done.then((outcome) => {
      if (this.closed || !this.linked) return;
      const bytes = encodePartial(partialOf(outcome), start.cohort);
      this.lastPartial = {
        round: start.round,
        bytes: bytes.byteLength,
        clientBytes: outcome.bytesUp,
      };
      this.link.emit("partial", bytes);
    });
  }

  private async relay(bytes: unknown): Promise<RelayedReply> {
    try {
      const r = parseRelayedRequest(bytes);
      const payload = await this.transport!.request(r.clientId, r.payload, r.timeoutMs, r.kind);
      return { ok: true, payload };
    } catch (error) {
      return toCohortError(error).toReply();
    }
  }

  /**
   * Ask this node's members for their masked inputs, check each as the leader would (round,
   * index, length) and sum them: the leader receives one vector for all of them.
   */
  private async sumMasked(bytes: unknown): Promise<MaskedReply | RelayedReply> {
    let asked;
    try {
      asked = parseMaskedRound(bytes);
    } catch (error) {
      return toCohortError(error).toReply();
    }
    const { setup, steps, timeoutMs } = asked;
    const params = secureParams(setup);
    const sum = new Uint32Array(encodedWords(params, setup.tensorSizes));
    const indices: number[] = [];
    const failures: RoundFailure[] = [];
    let bytesUp = 0;
    await Promise.all(
      steps.map(async ({ clientId, index, payload }) => {
        try {
          const reply = await this.transport!.request(clientId, payload, timeoutMs, "secure");
          bytesUp += reply.byteLength;
          const m = parseMaskedInput(decode(reply));
          if (m.index !== index || m.round !== setup.round) {
            throw new CohortError(
              "INVALID_MESSAGE",
              `masked input claims index ${m.index} of round ${m.round}; the sender is ${index} of round ${setup.round}`,
            );
          }
          addMasked(sum, m.masked, params, `masked input from ${index}`);
          indices.push(index);
        } catch (error) {
          const e = toCohortError(error, "INVALID_MESSAGE");
          failures.push({ clientId, code: e.code, message: `collect-masked: ${e.message}` });
        }
      }),
    );
    const masked = indices.length === 0 ? null : packMasked(sum, params);
    this.lastPartial = { round: setup.round, bytes: masked?.byteLength ?? 0, clientBytes: bytesUp };
    return { indices, masked, failures, bytesUp };
  }

  /** This node as the cluster's roster shows it. */
  report(): NodeReport {
    return {
      role: this.linked ? "follower" : "standby",
      url: this.url,
      clients: this.transport?.available().length ?? 0,
      partial: this.lastPartial,
    };
  }

  /**
   * Let the leader go but keep serving: clients stay connected (and new ones are admitted)
   * until `close()`, which the node calls once it has its next role.
   */
  unlink(): void {
    this.linked = false;
    this.link.disconnect();
  }

  /** Leave: close the link, every client socket and the server. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.link.disconnect();
    // Keep-alive connections (a dashboard) must not hold the port the node listens on next.
    const closing = this.transport?.close();
    this.http?.closeAllConnections?.();
    await closing;
    this.end({ lost: "closed" });
  }
}

/** The run as the leader describes it to followers' dashboards. */
interface RunShown {
  strategy: string;
  rounds: number;
}

/** Round metrics as the leader relays them (checked enough for the dashboard to read). */
function isRoundMetrics(m: unknown): m is RoundMetrics {
  const o = (typeof m === "object" && m !== null ? m : {}) as Partial<RoundMetrics>;
  return (
    typeof o.round === "number" &&
    Array.isArray(o.failureReasons) &&
    Array.isArray(o.clients) &&
    typeof o.bytesUp === "number" &&
    typeof o.timestamp === "string"
  );
}

/** A round's outcome here as one partial: the accepted updates summed, the rest as they were. */
export function partialOf(outcome: RoundOutcome): NodePartial {
  const { results } = outcome;
  const layout = results[0]?.delta.map((t) => t.length) ?? [];
  const acc = weightedMean.begin(layout);
  for (const r of results) acc.add(r);
  return {
    round: outcome.round,
    results: results.map(({ delta: _delta, ...summary }) => summary),
    failures: outcome.failures,
    bytesUp: outcome.bytesUp,
    sum: acc.finish(),
  };
}
