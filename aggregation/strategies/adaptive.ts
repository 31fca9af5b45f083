/** Parameters shared by FedAdagrad, FedAdam and FedYogi (Reddi et al. 2021). */
import { weightedMean } from "../aggregators/mean.js";
import { adaptiveOptimizer, type AdaptiveVariant } from "../optimizers/adaptive.js";
import { need, type StrategyDefinition } from "../registry.js";
import { assemble, checkCommon, commonDocs, type CommonParams } from "./common.js";

/** Parameters of an adaptive strategy. */
export interface AdaptiveStrategyParams extends CommonParams {
  beta1: number;
  beta2: number;
  tau: number;
}

/** The definition of one adaptive strategy. */
export function adaptiveStrategy(
  name: string,
  variant: AdaptiveVariant,
  summary: string,
): StrategyDefinition<AdaptiveStrategyParams> {
  return {
    name,
    summary,
    secure: true,
    defaults: { serverLearningRate: 0.01, proximalMu: 0, beta1: 0.9, beta2: 0.99, tau: 0.001 },
    docs: {
      ...commonDocs,
      serverLearningRate: "server learning rate η (0.01; Reddi et al. 2021 tune it on a grid)",
      beta1: "first-moment decay β₁ (0.9, fixed in Reddi et al. 2021's experiments)",
      beta2:
        variant === "adagrad"
          ? "unused by Adagrad (kept for a uniform parameter set)"
          : "second-moment decay β₂ (0.99, fixed in Reddi et al. 2021's experiments)",
      tau: "adaptivity τ: v starts at τ², steps divide by √v + τ (0.001, within Reddi et al.'s grid 1e-7…1e-1)",
    },
    check(p) {
      checkCommon(name, p);
      need.fraction(name, "beta1", p.beta1);
      need.fraction(name, "beta2", p.beta2);
      need.positive(name, "tau", p.tau);
    },
    create: (p) =>
      assemble(
        name,
        p,
        weightedMean,
        adaptiveOptimizer(variant, {
          eta: p.serverLearningRate,
          beta1: p.beta1,
          beta2: p.beta2,
          tau: p.tau,
        }),
      ),
  };
}
