/**
 * The leader's transport in a cluster: its own clients through its socket.io transport, and
 * the clients of every follower through that follower's link. A round's requests go to each
 * follower once (the model once per node, not per client); a follower answers with one
 * partial sum of its members' updates, so the leader receives O(nodes × model) bytes a round.
 * In a secure round, a follower sums its members' masked inputs the same way (one vector per
 * node); the other SecAgg+ steps and evaluations are relayed one client at a time. A follower whose link drops
 * takes its members with it: to the round they are dropouts.
 */
import type { Namespace, Socket } from "socket.io";
import { byteLengthOf, encode } from "../../protocol/codec.js";
import { CohortError, toCohortError } from "../../protocol/errors.js";
import type { RunDone, TaskSpec } from "../../protocol/messages.js";
import type { RoundBroadcast } from "../downlink.js";
import { RoundCollector } from "../round.js";
import type { SocketTransport } from "../socket-transport.js";
import type { ClusterTransport } from "../coordinator.js";
import type { EnginePhase } from "../phases.js";
import type { RoundMetrics } from "../run-store.js";
import type { MemberCredential, SecAggSetup } from "../../aggregation/secure/messages.js";
import type { MaskedGroup, MemberStep, RequestKind, UpdateSink } from "../transport.js";
import {
  decodePartial,
  openReply,
  parseMaskedReply,
  secretMatches,
  type FollowerToLeader,
  type LeaderToFollower,
  type MaskedRound,
  type MemberInfo,
  type RoundStart,
} from "./link.js";

type Link = Socket<FollowerToLeader, LeaderToFollower>;

/** A follower as the leader sees it. */
interface Follower {
  node: string;
  link: Link;
  members: Map<string, MemberCredential | null>;
  /** Who it was asked for in the open round. */
  asked: Set<string>;
  /** The open round's cohort list sent to it (a partial names members by their place in it). */
  cohort: readonly string[];
  /** Requests awaiting its answer: each fails at once when the follower is lost. */
  waiting: Set<(error: CohortError) => void>;
}

/** Options of the leader's transport. */
export interface LeaderTransportOptions {
  /** The secret followers present (from the cluster's Redis). */
  secret: string;
  /** The run's task, sent to each follower as it links. */
  task: TaskSpec;
  /** The run's strategy and rounds, for the followers' dashboards. */
  run: { strategy: string; rounds: number };
  log: (line: string) => void;
}

export class LeaderTransport implements ClusterTransport {
  private readonly followers = new Map<string, Follower>();
  private round: { collector: UpdateSink; partials: RoundCollector | null } | null = null;
  private waiters: { n: number; resolve: () => void }[] = [];
  private full: { broadcast: RoundBroadcast; sealed: Uint8Array } | null = null;
  /** The engine's phase now, for a follower that links later. */
  private lastPhase: { round: number; phase: EnginePhase } | null = null;
  /** The rounds this leader completed, for followers that link later (without `clients`). */
  private readonly completed: RoundMetrics[] = [];

  constructor(
    private readonly local: SocketTransport,
    private readonly nsp: Namespace<FollowerToLeader, LeaderToFollower>,
    private readonly options: LeaderTransportOptions,
  ) {
    nsp.use((socket, next) => {
      const auth = socket.handshake.auth as { node?: unknown; secret?: unknown } | undefined;
      if (!secretMatches(auth?.secret, options.secret) || typeof auth?.node !== "string") {
        const error = new Error("not a node of this cluster") as Error & { data?: unknown };
        error.data = { code: "UNAUTHORIZED" };
        next(error);
        return;
      }
      next();
    });
    nsp.on("connection", (link) => this.onLink(link));
    local.on("join", () => this.wake());
  }

  /** The followers' names and their clients. */
  nodes(): { node: string; clients: number }[] {
    return [...this.followers.values()].map((f) => ({ node: f.node, clients: f.members.size }));
  }

  private onLink(link: Link): void {
    const node = String((link.handshake.auth as { node: string }).node).slice(0, 128);
    const old = this.followers.get(node);
    if (old !== undefined) this.lose(old, "a newer link of the same node replaced it");
    const follower: Follower = {
      node,
      link,
      members: new Map(),
      asked: new Set(),
      cohort: [],
      waiting: new Set(),
    };
    this.followers.set(node, follower);
    this.options.log(`cluster: follower ${node} linked`);
    link.emit("task", this.options.task, this.options.run);
    // Once it listens (its first member list), it gets the run so far for its dashboard.
    link.once("members", () => {
      link.emit("round:history", this.completed);
      if (this.lastPhase !== null) link.emit("phase", this.lastPhase.round, this.lastPhase.phase);
    });
    link.on("members", (members) => {
      follower.members.clear();
      for (const m of parseMembers(members)) follower.members.set(m.clientId, m.credential);
      this.wake();
    });
    link.on("join", (member) => {
      const [m] = parseMembers([member]);
      if (m === undefined) return;
      follower.members.set(m.clientId, m.credential);
      this.wake();
    });
    link.on("leave", (clientId) => {
      if (typeof clientId !== "string") return;
      follower.members.delete(clientId);
      this.dropMember(follower, clientId, "left its node");
    });
    link.on("partial", (bytes) => this.onPartial(follower, bytes));
    link.on("disconnect", (reason) => {
      if (this.followers.get(node) === follower) this.lose(follower, `link lost: ${reason}`);
    });
  }

