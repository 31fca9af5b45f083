/** tfjs model files on the file system without tfjs-node: an `IOHandler` that reads and writes `model.json` + `weights.bin`, every byte checked. */
import { mkdir, open, readFile, rename, rm, stat } from "node:fs/promises";
import { dirname, isAbsolute, join, relative, resolve } from "node:path";
import * as tf from "@tensorflow/tfjs";
import { CohortError } from "../protocol/errors.js";

/** The file names of a model directory, as tfjs-node's `file://` handler writes them. */
export const MODEL_JSON = "model.json";
export const WEIGHTS_BIN = "weights.bin";

type ManifestEntry = tf.io.WeightsManifestEntry;
type ManifestGroup = tf.io.WeightsManifestConfig[number];

const DTYPES = ["float32", "int32", "bool", "complex64"] as const;
const QUANTIZED = ["uint8", "uint16", "float16"] as const;
/** Bytes one stored value takes (a quantized entry stores its quantized dtype). */
const BYTES: Record<string, number> = {
  float32: 4,
  int32: 4,
  bool: 1,
  complex64: 8,
  uint8: 1,
  uint16: 2,
  float16: 2,
};

/** Write a file durably: to a temporary name, fsync, then rename over the target. */
export async function writeAtomic(
  path: string,
  data: string | Uint8Array,
  /** File mode of a new file (before the umask), e.g. 0o600 for what only its owner may read. */
  mode?: number,
): Promise<void> {
  const tmp = `${path}.tmp`;
  await rm(tmp, { force: true }); // a leftover of a crash keeps its mode otherwise
  const handle = await open(tmp, "w", mode);
  try {
    await handle.writeFile(data);
    await handle.sync();
  } finally {
    await handle.close();
  }
  await rename(tmp, path);
}

function reasonOf(cause: unknown): string {
  return cause instanceof Error ? cause.message : String(cause);
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function isShape(value: unknown): value is number[] {
  return Array.isArray(value) && value.every((d) => Number.isInteger(d) && (d as number) >= 0);
}

/** Guard one manifest entry; `where` names it in the error. */
function checkEntry(raw: unknown, where: string): ManifestEntry {
  if (!isObject(raw) || typeof raw.name !== "string" || !isShape(raw.shape)) {
    throw new CohortError("INVALID_MODEL", `${where} needs a name and a shape of whole numbers`);
  }
  if (raw.dtype === "string") {
    throw new CohortError("INVALID_MODEL", `${where} (${raw.name}) holds strings; not supported`);
  }
  if (!(DTYPES as readonly unknown[]).includes(raw.dtype)) {
    throw new CohortError(
      "INVALID_MODEL",
      `${where} (${raw.name}) has dtype ${String(raw.dtype)}; expected ${DTYPES.join(", ")}`,
    );
  }
  const q = raw.quantization;
  if (q !== undefined && (!isObject(q) || !(QUANTIZED as readonly unknown[]).includes(q.dtype))) {
    throw new CohortError(
      "INVALID_MODEL",
      `${where} (${raw.name}) has a quantization without a dtype of ${QUANTIZED.join(", ")}`,
    );
  }
  return raw as unknown as ManifestEntry;
}

/** Guard the parts of a `model.json` that this handler reads; the rest goes to tfjs as is. */
function checkModelJson(raw: unknown, path: string): tf.io.ModelJSON {
  if (!isObject(raw) || !isObject(raw.modelTopology)) {
    throw new CohortError(
      "INVALID_MODEL",
      `${path} has no "modelTopology" object (not a tfjs layers model)`,
    );
  }
  const manifest = raw.weightsManifest ?? [];
  if (!Array.isArray(manifest)) {
    throw new CohortError("INVALID_MODEL", `${path}: "weightsManifest" must be a list of groups`);
  }
  manifest.forEach((group: unknown, g) => {
    const where = `${path}: weightsManifest[${g}]`;
    if (
      !isObject(group) ||
      !Array.isArray(group.paths) ||
      !group.paths.every((p) => typeof p === "string" && p !== "") ||
      !Array.isArray(group.weights)
    ) {
      throw new CohortError("INVALID_MODEL", `${where} needs "paths" (file names) and "weights"`);
    }
    group.weights.forEach((w: unknown, i) => checkEntry(w, `${where}.weights[${i}]`));
  });
  // An empty manifest is a topology alone: the layers' initialisers give the weights.
  const json = { ...(raw as unknown as tf.io.ModelJSON) };
  if (manifest.length === 0) delete (json as Partial<tf.io.ModelJSON>).weightsManifest;
  return json;
}

/** The bytes a manifest group's values take in its files. */
function groupBytes(group: ManifestGroup): number {
  return group.weights.reduce(
    (n, w) => n + countOf(w) * BYTES[w.quantization?.dtype ?? w.dtype]!,
    0,
  );
}

function countOf(entry: ManifestEntry): number {
  return entry.shape.reduce((a, b) => a * b, 1);
}

/** Read one group's files, refusing paths outside the model's directory and a wrong byte count. */
async function readGroup(dir: string, group: ManifestGroup, path: string): Promise<Buffer> {
  const buffers: Buffer[] = [];
  for (const p of group.paths) {
    const file = resolve(dir, p);
    const rel = relative(dir, file);
    if (rel.startsWith("..") || isAbsolute(rel)) {
      throw new CohortError("INVALID_MODEL", `${path}: weights path "${p}" leaves its directory`);
    }
    try {
      buffers.push(await readFile(file));
    } catch (cause) {
      throw new CohortError(
        "INVALID_MODEL",
        `${path}: cannot read weights ${p}: ${reasonOf(cause)}`,
        {
          cause,
        },
      );
    }
  }
  const bytes = Buffer.concat(buffers);
  const expected = groupBytes(group);
  if (bytes.length !== expected) {
    const values = group.weights.reduce((n, w) => n + countOf(w), 0);
    throw new CohortError(
      "INVALID_MODEL",
      `${path}: ${group.paths.join(" + ")} holds ${bytes.length} bytes, but its manifest lists ` +
        `${values} values in ${expected} bytes`,
    );
  }
  return bytes;
}

/**
 * Read `model.json` and its weight files as tfjs model artifacts. A missing or unreadable file,
 * invalid JSON, a manifest tfjs could not decode and weight files of the wrong length are each
 * an `INVALID_MODEL` naming the file.
 */
export async function readModelArtifacts(path: string): Promise<tf.io.ModelArtifacts> {
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(path, "utf8"));
  } catch (cause) {
    const what = cause instanceof SyntaxError ? "is not valid JSON" : "cannot be read";
    throw new CohortError("INVALID_MODEL", `${path} ${what}: ${reasonOf(cause)}`, { cause });
  }
  const json = checkModelJson(raw, path);
  const dir = dirname(path);
  return tf.io.getModelArtifactsForJSON(json, async (manifest) => {
    const parts: Buffer[] = [];
    for (const group of manifest) parts.push(await readGroup(dir, group, path));
    const all = Buffer.concat(parts);
    const data = all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength) as ArrayBuffer;
    return [tf.io.getWeightSpecs(manifest), data];
  });
}

