/** The tfjs side of Cohort, shared by coordinator, client and simulator: backends, built-in models, training. */
export * from "./backend.js";
export * from "./builtin.js";
export * from "./adapter.js";
export * from "./training.js";
export * from "./batched-training.js";
export { checkContract, DEFAULT_OBJECTIVE, rocAuc, type MetricFn, type Objective } from "./task.js";
export * from "./model-file.js";
export * from "./webgpu.js";
export * from "./wasm-kernels.js";
export * from "./webgpu-kernels.js";
export * from "./train-pool.js";
export { shareDataset, type TrainJob, type TrainJobResult } from "./train-protocol.js";
export * from "./file-handler.js";
export * from "./checkpoints.js";
export * from "./files.js";
export * from "./predict.js";
export * from "./examples-file.js";
