/** What the round engine is doing, as the dashboard and `/metrics` show it (browser-safe: no I/O). */
import { SECAGG_PHASES } from "../aggregation/secure/phases.js";

/** A plain FedAvg round, in order. */
export const PLAIN_ROUND_PHASES = ["waiting", "training", "aggregating", "evaluating"] as const;

/** A secure round, in order: the SecAgg+ phases replace training and aggregation. */
export const SECURE_ROUND_PHASES = ["waiting", ...SECAGG_PHASES, "evaluating"] as const;

/** Every phase the engine reports, `done` after the last round. */
export const ENGINE_PHASES = [
  "waiting",
  "training",
  ...SECAGG_PHASES,
  "aggregating",
  "evaluating",
  "done",
] as const;
export type EnginePhase = (typeof ENGINE_PHASES)[number];
