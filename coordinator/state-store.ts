/**
 * Where the engine commits the server state after each round and where a resumed run reads it
 * back: the run directory's ledger by default, or Redis for coordinators that share their
 * state (`coordinator/cluster/redis-state.ts`). A commit is atomic: after a crash, `head()` is
 * the committed state or the one before, never a mix.
 */
import type { TensorSpec } from "../protocol/messages.js";
import type { ExperimentConfig } from "./experiment.js";
import { commitLedger, loadLedger, type CommittedState, type ServerState } from "./ledger.js";

export interface StateStore {
  /** The last committed state; null before the first commit. */
  head(): Promise<ServerState | null>;
  /**
   * Commit the state after a round.
   *
   * @throws CohortError `FENCED` from a store shared by several nodes, when this node's lease
   *   was taken over.
   */
  commit(state: CommittedState): Promise<void>;
  /**
   * Before the run directory gets a committed round's outputs (its `metrics.jsonl` line, its
   * checkpoint): throws when this writer may no longer be the only one.
   *
   * @throws CohortError `FENCED` from a shared store, when this node's lease may have lapsed
   */
  check?(): void;
}

/** The run directory's ledger (`ledger.json` and `ledger/`). */
export function runDirStore(runDir: string, specs: readonly TensorSpec[]): StateStore {
  return {
    head: () => loadLedger(runDir, specs),
    commit: (state) => commitLedger(runDir, state),
  };
}

/**
 * The state of a run that several coordinator nodes share (one leads at a time): its store,
 * and the run's identity, so a node that takes over continues the same run.
 */
export interface SharedState extends StateStore {
  /**
   * The run to lead: the one registered before (its id and last committed state) after
   * checking it is the same experiment, or a new one registered under `runId`.
   *
   * @throws CohortError `INVALID_OPTION` when the registered run is another experiment.
   */
  open(
    runId: string,
    config: ExperimentConfig,
  ): Promise<{ runId: string; state: ServerState | null }>;
}
