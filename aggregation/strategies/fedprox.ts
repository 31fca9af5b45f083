/** FedProx (Li et al. 2020): FedAvg whose clients add μ/2‖w − w_global‖² to their local objective. */
import { weightedMean } from "../aggregators/mean.js";
import { serverSgd } from "../optimizers/sgd.js";
import type { StrategyDefinition } from "../registry.js";
import { assemble, checkCommon, commonDocs, type CommonParams } from "./common.js";

export const fedprox: StrategyDefinition<CommonParams> = {
  name: "fedprox",
  summary: "FedAvg with a proximal term μ/2‖w − w_global‖² in every client's objective",
  secure: true,
  defaults: { serverLearningRate: 1, proximalMu: 0.01 },
  docs: {
    ...commonDocs,
    proximalMu: "μ of the proximal term (0.01; Li et al. 2020 tune it over {0.001, 0.01, 0.1, 1})",
  },
  check: (p) => checkCommon("fedprox", p),
  create: (p) => assemble("fedprox", p, weightedMean, serverSgd(p.serverLearningRate)),
};
