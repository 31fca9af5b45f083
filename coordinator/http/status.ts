/** The live status of a run, fed by transport and engine events; the dashboard and `/metrics` read it. */
import type { EnginePhase } from "../phases.js";
import type { RoundMetrics } from "../run-store.js";
import type { GateOutcome } from "../version-gate.js";
import { score } from "../promotion.js";

/** How many recent failures, rejected updates and versions the status keeps. */
const RECENT = 50;
/** How many rollbacks the status keeps. */
const RECENT_ROLLBACKS = 20;

/** A connected client as the dashboard shows it. */
export interface ClientStatus {
  clientId: string;
  platform: string;
  backend: string;
  connectedAt: string;
  /** What it reported in the last plain round it took part in (secure rounds reveal nothing). */
  lastRound: {
    round: number;
    numExamples: number;
    loss: number;
    trainMs: number;
    bytesUp: number;
  } | null;
}

/** One failure: a client dropped from a round, or an update the coordinator rejected. */
export interface FailureStatus {
  round: number;
  clientId: string;
  code: string;
  message: string;
  kind: "round" | "rejected";
  at: string;
}

/** One completed round, as charted. */
export interface RoundPoint {
  round: number;
  secure: boolean;
  /** An asynchronous (FedBuff) step rather than a round. */
  async: boolean;
  accuracy: number | null;
  loss: number | null;
  /** Federated evaluation on clients' held-out data, where it ran. */
  federatedAccuracy: number | null;
  federatedLoss: number | null;
  trainLoss: number | null;
  participants: number;
  failures: number;
  durationMs: number;
  /**
   * Bytes clients sent in the round (their updates) and bytes sent to them (the global model);
   * in secure rounds, the messages of every phase.
   */
  bytesUp: number;
  bytesDown: number;
  /** The update codec (`q8`, `topk:0.01`); null in secure float32 rounds, which report none. */
  codec: string | null;
  /** Float32 bytes of the accepted updates over the bytes they came in (null: none accepted). */
  compressionRatio: number | null;
  /** Mean milliseconds a client took to encode its update (null: float32 or not reported). */
  encodeMs: number | null;
  /** Mean milliseconds the coordinator took to decode an update (null: none accepted). */
  decodeMs: number | null;
  aborted: boolean;
  /** ε spent after the round, where the run is differentially private. */
  epsilon: number | null;
}

/** A recent model version as the dashboard lists it. */
export interface VersionPoint {
  version: number;
  round: number;
  status: "candidate" | "promoted" | "rejected";
  /** Why it was rejected or kept (gated runs). */
  reason: string | null;
  /** The score the gate compared: accuracy where the task has one, else −loss. */
  score: number | null;
}

/** A rollback: a rejected version, the version training went back to, and why. */
export interface RollbackPoint {
  from: number;
  to: number;
  reason: string;
  at: string;
}

/** The state of an asynchronous (FedBuff) buffer. */
export interface BufferStatus {
  /** The version the buffer will make. */
  version: number;
  fill: number;
  size: number;
  inFlight: number;
  /** The buffer's updates so far by staleness (index s: s steps old). */
  staleness: number[];
}

/** One node of a cluster, as it last reported itself (every third of the lease's TTL). */
export interface ClusterNodeStatus {
  node: string;
  /** `standby`: neither leading nor following (between leaders). */
  role: "leader" | "follower" | "standby";
  /** Where its clients connect; null while it serves none. */
  url: string | null;
  clients: number;
  /** What it last sent the leader for a round: its partial's bytes and its members' bytes. */
  partial: { round: number; bytes: number; clientBytes: number } | null;
  /** Milliseconds since its report. */
  seenMsAgo: number;
}

/** A cluster's nodes as the node serving the page sees them (from the cluster's Redis). */
export interface ClusterStatus {
  name: string;
  /** The node serving this status. */
  node: string;
  /** Who holds the lease, or null. */
  leader: string | null;
  /** Milliseconds the leader has held its lease, and since it last renewed it. */
  leaseHeldMs: number | null;
  leaseRenewedMsAgo: number | null;
  leaseTtlMs: number;
  nodes: ClusterNodeStatus[];
}

/** What `GET /api/status` returns. */
export interface StatusSnapshot {
  runId: string;
  model: { name: string; numParameters: number };
  secure: boolean;
  /** The strategy's name, e.g. `fedadam`. */
  strategy: string;
  startedAt: string;
  roundsTotal: number;
  roundsCompleted: number;
  /** The round in progress (or the last one, once done). */
  round: number;
  phase: EnginePhase | "idle";
  phaseSince: string;
  clients: ClientStatus[];
  history: RoundPoint[];
  totals: {
    bytesUp: number;
    bytesDown: number;
    durationMs: number;
    failures: number;
    rejected: number;
  };
  failures: FailureStatus[];
  /** Model versions: the promoted one, the newest, the recent ones and the rollbacks. */
  versions: {
    promoted: number | null;
    latest: number | null;
    recent: VersionPoint[];
    rollbacks: RollbackPoint[];
    rejected: number;
  };
  /** Asynchronous mode: the buffer now (null in synchronous runs). */
  buffer: BufferStatus | null;
  /** A cluster's nodes (null: one coordinator). */
  cluster: ClusterStatus | null;
}

/** What the tracker is told about the run when it starts. */
export interface RunInfo {
  runId: string;
  model: { name: string; numParameters: number };
  secure: boolean;
  strategy: string;
  rounds: number;
}

