/** FedAvg (McMahan et al. 2017): example-weighted mean of the deltas, `w ← w + η Δ̄`. */
import { weightedMean } from "../aggregators/mean.js";
import { serverSgd } from "../optimizers/sgd.js";
import type { StrategyDefinition } from "../registry.js";
import { assemble, checkCommon, commonDocs, type CommonParams } from "./common.js";

export const fedavg: StrategyDefinition<CommonParams> = {
  name: "fedavg",
  summary: "example-weighted mean of the deltas, then w ← w + η·Δ̄",
  secure: true,
  defaults: { serverLearningRate: 1, proximalMu: 0 },
  docs: {
    ...commonDocs,
    serverLearningRate: "server learning rate η (1: McMahan et al.'s FedAvg)",
  },
  check: (p) => checkCommon("fedavg", p),
  create: (p) => assemble("fedavg", p, weightedMean, serverSgd(p.serverLearningRate)),
};
