/**
 * Local training: `fit` over seeded shuffles, or, when the objective has a proximal term
 * (FedProx), a minimise loop over the same batches. Runs on every tfjs backend.
 */
import * as tf from "@tensorflow/tfjs";
import { CohortError } from "../protocol/errors.js";
import type { TrainingConfig } from "../protocol/messages.js";
import { createRng, permutation } from "../aggregation/random.js";
import { pickExamples } from "../protocol/dataset.js";
import { DEFAULT_LOSS, isClassification, type LossName } from "../protocol/task.js";
import { toTensors, type TensorData } from "./adapter.js";
import { compiledLoss, hits, lossValues, outputClasses } from "./task.js";

/**
 * How one local run trains: the task's optimizer and loss, the round's rate, epochs, batch
 * and μ.
 */
export type LocalTraining = Omit<TrainingConfig, "loss" | "metrics"> & {
  /** @default "sparse-categorical-crossentropy" */
  loss?: LossName;
  /** FedProx's μ: the objective gains μ/2 ‖w − w_start‖² over the trainable weights. @default 0 */
  proximalMu?: number;
};

/** What one local training run measured. */
export interface TrainStats {
  loss: number;
  accuracy: number | null;
  trainMs: number;
}

/** The client's local optimizer, fresh each round. */
function makeOptimizer(config: LocalTraining): tf.Optimizer {
  switch (config.optimizer) {
    case "sgd":
      return tf.train.sgd(config.learningRate);
    case "adam":
      return tf.train.adam(config.learningRate);
    default: {
      const exhaustive: never = config.optimizer;
      throw new CohortError("INVALID_OPTION", `unknown optimizer ${String(exhaustive)}`);
    }
  }
}

/** Local training progress: batches done out of all batches of the call. */
export type TrainProgress = (batchesDone: number, batchesTotal: number) => void;

/**
 * Yield to the event loop with a macrotask. tfjs callbacks yield with `requestAnimationFrame` in
 * browsers, which never fires in a background tab: training there would stall.
 */
function yieldTask(): Promise<void> {
  return new Promise((resolve) => {
    if (typeof setImmediate === "function") {
      setImmediate(resolve);
      return;
    }
    const channel = new MessageChannel();
    channel.port1.onmessage = () => {
      channel.port1.close();
      resolve();
    };
    channel.port2.postMessage(null);
  });
}

/** tfjs callbacks that report progress across epochs, or none when nobody listens. */
function progressCallbacks(
  data: TensorData,
  config: LocalTraining,
  onProgress: TrainProgress | undefined,
): (epochOffset: number) => tf.CustomCallbackArgs | undefined {
  if (onProgress === undefined) return () => undefined;
  const perEpoch = Math.ceil(data.size / config.batchSize);
  const total = perEpoch * config.localEpochs;
  return (epochOffset) => {
    let epoch = epochOffset;
    return {
      nextFrameFunc: yieldTask,
      onEpochBegin: (e) => {
        epoch = epochOffset + e;
      },
      onBatchEnd: (batch) => onProgress(Math.min(total, epoch * perEpoch + batch + 1), total),
    };
  };
}

/**
 * Train locally for `localEpochs` epochs with batch `batchSize`, a fresh optimizer each call
 * (client optimizer state does not survive a round, as in FedAvg). With `shuffleSeed`, each
 * epoch's order comes from a seeded generator, so the same inputs give the same weights.
 * `onProgress`, when given, hears after every batch (pages show it).
 */
export async function trainLocal(
  model: tf.LayersModel,
  data: TensorData,
  config: LocalTraining,
  shuffleSeed?: number,
  onProgress?: TrainProgress,
): Promise<TrainStats> {
  const mu = config.proximalMu ?? 0;
  if (mu > 0) return trainProximal(model, data, config, mu, shuffleSeed, onProgress);
  const callbacks = progressCallbacks(data, config, onProgress);
  const optimizer = makeOptimizer(config);
  const loss = config.loss ?? DEFAULT_LOSS;
  const classes = outputClasses(model, loss);
  const classifier = isClassification(loss);
  model.compile({ optimizer, loss: compiledLoss(loss), metrics: classifier ? ["accuracy"] : [] });
  const started = performance.now();
  try {
    let history: tf.History | undefined;
    if (shuffleSeed === undefined) {
      history = await model.fit(data.x, data.targets(loss, classes), {
        epochs: config.localEpochs,
        batchSize: config.batchSize,
        shuffle: true,
        verbose: 0,
        callbacks: callbacks(0),
      });
    } else {
      const rng = createRng(shuffleSeed);
      for (let epoch = 0; epoch < config.localEpochs; epoch++) {
        const [x, y] = permuted(data, permutation(data.size, rng), loss, classes);
        try {
          history = await model.fit(x!, y!, {
            epochs: 1,
            batchSize: config.batchSize,
            shuffle: false,
            verbose: 0,
            callbacks: callbacks(epoch),
          });
        } finally {
          tf.dispose([x!, y!]);
        }
      }
    }
    const last = (key: string): number | null => {
      const values = history?.history[key];
      const v = values?.[values.length - 1];
      return typeof v === "number" ? v : v === undefined ? null : (v.dataSync()[0] ?? null);
    };
    const finalLoss = last("loss");
    if (finalLoss === null) throw new CohortError("INTERNAL", "training reported no loss");
    return {
      loss: finalLoss,
      accuracy: classifier ? (last("acc") ?? last("accuracy")) : null,
      trainMs: performance.now() - started,
    };
  } finally {
    optimizer.dispose();
  }
}

