/** The Cohort client: joins a coordinator, trains each round it is sampled for, sends its delta. */
import { randomUUID } from "node:crypto";
import { io, type Socket } from "socket.io-client";
import createDebug from "debug";
import type * as tf from "@tensorflow/tfjs";
import { checkWeights, subtract } from "../aggregation/weights.js";
import { decode, encode } from "../protocol/codec.js";
import { datasetSize, featureSize, type Dataset } from "../protocol/dataset.js";
import { CohortError, isErrorCode, toCohortError } from "../protocol/errors.js";
import type { ClientToServerEvents, ServerToClientEvents } from "../protocol/events.js";
import { parseFitRequest, parseTaskSpec } from "../protocol/guards.js";
import type { FitResult, HandshakeAuth, RunDone, TaskSpec } from "../protocol/messages.js";
import { withDefaults } from "../protocol/options.js";
import { PROTOCOL_VERSION } from "../protocol/version.js";
import {
  modelFromSpec,
  readWeights,
  toTensors,
  trainLocal,
  writeWeights,
  type TensorData,
} from "../models/adapter.js";
import { selectBackend, type BackendRequest, type SelectedBackend } from "../models/backend.js";

const debug = createDebug("cohort:client");

/** Options of `CohortClient`. */
export interface CohortClientOptions {
  /** Coordinator URL, e.g. `http://localhost:8080`. Required. */
  url: string;
  /** The local training data. Required. */
  data: Dataset;
  /** Stable id across reconnects. @default a random UUID */
  clientId: string;
  /** tfjs backend. @default "auto" (tfjs-node-gpu → tfjs-node → wasm → cpu) */
  backend: BackendRequest;
  /** First reconnection delay; doubles up to `reconnectDelayMaxMs`, with jitter. @default 500 */
  reconnectDelayMs: number;
  /** @default 10000 */
  reconnectDelayMaxMs: number;
  /** How long to wait for the coordinator to acknowledge an update. @default 120000 */
  ackTimeoutMs: number;
  /** Where progress lines go. @default a `debug("cohort:client")` logger */
  log: (line: string) => void;
}

/** What a client reports after each round it trained. */
export interface ClientRoundReport {
  round: number;
  numExamples: number;
  loss: number;
  accuracy: number | null;
  trainMs: number;
  /** Whether the coordinator accepted the update, and its error code otherwise. */
  accepted: boolean;
  code?: string;
}

type ClientSocket = Socket<ServerToClientEvents, ClientToServerEvents>;

function platformName(): string {
  const nav = (globalThis as { navigator?: { userAgent?: string } }).navigator;
  if (typeof process !== "undefined" && process.versions?.node) {
    return `node ${process.version} ${process.platform} ${process.arch}`;
  }
  return nav?.userAgent ?? "unknown";
}

function checkDataset(data: Dataset): void {
  const n = datasetSize(data);
  if (n === 0) throw new CohortError("DATASET_INVALID", `dataset ${data.name} is empty`);
  if (data.features.length !== n * featureSize(data)) {
    throw new CohortError(
      "DATASET_INVALID",
      `dataset ${data.name}: ${data.features.length} feature values for ${n} examples of shape [${data.sampleShape.join(", ")}]`,
    );
  }
  const bad = data.labels.findIndex((y) => y >= data.numClasses);
  if (bad >= 0) {
    throw new CohortError(
      "DATASET_INVALID",
      `dataset ${data.name}: label ${data.labels[bad]} ≥ numClasses ${data.numClasses}`,
    );
  }
}

/**
 * A federated-learning client. The user supplies data; the model, its training configuration
 * and the global weights come from the coordinator.
 *
 * @example
 * const client = new CohortClient({ url: "http://localhost:8080", data });
 * await client.run(); // resolves when the coordinator ends the run
 */
