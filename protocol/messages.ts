/** Wire message types: what coordinator and clients say to each other. */
import type { LossName } from "./task.js";

/** A JSON value, as found in a tfjs model topology. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** Name and shape of one weight tensor, in the order of `model.getWeights()`. */
export interface TensorSpec {
  name: string;
  shape: number[];
}

/** Local optimizer of the clients. */
export const OPTIMIZERS = ["sgd", "adam"] as const;
export type OptimizerName = (typeof OPTIMIZERS)[number];

/** How clients train each round. */
export interface TrainingConfig {
  optimizer: OptimizerName;
  learningRate: number;
  /** Local epochs E. */
  localEpochs: number;
  /** Local batch size B. */
  batchSize: number;
  /** The task's loss, which clients train and everyone evaluates with. */
  loss: LossName;
  /** What evaluation reports besides the loss (built-in names or the user's own functions). */
  metrics: string[];
}

/** The model of a task: a tfjs layers topology and the specs of its weights. */
export interface ModelSpec {
  /** `mlp`, `cnn`, or the file name of a user's model. */
  name: string;
  /** tfjs layers-model topology (`model.toJSON(null, false)`), as found in `model.json`. */
  topology: { [key: string]: Json };
  weightSpecs: TensorSpec[];
  numParameters: number;
}

/** Sent once to every client when it connects: everything it needs to take part. */
export interface TaskSpec {
  protocolVersion: number;
  runId: string;
  model: ModelSpec;
  training: TrainingConfig;
  limits: {
    /** The largest `fit:result` payload the coordinator accepts, in bytes. */
    maxUploadBytes: number;
    /** An update's example count (its FedAvg weight) is capped at this many. */
    maxExamplesPerClient: number;
  };
  /**
   * Whether every round of this run is secure (SecAgg+): a client refuses plain fit requests
   * of a secure run whose task carries a valid signature by `coordinatorKey`.
   */
  secure: boolean;
  /**
   * Base64 Ed25519 key that signs every `round:fit` (sent as a signed envelope); clients
   * verify each model before training. Null: unsigned broadcasts.
   */
  coordinatorKey: string | null;
  /** Whether updates must be signed envelopes by the client's identity key. */
  signedUpdates: boolean;
  /**
   * How clients encode their updates: a registered codec by name, every parameter given
   * (`{ name: "float32", params: {} }`, today's wire format, unless the run says otherwise).
   */
  codec: { name: string; params: Record<string, number | string | boolean> };
  /**
   * How the coordinator sends the global model when it is not the float32 weights themselves
   * (`--downlink-codec`): fit requests may then be patches of the model a client holds,
   * encoded with this codec. Absent: every fit request carries the full float32 model.
   */
  downlink?: { name: string; params: Record<string, number | string | boolean> };
  /**
   * Base64 signature by `coordinatorKey` of every other field of the task (`signTask`), so a
   * client that pins the key also pins the run's mode and limits. Null: unsigned.
   */
  signature: string | null;
}

/** Sent by clients in the socket.io handshake (`auth`). */
export interface HandshakeAuth {
  protocolVersion: number;
  /** Stable across reconnects; chosen by the client. */
  clientId: string;
  /** e.g. `node 20.20.2 linux x64` or a browser's user agent. */
  platform: string;
  /** The tfjs backend the client trains on, e.g. `wasm`. */
  backend: string;
  /**
   * The Ed25519 identity, where the coordinator authenticates clients: it answers an
   * `auth:challenge` on the connection before it is admitted.
   */
  identity?: {
    /** Base64 public key. */
    publicKey: string;
    /** A join token from the coordinator's trusted issuer, when the key is not listed. */
    token?: { expiresAt: number; signature: string };
  };
  /**
   * The secret the coordinator issued at this id's first join (sent with the task), where it does not
   * authenticate clients: taking over a known id needs it.
   */
  secret?: string;
}

/** Issued to a client at its first join, where the coordinator does not authenticate clients. */
export interface SessionGrant {
  /** Base64 secret; present it in every later handshake under the same id. */
  secret: string;
}

/** Why the coordinator closes a connection it had accepted. */
export interface Notice {
  code: string;
  message: string;
}