/** Collects the run's live state from events; every method is cheap and never throws. */
export class StatusTracker {
  private readonly clients = new Map<string, ClientStatus>();
  private readonly rounds: RoundMetrics[] = [];
  private readonly failures: FailureStatus[] = [];
  private rejected = 0;
  private round = 0;
  private phaseName: EnginePhase | "idle" = "idle";
  private phaseSince = new Date().toISOString();
  private readonly startedAt = new Date().toISOString();
  private readonly versions: VersionPoint[] = [];
  private readonly rollbacks: RollbackPoint[] = [];
  private promoted: number | null = null;
  private latest: number | null = null;
  private rejectedVersions = 0;
  private bufferState: BufferStatus | null = null;
  /** Where the cluster's view comes from (null: one coordinator). */
  cluster: (() => ClusterStatus | null) | null = null;

  constructor(private readonly run: RunInfo) {}

  join(client: { clientId: string; platform: string; backend: string }): void {
    const previous = this.clients.get(client.clientId);
    this.clients.set(client.clientId, {
      ...client,
      connectedAt: new Date().toISOString(),
      lastRound: previous?.lastRound ?? null,
    });
  }

  leave(client: { clientId: string }): void {
    this.clients.delete(client.clientId);
  }

  reject(info: { clientId: string; code: string; message: string }): void {
    this.rejected++;
    this.remember({ ...info, round: this.round, kind: "rejected", at: new Date().toISOString() });
  }

  phase(round: number, phase: EnginePhase): void {
    this.round = round;
    this.phaseName = phase;
    this.phaseSince = new Date().toISOString();
  }

  completed(metrics: RoundMetrics): void {
    this.rounds.push(metrics);
    this.round = metrics.round;
    for (const f of metrics.failureReasons) {
      this.remember({ ...f, round: metrics.round, kind: "round", at: metrics.timestamp });
    }
    for (const c of metrics.clients) {
      const client = this.clients.get(c.clientId);
      if (client === undefined) continue;
      client.lastRound = {
        round: metrics.round,
        numExamples: c.numExamples,
        loss: c.loss,
        trainMs: c.trainMs,
        bytesUp: c.bytesUp,
      };
    }
  }

  /** A new version was decided on. */
  version(outcome: GateOutcome): void {
    const v = outcome.version;
    const evaluation = v.federated ?? v.central;
    this.versions.push({
      version: v.version,
      round: v.round,
      status: v.status,
      reason: outcome.decision.action === "promote" ? null : outcome.decision.reason,
      score: score(evaluation),
    });
    if (this.versions.length > RECENT) this.versions.splice(0, this.versions.length - RECENT);
    this.latest = v.version;
    if (v.status === "promoted") this.promoted = v.version;
    if (outcome.rollback !== null) {
      this.rejectedVersions++;
      this.promoted = outcome.rollback.to;
      this.rollbacks.push({
        from: v.version,
        to: outcome.rollback.to,
        reason: outcome.decision.reason,
        at: new Date().toISOString(),
      });
      if (this.rollbacks.length > RECENT_ROLLBACKS) this.rollbacks.shift();
    }
  }

  /** An asynchronous buffer filled by one more update. */
  buffer(state: BufferStatus): void {
    this.bufferState = { ...state, staleness: [...state.staleness] };
  }

  private remember(failure: FailureStatus): void {
    this.failures.push(failure);
    if (this.failures.length > RECENT) this.failures.splice(0, this.failures.length - RECENT);
  }

  /** Every completed round's metrics, oldest first, from round `since` + 1 on. */
  roundMetrics(since = 0): RoundMetrics[] {
    return this.rounds.filter((m) => m.round > since);
  }

  /** The status as JSON-ready data. */
  snapshot(): StatusSnapshot {
    const sum = (f: (m: RoundMetrics) => number) => this.rounds.reduce((s, m) => s + f(m), 0);
    return {
      runId: this.run.runId,
      model: this.run.model,
      secure: this.run.secure,
      strategy: this.run.strategy,
      startedAt: this.startedAt,
      roundsTotal: this.run.rounds,
      roundsCompleted: this.rounds.length,
      round: this.round,
      phase: this.phaseName,
      phaseSince: this.phaseSince,
      clients: [...this.clients.values()].map((c) => ({ ...c })),
      history: this.rounds.map((m) => ({
        round: m.round,
        secure: m.secure,
        async: m.mode === "async",
        accuracy: m.accuracy ?? null,
        loss: m.loss ?? null,
        federatedAccuracy: m.federatedAccuracy ?? null,
        federatedLoss: m.federatedLoss ?? null,
        trainLoss: m.trainLoss,
        participants: m.participants,
        failures: m.failures,
        durationMs: m.durationMs,
        bytesUp: m.bytesUp,
        bytesDown: m.bytesDown,
        codec: m.codec ?? null,
        compressionRatio: m.compressionRatio ?? null,
        encodeMs: m.encodeMs ?? null,
        decodeMs: m.decodeMs ?? null,
        aborted: m.aborted === true,
        epsilon: m.epsilon ?? null,
      })),
      totals: {
        bytesUp: sum((m) => m.bytesUp),
        bytesDown: sum((m) => m.bytesDown),
        durationMs: sum((m) => m.durationMs),
        failures: sum((m) => m.failures),
        rejected: this.rejected,
      },
      failures: [...this.failures],
      versions: {
        promoted: this.promoted,
        latest: this.latest,
        recent: this.versions.map((v) => ({ ...v })),
        rollbacks: this.rollbacks.map((r) => ({ ...r })),
        rejected: this.rejectedVersions,
      },
      buffer: this.bufferState === null ? null : { ...this.bufferState },
      cluster: this.cluster?.() ?? null,
    };
  }
}
