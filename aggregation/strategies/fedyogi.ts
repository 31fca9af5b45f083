/** FedYogi (Reddi et al. 2021): Yogi's additive second moment on the server. */
import { adaptiveStrategy } from "./adaptive.js";

export const fedyogi = adaptiveStrategy(
  "fedyogi",
  "yogi",
  "server Yogi: like FedAdam with v ← v − (1 − β₂)Δ̄²·sign(v − Δ̄²)",
);
