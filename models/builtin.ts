/** Built-in architectures of McMahan et al. 2017: the 2NN (`mlp`) and the CNN (`cnn`). */
import * as tf from "@tensorflow/tfjs";
import { CohortError } from "../protocol/errors.js";

/** Names of the built-in models. */
export const BUILTIN_MODELS = ["mlp", "cnn"] as const;
export type BuiltinModel = (typeof BUILTIN_MODELS)[number];

/** Input and output of a built-in model. */
export interface BuiltinOptions {
  /** @default [28, 28, 1] */
  inputShape: number[];
  /** @default 10 */
  numClasses: number;
  /** Seed of the weight initialisers, so a run's initial model is reproducible. @default 0 */
  seed: number;
}

/** Whether a model name is a built-in one. */
export function isBuiltinModel(name: string): name is BuiltinModel {
  return (BUILTIN_MODELS as readonly string[]).includes(name);
}

/**
 * Build a built-in model.
 * - `mlp`: 784-200-200-10 with ReLU (199,210 parameters on 28×28 inputs).
 * - `cnn`: two 5×5 conv layers (32, 64 channels) each followed by 2×2 max pooling, a 512-unit
 *   dense layer and softmax (1,663,370 parameters on 28×28 inputs).
 */
export function buildBuiltinModel(
  name: BuiltinModel,
  options: Partial<BuiltinOptions> = {},
): tf.LayersModel {
  const { inputShape, numClasses, seed } = {
    inputShape: [28, 28, 1],
    numClasses: 10,
    seed: 0,
    ...options,
  };
  let s = seed * 16;
  const init = () => tf.initializers.glorotUniform({ seed: ++s });
  switch (name) {
    case "mlp":
      return tf.sequential({
        name: "mlp",
        layers: [
          tf.layers.flatten({ inputShape }),
          tf.layers.dense({ units: 200, activation: "relu", kernelInitializer: init() }),
          tf.layers.dense({ units: 200, activation: "relu", kernelInitializer: init() }),
          tf.layers.dense({ units: numClasses, activation: "softmax", kernelInitializer: init() }),
        ],
      });
    case "cnn": {
      const conv = (filters: number) =>
        tf.layers.conv2d({
          filters,
          kernelSize: 5,
          padding: "same",
          activation: "relu",
          kernelInitializer: init(),
        });
      return tf.sequential({
        name: "cnn",
        layers: [
          tf.layers.inputLayer({ inputShape }),
          conv(32),
          tf.layers.maxPooling2d({ poolSize: 2 }),
          conv(64),
          tf.layers.maxPooling2d({ poolSize: 2 }),
          tf.layers.flatten(),
          tf.layers.dense({ units: 512, activation: "relu", kernelInitializer: init() }),
          tf.layers.dense({ units: numClasses, activation: "softmax", kernelInitializer: init() }),
        ],
      });
    }
    default: {
      const exhaustive: never = name;
      throw new CohortError("INVALID_MODEL", `unknown built-in model ${String(exhaustive)}`);
    }
  }
}
