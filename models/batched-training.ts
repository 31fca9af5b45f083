/**
 * Cohort-batched local training: K devices' local SGD steps as one computation, each device's
 * weights stacked on a leading axis and multiplied with batched matrix products. At FL's small
 * batches one dispatch per layer per tiny batch is the cost of per-device training; batching K
 * devices pays it once for all of them. Results equal `trainLocal` device by device within
 * float tolerance: the same seeded shuffles, batches (a short last one included), loss and
 * FedProx term.
 */
import * as tf from "@tensorflow/tfjs";
import { CohortError } from "../protocol/errors.js";
import { createRng, permutation } from "../aggregation/random.js";
import { datasetSize, type Dataset } from "../protocol/dataset.js";
import { DEFAULT_LOSS, isClassification, type LossName } from "../protocol/task.js";
import type { LocalTraining, TrainStats } from "./training.js";
import { hits, lossValues, outputClasses, targetTensor } from "./task.js";

/** Activations the batched path computes (tfjs's names). */
const ACTIVATIONS = ["linear", "relu", "sigmoid", "tanh", "softmax"] as const;
type Activation = (typeof ACTIVATIONS)[number];

/** One dense layer of a batchable model. */
interface DenseStep {
  units: number;
  activation: Activation;
  useBias: boolean;
}

/** How a model trains batched: its dense layers in order. */
export interface BatchPlan {
  readonly layers: readonly DenseStep[];
  readonly loss: LossName;
  /** The model's class count for sparse labels (their one-hot width). */
  readonly classes: number | undefined;
}

/**
 * The batched plan of `model` for `config`, or why it cannot train batched: only dense layers
 * (with the activations above), flatten and no-op dropout, SGD, and one output per example.
 * Dropout with a rate is refused: tfjs draws its masks from a global generator that a batched
 * computation cannot replay device by device, so such models keep the per-device path.
 */
export function batchPlan(model: tf.LayersModel, config: LocalTraining): BatchPlan | string {
  if (config.optimizer !== "sgd") return `optimizer ${config.optimizer} (only sgd is batched)`;
  const loss = config.loss ?? DEFAULT_LOSS;
  if (model.outputs.length !== 1 || model.outputs[0]!.shape.length !== 2)
    return "the model has not one [batch, outputs] output";
  const layers: DenseStep[] = [];
  for (const layer of model.layers) {
    const kind = layer.getClassName();
    const cfg = layer.getConfig();
    if (kind === "InputLayer" || kind === "Flatten") continue;
    if (kind === "Dropout") {
      if (Number(cfg["rate"]) > 0) return `layer ${layer.name}: dropout with a rate`;
      continue;
    }
    if (kind !== "Dense") return `layer ${layer.name} (${kind})`;
    const activation = String(cfg["activation"] ?? "linear");
    if (!(ACTIVATIONS as readonly string[]).includes(activation))
      return `layer ${layer.name}: activation ${activation}`;
    if (cfg["kernelRegularizer"] != null || cfg["biasRegularizer"] != null)
      return `layer ${layer.name}: a regularizer`;
    layers.push({
      units: Number(cfg["units"]),
      activation: activation as Activation,
      useBias: cfg["useBias"] !== false,
    });
  }
  if (layers.length === 0) return "no dense layer";
  return { layers, loss, classes: outputClasses(model, loss) };
}

/** One device's local run: its starting weights, data, configuration and shuffle seed. */
export interface BatchedDevice {
  weights: readonly Float32Array[];
  data: Dataset;
  config: LocalTraining;
  shuffleSeed: number;
}

/** What one device's batched run gave: its trained weights and its statistics. */
export interface BatchedResult {
  weights: Float32Array[];
  stats: TrainStats;
}

function activate(x: tf.Tensor, activation: Activation): tf.Tensor {
  switch (activation) {
    case "linear":
      return x;
    case "relu":
      return tf.relu(x);
    case "sigmoid":
      return tf.sigmoid(x);
    case "tanh":
      return tf.tanh(x);
    case "softmax":
      return tf.softmax(x);
    default: {
      const exhaustive: never = activation;
      throw new CohortError("INTERNAL", `unknown activation ${String(exhaustive)}`);
    }
  }
}

/**
 * The stacked outputs of every device, [K, B, outputs], from its examples as columns
 * xᵀ [K, in, B]. Kernels are held transposed, Wᵀ [K, units, in], and activations as columns
 * [K, units, B]: each product Wᵀ·h has the large weight matrix on the left, which the wasm
 * backend's matmul (XNNPACK) uses as it is, where a weight matrix on the right is repacked on
 * every call (3.5× slower measured for the 2NN's first layer at B = 10).
 */