export class CohortClient {
  readonly options: CohortClientOptions;
  private socket: ClientSocket | null = null;
  private backend: SelectedBackend | null = null;
  private task: TaskSpec | null = null;
  private model: tf.LayersModel | null = null;
  private tensors: TensorData | null = null;
  private nextRequest: unknown = null;
  private busy = false;
  private closed = false;
  private readonly roundListeners: ((report: ClientRoundReport) => void)[] = [];
  private settle!: { resolve: (done: RunDone) => void; reject: (error: CohortError) => void };
  /** Resolves when the coordinator ends the run; rejects on a fatal refusal. */
  readonly done: Promise<RunDone>;

  constructor(options: Partial<CohortClientOptions> & Pick<CohortClientOptions, "url" | "data">) {
    if (typeof options.url !== "string" || options.url.length === 0) {
      throw new CohortError("INVALID_OPTION", "url is required");
    }
    checkDataset(options.data);
    this.options = withDefaults<CohortClientOptions>(
      {
        url: options.url,
        data: options.data,
        clientId: randomUUID(),
        backend: "auto",
        reconnectDelayMs: 500,
        reconnectDelayMaxMs: 10_000,
        ackTimeoutMs: 120_000,
        log: (line) => debug(line),
      },
      options,
    );
    this.done = new Promise((resolve, reject) => (this.settle = { resolve, reject }));
    this.done.catch(() => undefined);
  }

  /** The backend training runs on, once started. */
  get backendName(): string | null {
    return this.backend?.name ?? null;
  }

  /** Called after every round this client trained. */
  onRound(listener: (report: ClientRoundReport) => void): void {
    this.roundListeners.push(listener);
  }

  /**
   * Select the backend and connect. Resolves once connected; rejects on a refusal the client
   * cannot recover from (e.g. a protocol version mismatch). Lost connections are retried
   * with exponential backoff.
   */
  async start(): Promise<void> {
    if (this.socket !== null) return;
    const { options } = this;
    this.backend = await selectBackend(options.backend);
    this.tensors = toTensors(options.data);
    options.log(
      `client ${options.clientId}: backend ${this.backend.name}, ${datasetSize(options.data)} examples (${options.data.name})`,
    );
    const auth: HandshakeAuth = {
      protocolVersion: PROTOCOL_VERSION,
      clientId: options.clientId,
      platform: platformName(),
      backend: this.backend.name,
    };
    const socket: ClientSocket = io(options.url, {
      auth: { ...auth },
      transports: ["websocket", "polling"],
      reconnection: true,
      reconnectionDelay: options.reconnectDelayMs,
      reconnectionDelayMax: options.reconnectDelayMaxMs,
      randomizationFactor: 0.5,
    });
    this.socket = socket;
    socket.on("task", (raw) => this.onTask(raw));
    socket.on("round:fit", (payload) => {
      this.nextRequest = payload;
      void this.drain();
    });
    socket.on("run:done", (info) => {
      options.log(`run ${info.runId} done after ${info.rounds} rounds`);
      this.settle.resolve(info);
      void this.close();
    });
    socket.on("disconnect", (reason) => {
      if (!this.closed) options.log(`disconnected (${reason}); reconnecting`);
    });
    await new Promise<void>((resolve, reject) => {
      socket.once("connect", () => resolve());
      socket.on("connect_error", (err: Error & { data?: { code?: unknown } }) => {
        const code = err.data?.code;
        if (isErrorCode(code)) {
          // The coordinator refused us: retrying cannot help.
          const error = new CohortError(code, `coordinator refused the connection: ${err.message}`);
          options.log(error.message);
          this.settle.reject(error);
          void this.close();
          reject(error);
        } else {
          debug("connect error: %s", err.message);
        }
      });
    });
    options.log(`connected to ${options.url}`);
  }

  /** Start and wait until the coordinator ends the run. */
  async run(): Promise<RunDone> {
    await this.start();
    return this.done;
  }

