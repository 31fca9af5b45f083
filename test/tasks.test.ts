/**
 * Any task: every built-in loss and label type trains a model whose loss falls — locally, in
 * plain and in secure federated rounds — and evaluation reports the task's metrics; a model
 * that does not fit the data or the loss is refused, naming what differs.
 */
import * as tf from "@tensorflow/tfjs";
import { describe, expect, it } from "vitest";
import { CohortClient, type CohortClientOptions } from "../client/index.js";
import { buildBuiltinModel, builtinOptionsFor } from "../models/builtin.js";
import { selectBackend } from "../models/backend.js";
import { checkContract, evaluateModel, rocAuc, targetTensor } from "../models/task.js";
import { toTensors } from "../models/adapter.js";
import { trainLocal } from "../models/training.js";
import type { Dataset } from "../protocol/dataset.js";
import { isClassification } from "../protocol/task.js";
import { expectCohortError } from "./helpers/errors.js";
import { startCoordinator } from "./helpers/federation.js";
import { TASKS, taskCoordinatorOptions, type SyntheticTask } from "./helpers/tasks.js";

/** The one-hot label tensor's shape for a model of `classes` outputs. */
function targetTensorShape(data: Dataset, classes: number): number[] {
  const y = targetTensor(data.labels, data, "sparse-categorical-crossentropy", classes);
  const shape = y.shape;
  y.dispose();
  return shape;
}

function modelFor(task: SyntheticTask, data: Dataset): tf.LayersModel {
  const m = task.model();
  return typeof m === "string" ? buildBuiltinModel(m, builtinOptionsFor(data, task.loss, 3)) : m;
}

