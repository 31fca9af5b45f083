/** tfjs `model.json` + `weights.bin` files: read a user's model, write checkpoints. */
import { mkdir, readFile, rename, writeFile, open } from "node:fs/promises";
import { dirname, join, basename } from "node:path";
import * as tf from "@tensorflow/tfjs";
import { CohortError } from "../protocol/errors.js";
import type { ModelSpec } from "../protocol/messages.js";
import { sizeOf, type Weights } from "../aggregation/weights.js";
import { modelFromSpec, modelSpecOf, readWeights, writeWeights } from "./adapter.js";
import { buildBuiltinModel, isBuiltinModel, type BuiltinOptions } from "./builtin.js";

interface WeightsManifestEntry {
  paths: string[];
  weights: { name: string; shape: number[]; dtype: string }[];
}

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
export async function loadModel(
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
  let json: unknown;
  try {
    json = JSON.parse(await readFile(path, "utf8"));
  } catch (cause) {
    const reason = cause instanceof Error ? cause.message : String(cause);
    throw new CohortError(
      "INVALID_MODEL",
      `model must be "mlp", "cnn" or a readable tfjs model.json; ${path}: ${reason}`,
      { cause },
    );
  }
  if (typeof json !== "object" || json === null || !("modelTopology" in json)) {
    throw new CohortError(
      "INVALID_MODEL",
      `${path} has no "modelTopology" (not a tfjs layers model)`,
    );
  }
  const topology = (json as { modelTopology: unknown }).modelTopology;
  if (typeof topology !== "object" || topology === null) {
    throw new CohortError("INVALID_MODEL", `${path}: "modelTopology" must be an object`);
  }
  const spec: ModelSpec = {
    name: basename(path),
    topology: topology as ModelSpec["topology"],
    weightSpecs: [],
    numParameters: 0,
  };
  let model: tf.LayersModel;
  try {
    model = await tf.models.modelFromJSON({ modelTopology: spec.topology });
  } catch (cause) {
    const reason = cause instanceof Error ? cause.message : String(cause);
    throw new CohortError("INVALID_MODEL", `${path}: cannot build the model: ${reason}`, { cause });
  }
  const manifest = (json as { weightsManifest?: WeightsManifestEntry[] }).weightsManifest;
  if (Array.isArray(manifest) && manifest.length > 0) {
    const weights = await readManifestWeights(dirname(path), manifest);
    const byName = new Map(weights.map((w) => [w.name, w.data]));
    const ordered = model.weights.map((w) => {
      const data = byName.get(w.originalName);
      if (data === undefined) {
        throw new CohortError("INVALID_MODEL", `${path}: weights file lacks ${w.originalName}`);
      }
      return data;
    });
    writeWeights(model, ordered);
  }
  return model;
}

async function readManifestWeights(
  dir: string,
  manifest: WeightsManifestEntry[],
): Promise<{ name: string; data: Float32Array }[]> {
  const out: { name: string; data: Float32Array }[] = [];
  for (const group of manifest) {
    const buffers = await Promise.all(group.paths.map((p) => readFile(join(dir, p))));
    const bytes = Buffer.concat(buffers);
    let offset = 0;
    for (const w of group.weights) {
      if (w.dtype !== "float32") {
        throw new CohortError(
          "INVALID_MODEL",
          `weight ${w.name} has dtype ${w.dtype}; only float32 is supported`,
        );
      }
      const n = sizeOf(w.shape);
      if (offset + n * 4 > bytes.length) {
        throw new CohortError("INVALID_MODEL", `weights files end before ${w.name}`);
      }
      out.push({ name: w.name, data: readFloat32(bytes, offset, n) });
      offset += n * 4;
    }
  }
  return out;
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

/** Write a file durably: to a temporary name, fsync, then rename over the target. */
async function writeAtomic(path: string, data: string | Uint8Array): Promise<void> {
  const tmp = `${path}.tmp`;
  const handle = await open(tmp, "w");
  try {
    await handle.writeFile(data);
    await handle.sync();
  } finally {
    await handle.close();
  }
  await rename(tmp, path);
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
  await mkdir(dir, { recursive: true });
  const bin = packWeights(weights);
  const modelJson = {
    format: "layers-model",
    generatedBy: "cohort",
    convertedBy: null,
    modelTopology: spec.topology,
    weightsManifest: [
      {
        paths: ["weights.bin"],
        weights: spec.weightSpecs.map((s) => ({ name: s.name, shape: s.shape, dtype: "float32" })),
      },
    ],
  };
  await writeAtomic(join(dir, "weights.bin"), bin);
  await writeAtomic(join(dir, "model.json"), JSON.stringify(modelJson));
}

export { writeAtomic };
