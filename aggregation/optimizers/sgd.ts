/** Server SGD: `w ← w + η Δ̄` (η = 1 is McMahan et al.'s FedAvg). Stateless. */
import type { ServerOptimizer } from "../optimizer.js";
import { emptyState } from "../state.js";
import { addScaled } from "../weights.js";

/** Plain server step with learning rate `eta`. */
export function serverSgd(eta: number): ServerOptimizer {
  return {
    name: "sgd",
    init: () => emptyState(),
    // Stateless: whatever else the strategy keeps in the state passes through.
    step: (w, delta, s) => ({ weights: addScaled(w, delta, eta), state: s }),
  };
}