/** A scalar of a configuration map. */
export type Scalar = number | string | boolean | null;

/** How each client trains in one round: chosen per round by the coordinator's strategy. */
export interface RoundConfig {
  learningRate: number;
  /** Local epochs E. */
  localEpochs: number;
  /** Local batch size B. */
  batchSize: number;
  /** FedProx's μ: add μ/2 ‖w − w_global‖² to the local objective; 0 trains plainly. */
  proximalMu: number;
  /**
   * DP-FedAvg: clip the update to this L2 norm and weight it as one example (absent or 0:
   * plain updates).
   */
  dpClip?: number;
  /** The user's own keys, passed through to the client's code untouched. */
  extra: Record<string, Scalar>;
}

/** Broadcast (msgpack) to the sampled cohort: train from these global weights, this way. */
export interface FitRequest {
  round: number;
  weights: Float32Array[];
  config: RoundConfig;
  /**
   * The round's shared seed for the task's codec (its rotation), the same for every client;
   * present when the codec is not `float32`.
   */
  seed?: number;
  /** Under a compressed downlink: which version of the broadcast model `weights` is. */
  model?: ModelVersion;
}

/** A version of the broadcast model (the round that first sent it) and its checksum. */
export interface ModelVersion {
  version: number;
  /** 32-bit FNV-1a of the model's float32 bytes, tensor after tensor. */
  checksum: number;
}

/** One encoded difference of the broadcast chain: the model of `version` less the one before. */
export interface ModelDiff {
  version: number;
  /** The downlink codec's shared seed for this difference (its rotation). */
  seed: number;
  /** The downlink codec's payload. */
  update: unknown;
}

/**
 * A fit request as a patch (compressed downlink): the client adds `diffs`, oldest first, to the
 * model of version `base` it holds, and must arrive at `model.checksum`.
 */
export interface FitPatchRequest {
  round: number;
  config: RoundConfig;
  seed?: number;
  model: ModelVersion;
  patch: { base: number; diffs: ModelDiff[] };
}

/** What a `round:fit` carries: the full model, or a patch of the one the client holds. */
export type FitMessage = FitRequest | FitPatchRequest;

/** What a client measured while training locally. */
export interface FitMetrics {
  /** Mean training loss of the last local epoch. */
  loss: number;
  /** Training accuracy of the last local epoch, when the model reports one. */
  accuracy: number | null;
  trainMs: number;
  backend: string;
  /** Milliseconds the codec took to encode the update (sent when the codec is not `float32`). */
  encodeMs?: number;
}

/** A client's answer to a fit request (msgpack): `delta = w_local − w_global`. */
export interface FitResult {
  round: number;
  numExamples: number;
  delta: Float32Array[];
  metrics: FitMetrics;
}

/**
 * A fit result as it travels: under `float32` exactly a `FitResult` (its `delta`); under any
 * other codec `codec` names it and `update` holds its payload, which only that codec decodes.
 */
export interface FitUpload {
  round: number;
  numExamples: number;
  metrics: FitMetrics;
  body: { codec: "float32"; delta: Float32Array[] } | { codec: string; update: unknown };
}

/** Sent (msgpack, signed like models) to the clients sampled to evaluate a global model. */
export interface EvaluateRequest {
  kind: "evaluate";
  /** The round whose resulting model this is. */
  round: number;
  weights: Float32Array[];
}

/** A client's evaluation of a global model on its own held-out data. */
export interface EvaluateResult {
  round: number;
  numExamples: number;
  /** Mean loss over its examples. */
  loss: number;
  /** The task's accuracy (or binary accuracy) metric; null when it has none. */
  accuracy: number | null;
  /** Every metric of the task the client computed, by name. */
  metrics?: Record<string, number>;
}

/** A client says its fit of a round failed, and why. */
export interface FitFailure {
  round: number;
  code: string;
  message: string;
}

/** Acknowledgement of an accepted update. */
export interface UpdateReceipt {
  round: number;
}

/** Broadcast when the run is over; clients may exit. */
export interface RunDone {
  runId: string;
  rounds: number;
}
