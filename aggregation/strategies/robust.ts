/**
 * Robust aggregators for plain rounds: coordinate-wise median, trimmed mean, Krum, Multi-Krum
 * and centered clipping, each followed by a server step `w ← w + η·aggregate`. They need every
 * update in the clear, so secure aggregation refuses them; they ignore claimed example counts.
 */
import { centeredClippingAggregator } from "../aggregators/centered-clipping.js";
import { krumAggregator } from "../aggregators/krum.js";
import { median as medianAggregator } from "../aggregators/median.js";
import { trimmedMeanAggregator } from "../aggregators/trimmed-mean.js";
import { serverSgd } from "../optimizers/sgd.js";
import { need, type StrategyDefinition } from "../registry.js";
import { assemble, checkCommon, commonDocs, type CommonParams } from "./common.js";

const common = { serverLearningRate: 1, proximalMu: 0 };

export const median: StrategyDefinition<CommonParams> = {
  name: "median",
  summary: "coordinate-wise median of the updates (Yin et al. 2018)",
  secure: false,
  defaults: common,
  docs: commonDocs,
  check: (p) => checkCommon("median", p),
  create: (p) => assemble("median", p, medianAggregator, serverSgd(p.serverLearningRate)),
};

interface TrimmedParams extends CommonParams {
  beta: number;
}

export const trimmedMean: StrategyDefinition<TrimmedParams> = {
  name: "trimmed-mean",
  summary:
    "coordinate-wise mean after dropping the ⌊βn⌋ largest and smallest values (Yin et al. 2018)",
  secure: false,
  defaults: { ...common, beta: 0.2 },
  docs: {
    ...commonDocs,
    beta: "fraction β trimmed from each end (0.2: one in five updates may be hostile)",
  },
  check(p) {
    checkCommon("trimmed-mean", p);
    need.fraction("trimmed-mean", "beta", p.beta, 0.5);
  },
  create: (p) =>
    assemble("trimmed-mean", p, trimmedMeanAggregator(p.beta), serverSgd(p.serverLearningRate)),
};

interface KrumParams extends CommonParams {
  f: number;
}

export const krum: StrategyDefinition<KrumParams> = {
  name: "krum",
  summary: "the one update closest to its n − f − 2 nearest others (Blanchard et al. 2017)",
  secure: false,
  defaults: { ...common, f: 1 },
  docs: { ...commonDocs, f: "hostile updates tolerated; needs n ≥ 2f + 3" },
  check(p) {
    checkCommon("krum", p);
    need.integer("krum", "f", p.f, 0);
  },
  create: (p) =>
    assemble("krum", p, krumAggregator(p.f, 1, "krum"), serverSgd(p.serverLearningRate)),
};

interface MultiKrumParams extends KrumParams {
  m: number;
}

export const multiKrum: StrategyDefinition<MultiKrumParams> = {
  name: "multi-krum",
  summary: "the mean of the m best Krum-scored updates (Blanchard et al. 2017)",
  secure: false,
  defaults: { ...common, f: 1, m: 0 },
  docs: {
    ...commonDocs,
    f: "hostile updates tolerated; needs n ≥ 2f + 3",
    m: "updates kept (0: n − f)",
  },
  check(p) {
    checkCommon("multi-krum", p);
    need.integer("multi-krum", "f", p.f, 0);
    need.integer("multi-krum", "m", p.m, 0);
  },
  create: (p) =>
    assemble(
      "multi-krum",
      p,
      krumAggregator(p.f, p.m === 0 ? undefined : p.m, "multi-krum"),
      serverSgd(p.serverLearningRate),
    ),
};

interface ClippingParams extends CommonParams {
  tau: number;
  iterations: number;
}

export const centeredClipping: StrategyDefinition<ClippingParams> = {
  name: "centered-clipping",
  summary: "iterated clipping of every update around the aggregate (Karimireddy et al. 2021)",
  secure: false,
  defaults: { ...common, tau: 1, iterations: 3 },
  docs: {
    ...commonDocs,
    tau: "clipping radius τ in L2 norm of the delta (1)",
    iterations: "clipping iterations L (3, as in Karimireddy et al. 2021)",
  },
  check(p) {
    checkCommon("centered-clipping", p);
    need.positive("centered-clipping", "tau", p.tau);
    need.integer("centered-clipping", "iterations", p.iterations, 1);
  },
  create: (p) =>
    assemble(
      "centered-clipping",
      p,
      centeredClippingAggregator(p.tau, p.iterations),
      serverSgd(p.serverLearningRate),
    ),
};
