/** A task's model from a name or a `model.json`, and the checkpoints of the global model. */
import { existsSync } from "node:fs";
import { basename } from "node:path";
import * as tf from "@tensorflow/tfjs";
import { CohortError } from "../protocol/errors.js";
import type { ModelSpec } from "../protocol/messages.js";
import type { Weights } from "../aggregation/weights.js";
import { modelFromSpec, modelSpecOf, readWeights, writeWeights } from "./adapter.js";
import { buildBuiltinModel, isBuiltinModel, type BuiltinOptions } from "./builtin.js";
import {
  buildLayersModel,
  fileSystemHandler,
  writeAtomic,
  writeModelArtifacts,
} from "./file-handler.js";

/** A model ready for a task: its spec and initial weights. */
export interface LoadedModel {
  spec: ModelSpec;
  weights: Float32Array[];
}

/**
 * Resolve a built-in model name (`mlp`, `mlp:H1,…`, `cnn`, `logreg`, `char-lstm`), a path to a
 * tfjs layers `model.json`, or a `tf.LayersModel` in memory (its topology and current weights;
 * the model itself is left as it is). A user file's weights are used when its manifest lists
 * them; otherwise the layers' initialisers provide them.
 */
export async function resolveModel(
  source: string | tf.LayersModel,
  options: Partial<BuiltinOptions> = {},
): Promise<LoadedModel> {
  if (typeof source !== "string") {
    if (!(source instanceof tf.LayersModel)) {
      throw new CohortError(
        "INVALID_MODEL",
        "model must be a built-in name, a model.json path or a tf.LayersModel (from the same @tensorflow/tfjs)",
      );
    }
    return { spec: modelSpecOf(source, source.name), weights: await readWeights(source) };
  }
  const builtin = isBuiltinModel(source);
  const model = builtin ? buildBuiltinModel(source, options) : await loadUserModel(source);
  try {
    const spec = modelSpecOf(model, builtin ? source : basename(source));
    return { spec, weights: await readWeights(model) };
  } finally {
    model.dispose();
  }
}

/** How a model option is named in logs and `run.json`. */
export function modelName(source: string | tf.LayersModel): string {
  return typeof source === "string" ? source : `${source.name} (in memory)`;
}

async function loadUserModel(path: string): Promise<tf.LayersModel> {
  try {
    return await buildLayersModel(fileSystemHandler(path), path);
  } catch (cause) {
    if (!(cause instanceof CohortError) || existsSync(path)) throw cause;
    throw new CohortError(
      "INVALID_MODEL",
      `model must be "mlp", "cnn" or a readable tfjs model.json; ${cause.message}`,
      { cause },
    );
  }
}

/** Rebuild a model from a spec and weights, e.g. for evaluation. */
export async function instantiate(spec: ModelSpec, weights: Weights): Promise<tf.LayersModel> {
  const model = await modelFromSpec(spec);
  writeWeights(model, weights);
  return model;
}

/** All tensors' float32 bytes, one after another (the layout of `weights.bin`). */
export function packWeights(weights: Weights): Uint8Array {
  const bin = new Uint8Array(weights.reduce((n, w) => n + w.byteLength, 0));
  let offset = 0;
  for (const w of weights) {
    bin.set(new Uint8Array(w.buffer, w.byteOffset, w.byteLength), offset);
    offset += w.byteLength;
  }
  return bin;
}

/** The float32 values of `n` weights starting at byte `offset`, as an aligned copy. */
export function readFloat32(bytes: Uint8Array, offset: number, n: number): Float32Array {
  const data = new Float32Array(n);
  new Uint8Array(data.buffer).set(bytes.subarray(offset, offset + n * 4));
  return data;
}

/**
 * Write `model.json` + `weights.bin` in the tfjs layers format, loadable with
 * `tf.loadLayersModel`. Each file is written then renamed, so a crash leaves no torn file.
 */
export async function writeModelFiles(
  dir: string,
  spec: ModelSpec,
  weights: Weights,
): Promise<void> {
  const bin = packWeights(weights);
  await writeModelArtifacts(dir, {
    format: "layers-model",
    generatedBy: "cohort",
    convertedBy: null,
    modelTopology: spec.topology,
    weightSpecs: spec.weightSpecs.map((s) => ({ name: s.name, shape: s.shape, dtype: "float32" })),
    weightData: bin.buffer as ArrayBuffer,
  });
}

export { writeAtomic };
