/** The coordinator: a socket.io server that runs FedAvg rounds over connected clients. */
import { createServer, type Server as HttpServer } from "node:http";
import type { AddressInfo } from "node:net";
import { randomUUID } from "node:crypto";
import { Server, type Socket } from "socket.io";
import createDebug from "debug";
import type * as tf from "@tensorflow/tfjs";
import { FedAvg } from "../aggregation/fedavg.js";
import { createRng } from "../aggregation/random.js";
import type { Weights } from "../aggregation/weights.js";
import { encode } from "../protocol/codec.js";
import { CohortError, type Reply } from "../protocol/errors.js";
import type { ClientToServerEvents, ServerToClientEvents, SocketData } from "../protocol/events.js";
import { parseHandshakeAuth } from "../protocol/guards.js";
import type { FitRequest, TaskSpec, UpdateReceipt } from "../protocol/messages.js";
import { PROTOCOL_VERSION } from "../protocol/version.js";
import { evaluateModel, type EvalStats } from "../models/adapter.js";
import { selectBackend, type SelectedBackend } from "../models/backend.js";
import { instantiate, loadModel } from "../models/model-file.js";
import { writeWeights } from "../models/adapter.js";
import { resolveOptions, type CoordinatorOptions } from "./options.js";
import { ClientRegistry } from "./registry.js";
import { RoundCollector, type RoundOutcome } from "./round.js";
import { RunStore, type RoundMetrics } from "./run-store.js";
import { sampleCohort } from "./sampling.js";
import { formatRound } from "./format.js";

const debug = createDebug("cohort:coordinator");

type IoServer = Server<
  ClientToServerEvents,
  ServerToClientEvents,
  Record<string, never>,
  SocketData
>;
type IoSocket = Socket<
  ClientToServerEvents,
  ServerToClientEvents,
  Record<string, never>,
  SocketData
>;

/** What `run()` returns. */
export interface RunSummary {
  runId: string;
  runDir: string | null;
  initial: EvalStats | null;
  rounds: RoundMetrics[];
  weights: Float32Array[];
}

/** Events a coordinator reports while it runs. */
export interface CoordinatorEvents {
  round: (metrics: RoundMetrics) => void;
  join: (client: { clientId: string; platform: string; backend: string }) => void;
  leave: (client: { clientId: string; reason: string }) => void;
  rejected: (info: { clientId: string; code: string; message: string }) => void;
}

/** A running coordinator. */
export interface Coordinator {
  /** `http://host:port` clients connect to. */
  readonly url: string;
  readonly port: number;
  readonly runId: string;
  readonly task: TaskSpec;
  readonly backend: SelectedBackend;
  /** Ids of the connected clients. */
  clients(): string[];
  /** Current global weights. */
  weights(): Weights;
  /** Run every round; resolves after the last one, with all metrics. */
  run(): Promise<RunSummary>;
  on<E extends keyof CoordinatorEvents>(event: E, listener: CoordinatorEvents[E]): void;
  /** Stop: tell clients the run is over, close every socket and the server. */
  close(): Promise<void>;
}

