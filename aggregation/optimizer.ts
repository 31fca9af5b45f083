/** The server-optimizer seam: how the aggregate delta moves the global model (Reddi et al. 2021, Algorithm 2). */
import type { StateRecord } from "./state.js";
import type { Weights } from "./weights.js";

/**
 * Treats the round's aggregate delta as a pseudo-gradient and steps the global model. Pure:
 * `step` returns new weights and a new state and leaves its inputs untouched, so a state
 * committed to the ledger and read back continues the run bit for bit.
 */
export interface ServerOptimizer {
  readonly name: string;
  /** The state before the first round. */
  init(w: Weights): StateRecord;
  /**
   * Round `t` (1-based): the next global weights and state. Entries of the state it does not
   * own pass through unchanged (a strategy wrapper may keep its own there).
   */
  step(
    w: Weights,
    meanDelta: Weights,
    s: StateRecord,
    t: number,
  ): { weights: Float32Array[]; state: StateRecord };
}
