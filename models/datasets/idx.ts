/** IDX files (the MNIST format): a validating parser, a gz-aware reader, a directory loader. */

import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";

import type { Dataset } from "../../protocol/dataset.js";
import { CohortError } from "../../protocol/errors.js";
import { assertSplit, type DatasetSplit } from "./split.js";

/** Element types an IDX file may declare (third magic byte: 0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E). */
export type IdxDtype = "uint8" | "int8" | "int16" | "int32" | "float32" | "float64";

/** Typed array holding IDX values in host order. */
export type IdxData =
  Uint8Array | Int8Array | Int16Array | Int32Array | Float32Array | Float64Array;

/** A parsed IDX tensor: `data` holds `shape.reduce(*)` values in row-major order. */
export interface IdxTensor {
  readonly dtype: IdxDtype;
  readonly shape: number[];
  readonly data: IdxData;
}

const DTYPES: ReadonlyMap<number, { dtype: IdxDtype; bytes: number }> = new Map([
  [0x08, { dtype: "uint8", bytes: 1 }],
  [0x09, { dtype: "int8", bytes: 1 }],
  [0x0b, { dtype: "int16", bytes: 2 }],
  [0x0c, { dtype: "int32", bytes: 4 }],
  [0x0d, { dtype: "float32", bytes: 4 }],
  [0x0e, { dtype: "float64", bytes: 8 }],
]);

function invalid(message: string, cause?: unknown): CohortError {
  return new CohortError("DATASET_INVALID", message, cause === undefined ? undefined : { cause });
}

/**
 * Parse an IDX buffer: magic `00 00 <type> <ndims>`, then `ndims` big-endian uint32 sizes, then
 * the values, big-endian. The payload length must match the declared sizes exactly.
 *
 * @param source label used in error messages (e.g. the file path).
 * @throws CohortError `DATASET_INVALID` on a bad magic, an unknown type, or a length mismatch.
 */
