/**
 * Model files without tfjs-node: `saveModel` / `loadModel` of `cohort/models`, a run directory's
 * checkpoints, and the errors of missing, corrupt and mis-sized files.
 */
import { mkdir, readFile, truncate, writeFile, appendFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import * as tf from "@tensorflow/tfjs";
import { describe, expect, it } from "vitest";
import { RunStore } from "../coordinator/run-store.js";
import {
  checkpointRounds,
  loadModel,
  modelSpecOf,
  readWeights,
  resolveModel,
  saveModel,
} from "../models/index.js";
import { formatRounds } from "../models/checkpoints.js";
import { tempRunDir } from "./helpers/federation.js";
import { consumerProject, runScript } from "./helpers/consumer.js";

/** A small classifier, trained a few steps so its weights are not the initialisers'. */
async function trainedModel(seed: number): Promise<tf.LayersModel> {
  const model = tf.sequential({
    layers: [
      tf.layers.dense({ units: 8, inputShape: [4], activation: "relu", name: `hidden${seed}` }),
      tf.layers.dense({ units: 3, activation: "softmax", name: `out${seed}` }),
    ],
  });
  model.compile({ optimizer: "sgd", loss: "categoricalCrossentropy" });
  const x = tf.randomUniform([32, 4], 0, 1, "float32", seed);
  const y = tf.oneHot(tf.randomUniform([32], 0, 3, "int32", seed + 1), 3);
  await model.fit(x, y, { epochs: 3, verbose: 0 });
  tf.dispose([x, y]);
  return model;
}

const INPUTS = [
  [0.1, 0.9, 0.3, 0.5],
  [1, 0, 0, 1],
  [0.25, 0.5, 0.75, 1],
];

async function predictions(model: tf.LayersModel, rows: number[][]): Promise<number[][]> {
  const y = tf.tidy(() => model.predict(tf.tensor2d(rows)) as tf.Tensor);
  const out = (await y.array()) as number[][];
  y.dispose();
  return out;
}

function maxDifference(a: number[][], b: number[][]): number {
  expect(b.map((r) => r.length)).toEqual(a.map((r) => r.length));
  return Math.max(...a.flatMap((row, i) => row.map((v, j) => Math.abs(v - b[i]![j]!))));
}

/** A run directory written by the real run store: checkpoints of rounds 0, 2 and 3. */
async function runDirectory(): Promise<{ dir: string; weights: Map<number, Float32Array[]> }> {
  const dir = await tempRunDir("cohort-rundir-");
  const store = await RunStore.create(dir, { runId: "r" });
  const weights = new Map<number, Float32Array[]>();
  // One topology for every round, as a run has.
  const base = await trainedModel(10);
  const spec = modelSpecOf(base, "tiny");
  base.dispose();
  for (const round of [0, 2, 3]) {
    const model = await trainedModel(10 + round);
    weights.set(round, await readWeights(model));
    await store.checkpoint(round, spec, weights.get(round)!);
    model.dispose();
  }
  return { dir, weights };
}

describe("saveModel / loadModel", () => {
  it("saves the tfjs layout and a fresh Node process without tfjs-node loads it and predicts the same", async () => {
    const model = await trainedModel(1);
    const dir = join(await tempRunDir("cohort-saved-"), "model");
    const saved = await saveModel(model, dir);
    expect(saved).toEqual({
      modelJson: join(dir, "model.json"),
      weightsBin: join(dir, "weights.bin"),
      weightBytes: model.countParams() * 4,
    });
    const json = JSON.parse(await readFile(saved.modelJson, "utf8"));
    expect(json.modelTopology.class_name).toBe("Sequential");
    expect(json.weightsManifest).toEqual([
      {
        paths: ["weights.bin"],
        weights: model.weights.map((w) => ({
          name: w.originalName,
          shape: w.shape,
          dtype: "float32",
        })),
      },
    ]);
    expect((await readFile(saved.weightsBin)).length).toBe(model.countParams() * 4);
    const expected = await predictions(model, INPUTS);

    const project = await consumerProject();
    const { code, stdout, stderr } = await runScript(
      project,
      `import * as tf from "@tensorflow/tfjs";
import { pathToFileURL } from "node:url";
import { loadModel } from "cohort/models";
const [dir, rows] = process.argv.slice(2);
let fileUrl = "loaded";
try { await tf.loadLayersModel(pathToFileURL(dir + "/model.json").href); } catch (e) { fileUrl = e.message; }
const model = await loadModel(dir);
const y = model.predict(tf.tensor2d(JSON.parse(rows)));
console.log(JSON.stringify({ backend: tf.getBackend(), fileUrl, outputs: await y.array() }));
`,
      [dir, JSON.stringify(INPUTS)],
    );
    expect(stderr).not.toMatch(/Error/);
    expect(code).toBe(0);
    const child = JSON.parse(stdout) as {
      backend: string;
      fileUrl: string;
      outputs: number[][];
    };
    // Plain tfjs: the cpu backend, and file:// does not load (that needs tfjs-node).
    expect(child.backend).toBe("cpu");
    expect(child.fileUrl).not.toBe("loaded");
    expect(maxDifference(child.outputs, expected)).toBeLessThan(1e-6);
    // The outputs are the trained model's, not any model's: another one differs.
    const other = await trainedModel(2);
    expect(maxDifference(child.outputs, await predictions(other, INPUTS))).toBeGreaterThan(1e-3);
    model.dispose();
    other.dispose();
  });

  it("loads in this process from a directory, a model.json path and a file: URL", async () => {
    const model = await trainedModel(3);
    const dir = await tempRunDir("cohort-saved-");
    await saveModel(model, dir);
    const weights = await readWeights(model);
    for (const source of [dir, join(dir, "model.json"), pathToFileURL(join(dir, "model.json"))]) {
      const loaded = await loadModel(source);
      expect(await readWeights(loaded)).toEqual(weights);
      loaded.dispose();
    }
    // The coordinator's --model reads the same files.
    expect((await resolveModel(join(dir, "model.json"))).weights).toEqual(weights);
    model.dispose();
  });

  it("loads a run directory's last checkpoint, or round n's; a missing round names those that exist", async () => {
    const { dir, weights } = await runDirectory();
    expect(await checkpointRounds(dir)).toEqual([0, 2, 3]);
    const last = await loadModel(dir);
    expect(await readWeights(last)).toEqual(weights.get(3));
    const second = await loadModel(dir, { round: 2 });
    expect(await readWeights(second)).toEqual(weights.get(2));
    last.dispose();
    second.dispose();
    await expect(loadModel(dir, { round: 1 })).rejects.toMatchObject({
      code: "INVALID_MODEL",
      message: `${dir} has no checkpoint of round 1; it has rounds 0, 2, 3`,
    });
    await expect(loadModel(dir, { round: -1 })).rejects.toMatchObject({ code: "INVALID_OPTION" });
    // A round directory that lost its model.json to a crash does not count.
    await rm(join(dir, "checkpoints", "round-0003", "model.json"));
    expect(await checkpointRounds(dir)).toEqual([0, 2]);
    const fallback = await loadModel(dir);
    expect(await readWeights(fallback)).toEqual(weights.get(2));
    fallback.dispose();
    const empty = await tempRunDir("cohort-rundir-");
    await RunStore.create(empty, { runId: "e" });
    await expect(loadModel(empty)).rejects.toThrow(/holds no checkpoints/);
  });

  it("names a missing directory, a directory without a model, and a model asked for a round", async () => {
    const dir = await tempRunDir("cohort-missing-");
    await expect(loadModel(join(dir, "nope"))).rejects.toMatchObject({
      code: "INVALID_MODEL",
      message: `no model at ${join(dir, "nope")}: no such file or directory`,
    });
    await expect(loadModel(dir)).rejects.toThrow(/holds neither model.json .* nor checkpoints\//);
    const model = await trainedModel(4);
    await saveModel(model, dir);
    model.dispose();
    await expect(loadModel(dir, { round: 2 })).rejects.toMatchObject({ code: "INVALID_OPTION" });
    // http(s) URLs are fetched (test/models-api.test.ts); other schemes are refused.
    await expect(loadModel("ftp://example.invalid/model.json")).rejects.toThrow(
      /reads files and http\(s\) URLs, not ftp:/,
    );
  });

  it("refuses a corrupt model.json, weights of the wrong byte length and a path out of the directory", async () => {
    const model = await trainedModel(5);
    const bytes = model.countParams() * 4;
    const dir = await tempRunDir("cohort-corrupt-");
    await saveModel(model, dir);
    model.dispose();
    const json = await readFile(join(dir, "model.json"), "utf8");

    await writeFile(join(dir, "model.json"), json.slice(0, json.length / 2));
    await expect(loadModel(dir)).rejects.toMatchObject({ code: "INVALID_MODEL" });
    await expect(loadModel(dir)).rejects.toThrow(/model\.json is not valid JSON/);
    await writeFile(join(dir, "model.json"), JSON.stringify({ weightsManifest: [] }));
    await expect(loadModel(dir)).rejects.toThrow(/has no "modelTopology"/);
    await writeFile(join(dir, "model.json"), json);

    await truncate(join(dir, "weights.bin"), bytes - 4);
    await expect(loadModel(dir)).rejects.toThrow(
      new RegExp(
        `weights.bin holds ${bytes - 4} bytes, but its manifest lists ${bytes / 4} values in ${bytes} bytes`,
      ),
    );
    await appendFile(join(dir, "weights.bin"), Buffer.alloc(8));
    await expect(loadModel(dir)).rejects.toThrow(new RegExp(`holds ${bytes + 4} bytes`));
    await rm(join(dir, "weights.bin"));
    await expect(loadModel(dir)).rejects.toThrow(/cannot read weights weights.bin/);

    const parsed = JSON.parse(json);
    parsed.weightsManifest[0].paths = ["../outside.bin"];
    await writeFile(join(dir, "model.json"), JSON.stringify(parsed));
    await expect(loadModel(dir)).rejects.toThrow(
      /weights path "..\/outside.bin" leaves its directory/,
    );
    parsed.weightsManifest[0].paths = ["weights.bin"];
    parsed.weightsManifest[0].weights[0].dtype = "float64";
    await writeFile(join(dir, "model.json"), JSON.stringify(parsed));
    await expect(loadModel(dir)).rejects.toThrow(/has dtype float64/);
  });

  it("a topology without weights builds from its initialisers (the coordinator's --model)", async () => {
    const model = await trainedModel(6);
    const dir = await tempRunDir("cohort-topology-");
    await mkdir(dir, { recursive: true });
    await writeFile(
      join(dir, "model.json"),
      JSON.stringify({ modelTopology: model.toJSON(null, false) }),
    );
    const { spec, weights } = await resolveModel(join(dir, "model.json"));
    expect(spec.numParameters).toBe(model.countParams());
    expect(weights.map((w) => w.length)).toEqual(
      model.weights.map((w) => w.shape.reduce((a, b) => a! * b!, 1)),
    );
    model.dispose();
  });

  it("lists rounds with runs shortened", () => {
    expect(formatRounds([0, 2, 3])).toBe("0, 2, 3");
    expect(formatRounds([0, 1, 2, 3, 5, 7, 8, 9])).toBe("0–3, 5, 7–9");
    expect(formatRounds([4])).toBe("4");
  });
});
