/**
 * The training pool: workers train shards in parallel through the client's training path, and
 * every way a worker can fail ends in a CohortError, never a hang. The workers run the built
 * `dist/models/train-worker.js` (`npm test` builds first).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  evaluateModel,
  instantiate,
  resolveModel,
  selectBackend,
  shareDataset,
  TrainPool,
  type LoadedModel,
  type TrainJob,
} from "../models/index.js";
import type { BackendRequest } from "../models/backend.js";
import type { Dataset } from "../protocol/dataset.js";
import type { LocalTraining } from "../models/training.js";
import { loadMnistDigits, shardDataset, takeExamples } from "../models/datasets/index.js";
import { expectRejectsCode } from "./helpers/errors.js";

const CONFIG: LocalTraining = {
  optimizer: "sgd",
  learningRate: 0.05,
  localEpochs: 2,
  batchSize: 10,
};

/** A stand-in worker that speaks the ready message, then does `onJob` with each request. */
function stubWorker(onJob: string): URL {
  const source = [
    'import { parentPort } from "node:worker_threads";',
    'parentPort.postMessage({ type: "ready", backend: "stub" });',
    `parentPort.on("message", () => { ${onJob} });`,
  ].join("\n");
  return new URL(`data:text/javascript,${encodeURIComponent(source)}`);
}

async function lossOf(loaded: LoadedModel, weights: readonly Float32Array[], data: Dataset) {
  const model = await instantiate(loaded.spec, weights);
  const { loss } = await evaluateModel(model, data);
  model.dispose();
  return loss;
}

