/** The coordinator: a socket.io server running FedAvg rounds, with its run store. */
export { createCoordinator } from "./coordinator.js";
export type { Coordinator, CoordinatorEvents, RunSummary } from "./coordinator.js";
export type { CoordinatorOptions } from "./options.js";
export type { RoundMetrics, ClientRoundMetrics } from "./run-store.js";
export { RoundCollector } from "./round.js";
export type { AcceptedUpdate, RoundOutcome, RoundLimits } from "./round.js";
export { cohortSize, sampleCohort } from "./sampling.js";