  /** A follower is gone: its members leave, and those of the open round are dropouts. */
  private lose(follower: Follower, why: string): void {
    this.followers.delete(follower.node);
    this.options.log(`cluster: follower ${follower.node} gone (${why})`);
    for (const id of follower.asked)
      this.dropMember(follower, id, `its node ${follower.node} went away`);
    follower.members.clear();
    const gone = new CohortError("CLIENT_DISCONNECTED", `its node ${follower.node} went away`);
    for (const fail of follower.waiting) fail(gone);
    follower.waiting.clear();
    follower.link.disconnect(true);
  }

  /**
   * `work` (an answer `f` owes), or its failure as soon as `f` is lost; an acknowledgement
   * that timed out is `DEADLINE_EXCEEDED` saying `late`.
   */
  private answerOf<T>(f: Follower, work: Promise<T>, late: string): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      f.waiting.add(reject);
      void work
        .then(resolve, (error: unknown) =>
          reject(error instanceof CohortError ? error : new CohortError("DEADLINE_EXCEEDED", late)),
        )
        .finally(() => f.waiting.delete(reject));
    });
  }

  private dropMember(follower: Follower, clientId: string, why: string): void {
    if (!follower.asked.delete(clientId)) return;
    this.round?.collector.drop(clientId, { code: "CLIENT_DISCONNECTED", message: why });
  }

  private onPartial(follower: Follower, bytes: unknown): void {
    const open = this.round;
    try {
      if (open === null || open.partials === null) {
        throw new CohortError("NO_ACTIVE_ROUND", "no round takes partials now");
      }
      const partial = decodePartial(bytes, this.options.task.model.weightSpecs, (round) =>
        round === open.collector.round ? follower.cohort : null,
      );
      open.partials.addPartial(partial, follower.asked, byteLengthOf(bytes));
      for (const id of [...partial.results, ...partial.failures])
        follower.asked.delete(id.clientId);
    } catch (error) {
      const e = toCohortError(error, "INVALID_MESSAGE");
      if (e.code === "STALE_ROUND" || e.code === "NO_ACTIVE_ROUND") {
        // Late for a round that closed without it: its members already failed there.
        this.options.log(`cluster: ignored a partial from ${follower.node}: ${e.message}`);
        return;
      }
      this.options.log(`cluster: refused a partial from ${follower.node}: ${e.code}: ${e.message}`);
      // What it was asked for is lost to this round.
      for (const id of [...follower.asked]) {
        this.dropMember(follower, id, `its node's partial was refused: ${e.message}`);
      }
    }
  }

  private ownerOf(clientId: string): Follower | undefined {
    for (const f of this.followers.values()) if (f.members.has(clientId)) return f;
    return undefined;
  }

  available(): string[] {
    const ids = new Set(this.local.available());
    for (const f of this.followers.values()) for (const id of f.members.keys()) ids.add(id);
    return [...ids];
  }

  waitForAvailable(n: number): Promise<void> {
    if (this.available().length >= n) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ n, resolve }));
  }

  /** Called on every join: O(1) unless a waiter may now be satisfied. */
  private wake(): void {
    if (this.waiters.length === 0) return;
    // An upper bound first (a client moving between nodes may be counted twice meanwhile):
    // counting exactly at every join would cost O(clients²) over a cluster's connections.
    let bound = this.local.connectedCount();
    for (const f of this.followers.values()) bound += f.members.size;
    if (bound < Math.min(...this.waiters.map((w) => w.n))) return;
    const have = this.available().length;
    const ready = this.waiters.filter((w) => w.n <= have);
    this.waiters = this.waiters.filter((w) => w.n > have);
    for (const w of ready) w.resolve();
  }

  startRound(collector: UpdateSink, broadcast: RoundBroadcast): number {
    const here: string[] = [];
    const remote = new Map<Follower, string[]>();
    for (const id of collector.cohort) {
      const owner = this.ownerOf(id);
      if (owner === undefined) here.push(id);
      else if (remote.has(owner)) remote.get(owner)!.push(id);
      else remote.set(owner, [id]);
    }
    const partials = collector instanceof RoundCollector ? collector : null;
    this.round = { collector, partials };
    let bytes = this.local.startRound(restrict(collector, here), broadcast);
    for (const f of this.followers.values()) {
      f.cohort = remote.get(f) ?? [];
      f.asked = new Set(f.cohort);
    }
    if (remote.size === 0) return bytes;
    if (partials === null) {
      // Checked with the options: asynchronous rounds run on one node.
      throw new CohortError("INTERNAL", "only synchronous rounds take partial sums");
    }
    const { limits } = partials;
    const request = this.fullRequest(broadcast);
    for (const [f, cohort] of remote) {
      const start: RoundStart = {
        round: collector.round,
        cohort,
        request,
        seed: limits.seed ?? 0,
        // Its partial must arrive before the round closes here.
        deadlineMs: Math.max(100, Math.floor(limits.deadlineMs * 0.9)),
        maxExamplesPerClient: limits.maxExamplesPerClient,
      };
      const payload = encode(start);
      f.link.emit("round:start", payload);
      bytes += payload.byteLength;
    }
    return bytes;
  }

  async request(
    clientId: string,
    payload: Uint8Array,
    timeoutMs: number,
    kind: RequestKind = "secure",
  ): Promise<Uint8Array> {
    const owner = this.ownerOf(clientId);
    if (owner === undefined) return this.local.request(clientId, payload, timeoutMs, kind);
    const reply = await this.answerOf(
      owner,
      owner.link
        .timeout(timeoutMs + 1000)
        .emitWithAck("request", encode({ clientId, payload, timeoutMs, kind })),
      `no answer from ${clientId} through node ${owner.node} within ${timeoutMs} ms`,
    );
    return openReply(reply);
  }

  requestMasked(
    steps: readonly MemberStep[],
    timeoutMs: number,
    setup: SecAggSetup,
  ): MaskedGroup[] {
    const byNode = new Map<Follower, MemberStep[]>();
    for (const step of steps) {
      const owner = this.ownerOf(step.clientId);
      if (owner === undefined) continue;
      const mine = byNode.get(owner);
      if (mine === undefined) byNode.set(owner, [step]);
      else mine.push(step);
    }
    return [...byNode].map(([f, mine]) => {
      const asked = new Map(mine.map((s) => [s.clientId, s.index] as const));
      const round: MaskedRound = { setup, steps: mine, timeoutMs };
      const sum = this.answerOf(
        f,
        f.link.timeout(timeoutMs + 2000).emitWithAck("masked", encode(round)),
        `no masked sum from node ${f.node} within ${timeoutMs} ms`,
      ).then((reply: unknown) => parseMaskedReply(reply, asked, f.node));
      return { clientIds: [...asked.keys()], sum };
    });
  }

  sealModel(round: number, request: Uint8Array): Uint8Array {
    return this.local.sealModel(round, request);
  }

  modelFor(clientId: string, broadcast: RoundBroadcast): Uint8Array {
    if (this.ownerOf(clientId) === undefined) return this.local.modelFor(clientId, broadcast);
    return this.fullRequest(broadcast);
  }

  /**
   * The sealed full request of `broadcast`, which every follower's member gets (they hold no
   * version): sealed once per broadcast, however many members and steps ask for it.
   */
  private fullRequest(broadcast: RoundBroadcast): Uint8Array {
    if (this.full?.broadcast !== broadcast) {
      const { payload } = broadcast.requestFor(null, null);
      this.full = { broadcast, sealed: this.local.sealModel(broadcast.round, payload) };
    }
    return this.full.sealed;
  }

  forgetModel(clientId: string): void {
    if (this.ownerOf(clientId) === undefined) this.local.forgetModel(clientId);
  }

  credentialOf(clientId: string): MemberCredential | null {
    const owner = this.ownerOf(clientId);
    return owner === undefined
      ? this.local.credentialOf(clientId)
      : (owner.members.get(clientId) ?? null);
  }

  /** Followers show the run's progress on their dashboards too. */
  phase(round: number, phase: EnginePhase): void {
    this.lastPhase = { round, phase };
    this.nsp.emit("phase", round, phase);
  }

  roundDone(metrics: RoundMetrics): void {
    this.completed.push({ ...metrics, clients: [] });
    this.nsp.emit("round:done", metrics);
  }

  finish(info: RunDone): void {
    this.local.finish(info);
    this.nsp.emit("done", info);
  }
}