/** What `writeModelArtifacts` wrote. */
export interface WrittenModel {
  /** The paths of `model.json` and `weights.bin`. */
  modelJson: string;
  weightsBin: string;
  weightBytes: number;
}

/**
 * Write artifacts as `dir/model.json` + `dir/weights.bin` (one weights group), the layout
 * `tf.loadLayersModel` reads from a URL or a file. Each file is written then renamed, weights
 * first, so a crash leaves no torn file and no `model.json` without its weights.
 */
export async function writeModelArtifacts(
  dir: string,
  artifacts: tf.io.ModelArtifacts,
): Promise<WrittenModel> {
  const { modelTopology, weightSpecs = [], weightData } = artifacts;
  if (!isObject(modelTopology)) {
    throw new CohortError("INVALID_MODEL", "only layers models with a JSON topology can be saved");
  }
  const bin =
    weightData === undefined
      ? new Uint8Array(0)
      : new Uint8Array(tf.io.CompositeArrayBuffer.join(weightData));
  const json: tf.io.ModelJSON = {
    format: artifacts.format ?? "layers-model",
    generatedBy: artifacts.generatedBy ?? "cohort",
    convertedBy: artifacts.convertedBy ?? null,
    modelTopology,
    weightsManifest: [{ paths: [WEIGHTS_BIN], weights: weightSpecs }],
    ...(artifacts.trainingConfig ? { trainingConfig: artifacts.trainingConfig } : {}),
    ...(artifacts.userDefinedMetadata
      ? { userDefinedMetadata: artifacts.userDefinedMetadata }
      : {}),
    ...(artifacts.signature ? { signature: artifacts.signature } : {}),
  };
  const written = groupBytes(json.weightsManifest[0]!);
  if (written !== bin.byteLength) {
    throw new CohortError(
      "INVALID_MODEL",
      `the weight specs take ${written} bytes but the weight data has ${bin.byteLength}`,
    );
  }
  await mkdir(dir, { recursive: true });
  const out = { modelJson: join(dir, MODEL_JSON), weightsBin: join(dir, WEIGHTS_BIN) };
  await writeAtomic(out.weightsBin, bin);
  await writeAtomic(out.modelJson, JSON.stringify(json));
  return { ...out, weightBytes: bin.byteLength };
}

/**
 * A tfjs `IOHandler` over a model directory: `model.save(fileSystemHandler(dir))` writes
 * `model.json` + `weights.bin` there, `tf.loadLayersModel(fileSystemHandler(path))` reads a
 * `model.json` (`path` is the file, or the directory holding it). No tfjs-node needed.
 */
export function fileSystemHandler(path: string): tf.io.IOHandler {
  return {
    load: async () => {
      const isDir = (await stat(path).catch(() => null))?.isDirectory() ?? false;
      return readModelArtifacts(isDir ? join(path, MODEL_JSON) : path);
    },
    save: async (artifacts) => {
      await writeModelArtifacts(path, artifacts);
      return { modelArtifactsInfo: tf.io.getModelArtifactsInfoForJSON(artifacts) };
    },
  };
}

/** Build a layers model from a handler; what tfjs refuses becomes an `INVALID_MODEL` naming `where`. */
export async function buildLayersModel(
  handler: tf.io.IOHandler,
  where: string,
): Promise<tf.LayersModel> {
  try {
    return await tf.loadLayersModel(handler);
  } catch (cause) {
    if (cause instanceof CohortError) throw cause;
    throw new CohortError("INVALID_MODEL", `${where}: cannot build the model: ${reasonOf(cause)}`, {
      cause,
    });
  }
}
