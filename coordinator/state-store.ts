/**
 * Where the engine commits the server state after each round and where a resumed run reads it
 * back: the run directory's ledger by default, or Redis for coordinators that share their
 * state (`coordinator/cluster/redis-state.ts`). A commit is atomic: after a crash, `head()` is
 * the committed state or the one before, never a mix.
 */
import type { TensorSpec } from "../protocol/messages.js";
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
}

/** The run directory's ledger (`ledger.json` and `ledger/`). */
export function runDirStore(runDir: string, specs: readonly TensorSpec[]): StateStore {
  return {
    head: () => loadLedger(runDir, specs),
    commit: (state) => commitLedger(runDir, state),
  };
}