  private onTask(raw: unknown): void {
    try {
      const task = parseTaskSpec(raw);
      if (task.protocolVersion !== PROTOCOL_VERSION) {
        throw new CohortError("PROTOCOL_VERSION", `task of protocol ${task.protocolVersion}`);
      }
      if (this.task?.runId !== task.runId) {
        this.model?.dispose();
        this.model = null;
      }
      this.task = task;
      this.options.log(
        `task: ${task.model.name} (${task.model.numParameters} parameters), E=${task.training.localEpochs}, B=${task.training.batchSize}, ${task.training.optimizer} lr=${task.training.learningRate}`,
      );
    } catch (error) {
      this.options.log(`ignored an invalid task: ${toCohortError(error).message}`);
    }
  }

  /** Train on the latest request; requests that arrive while training replace older ones. */
  private async drain(): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    try {
      while (this.nextRequest !== null && !this.closed) {
        const payload = this.nextRequest;
        this.nextRequest = null;
        await this.fit(payload);
      }
    } finally {
      this.busy = false;
    }
  }

  private async ensureModel(task: TaskSpec): Promise<tf.LayersModel> {
    if (this.model !== null) return this.model;
    const model = await modelFromSpec(task.model);
    const input = model.inputs[0]?.shape.slice(1).join(",");
    const data = this.options.data;
    if (input !== data.sampleShape.join(",")) {
      model.dispose();
      throw new CohortError(
        "INVALID_MODEL",
        `model input [${input}] does not match data [${data.sampleShape.join(",")}]`,
      );
    }
    const outputs = model.outputs[0]?.shape.at(-1);
    if (outputs !== data.numClasses) {
      model.dispose();
      throw new CohortError(
        "INVALID_MODEL",
        `model has ${outputs} outputs but data has ${data.numClasses} classes`,
      );
    }
    this.model = model;
    return model;
  }

  private async fit(payload: unknown): Promise<void> {
    const { options } = this;
    let round = 0;
    try {
      const task = this.task;
      if (task === null) throw new CohortError("INVALID_MESSAGE", "fit request before the task");
      const request = parseFitRequest(decode(payload));
      round = request.round;
      checkWeights(request.weights, task.model.weightSpecs, "global weights");
      const model = await this.ensureModel(task);
      writeWeights(model, request.weights);
      const stats = await trainLocal(model, this.tensors!, task.training);
      const delta = subtract(await readWeights(model), request.weights);
      const numExamples = datasetSize(options.data);
      const result: FitResult = {
        round,
        numExamples,
        delta,
        metrics: {
          loss: stats.loss,
          accuracy: stats.accuracy,
          trainMs: stats.trainMs,
          backend: this.backend!.name,
        },
      };
      const bytes = encode(result);
      if (bytes.byteLength > task.limits.maxUploadBytes) {
        throw new CohortError(
          "PAYLOAD_TOO_LARGE",
          `update of ${bytes.byteLength} bytes exceeds the coordinator's limit of ${task.limits.maxUploadBytes}`,
        );
      }
      const socket = this.socket;
      if (socket === null || this.closed) return;
      const reply = await socket.timeout(options.ackTimeoutMs).emitWithAck("fit:result", bytes);
      const report: ClientRoundReport = {
        round,
        numExamples,
        loss: stats.loss,
        accuracy: stats.accuracy,
        trainMs: stats.trainMs,
        accepted: reply.ok,
      };
      if (reply.ok) {
        options.log(
          `round ${round}: loss ${stats.loss.toFixed(4)}, ${Math.round(stats.trainMs)} ms, update accepted`,
        );
      } else {
        report.code = reply.code;
        options.log(`round ${round}: update rejected: ${reply.code}: ${reply.message}`);
      }
      for (const listener of this.roundListeners) listener(report);
    } catch (error) {
      const e = toCohortError(error);
      options.log(`round ${round}: ${e.code}: ${e.message}`);
    }
  }

  /** Disconnect and free the model and data tensors. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.socket?.disconnect();
    this.socket = null;
    // Let an in-flight training step finish before freeing what it uses.
    while (this.busy) await new Promise((r) => setTimeout(r, 10));
    this.model?.dispose();
    this.model = null;
    this.tensors?.dispose();
    this.tensors = null;
    this.settle.reject(new CohortError("CLOSED", "client closed before the run ended"));
  }
}