/** Start a coordinator listening for clients; call `run()` to run the rounds. */
export async function createCoordinator(
  options: Partial<CoordinatorOptions> = {},
): Promise<Coordinator> {
  const opts = resolveOptions(options, (line) => debug(line));
  const backend = await selectBackend("auto");
  const initial = await loadModel(opts.model, { seed: opts.seed });
  const modelBytes = initial.spec.numParameters * 4;
  if (modelBytes + 4096 > opts.maxUploadBytes) {
    throw new CohortError(
      "INVALID_OPTION",
      `maxUploadBytes (${opts.maxUploadBytes}) is below one update of ${opts.model} (${modelBytes} bytes)`,
    );
  }
  const runId = randomUUID();
  const task: TaskSpec = {
    protocolVersion: PROTOCOL_VERSION,
    runId,
    model: initial.spec,
    training: {
      optimizer: opts.optimizer,
      learningRate: opts.learningRate,
      localEpochs: opts.localEpochs,
      batchSize: opts.batchSize,
    },
    limits: { maxUploadBytes: opts.maxUploadBytes },
  };
  const http = createServer();
  const io: IoServer = new Server(http, {
    // Headroom over the update limit so an over-limit update reaches the handler and gets a
    // PAYLOAD_TOO_LARGE answer instead of a silent transport close.
    maxHttpBufferSize: opts.maxUploadBytes + 1024 * 1024,
    perMessageDeflate: false,
    httpCompression: false,
    // Clients train between messages; a busy event loop must not look like a dead client.
    pingTimeout: 60_000,
    cors: { origin: true },
  });
  await new Promise<void>((resolve, reject) => {
    http.once("error", (cause) =>
      reject(
        new CohortError(
          "INVALID_OPTION",
          `cannot listen on ${opts.host}:${opts.port}: ${cause.message}`,
          { cause },
        ),
      ),
    );
    http.listen(opts.port, opts.host, resolve);
  });
  const port = (http.address() as AddressInfo).port;
  const shownHost = opts.host === "0.0.0.0" || opts.host === "::" ? "localhost" : opts.host;
  return new CoordinatorImpl(
    opts,
    io,
    http,
    task,
    initial.weights,
    backend,
    `http://${shownHost}:${port}`,
    port,
  );
}

class CoordinatorImpl implements Coordinator {
  private readonly registry = new ClientRegistry<IoSocket>();
  private readonly listeners: { [E in keyof CoordinatorEvents]: CoordinatorEvents[E][] } = {
    round: [],
    join: [],
    leave: [],
    rejected: [],
  };
  private readonly strategy: FedAvg;
  private global: Float32Array[];
  private collector: RoundCollector | null = null;
  private completedRounds = 0;
  private finished = false;
  private closing: Promise<void> | null = null;
  private readonly closed: Promise<never>;
  private rejectClosed!: (error: CohortError) => void;
  private evalModel: tf.LayersModel | null = null;
  private started = false;

  constructor(
    private readonly opts: CoordinatorOptions,
    private readonly io: IoServer,
    private readonly http: HttpServer,
    readonly task: TaskSpec,
    initialWeights: Float32Array[],
    readonly backend: SelectedBackend,
    readonly url: string,
    readonly port: number,
  ) {
    this.global = initialWeights;
    this.strategy = new FedAvg({ serverLearningRate: opts.serverLearningRate });
    this.closed = new Promise<never>((_, reject) => (this.rejectClosed = reject));
    this.closed.catch(() => undefined);
    io.use((socket, next) => {
      try {
        const auth = parseHandshakeAuth(socket.handshake.auth);
        if (auth.protocolVersion !== PROTOCOL_VERSION) {
          throw new CohortError(
            "PROTOCOL_VERSION",
            `client speaks protocol version ${auth.protocolVersion}; this coordinator speaks ${PROTOCOL_VERSION}`,
          );
        }
        socket.data = { clientId: auth.clientId, platform: auth.platform, backend: auth.backend };
        next();
      } catch (error) {
        const e =
          error instanceof CohortError ? error : new CohortError("INVALID_MESSAGE", String(error));
        debug("refused connection: %s", e.message);
        next(Object.assign(new Error(e.message), { data: { code: e.code } }));
      }
    });
    io.on("connection", (socket) => this.onConnection(socket));
  }

  get runId(): string {
    return this.task.runId;
  }

  clients(): string[] {
    return this.registry.ids();
  }

  weights(): Weights {
    return this.global;
  }

  on<E extends keyof CoordinatorEvents>(event: E, listener: CoordinatorEvents[E]): void {
    this.listeners[event].push(listener);
  }

  private emit<E extends keyof CoordinatorEvents>(
    event: E,
    ...args: Parameters<CoordinatorEvents[E]>
  ): void {
    for (const listener of this.listeners[event]) {
      try {
        (listener as (...a: Parameters<CoordinatorEvents[E]>) => void)(...args);
      } catch (error) {
        debug("listener of %s threw: %O", event, error);
      }
    }
  }