describe("tasks: each loss and label type", () => {
  it.each(TASKS)(
    "$name: local training lowers the loss; evaluation reports the metrics",
    async (task) => {
      await selectBackend("wasm");
      const data = task.data(0, 200);
      const held = task.data(50, 200);
      const model = modelFor(task, data);
      checkContract(model, data, task.loss);
      const objective = { loss: task.loss, metrics: task.metrics };
      const before = await evaluateModel(model, held, objective);
      const tensors = toTensors(data);
      const stats = await trainLocal(
        model,
        tensors,
        { optimizer: "adam", learningRate: 0.02, localEpochs: 15, batchSize: 20, loss: task.loss },
        1,
      );
      const after = await evaluateModel(model, held, objective);
      tensors.dispose();
      model.dispose();
      expect(Number.isFinite(stats.loss)).toBe(true);
      expect(after.loss).toBeLessThan(before.loss * 0.8);
      expect(Object.keys(after.metrics).sort()).toEqual([...task.metrics].sort());
      for (const v of Object.values(after.metrics)) expect(Number.isFinite(v)).toBe(true);
      if (task.metrics.includes("accuracy")) expect(after.accuracy).toBeGreaterThan(0.7);
      if (task.metrics.includes("auc")) expect(after.metrics.auc).toBeGreaterThan(0.85);
      if (task.metrics.includes("mae")) expect(after.metrics.mae).toBeLessThan(before.metrics.mae!);
      // Training accuracy only means something for classifiers.
      expect(stats.accuracy === null).toBe(!isClassification(task.loss));
    },
  );

  it("refuses a model that does not fit the data or the loss, naming what differs", async () => {
    await selectBackend("wasm");
    const [binary, regression, sequence] = [TASKS[3]!, TASKS[5]!, TASKS[8]!];
    const reg = regression.data(0, 10);
    const softmax = buildBuiltinModel("logreg", { inputShape: [6], numClasses: 3 });
    expectCohortError(
      () => checkContract(softmax, reg, "sparse-categorical-crossentropy"),
      "INVALID_MODEL",
      /sparse-categorical-crossentropy needs class-id labels with numClasses, but the labels are float targets \(Float32Array\)/,
    );
    expectCohortError(
      () => checkContract(softmax, reg, "mse"),
      "INVALID_MODEL",
      /the model outputs \[3\] per example but mse on labels of shape \[\] needs \[1\]/,
    );
    const wide = buildBuiltinModel("logreg", { inputShape: [7], numClasses: 1 });
    expectCohortError(
      () => checkContract(wide, reg, "mse"),
      "INVALID_MODEL",
      /the model takes examples of shape \[7\] but the data's are \[6\]/,
    );
    const three = { ...binary.data(0, 10), numClasses: 3 };
    const sigmoid = buildBuiltinModel("logreg", { inputShape: [6], numClasses: 1 });
    expectCohortError(
      () => checkContract(sigmoid, three, "binary-crossentropy"),
      "INVALID_MODEL",
      /binary-crossentropy needs 0\/1 targets but the labels are class ids of 3 classes/,
    );
    const seq = sequence.model() as tf.LayersModel;
    expectCohortError(
      () =>
        checkContract(
          seq,
          { ...sequence.data(0, 4), labelShape: [4], labels: new Int32Array(20) },
          "sparse-categorical-crossentropy",
        ),
      "INVALID_MODEL",
      /outputs \[5, 7\] per example but sparse-categorical-crossentropy on labels of shape \[4\] needs \[4, 7\]/,
    );
    expectCohortError(
      () => checkContract(softmax, TASKS[2]!.data(0, 4), "sparse-categorical-crossentropy"),
      "INVALID_MODEL",
      /use categorical-crossentropy for class probabilities/,
    );
    const outOfRange = { ...TASKS[4]!.data(0, 10) };
    (outOfRange.labels as Float32Array)[7] = 2;
    const sigmoids = buildBuiltinModel("logreg", { inputShape: [6], numClasses: 3 });
    expectCohortError(
      () => checkContract(sigmoids, outOfRange, "binary-crossentropy"),
      "INVALID_MODEL",
      /binary-crossentropy needs targets in \[0, 1\], but label value 7 is 2/,
    );
    // A model with more classes than this data holds (a client without the top class) fits.
    const fewer = { ...TASKS[0]!.data(0, 10), numClasses: 2, labels: new Uint16Array(10).fill(1) };
    checkContract(softmax, fewer, "sparse-categorical-crossentropy");
    expect(targetTensorShape(fewer, 3)).toEqual([10, 3]);
    [softmax, wide, sigmoid, sigmoids, seq].forEach((m) => m.dispose());
  });

  it("refuses metrics that do not fit the loss and loss names it does not know", async () => {
    await expect(
      startCoordinator({ loss: "mse", metrics: "accuracy", runDir: null }),
    ).rejects.toThrow(/metric accuracy needs a classification loss, not mse/);
    await expect(startCoordinator({ metrics: "accuracy,f1", runDir: null })).rejects.toThrow(
      /unknown metric f1: built in are accuracy, binary-accuracy, auc, mae, mse/,
    );
    await expect(startCoordinator({ loss: "hinge" as "mse", runDir: null })).rejects.toThrow(
      /loss must be one of sparse-categorical-crossentropy/,
    );
  });

  it("checks the coordinator's model against its evaluation set at start", async () => {
    await expect(
      startCoordinator({
        model: "logreg",
        loss: "binary-crossentropy",
        evalDataset: { ...TASKS[0]!.data(0, 10) },
        runDir: null,
      }),
    ).rejects.toThrow(
      /INVALID_MODEL|binary-crossentropy needs 0\/1 targets but the labels are class ids of 3 classes/,
    );
  });
});

/** One client per data part of `task`, quiet unless `more` says otherwise. */
function taskClients(
  url: string,
  task: SyntheticTask,
  parts: number[],
  more: (part: number) => Partial<CohortClientOptions>,
): CohortClient[] {
  return parts.map(
    (part) =>
      new CohortClient({
        url,
        data: task.data(part),
        clientId: `c${part}`,
        backend: "wasm",
        log: () => undefined,
        ...more(part),
      }),
  );
}

/** Three clients and a coordinator on one task; the loss before and after `rounds` rounds. */
async function federate(task: SyntheticTask, secure: boolean) {
  const coordinator = await startCoordinator(
    taskCoordinatorOptions(task, { rounds: 3, secure, seed: 2 }),
  );
  const clients = taskClients(coordinator.url, task, [0, 1, 2], () => ({
    secureFloors: { cohort: 3, neighbours: 2, threshold: 2 },
  }));
  try {
    await Promise.all(clients.map((c) => c.start()));
    return await coordinator.run();
  } finally {
    await Promise.all(clients.map((c) => c.close()));
    await coordinator.close();
  }
}

