/**
 * What a task may cost a client, checked before its model is built: tfjs allocates every weight
 * while it builds a topology, so a coordinator that sends a huge layer would exhaust the client's
 * memory before any later check could run. Nothing here allocates a tensor.
 */
import { CohortError } from "../protocol/errors.js";
import type { Json, TaskSpec } from "../protocol/messages.js";
import type { ClientOptions } from "./options.js";

/** The largest message socket.io's Node client takes (the `ws` library's default `maxPayload`). */
export const MAX_MESSAGE_BYTES = 100 * 1024 * 1024;

/** Config fields that size a layer's weights or activations. */
const SIZE_FIELDS = ["units", "filters", "output_dim", "input_dim", "depth_multiplier"];
/** Config fields that hold a shape. */
const SHAPE_FIELDS = ["batch_input_shape", "input_shape", "target_shape", "dims"];

type Layer = { class_name?: unknown; config?: { [key: string]: Json } };

const tooLarge = (what: string) => new CohortError("MODEL_TOO_LARGE", what);
const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(1)} MiB`;

/**
 * Throw `MODEL_TOO_LARGE` when the task's model is bigger than `limits` allow, by its weight
 * specs or by its topology (each layer's size fields, and the parameters a sequential topology
 * implies, whatever the specs claim); `INVALID_MODEL` when the specs contradict the topology.
 */
export function checkTaskCost(task: TaskSpec, limits: ClientOptions<string>["taskLimits"]): void {
  const { model } = task;
  const specified = model.weightSpecs.reduce((n, s) => n + s.shape.reduce((a, b) => a * b, 1), 0);
  const most = limits.maxParameters;
  if (specified > most) {
    throw tooLarge(
      `model ${model.name} has ${specified} parameters; this client takes at most ${most} (taskLimits.maxParameters)`,
    );
  }
  if (specified * 4 > MAX_MESSAGE_BYTES) {
    throw tooLarge(
      `model ${model.name} is ${mib(specified * 4)}; socket.io delivers at most ${mib(MAX_MESSAGE_BYTES)} per message`,
    );
  }
  const layers = layersOf(model.topology);
  for (const [i, layer] of layers.entries()) checkLayer(layer, i, limits);
  const implied = sequentialParameters(model.topology);
  if (implied !== null && implied > most) {
    throw tooLarge(
      `the topology of ${model.name} implies ${implied} parameters; this client takes at most ${most} (taskLimits.maxParameters)`,
    );
  }
  if (implied !== null && implied !== specified) {
    throw new CohortError(
      "INVALID_MODEL",
      `the topology of ${model.name} implies ${implied} parameters but its weight specs list ${specified}`,
    );
  }
}

/** Every layer object in a topology, nested models included. */
function layersOf(topology: { [key: string]: Json }): Layer[] {
  const out: Layer[] = [];
  const visit = (node: Json, depth: number) => {
    if (depth > 32 || typeof node !== "object" || node === null) return;
    if (Array.isArray(node)) {
      for (const n of node) visit(n, depth + 1);
      return;
    }
    if (typeof node.class_name === "string" && typeof node.config === "object") {
      out.push(node as Layer);
    }
    for (const v of Object.values(node)) visit(v, depth + 1);
  };
  visit(topology, 0);
  return out;
}

function checkLayer(layer: Layer, i: number, limits: ClientOptions<string>["taskLimits"]): void {
  const config = layer.config ?? {};
  const name = `layer ${i} (${String(layer.class_name)})`;
  for (const field of SIZE_FIELDS) {
    const v = config[field];
    if (typeof v === "number" && v > limits.maxLayerSize) {
      throw tooLarge(
        `${name} has ${field} = ${v}; this client takes at most ${limits.maxLayerSize} (taskLimits.maxLayerSize)`,
      );
    }
  }
  for (const field of SHAPE_FIELDS) {
    const v = config[field];
    if (!Array.isArray(v)) continue;
    const size = v.reduce<number>((n, d) => n * (typeof d === "number" && d > 0 ? d : 1), 1);
    if (size > limits.maxParameters) {
      throw tooLarge(`${name} has ${field} of ${size} values per example`);
    }
  }
}

const num = (v: Json | undefined, fallback: number): number =>
  typeof v === "number" && Number.isFinite(v) ? v : fallback;
const pair = (v: Json | undefined, fallback: number): [number, number] =>
  Array.isArray(v)
    ? [num(v[0], fallback), num(v[1] ?? v[0], fallback)]
    : [num(v, fallback), num(v, fallback)];

/** Spatial size after a window (convolution or pooling). */
function windowed(size: number, window: number, stride: number, padding: Json | undefined): number {
  return padding === "same"
    ? Math.ceil(size / stride)
    : Math.max(0, Math.floor((size - window) / stride) + 1);
}

/**
 * The parameters a sequential topology implies, from its input shape and each layer's
 * configuration, or null where it cannot say (a functional model, an unknown layer class).
 */
function sequentialParameters(topology: { [key: string]: Json }): number | null {
  const config = topology.config;
  if (topology.class_name !== "Sequential" || typeof config !== "object" || config === null) {
    return null;
  }
  const layers = (config as { layers?: Json }).layers;
  if (!Array.isArray(layers)) return null;
  const input = (layers[0] as Layer | undefined)?.config?.batch_input_shape;
  if (!Array.isArray(input)) return null;
  let shape = input.slice(1).map((d) => num(d, 1));
  let total = 0;
  for (const layer of layers as Layer[]) {
    const c = layer.config ?? {};
    const last = shape[shape.length - 1] ?? 1;
    switch (layer.class_name) {
      case "Dense": {
        const units = num(c.units, 0);
        total += last * units + (c.use_bias === false ? 0 : units);
        shape = [...shape.slice(0, -1), units];
        break;
      }
      case "Conv2D": {
        const filters = num(c.filters, 0);
        const [kh, kw] = pair(c.kernel_size, 1);
        const [sh, sw] = pair(c.strides, 1);
        total += kh * kw * last * filters + (c.use_bias === false ? 0 : filters);
        shape = [
          windowed(shape[0] ?? 1, kh, sh, c.padding),
          windowed(shape[1] ?? 1, kw, sw, c.padding),
          filters,
        ];
        break;
      }
      case "MaxPooling2D":
      case "AveragePooling2D": {
        const [ph, pw] = pair(c.pool_size, 2);
        const [sh, sw] =
          Array.isArray(c.strides) || typeof c.strides === "number"
            ? pair(c.strides, ph)
            : [ph, pw];
        shape = [
          windowed(shape[0] ?? 1, ph, sh, c.padding),
          windowed(shape[1] ?? 1, pw, sw, c.padding),
          last,
        ];
        break;
      }
      case "Flatten":
        shape = [shape.reduce((a, b) => a * b, 1)];
        break;
      case "Reshape":
        if (!Array.isArray(c.target_shape)) return null;
        shape = c.target_shape.map((d) => num(d, 1));
        break;
      case "Embedding": {
        total += num(c.input_dim, 0) * num(c.output_dim, 0);
        shape = [...shape, num(c.output_dim, 0)];
        break;
      }
      case "LSTM":
      case "GRU":
      case "SimpleRNN": {
        const units = num(c.units, 0);
        const gates = layer.class_name === "LSTM" ? 4 : layer.class_name === "GRU" ? 3 : 1;
        const biases = layer.class_name === "GRU" && c.reset_after === true ? 2 : 1;
        total += gates * (units * (last + units) + biases * units);
        shape = c.return_sequences === true ? [...shape.slice(0, -1), units] : [units];
        break;
      }
      case "BatchNormalization":
        total += 4 * last;
        break;
      case "LayerNormalization":
        total += 2 * last;
        break;
      case "Dropout":
      case "Activation":
      case "ReLU":
      case "Softmax":
      case "InputLayer":
        break;
      default:
        return null;
    }
  }
  return total;
}
