/** FedAvgM (Hsu et al. 2019): FedAvg with server momentum, optionally Nesterov. */
import { weightedMean } from "../aggregators/mean.js";
import { serverMomentum } from "../optimizers/momentum.js";
import { need, type StrategyDefinition } from "../registry.js";
import { assemble, checkCommon, commonDocs, type CommonParams } from "./common.js";

interface Params extends CommonParams {
  momentum: number;
  nesterov: boolean;
}

export const fedavgm: StrategyDefinition<Params> = {
  name: "fedavgm",
  summary: "server momentum on the mean delta: v ← βv + Δ̄, w ← w + η·v",
  secure: true,
  defaults: { serverLearningRate: 1, proximalMu: 0, momentum: 0.9, nesterov: false },
  docs: {
    ...commonDocs,
    momentum: "server momentum β (0.9, Hsu et al. 2019's most used value)",
    nesterov: "Nesterov momentum: w ← w + η(βv + Δ̄)",
  },
  check(p) {
    checkCommon("fedavgm", p);
    need.fraction("fedavgm", "momentum", p.momentum);
  },
  create: (p) =>
    assemble(
      "fedavgm",
      p,
      weightedMean,
      serverMomentum(p.serverLearningRate, p.momentum, p.nesterov),
    ),
};