describe("tasks: federated rounds over socket.io", () => {
  for (const secure of [false, true]) {
    it.each(TASKS)(
      `$name: ${secure ? "secure" : "plain"} rounds lower the central loss`,
      async (task) => {
        const summary = await federate(task, secure);
        const last = summary.rounds.at(-1)!;
        expect(summary.rounds).toHaveLength(3);
        expect(summary.rounds.every((r) => r.participants === 3 && r.secure === secure)).toBe(true);
        expect(last.loss!).toBeLessThan(summary.initial!.loss);
        expect(Object.keys(last.metrics!).sort()).toEqual([...task.metrics].sort());
        expect(last.accuracy === undefined).toBe(!task.metrics.some((m) => m.includes("accuracy")));
      },
    );
  }
});

describe("tasks: your own metric functions", () => {
  it("central evaluation runs them; clients given them report them in federated evaluation", async () => {
    const task = TASKS[5]!;
    const within1 = (y: tf.Tensor, p: tf.Tensor) =>
      tf.cast(tf.lessEqual(tf.abs(tf.sub(y, p)), 1), "float32");
    const coordinator = await startCoordinator({
      model: task.model(),
      loss: task.loss,
      metrics: ["mae", { name: "within1", fn: within1 }],
      evalDataset: task.data(99, 150),
      rounds: 2,
      minAvailableClients: 2,
      minFitClients: 2,
      fractionEvaluate: 1,
      optimizer: "adam",
      learningRate: 0.05,
      localEpochs: 4,
      runDir: null,
    });
    const clients = taskClients(coordinator.url, task, [0, 1], (part) => ({
      evalFraction: 0.25,
      seed: part,
      // Only the first knows the function: the second reports the built-in metric alone.
      ...(part === 0 ? { metricFunctions: { within1 } } : {}),
    }));
    try {
      await Promise.all(clients.map((c) => c.start()));
      expect(coordinator.task.training.metrics).toEqual(["mae", "within1"]);
      const summary = await coordinator.run();
      const first = summary.rounds[0]!;
      const last = summary.rounds.at(-1)!;
      expect(Object.keys(last.metrics!).sort()).toEqual(["mae", "within1"]);
      // More predictions land within 1 of the target as the model learns.
      expect(last.metrics!.within1).toBeGreaterThan(summary.initial!.metrics.within1!);
      expect(last.metrics!.within1).toBeLessThanOrEqual(1);
      expect(first.federatedClients).toBe(2);
      expect(Object.keys(last.federatedMetrics!).sort()).toEqual(["mae", "within1"]);
      expect(last.federatedAccuracy).toBeUndefined();
    } finally {
      await Promise.all(clients.map((c) => c.close()));
      await coordinator.close();
    }
  });
});

describe("tasks: a diverging run", () => {
  it("clients report NaN training at once (NON_FINITE, lower the learning rate); the run fails naming it", async () => {
    const task = TASKS[5]!;
    const coordinator = await startCoordinator({
      model: task.model(),
      loss: task.loss,
      evalDataset: task.data(99, 50),
      rounds: 1,
      minAvailableClients: 2,
      minFitClients: 2,
      maxRoundAttempts: 1,
      learningRate: 1e6,
      roundTimeoutMs: 120_000,
      runDir: null,
    });
    const lines: string[] = [];
    const clients = taskClients(coordinator.url, task, [0, 1], () => ({
      log: (l: string) => lines.push(l),
    }));
    try {
      await Promise.all(clients.map((c) => c.start()));
      const started = performance.now();
      await expect(coordinator.run()).rejects.toThrow(
        /round 1 failed 1 times: too few updates \(2 failed in the last attempt, e\.g\. c\d: NON_FINITE: .*local training diverged: the training loss is NaN .*lower the learning rate/,
      );
      // Far below the round's deadline: nobody waited for the diverged clients.
      expect(performance.now() - started).toBeLessThan(60_000);
      expect(lines.join("\n")).toMatch(/fit failed: NON_FINITE: local training diverged/);
    } finally {
      await Promise.all(clients.map((c) => c.close()));
      await coordinator.close();
    }
  });
});
