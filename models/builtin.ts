/**
 * Built-in architectures of the federated-learning literature: McMahan et al. 2017's 2NN
 * (`mlp`) and CNN (`cnn`) and character LSTM (`char-lstm`), logistic regression (`logreg`),
 * and an MLP of given sizes (`mlp:H1,H2,…`). The head fits the task's loss: a softmax for
 * cross-entropy, sigmoids for binary cross-entropy, linear units for regressions.
 */
import * as tf from "@tensorflow/tfjs";
import { CohortError } from "../protocol/errors.js";
import { DEFAULT_LOSS, type LossName } from "../protocol/task.js";
import { isClassIds, labelSize, type Dataset } from "../protocol/dataset.js";

/** Names of the built-in models (`mlp` also takes sizes: `mlp:64,32`). */
export const BUILTIN_MODELS = ["mlp", "cnn", "logreg", "char-lstm"] as const;
export type BuiltinModel = (typeof BUILTIN_MODELS)[number];

/** Input and output of a built-in model. */
export interface BuiltinOptions {
  /** Shape of one example. @default [28, 28, 1] */
  inputShape: number[];
  /** Output units: classes (or vocabulary, for `char-lstm`), or targets of a regression. @default 10 */
  numClasses: number;
  /** The task's loss, which picks the head's activation. @default "sparse-categorical-crossentropy" */
  loss: LossName;
  /** Seed of the weight initialisers, so a run's initial model is reproducible. @default 0 */
  seed: number;
}

/** A built-in model name, parsed: the architecture and, for `mlp:…`, its hidden sizes. */
export interface BuiltinRef {
  kind: BuiltinModel;
  hidden?: number[];
}

/** Parse a built-in model name, or null when it names none (a path). */
export function parseBuiltin(name: string): BuiltinRef | null {
  if ((BUILTIN_MODELS as readonly string[]).includes(name)) return { kind: name as BuiltinModel };
  const sized = /^mlp:(.*)$/.exec(name);
  if (sized === null) return null;
  const hidden = sized[1]!.split(",").map((s) => Number(s.trim()));
  if (hidden.length === 0 || hidden.some((h) => !Number.isInteger(h) || h < 1 || h > 65536)) {
    throw new CohortError(
      "INVALID_MODEL",
      `model ${name}: hidden sizes must be positive integers, e.g. mlp:256,128`,
    );
  }
  return { kind: "mlp", hidden };
}

/** Whether a model name is a built-in one. */
export function isBuiltinModel(name: string): boolean {
  return parseBuiltin(name) !== null;
}

/** The head's activation for a loss. */
function headActivation(loss: LossName): "softmax" | "sigmoid" | "linear" {
  if (loss === "sparse-categorical-crossentropy" || loss === "categorical-crossentropy") {
    return "softmax";
  }
  return loss === "binary-crossentropy" ? "sigmoid" : "linear";
}

/**
 * The hidden layers of a plain `mlp`: McMahan et al.'s 200-200 on images (examples of two or
 * more dimensions, such as `[28, 28, 1]`), one layer of 64 on feature vectors (`[d]`: tabular
 * rows, CSV files, hashed text), where 200-200 would dwarf most data sets.
 */
export function defaultHidden(inputShape: readonly number[]): number[] {
  return inputShape.length > 1 ? [200, 200] : [64];
}

/**
 * Build a built-in model.
 * - `mlp`: 784-200-200-10 with ReLU (199,210 parameters on 28×28 inputs); on feature vectors
 *   (`inputShape [d]`) one hidden layer of 64 ({@link defaultHidden}); `mlp:H1,…` other sizes.
 * - `cnn`: two 5×5 conv layers (32, 64 channels) each followed by 2×2 max pooling, a 512-unit
 *   dense layer and the head (1,663,370 parameters on 28×28 inputs, 10 classes).
 * - `logreg`: the head alone on the flattened input (multinomial or binary logistic
 *   regression; linear regression under a regression loss).
 * - `char-lstm`: next-character prediction on sequences of character ids (`inputShape [T]`): an
 *   8-dimensional embedding, two LSTM layers of 256 units, and a softmax over the vocabulary
 *   (`numClasses`) at every timestep.
 */
export function buildBuiltinModel(
  name: string,
  options: Partial<BuiltinOptions> = {},
): tf.LayersModel {
  const ref = parseBuiltin(name);
  if (ref === null) throw new CohortError("INVALID_MODEL", `unknown built-in model ${name}`);
  const { inputShape, numClasses, seed, loss } = {
    inputShape: [28, 28, 1],
    numClasses: 10,
    seed: 0,
    loss: DEFAULT_LOSS,
    ...options,
  };
  let s = seed * 16;
  const init = () => tf.initializers.glorotUniform({ seed: ++s });
  const head = () =>
    tf.layers.dense({
      units: numClasses,
      activation: headActivation(loss),
      kernelInitializer: init(),
    });
  // Flatten needs examples of two or more dimensions; vectors go in as they are.
  const input = () =>
    inputShape.length > 1
      ? tf.layers.flatten({ inputShape })
      : tf.layers.inputLayer({ inputShape });
  const dense = (units: number) =>
    tf.layers.dense({ units, activation: "relu", kernelInitializer: init() });
  switch (ref.kind) {
    case "mlp":
      return tf.sequential({
        name: "mlp",
        layers: [input(), ...(ref.hidden ?? defaultHidden(inputShape)).map(dense), head()],
      });
    case "logreg":
      return tf.sequential({ name: "logreg", layers: [input(), head()] });
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
          dense(512),
          head(),
        ],
      });
    }
    case "char-lstm": {
      if (inputShape.length !== 1) {
        throw new CohortError(
          "INVALID_MODEL",
          `char-lstm takes sequences of character ids (an input shape [T]), not [${inputShape.join(", ")}]`,
        );
      }
      const lstm = () =>
        tf.layers.lstm({
          units: 256,
          returnSequences: true,
          kernelInitializer: init(),
          recurrentInitializer: tf.initializers.orthogonal({ gain: 1, seed: ++s }),
        });
      return tf.sequential({
        name: "char-lstm",
        layers: [
          tf.layers.embedding({
            inputDim: numClasses,
            outputDim: 8,
            inputLength: inputShape[0]!,
            inputShape,
            embeddingsInitializer: tf.initializers.randomUniform({
              minval: -0.05,
              maxval: 0.05,
              seed: ++s,
            }),
          }),
          lstm(),
          lstm(),
          tf.layers.timeDistributed({ layer: head() }),
        ],
      });
    }
    default: {
      const exhaustive: never = ref.kind;
      throw new CohortError("INVALID_MODEL", `unknown built-in model ${String(exhaustive)}`);
    }
  }
}

/**
 * A built-in model's input and output sized from a dataset: its example shape, and its classes
 * (class ids under sparse cross-entropy) or else one output per label value.
 */
export function builtinOptionsFor(
  data: Dataset | undefined,
  loss: LossName,
  seed: number,
): Partial<BuiltinOptions> {
  if (data === undefined) return { loss, seed };
  const outputs =
    isClassIds(data.labels) && loss === "sparse-categorical-crossentropy"
      ? (data.numClasses ?? 10)
      : labelSize(data);
  return { inputShape: [...data.sampleShape], numClasses: outputs, loss, seed };
}