/**
 * The examples in `order`, as new tensors (the labels as `loss` trains against them). Rows are
 * copied in JS when the source data is at hand (about 10× cheaper than a wasm gather of the
 * same rows), else gathered.
 */
export function permuted(
  data: TensorData,
  order: Int32Array,
  loss: LossName = DEFAULT_LOSS,
  classes?: number,
): [tf.Tensor, tf.Tensor] {
  const src = data.source;
  if (src === undefined) {
    const indices = tf.tensor1d(order, "int32");
    const y = data.targets(loss, classes);
    const out = tf.tidy(() => [tf.gather(data.x, indices), tf.gather(y, indices)]);
    indices.dispose();
    return [out[0]!, out[1]!];
  }
  const t = toTensors(pickExamples(src, order, src.name));
  return [t.x, t.targets(loss, classes)];
}

/**
 * FedProx local training (Li et al. 2020): minimise the task's loss + μ/2 ‖w − w_start‖² with
 * the task's optimizer over the same batches `fit` would use. `w_start` is the model's
 * weights when the call begins (the global model). Reports the task-loss part.
 */
async function trainProximal(
  model: tf.LayersModel,
  data: TensorData,
  config: LocalTraining,
  mu: number,
  shuffleSeed: number | undefined,
  onProgress: TrainProgress | undefined,
): Promise<TrainStats> {
  const optimizer = makeOptimizer(config);
  const loss = config.loss ?? DEFAULT_LOSS;
  const classes = outputClasses(model, loss);
  const classifier = isClassification(loss);
  const vars = model.trainableWeights.map((w) => w.read() as tf.Variable);
  const anchor = vars.map((v) => tf.clone(v));
  const rng = shuffleSeed === undefined ? null : createRng(shuffleSeed);
  const perEpoch = Math.ceil(data.size / config.batchSize);
  const total = perEpoch * config.localEpochs;
  const started = performance.now();
  let meanLoss = Number.NaN;
  let accuracy: number | null = null;
  try {
    for (let epoch = 0; epoch < config.localEpochs; epoch++) {
      const [x, y] = permuted(data, permutation(data.size, rng ?? Math.random), loss, classes);
      const losses: tf.Scalar[] = [];
      const right: tf.Tensor[] = [];
      try {
        for (let b = 0; b < perEpoch; b++) {
          const start = b * config.batchSize;
          const size = Math.min(config.batchSize, data.size - start);
          tf.tidy(() => {
            const xb = tf.slice(x, start, size);
            const yb = tf.slice(y, start, size);
            optimizer.minimize(
              () => {
                const out = model.apply(xb, { training: true }) as tf.Tensor;
                const ce = tf.mean(lossValues(loss, yb, out)) as tf.Scalar;
                losses.push(tf.keep(tf.mul(ce, size) as tf.Scalar));
                if (classifier) right.push(tf.keep(tf.mul(tf.mean(hits(loss, yb, out)), size)));
                const prox = tf.addN(vars.map((v, i) => tf.sum(tf.square(tf.sub(v, anchor[i]!)))));
                return tf.add(ce, tf.mul(mu / 2, prox)) as tf.Scalar;
              },
              false,
              vars,
            );
          });
          if (onProgress !== undefined) {
            onProgress(epoch * perEpoch + b + 1, total);
            await yieldTask();
          }
        }
        const lossSum = tf.addN(losses);
        meanLoss = (await lossSum.data())[0]! / data.size;
        if (classifier) {
          const hitSum = tf.addN(right);
          accuracy = (await hitSum.data())[0]! / data.size;
          hitSum.dispose();
        }
        lossSum.dispose();
      } finally {
        tf.dispose([x, y, ...losses, ...right]);
      }
    }
  } finally {
    tf.dispose(anchor);
    optimizer.dispose();
  }
  return { loss: meanLoss, accuracy, trainMs: performance.now() - started };
}