  private onConnection(socket: IoSocket): void {
    const { clientId, platform, backend } = socket.data;
    const previous = this.registry.add({
      clientId,
      socket,
      platform,
      backend,
      connectedAt: Date.now(),
    });
    if (previous !== undefined && previous.socket.id !== socket.id) {
      debug("client %s reconnected; closing its old socket", clientId);
      previous.socket.disconnect(true);
    }
    debug(
      "client %s joined (%s, %s); %d connected",
      clientId,
      platform,
      backend,
      this.registry.size,
    );
    this.emit("join", { clientId, platform, backend });
    socket.emit("task", this.task);
    if (this.finished) socket.emit("run:done", { runId: this.runId, rounds: this.completedRounds });
    socket.on("fit:result", (payload, ack) => {
      const reply = this.onUpdate(clientId, payload);
      if (!reply.ok) {
        this.opts.log(`rejected update from ${clientId}: ${reply.code}: ${reply.message}`);
        this.emit("rejected", { clientId, code: reply.code, message: reply.message });
      }
      if (typeof ack === "function") ack(reply);
    });
    socket.on("disconnect", (reason) => {
      if (!this.registry.remove(clientId, socket.id)) return;
      debug("client %s left: %s", clientId, reason);
      this.collector?.drop(clientId, {
        code: "CLIENT_DISCONNECTED",
        message: `disconnected: ${reason}`,
      });
      this.emit("leave", { clientId, reason });
    });
  }

  private onUpdate(clientId: string, payload: unknown): Reply<UpdateReceipt> {
    if (this.collector !== null) return this.collector.submit(clientId, payload);
    return new CohortError("NO_ACTIVE_ROUND", "no round has started yet").toReply();
  }

  async run(): Promise<RunSummary> {
    if (this.started) throw new CohortError("INVALID_OPTION", "run() was already called");
    this.started = true;
    const { opts } = this;
    const store =
      opts.runDir === null
        ? null
        : await RunStore.create(opts.runDir, {
            runId: this.runId,
            createdAt: new Date().toISOString(),
            options: { ...opts, evalDataset: opts.evalDataset?.name ?? null, log: undefined },
            model: { name: this.task.model.name, numParameters: this.task.model.numParameters },
            backend: this.backend.name,
            protocolVersion: PROTOCOL_VERSION,
          });
    if (store !== null && opts.checkpoints) await store.checkpoint(0, this.task.model, this.global);
    const initial = await this.evaluate();
    opts.log(
      `run ${this.runId}: ${this.task.model.name} (${this.task.model.numParameters} parameters), ` +
        `${opts.rounds} rounds` +
        (initial ? `, initial accuracy ${initial.accuracy.toFixed(4)}` : ""),
    );
    const rng = createRng(opts.seed + 1);
    const rounds: RoundMetrics[] = [];
    for (let round = 1; round <= opts.rounds; round++) {
      const metrics = await this.runRound(round, rng);
      this.completedRounds = round;
      if (store !== null) {
        await store.appendRound(metrics);
        if (opts.checkpoints) await store.checkpoint(round, this.task.model, this.global);
      }
      rounds.push(metrics);
      opts.log(formatRound(metrics, opts.rounds));
      this.emit("round", metrics);
    }
    this.finished = true;
    this.io.emit("run:done", { runId: this.runId, rounds: this.completedRounds });
    return { runId: this.runId, runDir: opts.runDir, initial, rounds, weights: this.global };
  }

