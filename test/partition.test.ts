import { describe, expect, it } from "vitest";
import { createRng } from "../aggregation/random.js";
import {
  dirichletPartition,
  groupPartition,
  iidPartition,
  makePartition,
  parsePartitionSpec,
  shardPartition,
} from "../simulations/partition.js";
import { expectCohortError } from "./helpers/errors.js";
import { tabularDataset, tabularRows } from "./helpers/tabular.js";
import { drawFate, NO_FAULTS } from "../simulations/faults.js";

/** 6,000 labels, 600 of each class, in a seeded order. */
function labels(n = 6000, classes = 10): Uint8Array {
  const rng = createRng(3);
  const out = Uint8Array.from({ length: n }, (_, i) => i % classes);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rng() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

function classesOf(y: Uint8Array, indices: Uint32Array): Set<number> {
  return new Set(Array.from(indices, (i) => y[i]!));
}

describe("partitions", () => {
  it("IID: equal disjoint slices covering the requested examples", () => {
    const p = iidPartition(6000, 10, 600, 1);
    const seen = new Set<number>();
    for (let d = 0; d < 10; d++) {
      expect(p.sizeOf(d)).toBe(600);
      for (const i of p.indicesOf(d)) seen.add(i);
    }
    expect(seen.size).toBe(6000);
    // Each IID device sees (nearly) every class.
    const y = labels();
    expect(classesOf(y, p.indicesOf(0)).size).toBe(10);
  });

  it("IID: a population larger than the data is refused, saying how many examples there are", () => {
    expect(() => iidPartition(6000, 301, 20, 1)).toThrow(
      expect.objectContaining({
        code: "INVALID_OPTION",
        message: expect.stringMatching(
          /301 devices × 20 examples need 6020 examples; the dataset has 6000\..*allowOversampling/,
        ),
      }),
    );
    expect(iidPartition(6000, 300, 20, 1).sizeOf(299)).toBe(20); // exactly the dataset: fine
  });

  it("IID with allowOversampling: a population larger than the data samples with replacement, lazily and reproducibly", () => {
    const before = process.memoryUsage().heapUsed;
    const p = iidPartition(6000, 100_000, 20, 1, { allowOversampling: true });
    const grown = process.memoryUsage().heapUsed - before;
    expect(grown).toBeLessThan(16 * 1024 * 1024);
    expect(p.devices).toBe(100_000);
    expect(p.indicesOf(99_999)).toEqual(p.indicesOf(99_999));
    expect(p.indicesOf(5)).not.toEqual(p.indicesOf(6));
    expect(Math.max(...p.indicesOf(42))).toBeLessThan(6000);
  });

  it("shards: McMahan's split gives each device at most 2 classes", () => {
    const y = labels();
    const p = shardPartition(y, 10, 600, 2, 1);
    const counts = Array.from({ length: 10 }, (_, d) => classesOf(y, p.indicesOf(d)).size);
    expect(counts.every((c) => c <= 2)).toBe(true);
    expect(counts.filter((c) => c === 2).length).toBeGreaterThan(5);
    expect(new Set(Array.from(p.pooledIndices())).size).toBe(6000);
    expect(() => shardPartition(y, 100, 600, 2, 1)).toThrow(/need 60000 examples/);
  });

  it("Dirichlet: small α skews labels, large α approaches IID; every example used once", () => {
    const y = labels();
    const skewed = dirichletPartition(y, 20, 0.1, 1);
    const even = dirichletPartition(y, 20, 100, 1);
    const dominant = (p: ReturnType<typeof dirichletPartition>) => {
      let total = 0;
      for (let d = 0; d < 20; d++) {
        const counts = new Array(10).fill(0);
        for (const i of p.indicesOf(d)) counts[y[i]!]++;
        total += Math.max(...counts) / Math.max(1, p.sizeOf(d));
      }
      return total / 20;
    };
    expect(dominant(skewed)).toBeGreaterThan(0.5);
    expect(dominant(even)).toBeLessThan(0.25);
    expect(new Set(Array.from(skewed.pooledIndices())).size).toBe(6000);
  });

  it("parses specs", () => {
    expect(parsePartitionSpec("iid")).toEqual({ kind: "iid" });
    expect(parsePartitionSpec("shards")).toEqual({ kind: "shards", shardsPerDevice: 2 });
    expect(parsePartitionSpec("dirichlet:0.5")).toEqual({ kind: "dirichlet", alpha: 0.5 });
    expect(parsePartitionSpec("groups")).toEqual({ kind: "groups" });
    expect(() => parsePartitionSpec("dirichlet:-1")).toThrow(/partition must be/);
    expect(() => parsePartitionSpec("groups:3")).toThrow(/or groups/);
  });

  it("groups: one device per group id in ascending order, each holding all of its group", () => {
    const groups = Int32Array.from([7, -2, 7, 3, -2, 7, 3, 7]);
    const p = groupPartition(groups, 3);
    expect(p.devices).toBe(3);
    expect(Array.from(p.indicesOf(0))).toEqual([1, 4]);
    expect(Array.from(p.indicesOf(1))).toEqual([3, 6]);
    expect(Array.from(p.indicesOf(2))).toEqual([0, 2, 5, 7]);
    expect([0, 1, 2].map((d) => p.sizeOf(d))).toEqual([2, 2, 4]);
    expect(Array.from(p.pooledIndices()).sort()).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    expectCohortError(
      () => groupPartition(groups, 4),
      "INVALID_OPTION",
      /each of the dataset's 3 groups a device; devices is 4 \(leave it unset, or set it to 3\)/,
    );
    const data = tabularDataset(tabularRows(5, 4));
    const natural = makePartition({ kind: "groups" }, data, 4, 0, 1);
    for (let d = 0; d < 4; d++) {
      expect(new Set(Array.from(natural.indicesOf(d), (i) => data.groups![i]))).toEqual(
        new Set([d]),
      );
    }
    const { groups: _none, ...plain } = data;
    void _none;
    expectCohortError(
      () => makePartition({ kind: "groups" }, { ...plain, name: "flat" }, 4, 0, 1),
      "INVALID_OPTION",
      /flat has none/,
    );
  });

  it("faults: rates are honoured and draws are reproducible", () => {
    const f = { ...NO_FAULTS, dropoutBeforeFit: 0.3 };
    const fates = Array.from({ length: 2000 }, (_, d) => drawFate(f, 1, 1, d, 1000).kind);
    const rate = fates.filter((k) => k === "drop-before").length / 2000;
    expect(rate).toBeGreaterThan(0.25);
    expect(rate).toBeLessThan(0.35);
    expect(drawFate(f, 1, 1, 7, 1000)).toEqual(drawFate(f, 1, 1, 7, 1000));
    expect(drawFate(NO_FAULTS, 1, 1, 7, 1000)).toEqual({ kind: "ok", latencyMs: 0 });
  });
});