export function parseIdx(bytes: Uint8Array, source = "IDX buffer"): IdxTensor {
  if (bytes.length < 4 || bytes[0] !== 0 || bytes[1] !== 0) {
    throw invalid(`${source}: not an IDX file (bad magic number)`);
  }
  const type = DTYPES.get(bytes[2] ?? -1);
  if (type === undefined) {
    throw invalid(`${source}: unknown IDX element type 0x${(bytes[2] ?? 0).toString(16)}`);
  }
  const ndims = bytes[3] ?? 0;
  if (ndims === 0) throw invalid(`${source}: IDX file declares zero dimensions`);
  const headerBytes = 4 + 4 * ndims;
  if (bytes.length < headerBytes) {
    throw invalid(`${source}: truncated header (${bytes.length} bytes, ${ndims} dimensions)`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const shape: number[] = [];
  for (let d = 0; d < ndims; d++) shape.push(view.getUint32(4 + 4 * d, false));
  const count = shape.reduce((a, b) => a * b, 1);
  const expected = headerBytes + count * type.bytes;
  if (bytes.length !== expected) {
    throw invalid(
      `${source}: shape [${shape.join(", ")}] of ${type.dtype} needs ${expected} bytes ` +
        `but the file has ${bytes.length}`,
    );
  }
  return { dtype: type.dtype, shape, data: decodeValues(view, headerBytes, count, type.dtype) };
}

function decodeValues(view: DataView, offset: number, count: number, dtype: IdxDtype): IdxData {
  switch (dtype) {
    case "uint8":
      return new Uint8Array(view.buffer, view.byteOffset + offset, count).slice();
    case "int8":
      return new Int8Array(view.buffer, view.byteOffset + offset, count).slice();
    case "int16": {
      const out = new Int16Array(count);
      for (let i = 0; i < count; i++) out[i] = view.getInt16(offset + 2 * i, false);
      return out;
    }
    case "int32": {
      const out = new Int32Array(count);
      for (let i = 0; i < count; i++) out[i] = view.getInt32(offset + 4 * i, false);
      return out;
    }
    case "float32": {
      const out = new Float32Array(count);
      for (let i = 0; i < count; i++) out[i] = view.getFloat32(offset + 4 * i, false);
      return out;
    }
    case "float64": {
      const out = new Float64Array(count);
      for (let i = 0; i < count; i++) out[i] = view.getFloat64(offset + 8 * i, false);
      return out;
    }
    default: {
      const _exhaustive: never = dtype;
      throw invalid(`unsupported dtype ${String(_exhaustive)}`);
    }
  }
}

/**
 * Read and parse one IDX file, gunzipping it first when its name ends in `.gz` or its content
 * starts with the gzip magic (`1f 8b`; an IDX file always starts with `00 00`).
 *
 * @throws CohortError `DATASET_NOT_FOUND` when the file is missing, `DATASET_INVALID` when it
 *   cannot be decompressed or parsed.
 */
export async function readIdxFile(path: string): Promise<IdxTensor> {
  let raw: Uint8Array;
  try {
    raw = await readFile(path);
  } catch (error) {
    throw new CohortError("DATASET_NOT_FOUND", `cannot read IDX file ${path}`, { cause: error });
  }
  const gzipped = path.endsWith(".gz") || (raw[0] === 0x1f && raw[1] === 0x8b);
  if (gzipped) {
    try {
      raw = gunzipSync(raw);
    } catch (error) {
      throw invalid(`${path}: gzip decompression failed`, error);
    }
  }
  return parseIdx(raw, path);
}

/**
 * File names tried, in order, for one split and kind: `<prefix>-<kind>-idx<n>-ubyte`, then the
 * dotted `<prefix>-<kind>.idx<n>-ubyte`, each plain or `.gz` (prefix `train` or `t10k`).
 */
export function idxFileCandidates(split: DatasetSplit, kind: "images" | "labels"): string[] {
  const prefix = split === "train" ? "train" : "t10k";
  const n = kind === "images" ? 3 : 1;
  const bases = [`${prefix}-${kind}-idx${n}-ubyte`, `${prefix}-${kind}.idx${n}-ubyte`];
  return bases.flatMap((base) => [base, `${base}.gz`]);
}

function imageValues(tensor: IdxTensor, path: string): Float32Array {
  const { data, dtype } = tensor;
  if (dtype === "uint8") {
    // A 256-entry table keeps the conversion exact (v / 255 rounded once) and fast.
    const table = new Float32Array(256);
    for (let v = 0; v < 256; v++) table[v] = v / 255;
    const out = new Float32Array(data.length);
    for (let i = 0; i < data.length; i++) out[i] = table[data[i] ?? 0] ?? 0;
    return out;
  }
  if (dtype === "float32" || dtype === "float64") {
    // Float images are taken as already scaled; they must lie in [0, 1].
    const out = Float32Array.from(data);
    for (let i = 0; i < out.length; i++) {
      const v = out[i] ?? Number.NaN;
      if (!(v >= 0 && v <= 1)) throw invalid(`${path}: float pixel ${v} at ${i} is outside [0, 1]`);
    }
    return out;
  }
  throw invalid(`${path}: images of dtype ${dtype} are not supported (use uint8 or float)`);
}

function labelValues(tensor: IdxTensor, path: string): Uint8Array {
  if (tensor.shape.length !== 1) {
    throw invalid(`${path}: labels must be 1-dimensional, got [${tensor.shape.join(", ")}]`);
  }
  if (tensor.dtype === "float32" || tensor.dtype === "float64") {
    throw invalid(`${path}: labels must be integers, got ${tensor.dtype}`);
  }
  const out = new Uint8Array(tensor.data.length);
  for (let i = 0; i < out.length; i++) {
    const v = tensor.data[i] ?? -1;
    if (v < 0 || v > 255) throw invalid(`${path}: label ${v} at ${i} is outside [0, 255]`);
    out[i] = v;
  }
  return out;
}

function findFile(dir: string, entries: ReadonlySet<string>, candidates: string[]): string {
  const name = candidates.find((c) => entries.has(c));
  if (name === undefined) {
    throw new CohortError(
      "DATASET_NOT_FOUND",
      `no IDX file in ${dir}: expected one of ${candidates.join(", ")}`,
    );
  }
  return join(dir, name);
}

/**
 * Load one split of an MNIST-style IDX directory (MNIST, Fashion-MNIST, KMNIST, …).
 *
 * Images (`[n, rows, cols]` or `[n, rows, cols, channels]`) become `sampleShape`
 * `[rows, cols, channels]` (channels 1 for 3-d files), uint8 pixels are scaled to `[0, 1]`;
 * `numClasses` is the largest label plus one, at least 2.
 *
 * @param name dataset name; defaults to `idx:<dir>:<split>`.
 * @throws CohortError `DATASET_NOT_FOUND` when the directory or a file is missing (the message
 *   names the directory and the expected file names), `DATASET_INVALID` on malformed files.
 */
export async function loadIdxDirectory(
  dir: string,
  split: DatasetSplit,
  name = `idx:${dir}:${split}`,
): Promise<Dataset> {
  assertSplit(split);
  const wanted = [...idxFileCandidates(split, "images"), ...idxFileCandidates(split, "labels")];
  let entries: Set<string>;
  try {
    entries = new Set(await readdir(dir));
  } catch (error) {
    throw new CohortError(
      "DATASET_NOT_FOUND",
      `cannot read IDX directory ${dir} (expected files such as ${wanted.join(", ")})`,
      { cause: error },
    );
  }
  const imagesPath = findFile(dir, entries, idxFileCandidates(split, "images"));
  const labelsPath = findFile(dir, entries, idxFileCandidates(split, "labels"));
  const [images, labelTensor] = await Promise.all([
    readIdxFile(imagesPath),
    readIdxFile(labelsPath),
  ]);

  const [n, rows, cols, channels = 1, ...rest] = images.shape;
  if (n === undefined || rows === undefined || cols === undefined || rest.length > 0) {
    throw invalid(
      `${imagesPath}: images must be 3- or 4-dimensional, got [${images.shape.join(", ")}]`,
    );
  }
  const labels = labelValues(labelTensor, labelsPath);
  if (labels.length !== n) {
    throw invalid(`${dir}: ${n} images but ${labels.length} labels for split ${split}`);
  }
  const maxLabel = labels.reduce((a, b) => Math.max(a, b), 0);
  return {
    name,
    features: imageValues(images, imagesPath),
    labels,
    sampleShape: [rows, cols, channels],
    numClasses: Math.max(maxLabel + 1, 2),
  };
}
