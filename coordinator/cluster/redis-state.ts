/**
 * The engine's state store on Redis, for coordinator nodes that share one run: each round's
 * server state (the ledger's record and its weights and state arrays) is committed as two keys
 * under the leader's fencing token (`FencedStore`), so a leader that lost its lease cannot
 * overwrite its successor's rounds. The bytes travel base64-encoded (a third larger than the
 * binary): simple and safe for every Redis client.
 */
import type { TensorSpec } from "../../protocol/messages.js";
import { CohortError } from "../../protocol/errors.js";
import {
  decodeState,
  encodeState,
  parseRecord,
  type CommittedState,
  type ServerState,
} from "../ledger.js";
import type { SharedState } from "../state-store.js";
import { checkSameExperiment, type ExperimentConfig } from "../experiment.js";
import { FencedStore, leaseKeys, type RedisCommands, type RedisLease } from "./lease.js";

/** The keys of cluster `name`'s committed state: the record, then the bytes. */
export function stateKeys(name: string): [string, string] {
  return [`cohort:${name}:state`, `cohort:${name}:state-bytes`];
}

/** The key of cluster `name`'s run: its id and experiment configuration. */
export function runKey(name: string): string {
  return `cohort:${name}:run`;
}

export class RedisStateStore implements SharedState {
  private readonly fenced: FencedStore;
  private readonly where: string;

  constructor(
    private readonly redis: RedisCommands,
    /** The cluster's name: the prefix of its keys. */
    private readonly cluster: string,
    /** This node's lease: commits carry its token. */
    private readonly lease: RedisLease,
    private readonly specs: readonly TensorSpec[],
  ) {
    const fields = stateKeys(cluster);
    this.fenced = new FencedStore(redis, leaseKeys(cluster), fields);
    this.where = `Redis key ${fields[0]}`;
  }

  async open(
    runId: string,
    config: ExperimentConfig,
  ): Promise<{ runId: string; state: ServerState | null }> {
    const key = runKey(this.cluster);
    // The first leader registers the run; later ones find it (SET NX: one of them wins).
    await this.redis.sendCommand(["SET", key, JSON.stringify({ runId, config }), "NX"]);
    const raw = await this.redis.sendCommand(["GET", key]);
    const run = typeof raw === "string" ? parseRun(raw, key) : null;
    if (run === null) throw new CohortError("INTERNAL", `Redis key ${key} vanished`);
    checkSameExperiment(`cluster "${this.cluster}"`, run.config, config);
    const state = await this.head();
    if (state !== null && state.runId !== run.runId) {
      throw new CohortError(
        "INVALID_OPTION",
        `${this.where} holds run ${state.runId}, but cluster "${this.cluster}" runs ${run.runId}`,
      );
    }
    return { runId: run.runId, state };
  }

  async head(): Promise<ServerState | null> {
    const [record, bytes] = await this.fenced.read();
    if (record === null || record === undefined) return null;
    if (bytes === null || bytes === undefined) {
      throw new CohortError("INVALID_OPTION", `${this.where} has a record without its bytes`);
    }
    return decodeState(
      parseRecord(record, this.where),
      Buffer.from(bytes, "base64"),
      this.specs,
      this.where,
    );
  }

  /**
   * A node paused past its lease (that the new leader may have resumed from its last commit,
   * and repaired `metrics.jsonl` with) writes no more of the run's outputs.
   */
  check(): void {
    if (!this.lease.surelyHeld()) {
      throw new CohortError(
        "FENCED",
        `${this.lease.options.node} may no longer hold the cluster's lease (not renewed within its TTL): it writes no more of the run's outputs`,
      );
    }
  }

  /** @throws CohortError `FENCED` when this node does not hold the lease (or lost it). */
  async commit(state: CommittedState): Promise<void> {
    const token = this.lease.token();
    if (token === null) {
      throw new CohortError(
        "FENCED",
        `commit refused: ${this.lease.options.node} does not hold the cluster's lease`,
      );
    }
    const { record, bytes } = encodeState(state);
    await this.fenced.commit(this.lease, token, [
      JSON.stringify(record),
      Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("base64"),
    ]);
  }
}

/** The registered run of a cluster, checked. */
function parseRun(raw: string, key: string): { runId: string; config: ExperimentConfig } {
  const value = parseRecord(raw, `Redis key ${key}`);
  const { runId, config } = value;
  if (typeof runId !== "string" || typeof config !== "object" || config === null) {
    throw new CohortError("INVALID_OPTION", `Redis key ${key} is not a run's registration`);
  }
  return { runId, config: config as ExperimentConfig };
}
