/** The built-in strategies, registered by name. A new strategy is one file plus one line here. */
import { registerStrategy } from "../registry.js";
import { fedadagrad } from "./fedadagrad.js";
import { fedadam } from "./fedadam.js";
import { fedavg } from "./fedavg.js";
import { fedavgm } from "./fedavgm.js";
import { fedprox } from "./fedprox.js";
import { fedyogi } from "./fedyogi.js";
import { centeredClipping, krum, median, multiKrum, trimmedMean } from "./robust.js";

registerStrategy(fedavg);
registerStrategy(fedavgm);
registerStrategy(fedadam);
registerStrategy(fedyogi);
registerStrategy(fedadagrad);
registerStrategy(fedprox);
registerStrategy(median);
registerStrategy(trimmedMean);
registerStrategy(krum);
registerStrategy(multiKrum);
registerStrategy(centeredClipping);

export { fedadagrad, fedadam, fedavg, fedavgm, fedprox, fedyogi };
export { centeredClipping, krum, median, multiKrum, trimmedMean };
export {
  registerStrategy,
  resolveStrategy,
  strategyDefinition,
  strategyDefinitions,
  strategyParams,
  type StrategyDefinition,
  type StrategyParams,
} from "../registry.js";
