/** Run a layers model over flat examples: each reshaped to the model's input, outputs as plain numbers. */
import * as tf from "@tensorflow/tfjs";
import { CohortError } from "../protocol/errors.js";
import type { Examples } from "./examples-file.js";

/** One example's prediction. */
export interface Prediction {
  /** The model's output for the example, flattened. */
  output: number[];
  /** The most probable class, when the output is a softmax over more than one unit. */
  argmax?: number;
}

/** The one input and one output of a model that `predictExamples` can run. */
export interface ModelIO {
  /** The input shape of one example (without the batch dimension). */
  inputShape: number[];
  inputSize: number;
  inputDtype: "float32" | "int32";
  outputSize: number;
  /** The output is a softmax over more than one unit: a class distribution. */
  classifier: boolean;
}

function knownShape(shape: readonly (number | null)[], what: string): number[] {
  const rest = shape.slice(1);
  if (rest.some((d) => d === null || d < 0)) {
    throw new CohortError(
      "INVALID_MODEL",
      `the model's ${what} shape [${shape.map((d) => d ?? "null").join(", ")}] has an unknown ` +
        "dimension beside the batch; predict needs a fixed shape",
    );
  }
  return rest as number[];
}

/** Describe a model's input and output; several inputs or outputs, or unknown sizes, are refused. */
export function modelIO(model: tf.LayersModel): ModelIO {
  if (model.inputs.length !== 1 || model.outputs.length !== 1) {
    throw new CohortError(
      "INVALID_MODEL",
      `the model has ${model.inputs.length} inputs and ${model.outputs.length} outputs; ` +
        "predict runs models with one of each",
    );
  }
  const input = model.inputs[0]!;
  const inputShape = knownShape(input.shape, "input");
  const outputShape = knownShape(model.outputs[0]!.shape, "output");
  const last = model.outputs[0]!.sourceLayer;
  const softmax = last.getClassName() === "Softmax" || last.getConfig().activation === "softmax";
  return {
    inputShape,
    inputSize: inputShape.reduce((a, b) => a * b, 1),
    inputDtype: input.dtype === "int32" ? "int32" : "float32",
    outputSize: outputShape.reduce((a, b) => a * b, 1),
    classifier: softmax && outputShape.length === 1 && outputShape[0]! > 1,
  };
}

function argmaxOf(values: Float32Array | Int32Array | Uint8Array): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i]! > values[best]!) best = i;
  return best;
}

/**
 * Predict every example, `batchSize` at a time. An example whose length is not the model's
 * input size is a `SHAPE_MISMATCH` naming the example, checked before anything runs.
 */
export async function predictExamples(
  model: tf.LayersModel,
  examples: Examples,
  batchSize = 256,
): Promise<Prediction[]> {
  const io = modelIO(model);
  examples.rows.forEach((row, i) => {
    if (row.length !== io.inputSize) {
      throw new CohortError(
        "SHAPE_MISMATCH",
        `${examples.names[i]} has ${row.length} values; the model's input [${io.inputShape.join(", ")}] ` +
          `takes ${io.inputSize}`,
      );
    }
  });
  const out: Prediction[] = [];
  for (let start = 0; start < examples.rows.length; start += batchSize) {
    const batch = examples.rows.slice(start, start + batchSize);
    const flat =
      io.inputDtype === "int32"
        ? new Int32Array(batch.length * io.inputSize)
        : new Float32Array(batch.length * io.inputSize);
    batch.forEach((row, i) => flat.set(row, i * io.inputSize));
    const y = tf.tidy(() => {
      const x = tf.tensor(flat, [batch.length, ...io.inputShape], io.inputDtype);
      return model.predict(x) as tf.Tensor;
    });
    const values = await y.data();
    y.dispose();
    for (let i = 0; i < batch.length; i++) {
      const row = values.subarray(i * io.outputSize, (i + 1) * io.outputSize);
      out.push(
        io.classifier
          ? { output: Array.from(row), argmax: argmaxOf(row) }
          : { output: Array.from(row) },
      );
    }
  }
  return out;
}