  private async runRound(round: number, rng: () => number): Promise<RoundMetrics> {
    const { opts } = this;
    for (let attempt = 1; ; attempt++) {
      if (this.registry.size < opts.minAvailableClients) {
        opts.log(
          `round ${round}: waiting for ${opts.minAvailableClients} clients (${this.registry.size} connected)`,
        );
      }
      await Promise.race([this.registry.waitFor(opts.minAvailableClients), this.closed]);
      const cohort = sampleCohort(this.registry.ids(), opts.fractionFit, opts.minFitClients, rng);
      const started = performance.now();
      this.collector = new RoundCollector(round, cohort, {
        weightSpecs: this.task.model.weightSpecs,
        maxUploadBytes: opts.maxUploadBytes,
        deadlineMs: opts.roundTimeoutMs,
      });
      const request: FitRequest = { round, weights: this.global };
      const payload = encode(request);
      const sockets = cohort.flatMap((id) => this.registry.get(id)?.socket.id ?? []);
      this.io.to(sockets).emit("round:fit", payload);
      debug(
        "round %d attempt %d: sent %d bytes to %d clients",
        round,
        attempt,
        payload.byteLength,
        cohort.length,
      );
      const outcome = await Promise.race([this.collector.done, this.closed]);
      if (outcome.results.length >= opts.minFitClients) {
        return this.finishRound(outcome, attempt, started, payload.byteLength * sockets.length);
      }
      const reasons = outcome.failures.map((f) => `${f.clientId}: ${f.code}`).join(", ");
      opts.log(
        `round ${round} attempt ${attempt}: ${outcome.results.length} of ${cohort.length} updates, ` +
          `${opts.minFitClients} needed (${reasons})`,
      );
      if (attempt >= opts.maxRoundAttempts) {
        throw new CohortError(
          "ROUND_FAILED",
          `round ${round} failed ${attempt} times: too few updates`,
        );
      }
    }
  }

  private async finishRound(
    outcome: RoundOutcome,
    attempt: number,
    started: number,
    bytesDown: number,
  ): Promise<RoundMetrics> {
    const aggStart = performance.now();
    const aggregate = this.strategy.aggregateFit(outcome.results, outcome.failures);
    if (aggregate === null)
      throw new CohortError("ROUND_FAILED", `round ${outcome.round} has no results`);
    this.global = this.strategy.apply(this.global, aggregate.delta);
    const aggregationMs = performance.now() - aggStart;
    const evalStart = performance.now();
    const evaluation = await this.evaluate();
    const evaluationMs = performance.now() - evalStart;
    const trainLoss =
      outcome.results.reduce((s, r) => s + r.metrics.loss * r.numExamples, 0) /
      aggregate.totalExamples;
    return {
      round: outcome.round,
      attempt,
      cohortSize: outcome.cohort.length,
      participants: outcome.results.length,
      failures: outcome.failures.length,
      failureReasons: outcome.failures,
      totalExamples: aggregate.totalExamples,
      durationMs: performance.now() - started,
      aggregationMs,
      evaluationMs,
      bytesUp: outcome.bytesUp,
      bytesDown,
      secure: false,
      ...(evaluation ? { accuracy: evaluation.accuracy, loss: evaluation.loss } : {}),
      trainLoss,
      clients: outcome.results.map((r) => ({
        clientId: r.clientId,
        numExamples: r.numExamples,
        loss: r.metrics.loss,
        accuracy: r.metrics.accuracy,
        trainMs: r.metrics.trainMs,
        backend: r.metrics.backend,
        bytesUp: r.bytes,
      })),
      timestamp: new Date().toISOString(),
    };
  }

  private async evaluate(): Promise<EvalStats | null> {
    const data = this.opts.evalDataset;
    if (data === undefined) return null;
    if (this.evalModel === null) this.evalModel = await instantiate(this.task.model, this.global);
    else writeWeights(this.evalModel, this.global);
    return evaluateModel(this.evalModel, data);
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      this.rejectClosed(new CohortError("CLOSED", "coordinator closed"));
      this.collector?.close();
      if (!this.finished)
        this.io.emit("run:done", { runId: this.runId, rounds: this.completedRounds });
      this.evalModel?.dispose();
      await new Promise<void>((resolve) => {
        this.io.close(() => resolve());
      });
      this.http.closeAllConnections?.();
    })();
    return this.closing;
  }
}
