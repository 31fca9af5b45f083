/** FedAdagrad (Reddi et al. 2021): Adagrad's accumulated second moment on the server. */
import { adaptiveStrategy } from "./adaptive.js";

export const fedadagrad = adaptiveStrategy(
  "fedadagrad",
  "adagrad",
  "server Adagrad: v ← v + Δ̄², w ← w + η·m/(√v + τ)",
);
