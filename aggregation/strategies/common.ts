/** What every registered strategy shares: the server learning rate, FedProx's μ, and how a strategy is assembled. */
import type { Aggregator } from "../aggregator.js";
import type { ServerOptimizer } from "../optimizer.js";
import { canonicalRef, need, type StrategyParams } from "../registry.js";
import type { Strategy } from "../strategy.js";

/** Parameters every strategy takes. */
export interface CommonParams extends StrategyParams {
  serverLearningRate: number;
  proximalMu: number;
}

/** Documentation of the common parameters. */
export const commonDocs = {
  serverLearningRate: "server learning rate η on the aggregate delta",
  proximalMu: "FedProx μ: clients add μ/2‖w − w_global‖² to their local objective (0: off)",
};

/** Range checks of the common parameters. */
export function checkCommon(name: string, p: CommonParams): void {
  need.positive(name, "serverLearningRate", p.serverLearningRate);
  need.nonNegative(name, "proximalMu", p.proximalMu);
}

/** A strategy from its parts; the client configuration carries the proximal term when μ > 0. */
export function assemble(
  name: string,
  params: StrategyParams & { proximalMu: number },
  aggregator: Aggregator,
  optimizer: ServerOptimizer,
): Strategy {
  const mu = params.proximalMu;
  return {
    name,
    ref: canonicalRef(name, params),
    aggregator,
    optimizer,
    configureFit: (_ctx, base) => (mu === 0 ? base : { ...base, proximalMu: mu }),
  };
}
