/** The coordinator: a socket.io server running FedAvg rounds, its round engine and run store. */
export { createCoordinator, prepareTask } from "./coordinator.js";
export type { Coordinator, CoordinatorEvents, RunSummary } from "./coordinator.js";
export { RoundEngine, makeTask } from "./engine.js";
export type { CohortTransport } from "./transport.js";
export type { CoordinatorOptions, MetricSpec } from "./options.js";
export type { RoundMetrics, ClientRoundMetrics } from "./run-store.js";
export { RoundCollector } from "./round.js";
export type { AcceptedUpdate, RoundOutcome, RoundLimits } from "./round.js";
export { cohortSize, sampleCohort } from "./sampling.js";
export { formatBytes, formatRound } from "./format.js";
export {
  ENGINE_PHASES,
  PLAIN_ROUND_PHASES,
  SECURE_ROUND_PHASES,
  type EnginePhase,
} from "./phases.js";
export {
  StatusTracker,
  exposition,
  statusFamilies,
  type StatusSnapshot,
  type ClientStatus,
  type MetricFamily,
} from "./http/index.js";
