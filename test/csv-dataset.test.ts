/** The `csv:FILE` dataset spec: parsing errors by line, headers, label/target/group columns, splits. */
import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { beforeAll, describe, expect, it } from "vitest";
import { datasetSize, pickExamples } from "../protocol/dataset.js";
import { checkedDataset } from "../protocol/dataset-check.js";
import {
  loadDataset,
  parseCsvSpec,
  shardDataset,
  subsetDataset,
} from "../models/datasets/index.js";
import { buildBuiltinModel } from "../models/builtin.js";
import { expectCohortError, expectRejectsCode } from "./helpers/errors.js";
import { tabularRows, writeCsv } from "./helpers/tabular.js";

let dir: string;
const file = (name: string) => join(dir, name);

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "cohort-csv-"));
});

describe("csv: dataset spec", () => {
  it("names the line and column of a bad cell, and a row of the wrong width", async () => {
    await writeFile(file("bad.csv"), "a,b,y\n1,2,0\n\n3,x,1\n");
    await expectRejectsCode(
      loadDataset(`csv:${file("bad.csv")}`, "train"),
      "DATASET_INVALID",
      /bad\.csv line 4, column 2 "x" is not a finite number/,
    );
    await writeFile(file("ragged.csv"), "1,2,0\n3,4,1\n5,6\n");
    await expectRejectsCode(
      loadDataset(`csv:${file("ragged.csv")}`, "train"),
      "DATASET_INVALID",
      /ragged\.csv line 3 has 2 columns; line 1 has 3/,
    );
    await writeFile(file("empty-cell.csv"), "1,2,0\n3,,1\n");
    await expectRejectsCode(
      loadDataset(`csv:${file("empty-cell.csv")}`, "train"),
      "DATASET_INVALID",
      /line 2, column 2 is empty/,
    );
  });

  it("reads a file with or without a header: the label is the last column, integer labels are class ids", async () => {
    const rows = tabularRows(20, 1).map((r) => r.slice(0, 5));
    await writeCsv(file("plain.csv"), rows);
    await writeCsv(file("header.csv"), rows, ["x0", "x1", "x2", "x3", "class"]);
    const plain = await loadDataset(`csv:${file("plain.csv")}?test=0`, "train");
    const headed = await loadDataset(`csv:${file("header.csv")}?test=0`, "train");
    for (const d of [plain, headed]) {
      expect(datasetSize(d)).toBe(20);
      expect(d.sampleShape).toEqual([4]);
      expect(d.labels).toBeInstanceOf(Int32Array);
      expect(Array.from(d.labels)).toEqual(rows.map((r) => r[4]));
      expect(d.numClasses).toBe(Math.max(...rows.map((r) => r[4]!)) + 1);
      expect(d.features[5]).toBeCloseTo(rows[1]![1]!, 4);
      expect(d.groups).toBeUndefined();
      checkedDataset(d);
    }
  });

  it("?label=N takes the label from column N (0-based) or a header name", async () => {
    await writeCsv(
      file("first.csv"),
      [
        [1, 0.5, 0.25],
        [0, 1.5, 2.5],
        [4, 3.5, 4.5],
      ],
      ["y", "a", "b"],
    );
    const byIndex = await loadDataset(`csv:${file("first.csv")}?label=0&test=0`, "train");
    const byName = await loadDataset(`csv:${file("first.csv")}?label=y&test=0`, "test");
    for (const d of [byIndex, byName]) {
      expect(Array.from(d.labels)).toEqual([1, 0, 4]);
      expect(d.numClasses).toBe(5);
      expect(Array.from(d.features)).toEqual([0.5, 0.25, 1.5, 2.5, 3.5, 4.5]);
    }
    await expectRejectsCode(
      loadDataset(`csv:${file("first.csv")}?label=3`, "train"),
      "INVALID_OPTION",
      /label column 3 does not exist \(columns count from 0; the file has 3\)/,
    );
    await expectRejectsCode(
      loadDataset(`csv:${file("first.csv")}?label=z`, "train"),
      "INVALID_OPTION",
      /no label column named "z" in y, a, b/,
    );
  });

  it("float labels are float targets; ?target=float makes integers float targets too", async () => {
    await writeCsv(file("reg.csv"), [
      [1, 2, 151],
      [3, 4, 75],
      [5, 6, 141.5],
    ]);
    const auto = await loadDataset(`csv:${file("reg.csv")}?test=0`, "train");
    expect(auto.labels).toBeInstanceOf(Float32Array);
    expect(auto.numClasses).toBeUndefined();
    await writeCsv(file("int-reg.csv"), [
      [1, 2, 151],
      [3, 4, 75],
    ]);
    const ids = await loadDataset(`csv:${file("int-reg.csv")}?test=0`, "train");
    expect(ids.labels).toBeInstanceOf(Int32Array);
    expect(ids.numClasses).toBe(152);
    const floats = await loadDataset(`csv:${file("int-reg.csv")}?target=float&test=0`, "train");
    expect(floats.labels).toBeInstanceOf(Float32Array);
    expect(Array.from(floats.labels)).toEqual([151, 75]);
    expect(floats.numClasses).toBeUndefined();
    checkedDataset(floats);
    await expectRejectsCode(
      loadDataset(`csv:${file("reg.csv")}?target=class`, "train"),
      "DATASET_INVALID",
      /reg\.csv line 3: label 141\.5 is not a class id/,
    );
    await writeCsv(file("neg.csv"), [
      [1, 0],
      [2, -1],
    ]);
    await expectRejectsCode(
      loadDataset(`csv:${file("neg.csv")}`, "train"),
      "DATASET_INVALID",
      /neg\.csv line 2: label -1 is not a class id .*target=float/,
    );
  });

  it("?group=N gives each example its group id, carried by subsets and shards", async () => {
    const rows = tabularRows(10, 3);
    await writeCsv(file("groups.csv"), rows, ["x0", "x1", "x2", "x3", "y", "patient"]);
    const d = await loadDataset(`csv:${file("groups.csv")}?group=patient&label=4&test=0`, "train");
    expect(d.sampleShape).toEqual([4]);
    expect(d.groups).toBeInstanceOf(Int32Array);
    expect(Array.from(d.groups!)).toEqual(rows.map((r) => r[5]));
    expect(Array.from(d.labels)).toEqual(rows.map((r) => r[4]));
    expect(Array.from(subsetDataset(d, [29, 0, 15]).groups!)).toEqual([2, 0, 1]);
    expect(Array.from(pickExamples(d, [12, 12], "two").groups!)).toEqual([1, 1]);
    expect(Array.from(shardDataset(d, 2, 3).groups!)).toEqual(Array(10).fill(2));
    expect(checkedDataset(d).groups).toBe(d.groups);
    await writeFile(file("bad-group.csv"), "1,2,0,0\n1,2,1,0.5\n");
    await expectRejectsCode(
      loadDataset(`csv:${file("bad-group.csv")}?group=3&label=2`, "train"),
      "DATASET_INVALID",
      /bad-group\.csv line 2, column 4: group 0\.5 is not an integer id/,
    );
  });

  it("splits a file 80/20 by a fixed seeded draw: disjoint, covering, the same in every process", async () => {
    const rows = tabularRows(25, 2);
    await writeCsv(file("split.csv"), rows);
    const spec = `csv:${file("split.csv")}?group=5`;
    const train = await loadDataset(spec, "train");
    const test = await loadDataset(spec, "test");
    expect(datasetSize(test)).toBe(10);
    expect(datasetSize(train)).toBe(40);
    const key = (f: Float32Array, i: number) => Array.from(f.subarray(i * 4, i * 4 + 4)).join();
    const seen = new Set([
      ...Array.from({ length: 40 }, (_, i) => key(train.features, i)),
      ...Array.from({ length: 10 }, (_, i) => key(test.features, i)),
    ]);
    expect(seen.size).toBe(50);
    expect(train.groups!.length).toBe(40);
    expect(Array.from(await loadDataset(spec, "test").then((t) => t.labels))).toEqual(
      Array.from(test.labels),
    );
    const quarter = await loadDataset(`csv:${file("split.csv")}?test=0.5`, "test");
    expect(datasetSize(quarter)).toBe(25);
  });

  it("reads gzipped files, and refuses unknown keys, missing files and tiny splits", async () => {
    await writeFile(file("z.csv.gz"), gzipSync("1,2,0\n3,4,1\n5,6,1\n"));
    const z = await loadDataset(`csv:${file("z.csv.gz")}?test=0`, "train");
    expect(Array.from(z.labels)).toEqual([0, 1, 1]);
    expectCohortError(
      () => parseCsvSpec("csv:x.csv?lable=1"),
      "INVALID_OPTION",
      /unknown key "lable"/,
    );
    expectCohortError(() => parseCsvSpec("csv:x.csv?test=1"), "INVALID_OPTION", /test must be/);
    expectCohortError(() => parseCsvSpec("csv:"), "INVALID_OPTION", /no file named/);
    await expectRejectsCode(
      loadDataset(`csv:${file("missing.csv")}`, "train"),
      "DATASET_NOT_FOUND",
      /missing\.csv/,
    );
    await writeFile(file("one.csv"), "1,2,0\n");
    await expectRejectsCode(
      loadDataset(`csv:${file("one.csv")}`, "train"),
      "DATASET_INVALID",
      /1 rows: too few/,
    );
  });

  it("checkedDataset refuses group ids of the wrong count or type", () => {
    const base = {
      name: "g",
      features: new Float32Array(4),
      labels: new Int32Array([0, 1]),
      numClasses: 2,
      sampleShape: [2],
    };
    expectCohortError(
      () => checkedDataset({ ...base, groups: new Int32Array(3) }),
      "DATASET_INVALID",
      /3 group ids for 2 examples/,
    );
    expectCohortError(
      () => checkedDataset({ ...base, groups: new Float32Array(2) as unknown as Int32Array }),
      "DATASET_INVALID",
      /groups must be an Int32Array/,
    );
    const converted = checkedDataset({ ...base, groups: [4, 7] as unknown as Int32Array });
    expect(converted.groups).toEqual(new Int32Array([4, 7]));
  });

  it("a plain mlp is 200-200 on images and one hidden layer of 64 on feature vectors", () => {
    const vector = buildBuiltinModel("mlp", { inputShape: [10], numClasses: 3 });
    expect(vector.countParams()).toBe(10 * 64 + 64 + 64 * 3 + 3);
    const image = buildBuiltinModel("mlp", { inputShape: [28, 28, 1] });
    expect(image.countParams()).toBe(199_210);
    vector.dispose();
    image.dispose();
  });
});
