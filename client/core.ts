/**
 * The platform-neutral client core: joins a coordinator, trains each round it is sampled for,
 * sends its delta. Node (`client.ts`) and browsers (`browser.ts`) differ only in how they start
 * a tfjs backend, so nothing here imports a Node module.
 */
import { io, type Socket } from "socket.io-client";
import createDebug from "debug";
import { datasetSize, featureSize, type Dataset } from "../protocol/dataset.js";
import { CohortError, isErrorCode, toCohortError, type Reply } from "../protocol/errors.js";
import type { ClientToServerEvents, ServerToClientEvents } from "../protocol/events.js";
import { parseFitRequest, parseTaskSpec } from "../protocol/guards.js";
import { decode } from "../protocol/codec.js";
import type { FitRequest, HandshakeAuth, RunDone, TaskSpec } from "../protocol/messages.js";
import {
  fromBase64,
  openEnvelope,
  sealEnvelope,
  signHandshake,
  signUpdate,
  toBase64,
  verifyModel,
  type JoinToken,
} from "../aggregation/secure/signing.js";
import { withDefaults } from "../protocol/options.js";
import { PROTOCOL_VERSION } from "../protocol/version.js";
import { toTensors, type TensorData } from "../models/adapter.js";
import { LocalTrainer, encodeOutcome } from "./trainer.js";
import { SecureSession } from "./secure-session.js";

const debug = createDebug("cohort:client");

/** A started tfjs backend: `name` goes into every update's metrics, `label` into the handshake. */
export interface ClientBackend {
  name: string;
  label: string;
}

/** Starts the tfjs backend a client trains on (Node: `selectBackend`; browsers: `selectBrowserBackend`). */
export type BackendSelector<R extends string> = (request: R) => Promise<ClientBackend>;

/** Options of a client; `R` is the backend names the platform knows. */
export interface ClientOptions<R extends string> {
  /** Coordinator URL, e.g. `http://localhost:8080`. Required. */
  url: string;
  /** The local training data. Required. */
  data: Dataset;
  /** Stable id across reconnects. @default a random UUID */
  clientId: string;
  /**
   * tfjs backend. @default "auto" (Node: tfjs-node-gpu → webgpu → tfjs-node → wasm → cpu;
   * browsers: webgpu → webgl → wasm → cpu)
   */
  backend: R;
  /** How the backend is started. @default the platform's selector */
  selectBackend: BackendSelector<R>;
  /** First reconnection delay; doubles up to `reconnectDelayMaxMs`, with jitter. @default 500 */
  reconnectDelayMs: number;
  /** @default 10000 */
  reconnectDelayMaxMs: number;
  /** How long to wait for the coordinator to acknowledge an update. @default 120000 */
  ackTimeoutMs: number;
  /** Where progress lines go. @default a `debug("cohort:client")` logger */
  log: (line: string) => void;
  /**
   * Seed of the local shuffles (round r uses seed + r), for reproducible runs.
   * @default undefined (a fresh random order every epoch)
   */
  seed: number | undefined;
  /** Ed25519 identity that authenticates this client and signs its updates. @default undefined */
  identity: { publicKey: Uint8Array; secretKey: Uint8Array } | undefined;
  /** A join token for `identity`, from the coordinator's trusted issuer. @default undefined */
  joinToken: JoinToken | undefined;
  /**
   * Base64 Ed25519 key the coordinator must sign models with (pinned). Without it the key in
   * the task is trusted. A coordinator with another key is refused. @default undefined
   */
  coordinatorKey: string | undefined;
  /**
   * PEM certificate(s) of the authority that signed the coordinator's TLS certificate (Node;
   * browsers use their own trust store). @default the platform's trust store
   */
  ca: string | Uint8Array | undefined;
}

/** Local training progress of a round, after each batch. */
export interface ClientProgress {
  round: number;
  batchesDone: number;
  batchesTotal: number;
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
 * A federated-learning client on any platform; `CohortClient` (Node or browser build) is this
 * with the platform's backend selector as default.
 */
export class ClientCore<R extends string> {
  readonly options: ClientOptions<R>;
  private socket: ClientSocket | null = null;
  private backend: ClientBackend | null = null;
  private task: TaskSpec | null = null;
  private trainer: LocalTrainer | null = null;
  private secure: SecureSession | null = null;
  private tensors: TensorData | null = null;
  private nextRequest: unknown = null;
  private busy = false;
  private closed = false;
  private readonly roundListeners: ((report: ClientRoundReport) => void)[] = [];
  private readonly progressListeners: ((progress: ClientProgress) => void)[] = [];
  private trainingRound = 0;
  private settle!: { resolve: (done: RunDone) => void; reject: (error: CohortError) => void };
  /** Resolves when the coordinator ends the run; rejects on a fatal refusal. */
  readonly done: Promise<RunDone>;

