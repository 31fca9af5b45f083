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
const SIZE_FIELDS = ["units", "filters", "output_dim", "input_dim", "depth_multiplier", "n"];
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
  const implied = impliedParameters(model.topology);
  if ("unknown" in implied) {
    if (limits.allowUnknownLayers) return;
    throw new CohortError(
      "INVALID_MODEL",
      `model ${model.name}: this client cannot tell what ${implied.unknown} costs before building it (set taskLimits.allowUnknownLayers to build it anyway)`,
    );
  }
  if (implied.params > most) {
    throw tooLarge(
      `the topology of ${model.name} implies ${implied.params} parameters; this client takes at most ${most} (taskLimits.maxParameters)`,
    );
  }
  if (implied.params !== specified) {
    throw new CohortError(
      "INVALID_MODEL",
      `the topology of ${model.name} implies ${implied.params} parameters but its weight specs list ${specified}`,
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
const product = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);

/** Spatial size after a window (convolution or pooling). */
function windowed(size: number, window: number, stride: number, padding: Json | undefined): number {
  return padding === "same"
    ? Math.ceil(size / stride)
    : Math.max(0, Math.floor((size - window) / stride) + 1);
}

/** Layers whose output has their input's shape and that hold no weights. */
const SHAPE_KEEPING = new Set([
  "Dropout",
  "Activation",
  "ReLU",
  "LeakyReLU",
  "ELU",
  "Softmax",
  "ThresholdedReLU",
  "GaussianNoise",
  "GaussianDropout",
  "AlphaDropout",
  "SpatialDropout1D",
  "SpatialDropout2D",
  "Masking",
  "InputLayer",
]);

/** Layers that combine inputs of one shape into that shape. */
const MERGING = new Set(["Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"]);

/** Parameters and output shape of one layer from its configuration and input shape, or null. */
function layerCost(
  layer: Layer,
  inputs: readonly (readonly number[])[],
): { params: number; shape: number[] } | null {
  const c = layer.config ?? {};
  const shape = [...(inputs[0] ?? [])];
  const last = shape[shape.length - 1] ?? 1;
  const bias = (n: number) => (c.use_bias === false ? 0 : n);
  const name = String(layer.class_name);
  if (SHAPE_KEEPING.has(name) || MERGING.has(name)) return { params: 0, shape };
  switch (name) {
    case "Dense": {
      const units = num(c.units, 0);
      return { params: last * units + bias(units), shape: [...shape.slice(0, -1), units] };
    }
    case "Conv1D": {
      const filters = num(c.filters, 0);
      const k = pair(c.kernel_size, 1)[0];
      const st = pair(c.strides, 1)[0];
      return {
        params: k * last * filters + bias(filters),
        shape: [windowed(shape[0] ?? 1, k, st, c.padding), filters],
      };
    }
    case "Conv2D":
    case "DepthwiseConv2D":
    case "SeparableConv2D": {
      const [kh, kw] = pair(c.kernel_size, 1);
      const [sh, sw] = pair(c.strides, 1);
      const spatial = [
        windowed(shape[0] ?? 1, kh, sh, c.padding),
        windowed(shape[1] ?? 1, kw, sw, c.padding),
      ];
      const dm = num(c.depth_multiplier, 1);
      if (name === "DepthwiseConv2D") {
        return { params: kh * kw * last * dm + bias(last * dm), shape: [...spatial, last * dm] };
      }
      const filters = num(c.filters, 0);
      const kernel =
        name === "Conv2D" ? kh * kw * last * filters : kh * kw * last * dm + last * dm * filters;
      return { params: kernel + bias(filters), shape: [...spatial, filters] };
    }
    case "MaxPooling1D":
    case "AveragePooling1D": {
      const p = pair(c.pool_size, 2)[0];
      const st = c.strides == null ? p : pair(c.strides, p)[0];
      return { params: 0, shape: [windowed(shape[0] ?? 1, p, st, c.padding), last] };
    }
    case "MaxPooling2D":
    case "AveragePooling2D": {
      const [ph, pw] = pair(c.pool_size, 2);
      const [sh, sw] = c.strides == null ? [ph, pw] : pair(c.strides, ph);
      return {
        params: 0,
        shape: [
          windowed(shape[0] ?? 1, ph, sh, c.padding),
          windowed(shape[1] ?? 1, pw, sw, c.padding),
          last,
        ],
      };
    }
    case "GlobalAveragePooling1D":
    case "GlobalMaxPooling1D":
    case "GlobalAveragePooling2D":
    case "GlobalMaxPooling2D":
      return { params: 0, shape: [last] };
    case "Flatten":
      return { params: 0, shape: [product(shape)] };
    case "Reshape":
      return Array.isArray(c.target_shape)
        ? { params: 0, shape: c.target_shape.map((d) => num(d, 1)) }
        : null;
    case "RepeatVector":
      return { params: 0, shape: [num(c.n, 1), last] };
    case "Concatenate":
      return {
        params: 0,
        shape: [...shape.slice(0, -1), inputs.reduce((n, s) => n + (s[s.length - 1] ?? 0), 0)],
      };
    case "Embedding": {
      const out = num(c.output_dim, 0);
      return { params: num(c.input_dim, 0) * out, shape: [...shape, out] };
    }
    case "LSTM":
    case "GRU":
    case "SimpleRNN": {
      const units = num(c.units, 0);
      const gates = name === "LSTM" ? 4 : name === "GRU" ? 3 : 1;
      const biases = name === "GRU" && c.reset_after === true ? 2 : 1;
      return {
        params: gates * (units * (last + units) + biases * units),
        shape: c.return_sequences === true ? [...shape.slice(0, -1), units] : [units],
      };
    }
    case "TimeDistributed": {
      // The wrapped layer, applied to each timestep with the same weights.
      const inner = c.layer;
      if (typeof inner !== "object" || inner === null || Array.isArray(inner)) return null;
      const cost = layerCost(inner as Layer, [shape.slice(1)]);
      return cost === null ? null : { params: cost.params, shape: [shape[0] ?? 1, ...cost.shape] };
    }
    case "BatchNormalization":
      return { params: 4 * last, shape };
    case "LayerNormalization":
      return { params: 2 * last, shape };
    default:
      return null;
  }
}

/** What a topology implies: its parameter count, or the reason it cannot be told before building. */
type Implied = { params: number } | { unknown: string };

/** The input shape (without the batch axis) a layer's config declares, if any. */
function declaredInput(layer: Layer | undefined): number[] | null {
  const s = layer?.config?.batch_input_shape;
  return Array.isArray(s) ? s.slice(1).map((d) => num(d, 1)) : null;
}

/**
 * The parameters a topology implies from its input shape and each layer's configuration,
 * whatever its weight specs claim: sequential models, and functional ones layer by layer
 * along their inbound nodes.
 */
function impliedParameters(topology: { [key: string]: Json }): Implied {
  const config = topology.config;
  const layers =
    typeof config === "object" && config !== null && !Array.isArray(config)
      ? (config as { layers?: Json }).layers
      : undefined;
  if (!Array.isArray(layers)) return { unknown: "its topology lists no layers" };
  const kind = topology.class_name;
  let total = 0;
  if (kind === "Sequential") {
    let shape = declaredInput(layers[0] as Layer);
    if (shape === null) return { unknown: "its first layer declares no input shape" };
    for (const layer of layers as Layer[]) {
      const cost = layerCost(layer, [shape]);
      if (cost === null) return { unknown: `layer class ${String(layer.class_name)}` };
      total += cost.params;
      shape = cost.shape;
    }
    return { params: total };
  }
  if (kind !== "Model" && kind !== "Functional") {
    return { unknown: `model class ${String(kind)}` };
  }
  const shapes = new Map<string, number[]>();
  for (const raw of layers) {
    const layer = raw as Layer & { name?: Json; inbound_nodes?: Json };
    const name = typeof layer.name === "string" ? layer.name : String(layer.config?.name);
    const declared = layer.class_name === "InputLayer" ? declaredInput(layer) : null;
    const node = Array.isArray(layer.inbound_nodes) ? layer.inbound_nodes[0] : undefined;
    const inputs = Array.isArray(node)
      ? node.map((edge) => (Array.isArray(edge) ? shapes.get(String(edge[0])) : undefined))
      : [];
    if (declared === null && (inputs.length === 0 || inputs.some((s) => s === undefined))) {
      return { unknown: `the inputs of layer ${name}` };
    }
    const cost = layerCost(layer, declared !== null ? [declared] : (inputs as number[][]));
    if (cost === null) return { unknown: `layer class ${String(layer.class_name)}` };
    total += cost.params;
    shapes.set(name, cost.shape);
  }
  return { params: total };
}