/** The sink as one node's transport sees it: only the cohort members that node holds. */
function restrict(sink: UpdateSink, cohort: readonly string[]): UpdateSink {
  return {
    round: sink.round,
    cohort,
    submit: (id, payload) => sink.submit(id, payload),
    drop: (id, failure) => sink.drop(id, failure),
    fail: (id, report) => sink.fail(id, report),
    ...(sink.roundFor === undefined ? {} : { roundFor: (id: string) => sink.roundFor!(id) }),
  };
}

/** Member reports, checked (malformed entries are left out). */
function parseMembers(raw: unknown): MemberInfo[] {
  if (!Array.isArray(raw)) return [];
  return raw.flatMap((m: unknown) => {
    const o = (typeof m === "object" && m !== null ? m : {}) as Partial<MemberInfo>;
    if (typeof o.clientId !== "string" || o.clientId.length === 0 || o.clientId.length > 256) {
      return [];
    }
    const c = o.credential as Partial<MemberCredential> | null | undefined;
    const credential =
      c != null && c.identityKey instanceof Uint8Array
        ? {
            identityKey: c.identityKey,
            token:
              c.token != null && c.token.signature instanceof Uint8Array
                ? { expiresAt: Number(c.token.expiresAt), signature: c.token.signature }
                : null,
          }
        : null;
    return [{ clientId: o.clientId, credential }];
  });
}
