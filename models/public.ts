/**
 * The `cohort/models` package entry: tfjs model files in plain Node (no tfjs-node), a run
 * directory's checkpoints, and predictions over examples from CSV or JSON. It imports no backend
 * beyond what `@tensorflow/tfjs` brings (cpu in Node).
 */
export { loadModel, locateModel, saveModel } from "./files.js";
export type { LoadModelOptions, ModelLocation, SavedModel } from "./files.js";
export { fileSystemHandler, readModelArtifacts } from "./file-handler.js";
export { checkpointRounds, findCheckpoint, type Checkpoint } from "./checkpoints.js";
export { modelIO, predictExamples, type ModelIO, type Prediction } from "./predict.js";
export { examplesFromCsv, examplesFromJson, readExamples, type Examples } from "./examples-file.js";
