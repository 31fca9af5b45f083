/** FedAdam (Reddi et al. 2021): Adam on the server with the mean delta as pseudo-gradient. */
import { adaptiveStrategy } from "./adaptive.js";

export const fedadam = adaptiveStrategy(
  "fedadam",
  "adam",
  "server Adam on the mean delta: m, v moments, w ← w + η·m/(√v + τ)",
);