function forward(plan: BatchPlan, params: readonly tf.Tensor[], xT: tf.Tensor): tf.Tensor {
  let h = xT;
  let p = 0;
  const last = plan.layers.length - 1;
  for (const [i, layer] of plan.layers.entries()) {
    h = tf.matMul(params[p++]!, h);
    if (layer.useBias) h = tf.add(h, params[p++]!);
    if (i === last) {
      // The output as rows, [K, B, outputs], as the loss takes it.
      return activate(tf.transpose(h, [0, 2, 1]), layer.activation);
    }
    h =
      layer.activation === "softmax"
        ? tf.transpose(tf.softmax(tf.transpose(h, [0, 2, 1])), [0, 2, 1])
        : activate(h, layer.activation);
  }
  throw new CohortError("INTERNAL", "a batch plan without layers");
}

/** A device's examples as rows: features and targets as the loss trains against them. */
interface Rows {
  n: number;
  x: Float32Array;
  y: Float32Array;
  order: Int32Array;
  rng: () => number;
}

/**
 * Train K devices' local runs at once. All devices share the optimizer (SGD), epochs and batch
 * size (group them by those); rates, μ, data sizes and starting weights may differ. A device
 * with fewer batches in an epoch stops updating once its batches are done: its rows are masked.
 *
 * @throws CohortError `INVALID_OPTION` when the devices' epochs or batch sizes differ.
 */
export async function trainBatched(
  plan: BatchPlan,
  devices: readonly BatchedDevice[],
): Promise<BatchedResult[]> {
  const K = devices.length;
  if (K === 0) return [];
  const { localEpochs, batchSize: B } = devices[0]!.config;
  if (devices.some((d) => d.config.localEpochs !== localEpochs || d.config.batchSize !== B))
    throw new CohortError("INVALID_OPTION", "batched devices must share epochs and batch size");
  const count = plan.layers.reduce((c, l) => c + (l.useBias ? 2 : 1), 0);
  if (devices.some((d) => d.weights.length !== count))
    throw new CohortError("INVALID_MODEL", `batched devices must each hold ${count} weights`);
  const started = performance.now();
  const rows: Rows[] = [];
  for (const d of devices) {
    const n = datasetSize(d.data);
    const t = targetTensor(d.data.labels, d.data, plan.loss, plan.classes);
    // Read asynchronously: a GPU backend's synchronous read needs a canvas Node lacks.
    const y = (await t.data()) as Float32Array;
    t.dispose();
    rows.push({
      n,
      x: d.data.features,
      y,
      order: new Int32Array(0),
      rng: createRng(d.shuffleSeed),
    });
  }
  const inDim = rows[0]!.x.length / Math.max(1, rows[0]!.n);
  const outDim = rows[0]!.y.length / Math.max(1, rows[0]!.n);
  const shapes = devices[0]!.weights.map((_, i) => weightShape(plan, i, inDim));
  let params = shapes.map((shape, i) =>
    stack(
      devices.map((d) => d.weights[i]!),
      shape,
    ),
  );
  const kernel = shapes.map((shape) => shape.length === 2);
  const anchor = params.map((p) => tf.clone(p));
  // Each device's rate scales its objective, so the gradient is already the SGD step.
  const rate = tf.tensor1d(devices.map((d) => d.config.learningRate));
  const halfMu = tf.tensor1d(devices.map((d) => (d.config.proximalMu ?? 0) / 2));
  const proximal = devices.some((d) => (d.config.proximalMu ?? 0) > 0);
  const classifier = isClassification(plan.loss);
  const steps = Math.max(...rows.map((r) => Math.ceil(r.n / B)));
  const lossSum = new Float64Array(K);
  const hitSum = new Float64Array(K);
  try {
    for (let epoch = 0; epoch < localEpochs; epoch++) {
      for (const r of rows) r.order = permutation(r.n, r.rng);
      const epochLoss: tf.Tensor[] = [];
      const epochHits: tf.Tensor[] = [];
      for (let s = 0; s < steps; s++) {
        const { x, y, weight, active } = stepBatch(rows, s, B, inDim, outDim);
        const next = tf.tidy(() => {
          const xs = tf.tensor3d(x, [K, inDim, B]);
          const ys = tf.tensor3d(y, [K, B, outDim]);
          const ws = tf.tensor2d(weight, [K, B]);
          const on = tf.tensor1d(active);
          // Each device's mean loss over its rows; the devices' sum differentiates into each
          // device's own gradient, since no weight is shared.
          const objective = (...ps: tf.Tensor[]): tf.Scalar => {
            const out = forward(plan, ps, xs);
            const losses = perDevice(tf.mul(lossValues(plan.loss, ys, out), ws));
            // The step's statistics come from the same forward pass, as `fit`'s do.
            epochLoss.push(tf.keep(losses));
            if (classifier)
              epochHits.push(tf.keep(perDevice(tf.mul(hits(plan.loss, ys, out), ws))));
            let perRun = losses;
            if (proximal) {
              const prox = ps.map((p, i) => perDevice(tf.square(tf.sub(p, anchor[i]!))));
              perRun = tf.add(perRun, tf.mul(tf.mul(halfMu, on), tf.addN(prox)));
            }
            return tf.sum(tf.mul(rate, perRun)) as tf.Scalar;
          };
          const grads = tf.grads(objective)(params);
          return params.map((p, i) => tf.sub(p, grads[i]!));
        });
        tf.dispose(params);
        params = next;
      }
      // The epoch's mean like `fit` reports: Σ batch mean × batch size / n.
      await sumInto(epochLoss, lossSum, rows, B, steps);
      if (classifier) await sumInto(epochHits, hitSum, rows, B, steps);
    }
    const values = await Promise.all(params.map((p) => p.data() as Promise<Float32Array>));
    const trainMs = (performance.now() - started) / K;
    return devices.map((_, k) => ({
      weights: values.map((v, i) => {
        const size = v.length / K;
        const mine = v.subarray(k * size, (k + 1) * size);
        // A kernel held as [units, in] goes back as [in, units].
        return kernel[i] ? transposed(mine, shapes[i]![1]!, shapes[i]![0]!) : mine.slice();
      }),
      stats: {
        loss: lossSum[k]!,
        accuracy: classifier ? hitSum[k]! : null,
        trainMs,
      },
    }));
  } finally {
    tf.dispose([...params, ...anchor, rate, halfMu]);
  }
}

