/** The Cohort client library: train locally, send weight deltas to a coordinator. */
export { CohortClient, nodeBackendSelector } from "./client.js";
export type { CohortClientOptions, ClientRoundReport, ClientProgress } from "./client.js";
export { ClientCore } from "./core.js";
export type { BackendSelector, ClientBackend, ClientOptions } from "./core.js";
export type { Dataset, Labels } from "../protocol/dataset.js";
export type { MetricFn } from "../models/task.js";
export { LocalTrainer } from "./trainer.js";
export { DEFAULT_SECURE_FLOORS, DEFAULT_TASK_LIMITS, parseFloors } from "./options.js";
export type { FitOutcome } from "./trainer.js";
export { SecureSession } from "./secure-session.js";
export { DEFAULT_MODS, fedProxMod, withMods } from "./fit-handler.js";
export type { ClientMod, FitHandler, FitIns, LocalFit } from "./fit-handler.js";
