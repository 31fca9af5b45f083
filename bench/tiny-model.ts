/** The tiny model of the load benchmarks: 784 → 10 softmax (7,850 parameters, 31 KB an update). */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as tf from "@tensorflow/tfjs";
import { modelSpecOf, readWeights, writeModelFiles } from "../models/index.js";

export const TINY_PARAMETERS = 7850;

/** Write the tiny model to a new temporary directory: the path of its `model.json`. */
export async function tinyModelFile(prefix: string): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  const model = tf.sequential({
    layers: [
      tf.layers.flatten({ inputShape: [28, 28, 1] }),
      tf.layers.dense({ units: 10, activation: "softmax" }),
    ],
  });
  await writeModelFiles(dir, modelSpecOf(model, "tiny"), await readWeights(model));
  model.dispose();
  return join(dir, "model.json");
}
