/** `saveModel` / `loadModel`: tfjs layers models as files in plain Node (no tfjs-node), and the global models of a run directory. */
import { stat } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type * as tf from "@tensorflow/tfjs";
import { CohortError } from "../protocol/errors.js";
import { findCheckpoint, isRunDir } from "./checkpoints.js";
import { buildLayersModel, fileSystemHandler, MODEL_JSON, WEIGHTS_BIN } from "./file-handler.js";
import { loadRemoteModel } from "./remote.js";

/** Options of `loadModel`. */
export interface LoadModelOptions {
  /**
   * With a run directory: the round whose checkpoint to load (`0` is the initial model).
   * @default the last round checkpointed
   */
  round: number;
  /** With an http(s) URL: headers of its requests (`{ Authorization: "Bearer …" }`). @default {} */
  headers: Record<string, string>;
}

/** Where a model source's `model.json` is, and for a run directory which round it is. */
export interface ModelLocation {
  modelJson: string;
  /** Set when the source is a run directory. */
  runDir?: string;
  round?: number;
}

function pathOf(source: string | URL): string {
  if (source instanceof URL || source.startsWith("file:")) return fileURLToPath(source);
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(source)) {
    throw new CohortError("INVALID_MODEL", `loadModel reads files and http(s) URLs, not ${source}`);
  }
  return source;
}

/**
 * Find the `model.json` of a source: a `model.json` file, a directory holding one, or a run
 * directory (`--run-dir`: its last checkpoint, or `options.round`'s).
 */
export async function locateModel(
  source: string | URL,
  options: Partial<LoadModelOptions> = {},
): Promise<ModelLocation> {
  const path = pathOf(source);
  let info;
  try {
    info = await stat(path);
  } catch (cause) {
    throw new CohortError("INVALID_MODEL", `no model at ${path}: no such file or directory`, {
      cause,
    });
  }
  const round = options.round;
  if (info.isDirectory() && isRunDir(path)) {
    const found = await findCheckpoint(path, round);
    return { modelJson: found.modelJson, runDir: path, round: found.round };
  }
  const modelJson = info.isDirectory() ? join(path, MODEL_JSON) : path;
  if (info.isDirectory() && !(await stat(modelJson).catch(() => null))?.isFile()) {
    throw new CohortError(
      "INVALID_MODEL",
      `${path} holds neither ${MODEL_JSON} (a model directory) nor checkpoints/ (a run directory)`,
    );
  }
  if (round !== undefined) {
    throw new CohortError(
      "INVALID_OPTION",
      `round ${round} was asked for, but ${path} is a model, not a run directory`,
    );
  }
  return { modelJson };
}

/**
 * Load a tfjs layers model in plain Node, without tfjs-node: from a `model.json` file (a path or
 * a `file:` URL), a directory holding one, a run directory, whose last checkpoint it loads
 * (`{ round: n }` for round n's), or an http(s) URL of a `model.json` (a coordinator's
 * `/api/models/7` or `/api/models/promoted`; `{ headers }` for its bearer token). Files tfjs cannot use are an `INVALID_MODEL` naming them.
 *
 * @example const model = await loadModel("runs/mnist-2nn", { round: 10 });
 */
export async function loadModel(
  source: string | URL,
  options: Partial<LoadModelOptions> = {},
): Promise<tf.LayersModel> {
  if (
    typeof source === "string" ? /^https?:\/\//i.test(source) : /^https?:$/.test(source.protocol)
  ) {
    return loadRemoteModel(String(source), options.headers);
  }
  const { modelJson } = await locateModel(source, options);
  return buildLayersModel(fileSystemHandler(modelJson), modelJson);
}

/** What `saveModel` wrote. */
export interface SavedModel {
  /** The paths of `model.json` and `weights.bin`. */
  modelJson: string;
  weightsBin: string;
  /** Bytes of `weights.bin`. */
  weightBytes: number;
}

/**
 * Write a layers model as `dir/model.json` + `dir/weights.bin`, the layout `loadModel`, the
 * coordinator's `--model` and browsers' `tf.loadLayersModel(url)` read. Creates `dir`; each file
 * is written then renamed.
 */
export async function saveModel(model: tf.LayersModel, dir: string): Promise<SavedModel> {
  if (typeof (model as Partial<tf.LayersModel> | null)?.save !== "function") {
    throw new CohortError(
      "INVALID_MODEL",
      "saveModel needs a tf.LayersModel as its first argument",
    );
  }
  const result = await model.save(fileSystemHandler(dir));
  return {
    modelJson: join(dir, MODEL_JSON),
    weightsBin: join(dir, WEIGHTS_BIN),
    weightBytes: result.modelArtifactsInfo.weightDataBytes ?? 0,
  };
}