  constructor(
    options: Partial<ClientOptions<R>> & Pick<ClientOptions<R>, "url" | "data">,
    platform: Pick<ClientOptions<R>, "backend" | "selectBackend">,
  ) {
    if (typeof options.url !== "string" || options.url.length === 0) {
      throw new CohortError("INVALID_OPTION", "url is required");
    }
    checkDataset(options.data);
    this.options = withDefaults<ClientOptions<R>>(
      {
        url: options.url,
        data: options.data,
        // WebCrypto's, so browsers need no polyfill (pages on http:// need localhost to have it).
        clientId: globalThis.crypto.randomUUID(),
        backend: platform.backend,
        selectBackend: platform.selectBackend,
        reconnectDelayMs: 500,
        reconnectDelayMaxMs: 10_000,
        ackTimeoutMs: 120_000,
        log: (line) => debug(line),
        seed: undefined,
        identity: undefined,
        joinToken: undefined,
        coordinatorKey: undefined,
        ca: undefined,
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

  /** The backend with details (adapter, threads), as sent to the coordinator, once started. */
  get backendLabel(): string | null {
    return this.backend?.label ?? null;
  }

  /** Called after every round this client trained. */
  onRound(listener: (report: ClientRoundReport) => void): void {
    this.roundListeners.push(listener);
  }

  /** Called after every local training batch (add it before `start()`). */
  onProgress(listener: (progress: ClientProgress) => void): void {
    this.progressListeners.push(listener);
  }

  private reportProgress(batchesDone: number, batchesTotal: number): void {
    const progress = { round: this.trainingRound, batchesDone, batchesTotal };
    for (const listener of this.progressListeners) {
      try {
        listener(progress);
      } catch (error) {
        debug("progress listener threw: %O", error);
      }
    }
  }

  /**
   * Select the backend and connect. Resolves once connected; rejects on a refusal the client
   * cannot recover from (e.g. a protocol version mismatch). Lost connections are retried
   * with exponential backoff.
   */
  async start(): Promise<void> {
    if (this.socket !== null) return;
    const { options } = this;
    this.backend = await options.selectBackend(options.backend);
    this.tensors = toTensors(options.data);
    // Progress callbacks cost a little per batch: only when someone listens.
    this.trainer = new LocalTrainer(
      this.backend.name,
      this.progressListeners.length > 0 ? (d, t) => this.reportProgress(d, t) : undefined,
    );
    options.log(
      `client ${options.clientId}: backend ${this.backend.name}, ${datasetSize(options.data)} examples (${options.data.name})`,
    );
    const auth: HandshakeAuth = {
      protocolVersion: PROTOCOL_VERSION,
      clientId: options.clientId,
      platform: platformName(),
      backend: this.backend.label,
    };
    const identity = options.identity;
    const socket: ClientSocket = io(options.url, {
      // A function, so each (re)connection carries a fresh proof of the identity.
      auth: (cb: (data: object) => void) =>
        cb(identity === undefined ? { ...auth } : { ...auth, identity: this.proof(identity) }),
      transports: ["websocket", "polling"],
      reconnection: true,
      reconnectionDelay: options.reconnectDelayMs,
      reconnectionDelayMax: options.reconnectDelayMaxMs,
      randomizationFactor: 0.5,
      ...(options.ca === undefined
        ? {}
        : {
            ca: typeof options.ca === "string" ? options.ca : new TextDecoder().decode(options.ca),
          }),
    });
    this.socket = socket;
    socket.on("task", (raw) => this.onTask(raw));
    socket.on("round:fit", (payload) => {
      this.nextRequest = payload;
      void this.drain();
    });
    socket.on("secagg:step", (payload, ack) => {
      void this.secureStep(payload).then((reply) => {
        if (typeof ack === "function") ack(reply);
      });
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

  private proof(identity: {
    publicKey: Uint8Array;
    secretKey: Uint8Array;
  }): HandshakeAuth["identity"] {
    const issuedAt = Date.now();
    const token = this.options.joinToken;
    return {
      publicKey: toBase64(identity.publicKey),
      issuedAt,
      signature: toBase64(
        signHandshake(identity.secretKey, this.options.clientId, identity.publicKey, issuedAt),
      ),
      ...(token
        ? { token: { expiresAt: token.expiresAt, signature: toBase64(token.signature) } }
        : {}),
    };
  }

  private onTask(raw: unknown): void {
    try {
      const task = parseTaskSpec(raw);
      if (task.protocolVersion !== PROTOCOL_VERSION) {
        throw new CohortError("PROTOCOL_VERSION", `task of protocol ${task.protocolVersion}`);
      }
      const pinned = this.options.coordinatorKey;
      if (pinned !== undefined && task.coordinatorKey !== pinned) {
        // Not the coordinator this client trusts: never train for it.
        const error = new CohortError(
          "MODEL_SIGNATURE",
          `the coordinator's key ${task.coordinatorKey ?? "(none)"} is not the pinned key`,
        );
        this.options.log(error.message);
        this.settle.reject(error);
        void this.close();
        return;
      }
      if (task.signedUpdates && this.options.identity === undefined) {
        this.options.log("the coordinator requires signed updates but this client has no identity");
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

  private async fit(payload: unknown): Promise<void> {
    const { options } = this;
    try {
      const task = this.task;
      if (task === null) throw new CohortError("INVALID_MESSAGE", "fit request before the task");
      const request = this.checkedModel(task, payload);
      this.trainingRound = request.round;
      const { result, stats } = await this.trainer!.train(
        task,
        request,
        options.data,
        this.tensors!,
        this.shuffleSeed(request.round),
      );
      const outcome = encodeOutcome(task, result, stats);
      const socket = this.socket;
      if (socket === null || this.closed) return;
      const identity = options.identity;
      const upload =
        identity === undefined
          ? outcome.payload
          : sealEnvelope(
              outcome.payload,
              signUpdate(
                identity.secretKey,
                { runId: task.runId, round: outcome.round, clientId: options.clientId },
                outcome.payload,
              ),
            );
      const reply = await socket.timeout(options.ackTimeoutMs).emitWithAck("fit:result", upload);
      const report: ClientRoundReport = {
        round: outcome.round,
        numExamples: outcome.numExamples,
        loss: stats.loss,
        accuracy: stats.accuracy,
        trainMs: stats.trainMs,
        accepted: reply.ok,
      };
      if (reply.ok) {
        options.log(
          `round ${outcome.round}: loss ${stats.loss.toFixed(4)}, ${Math.round(stats.trainMs)} ms, update accepted`,
        );
      } else {
        report.code = reply.code;
        options.log(`round ${outcome.round}: update rejected: ${reply.code}: ${reply.message}`);
      }
      for (const listener of this.roundListeners) listener(report);
    } catch (error) {
      const e = toCohortError(error);
      options.log(`fit failed: ${e.code}: ${e.message}`);
    }
  }

  /** The fit request inside a broadcast, after checking the coordinator's signature. */
  /** The fit request of a broadcast, decoded once, after checking the coordinator's signature. */
  private checkedModel(task: TaskSpec, payload: unknown): FitRequest {
    if (task.coordinatorKey === null) return parseFitRequest(decode(payload));
    const envelope = openEnvelope(payload);
    const request = parseFitRequest(decode(envelope.body));
    const key = fromBase64(task.coordinatorKey, "coordinatorKey");
    const ctx = { runId: task.runId, round: request.round };
    if (!verifyModel(key, ctx, envelope.body, envelope.signature)) {
      throw new CohortError(
        "MODEL_SIGNATURE",
        `the model of round ${request.round} is not signed by the coordinator: refused`,
      );
    }
    return request;
  }

  private shuffleSeed(round: number): number | undefined {
    return this.options.seed === undefined ? undefined : (this.options.seed + round) >>> 0;
  }

  private async secureStep(payload: unknown): Promise<Reply<Uint8Array>> {
    try {
      this.secure ??= new SecureSession(
        async (request) => {
          const task = this.task;
          if (task === null)
            throw new CohortError("INVALID_MESSAGE", "secure round before the task");
          this.trainingRound = request.round;
          const { result, stats } = await this.trainer!.train(
            task,
            request,
            this.options.data,
            this.tensors!,
            this.shuffleSeed(request.round),
          );
          this.options.log(
            `round ${request.round}: loss ${stats.loss.toFixed(4)}, ${Math.round(stats.trainMs)} ms, sending it masked`,
          );
          for (const listener of this.roundListeners) {
            listener({
              round: request.round,
              numExamples: result.numExamples,
              loss: stats.loss,
              accuracy: stats.accuracy,
              trainMs: stats.trainMs,
              accepted: true,
            });
          }
          return { delta: result.delta, numExamples: result.numExamples };
        },
        (payload) => {
          const task = this.task;
          if (task === null)
            throw new CohortError("INVALID_MESSAGE", "secure round before the task");
          return this.checkedModel(task, payload);
        },
      );
      return { ok: true, value: await this.secure.step(payload) };
    } catch (error) {
      const e = toCohortError(error, "INVALID_MESSAGE");
      this.options.log(`secure step refused: ${e.code}: ${e.message}`);
      return e.toReply();
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
    this.trainer?.dispose();
    this.trainer = null;
    this.tensors?.dispose();
    this.tensors = null;
    this.settle.reject(new CohortError("CLOSED", "client closed before the run ended"));
  }
}