/** The last epoch's mean per device, from each step's Σ(value / batch size). */
async function sumInto(
  parts: tf.Tensor[],
  into: Float64Array,
  rows: readonly Rows[],
  B: number,
  steps: number,
): Promise<void> {
  const stacked = tf.stack(parts);
  const v = (await stacked.data()) as Float32Array;
  tf.dispose([stacked, ...parts]);
  rows.forEach((r, k) => {
    let sum = 0;
    for (let s = 0; s < steps; s++) sum += v[s * rows.length + k]! * batchOf(r.n, s, B);
    into[k] = sum / r.n;
  });
}

function batchOf(n: number, step: number, B: number): number {
  return Math.max(0, Math.min(B, n - step * B));
}

/**
 * Step `s`'s examples of every device, padded to B: features as columns [K, in, B], targets as
 * rows [K, B, out]; a padded example weighs 0, a real one 1/b.
 */
function stepBatch(rows: readonly Rows[], s: number, B: number, inDim: number, outDim: number) {
  const K = rows.length;
  const x = new Float32Array(K * B * inDim);
  const y = new Float32Array(K * B * outDim);
  const weight = new Float32Array(K * B);
  const active = new Float32Array(K);
  rows.forEach((r, k) => {
    const b = batchOf(r.n, s, B);
    if (b > 0) active[k] = 1;
    for (let j = 0; j < b; j++) {
      const i = r.order[s * B + j]!;
      const row = r.x.subarray(i * inDim, (i + 1) * inDim);
      const base = k * inDim * B + j;
      for (let f = 0; f < inDim; f++) x[base + f * B] = row[f]!;
      y.set(r.y.subarray(i * outDim, (i + 1) * outDim), (k * B + j) * outDim);
      weight[k * B + j] = 1 / b;
    }
  });
  return { x, y, weight, active };
}

/** Σ over every axis but the device axis: [K, …] → [K]. */
function perDevice(t: tf.Tensor): tf.Tensor {
  return t.rank === 1
    ? t
    : tf.sum(
        t,
        Array.from({ length: t.rank - 1 }, (_, i) => i + 1),
      );
}

/**
 * The devices' copies of one weight stacked on a leading axis: a kernel [in, units] as its
 * transpose [K, units, in], a bias [units] as a column [K, units, 1].
 */
function stack(copies: readonly Float32Array[], shape: number[]): tf.Tensor {
  const size = copies[0]!.length;
  const flat = new Float32Array(copies.length * size);
  copies.forEach((c, k) =>
    flat.set(shape.length === 2 ? transposed(c, shape[0]!, shape[1]!) : c, k * size),
  );
  const K = copies.length;
  return shape.length === 2
    ? tf.tensor3d(flat, [K, shape[1]!, shape[0]!])
    : tf.tensor3d(flat, [K, shape[0]!, 1]);
}

/** A row-major [rows, cols] matrix transposed to [cols, rows]. */
function transposed(m: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(m.length);
  for (let r = 0; r < rows; r++)
    for (let c = 0; c < cols; c++) out[c * rows + r] = m[r * cols + c]!;
  return out;
}

/** The shape of weight `index` (kernels then biases, layer by layer). */
function weightShape(plan: BatchPlan, index: number, inDim: number): number[] {
  let i = 0;
  let fanIn = inDim;
  for (const { units, useBias } of plan.layers) {
    if (i++ === index) return [fanIn, units];
    if (useBias && i++ === index) return [units];
    fanIn = units;
  }
  throw new CohortError("INVALID_MODEL", `weight ${index} is not a dense layer's`);
}