describe("TrainPool", () => {
  let digits: Dataset;
  let mlp: LoadedModel;
  const pools: TrainPool[] = [];
  const pool = (options: ConstructorParameters<typeof TrainPool>[0] = {}) => {
    const p = new TrainPool(options);
    pools.push(p);
    return p;
  };

  beforeAll(async () => {
    await selectBackend("wasm");
    digits = takeExamples(await loadMnistDigits("train"), 200);
    mlp = await resolveModel("mlp", { seed: 4 });
  });

  afterAll(async () => {
    await Promise.all(pools.map((p) => p.close()));
  });

  it("trains two shards on two workers at once; both losses fall; shapes are kept", async () => {
    const p = pool({ size: 2 });
    await p.warmUp();
    const shards = [0, 1].map((i) => shardDataset(digits, i, 2));
    const jobs: TrainJob[] = shards.map((data, i) => ({
      spec: mlp.spec,
      weights: mlp.weights,
      data,
      config: CONFIG,
      shuffleSeed: i,
    }));
    const results = await Promise.all(jobs.map((job) => p.train(job)));
    expect(new Set(results.map((r) => r.worker))).toEqual(new Set([0, 1]));
    for (let i = 0; i < 2; i++) {
      const { weights, stats } = results[i]!;
      expect(weights.map((w) => w.length)).toEqual(mlp.weights.map((w) => w.length));
      expect(Number.isFinite(stats.loss)).toBe(true);
      const before = await lossOf(mlp, mlp.weights, shards[i]!);
      const after = await lossOf(mlp, weights, shards[i]!);
      expect(after).toBeLessThan(0.8 * before);
    }
    // Different shards, different updates.
    expect(results[0]!.weights[0]).not.toEqual(results[1]!.weights[0]);
  });

  it("trains the McMahan CNN in a worker (wasm training kernels loaded there)", async () => {
    const cnn = await resolveModel("cnn", { seed: 1 });
    const data = takeExamples(digits, 100);
    const p = pool({ size: 1 });
    const { weights } = await p.train({
      spec: cnn.spec,
      weights: cnn.weights,
      data,
      config: { optimizer: "sgd", learningRate: 0.1, localEpochs: 1, batchSize: 20 },
      shuffleSeed: 1,
    });
    expect(await lossOf(cnn, weights, data)).toBeLessThan(
      (await lossOf(cnn, cnn.weights, data)) - 0.05,
    );
  });

  it("shares SharedArrayBuffer data and, when asked, transfers instead of copying", async () => {
    const p = pool({ size: 1 });
    const shared = shareDataset(takeExamples(digits, 50));
    const job = { spec: mlp.spec, data: shared, config: CONFIG };
    const a = await p.train(
      { ...job, weights: mlp.weights.map((w) => w.slice()) },
      { transfer: true },
    );
    expect(shared.features.length).toBe(50 * 784); // shared, not detached
    const mine = a.weights;
    const b = await p.train({ ...job, weights: mine }, { transfer: true });
    expect(mine[0]!.length).toBe(0); // transferred: the caller's copy is detached
    expect(b.weights.map((w) => w.length)).toEqual(mlp.weights.map((w) => w.length));
    // Sending detached arrays again is refused clearly, and the pool goes on.
    await expectRejectsCode(p.train({ ...job, weights: mine }), "INVALID_MESSAGE", /detached/);
    expect((await p.train({ ...job, weights: b.weights })).weights).toHaveLength(mine.length);
  });

  it("fails a job with the worker's CohortError and goes on training", async () => {
    const p = pool({ size: 1 });
    const broken = { ...mlp.spec, weightSpecs: mlp.spec.weightSpecs.slice(1) };
    const job = { spec: broken, weights: mlp.weights, data: digits, config: CONFIG };
    await expectRejectsCode(p.train(job), "INVALID_MODEL");
    const ok = await p.train({ ...job, spec: mlp.spec, data: takeExamples(digits, 20) });
    expect(ok.weights).toHaveLength(mlp.weights.length);
  });

  it("a worker that dies mid-job fails that job, and the next job gets a new worker", async () => {
    const p = pool({ size: 1, workerUrl: stubWorker("process.exit(3);") });
    const job = { spec: mlp.spec, weights: mlp.weights, data: digits, config: CONFIG };
    await expectRejectsCode(p.train(job), "INTERNAL", /exited with code 3 while training job/);
    await expectRejectsCode(p.train(job), "INTERNAL", /exited with code 3/);
  });

  it("a worker that throws fails its job with the thrown message", async () => {
    const p = pool({ size: 1, workerUrl: stubWorker('throw new Error("kaboom");') });
    const job = { spec: mlp.spec, weights: mlp.weights, data: digits, config: CONFIG };
    await expectRejectsCode(p.train(job), "INTERNAL", /kaboom/);
  });

  it("a job past its deadline kills the worker with TIMEOUT", async () => {
    const p = pool({ size: 1, jobTimeoutMs: 300, workerUrl: stubWorker("") });
    const job = { spec: mlp.spec, weights: mlp.weights, data: digits, config: CONFIG };
    await expectRejectsCode(p.train(job), "TIMEOUT", /ran past 300 ms/);
  });

  it("a backend that cannot start fails queued jobs with BACKEND_UNAVAILABLE", async () => {
    const p = pool({ size: 2, backend: "no-such-backend" as BackendRequest });
    const job = { spec: mlp.spec, weights: mlp.weights, data: digits, config: CONFIG };
    const results = await Promise.allSettled([p.train(job), p.train(job), p.train(job)]);
    for (const r of results) {
      expect(r.status).toBe("rejected");
      expect((r as PromiseRejectedResult).reason).toMatchObject({ code: "BACKEND_UNAVAILABLE" });
    }
  });

  it("close() fails running and queued jobs with CLOSED, and later jobs too", async () => {
    const p = pool({ size: 1, workerUrl: stubWorker("") });
    const job = { spec: mlp.spec, weights: mlp.weights, data: digits, config: CONFIG };
    const running = expectRejectsCode(p.train(job), "CLOSED");
    const queued = expectRejectsCode(p.train(job), "CLOSED");
    await p.close();
    await Promise.all([running, queued]);
    await expectRejectsCode(p.train(job), "CLOSED");
  });

  it("refuses a bad size and a missing worker script", () => {
    expect(() => new TrainPool({ size: 0 })).toThrow(/pool size/);
    expect(() => new TrainPool({ workerUrl: new URL("file:///nonexistent/worker.js") })).toThrow(
      /not found/,
    );
  });
});
