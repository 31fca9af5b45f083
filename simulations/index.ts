/** The simulator: virtual devices through the real coordinator and client code; datasets and partitions. */
export * from "../models/datasets/index.js";
export { simulate, runPlot } from "./simulate.js";
export type {
  SimulationResult,
  SimulationSummary,
  BaselineResult,
  SimulateHooks,
  TrainingPath,
} from "./simulate.js";
export { recordedConfig, resolveSimulationConfig, simulationInput } from "./config.js";
export type { SimulationConfig, SimulationInput, SimulationRecord } from "./config.js";
export { simulationData } from "./data.js";
export * from "./partition.js";
export { drawFate, checkFaults, NO_FAULTS } from "./faults.js";
export type { FaultConfig, DeviceFate } from "./faults.js";
export { InProcessTransport } from "./in-process.js";
export type { DeviceTrainer, InProcessOptions } from "./in-process.js";
export { accuracyLossSvg } from "./plot.js";
