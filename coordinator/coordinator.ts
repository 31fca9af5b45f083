/** The coordinator: a socket.io server that runs FedAvg rounds over connected clients. */
import { createServer, type Server as HttpServer } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import type { AddressInfo } from "node:net";
import { randomUUID } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import createDebug from "debug";
import type { Weights } from "../aggregation/weights.js";
import { CohortError } from "../protocol/errors.js";
import type { TaskSpec, TensorSpec } from "../protocol/messages.js";
import { selectBackend, type SelectedBackend } from "../models/backend.js";
import { instantiate, resolveModel, modelName } from "../models/model-file.js";
import { checkContract } from "../models/task.js";
import { checkedDataset } from "../protocol/dataset-check.js";
import { builtinOptionsFor } from "../models/builtin.js";
import { resolveOptions, type CoordinatorOptions } from "./options.js";
import { makeTask, RoundEngine, type RunSummary } from "./engine.js";
import { SocketTransport, type SocketTransportEvents } from "./socket-transport.js";
import type { RoundMetrics } from "./run-store.js";
import { loadLedger, type ServerState } from "./ledger.js";
import type { SharedState } from "./state-store.js";
import type { CohortTransport } from "./transport.js";
import { checkSameExperiment, experimentConfig, legacyTopologyHash } from "./experiment.js";
import { resolveStrategy } from "../aggregation/strategies/index.js";
import { Authenticator, RateLimiter } from "./auth.js";
import { signTask } from "../aggregation/signing.js";
import { DEFAULT_SECURE_FLOORS } from "../client/options.js";
import {
  generateIdentity,
  identityFromSecret,
  toBase64,
  type KeyPair,
} from "../aggregation/secure/index.js";
import {
  accessPolicy,
  createHttpHandler,
  limitConnectionsPerAddress,
  locateAssets,
  serverTimeouts,
  StatusTracker,
  type ClusterStatus,
  type StatusSnapshot,
} from "./http/index.js";
import type { EnginePhase } from "./phases.js";

const debug = createDebug("cohort:coordinator");

export type { RunSummary } from "./engine.js";
import type { GateOutcome } from "./version-gate.js";
import type { VersionStore } from "./versions.js";
import { ModelService } from "./model-service.js";

/** Events a coordinator reports while it runs. */
export interface CoordinatorEvents extends SocketTransportEvents {
  round: (metrics: RoundMetrics) => void;
  /** A new version was decided on: promoted, kept as a candidate, or rejected (a rollback). */
  version: (outcome: GateOutcome) => void;
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
  /** The live status the dashboard shows (`GET /api/status`). */
  status(): StatusSnapshot;
  /** Current global weights. */
  weights(): Weights;
  /**
   * Under a compressed downlink, the model clients were last sent (M̂), which they train
   * from; null under float32 or before the first round.
   */
  downlinkModel(): Weights | null;
  /** The run's model versions (null until `run()` has opened them). */
  versions(): VersionStore | null;
  /** Run every round; resolves after the last one, with all metrics. */
  run(): Promise<RunSummary>;
  on<E extends keyof CoordinatorEvents>(event: E, listener: CoordinatorEvents[E]): void;
  /**
   * Stop: tell clients the run is over, close every socket and the server. With a `reason`
   * (a cluster node that lost its lease, or stops while the run goes on elsewhere), `run()`
   * rejects with it and clients are not told the run is over: they reconnect to another node.
   */
  close(reason?: CohortError): Promise<void>;
}

/** Check the options, load the model and build the task. */
export async function prepareTask(
  options: Partial<CoordinatorOptions>,
  defaultLog: (line: string) => void,
  /**
   * Where the run's state is shared by several nodes (given the model's tensors): the run is
   * the one registered there.
   */
  sharedState?: (specs: readonly TensorSpec[]) => SharedState,
): Promise<{
  opts: CoordinatorOptions;
  task: TaskSpec;
  weights: Float32Array[];
  backend: SelectedBackend;
  /** The key pair that signs model broadcasts. */
  signing: KeyPair;
  /** The ledger of a resumed run, or null. */
  resume: ServerState | null;
  /** The shared state, where `sharedState` was given. */
  shared: SharedState | null;
}> {
  const opts = resolveOptions(options, defaultLog);
  if (opts.secure && opts.minFitClients < DEFAULT_SECURE_FLOORS.cohort) {
    opts.log(
      `note: clients refuse secure rounds of fewer than ${DEFAULT_SECURE_FLOORS.cohort} members unless they lower their floors (--secure-floors); this run may sample ${opts.minFitClients}`,
    );
  }
  if (opts.resume !== undefined) opts.runDir = opts.resume;
  const backend = await selectBackend("auto");
  if (opts.evalDataset !== undefined) opts.evalDataset = checkedDataset(opts.evalDataset);
  const initial = await resolveModel(
    opts.model,
    builtinOptionsFor(opts.evalDataset, opts.loss, opts.seed),
  );
  if (opts.evalDataset !== undefined) {
    // Model, evaluation set and loss checked against each other before any client joins.
    const model = await instantiate(initial.spec, initial.weights);
    try {
      checkContract(model, opts.evalDataset, opts.loss, "evaluation set");
    } finally {
      model.dispose();
    }
  }
  const modelBytes = initial.spec.numParameters * 4;
  if (modelBytes + 4096 > opts.maxUploadBytes) {
    throw new CohortError(
      "INVALID_OPTION",
      `maxUploadBytes (${opts.maxUploadBytes}) is below one update of ${modelName(opts.model)} (${modelBytes} bytes)`,
    );
  }
  const signing =
    opts.signingKey === undefined ? generateIdentity() : identityFromSecret(opts.signingKey);
  const security = {
    coordinatorKey: toBase64(signing.publicKey),
    signedUpdates: opts.auth !== undefined,
  };
  let task = makeTask(opts, randomUUID(), initial.spec, security);
  let resume: ServerState | null;
  const shared = sharedState?.(initial.spec.weightSpecs) ?? null;
  if (shared !== null) {
    const run = await shared.open(
      task.runId,
      experimentConfig(opts, task, resolveStrategy(opts.strategy)),
    );
    if (opts.runDir !== null) await checkRunDir(opts.runDir, run.runId);
    resume = run.state;
    if (run.runId !== task.runId) task = makeTask(opts, run.runId, initial.spec, security);
  } else {
    resume = opts.resume === undefined ? null : await loadResume(opts, task);
    if (resume !== null) task = makeTask(opts, resume.runId, initial.spec, security);
  }
  // Signed, so a client pinned to the key also trusts the run's mode and limits.
  task.signature = toBase64(signTask(signing.secretKey, task));
  return {
    opts,
    task,
    signing,
    weights: resume?.weights ?? initial.weights,
    resume,
    shared,
    backend,
  };
}

/** Refuse a run directory that holds another run than `runId` (a shared run's outputs). */
async function checkRunDir(dir: string, runId: string): Promise<void> {
  let text: string;
  try {
    text = await readFile(join(dir, "run.json"), "utf8");
  } catch {
    return; // a new directory
  }
  let other: unknown;
  try {
    other = (JSON.parse(text) as { runId?: unknown }).runId;
  } catch {
    other = "(unreadable run.json)";
  }
  if (other !== runId) {
    throw new CohortError(
      "INVALID_OPTION",
      `run directory ${dir} holds run ${String(other)}, not this cluster's run ${runId}: give another --run-dir`,
    );
  }
}

/** Read a crashed run's ledger, after checking it is the same experiment. */
async function loadResume(opts: CoordinatorOptions, task: TaskSpec): Promise<ServerState | null> {
  const spec = task.model;
  const dir = opts.resume!;
  let run: { runId?: string; options?: { model?: string; seed?: number } };
  try {
    run = JSON.parse(await readFile(join(dir, "run.json"), "utf8")) as typeof run;
  } catch (cause) {
    throw new CohortError("INVALID_OPTION", `--resume: ${dir} has no readable run.json`, { cause });
  }
  const loaded = await loadLedger(dir, spec.weightSpecs);
  if (loaded?.config != null) {
    const now = experimentConfig(opts, task, resolveStrategy(opts.strategy));
    const was = { ...loaded.config };
    // A ledger from before topologies were hashed without their layer names.
    if (was.modelTopology === legacyTopologyHash(task.model.topology)) {
      was.modelTopology = now.modelTopology ?? null;
    }
    checkSameExperiment(`--resume: ${dir}`, was, now);
  } else if (run.options?.model !== modelName(opts.model) || run.options?.seed !== opts.seed) {
    throw new CohortError(
      "INVALID_OPTION",
      `--resume: ${dir} ran model ${run.options?.model} with seed ${run.options?.seed}; this coordinator has ${modelName(opts.model)} and ${opts.seed}`,
    );
  }
  if (loaded === null) {
    // Crashed before its first round completed: start over in the same directory.
    return null;
  }
  if (loaded.runId !== run.runId) {
    throw new CohortError(
      "INVALID_OPTION",
      `--resume: ledger of run ${loaded.runId} in run ${run.runId}`,
    );
  }
  return loaded;
}

/** What a coordinator that leads a cluster's run takes from the cluster. */
export interface ClusterRole {
  /**
   * The state the nodes share (given the model's tensors): the run is the one registered
   * there, resumed from its last commit, and each round commits there.
   */
  sharedState(specs: readonly TensorSpec[]): SharedState;
  /** The engine's transport: this node's own clients and the followers' (checks `opts`). */
  transport(local: SocketTransport, task: TaskSpec, opts: CoordinatorOptions): ClusterTransport;
  /** The cluster's nodes, for the dashboard and `/metrics`. */
  view(): ClusterStatus | null;
  /** Why this leader admits no clients of its own (`--lead-only`); absent: it serves them. */
  refuseClients?: string;
  /** Called just before the coordinator listens (a node lets its follower's server go). */
  beforeListen?(): Promise<void>;
}

/** A leader's transport: it also tells the followers each round's phases and metrics. */
export interface ClusterTransport extends CohortTransport {
  phase(round: number, phase: EnginePhase): void;
  roundDone(metrics: RoundMetrics): void;
}

/** The http(s) server of a node: `handler` for the web routes, socket.io added by its transport. */
export function serverFor(
  opts: Pick<
    CoordinatorOptions,
    "tls" | "maxConnectionsPerAddress" | "headersTimeoutMs" | "requestTimeoutMs"
  >,
  handler: Parameters<typeof createServer>[1],
): HttpServer {
  // With a certificate, the same handler and socket.io serve https and wss.
  const timeouts = serverTimeouts(opts);
  const http: HttpServer =
    opts.tls === undefined
      ? createServer(timeouts, handler)
      : createHttpsServer(
          { ...timeouts, cert: pem(opts.tls.cert), key: pem(opts.tls.key) },
          handler,
        );
  limitConnectionsPerAddress(http, opts.maxConnectionsPerAddress);
  return http;
}

/**
 * A node's socket.io transport on `http`: authentication, rate limits and (where it has the
 * key: the leader) model signing as the options say.
 */
export function socketTransport(
  http: HttpServer,
  task: TaskSpec,
  opts: Pick<CoordinatorOptions, "auth" | "rateLimit" | "log">,
  signingKey: Uint8Array | null,
  /** Refuse every client with this reason (`TransportSecurity.refuse`). */
  refuse?: string,
): SocketTransport {
  return new SocketTransport(http, task, opts.log, {
    ...(refuse === undefined ? {} : { refuse }),
    authenticator: opts.auth === undefined ? null : new Authenticator(opts.auth),
    signingKey,
    rateLimiter:
      opts.rateLimit === null
        ? null
        : new RateLimiter(opts.rateLimit.perSecond, opts.rateLimit.burst),
  });
}

/** Listen on `opts.host:port`; the URL clients connect to, and the port taken. */
export async function listen(
  http: HttpServer,
  opts: Pick<CoordinatorOptions, "host" | "port" | "tls">,
): Promise<{ url: string; port: number }> {
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
  return { url: `${opts.tls === undefined ? "http" : "https"}://${shownHost}:${port}`, port };
}

/** Start a coordinator listening for clients; call `run()` to run the rounds. */
export async function createCoordinator(
  options: Partial<CoordinatorOptions> = {},
  /** Where this coordinator leads a cluster's run (`coordinator/cluster/node.ts`). */
  cluster?: ClusterRole,
): Promise<Coordinator> {
  // Loud by default, as the CLI is: a program that starts a coordinator sees its URL and rounds.
  const { opts, task, weights, backend, resume, signing, shared } = await prepareTask(
    options,
    (line) => console.log(line),
    cluster === undefined ? undefined : (specs) => cluster.sharedState(specs),
  );
  const status = new StatusTracker({
    runId: task.runId,
    model: { name: task.model.name, numParameters: task.model.numParameters },
    secure: opts.secure,
    strategy: resolveStrategy(opts.strategy).name,
    rounds: opts.rounds,
  });
  // The web routes first: socket.io wraps the existing listener and passes it what isn't its own.
  // The model routes read the engine's versions once it exists (it is built after listening).
  let engineRef: RoundEngine | null = null;
  const models = new ModelService(task.model, () => engineRef?.versions() ?? null);
  const handler = createHttpHandler({
    status,
    assets: locateAssets(),
    access: accessPolicy(opts),
    models,
  });
  const http = serverFor(opts, handler);
  const transport = socketTransport(http, task, opts, signing.secretKey, cluster?.refuseClients);
  transport.on("join", (c) => status.join(c));
  transport.on("leave", (c) => status.leave(c));
  transport.on("rejected", (r) => status.reject(r));
  await cluster?.beforeListen?.();
  const { url, port } = await listen(http, opts);
  opts.log(`coordinator listening on ${url}`);
  const leading = cluster?.transport(transport, task, opts) ?? null;
  if (cluster !== undefined) status.cluster = () => cluster.view();
  const engine = new RoundEngine(opts, task, weights, leading ?? transport, {
    backend: backend.name,
  });
  engineRef = engine;
  if (shared !== null) engine.stateStore = shared;
  if (resume !== null) engine.resumeFrom(resume);
  engine.onPhase = (round, phase) => {
    status.phase(round, phase);
    leading?.phase(round, phase);
  };
  const coordinator = new SocketCoordinator(
    engine,
    transport,
    status,
    http,
    backend,
    url,
    port,
    models,
  );
  if (leading !== null) coordinator.on("round", (m) => leading.roundDone(m));
  return coordinator;
}

class SocketCoordinator implements Coordinator {
  private readonly roundListeners: ((m: RoundMetrics) => void)[] = [];
  private readonly versionListeners: ((o: GateOutcome) => void)[] = [];
  private closing: Promise<void> | null = null;

  constructor(
    private readonly engine: RoundEngine,
    private readonly transport: SocketTransport,
    private readonly tracker: StatusTracker,
    private readonly http: HttpServer,
    readonly backend: SelectedBackend,
    readonly url: string,
    readonly port: number,
    private readonly models: ModelService,
  ) {
    engine.onRound = (m) => {
      tracker.completed(m);
      notify(this.roundListeners, m, "round");
    };
    engine.onBuffer = (state) => tracker.buffer(state);
    engine.onVersion = (outcome) => {
      tracker.version(outcome);
      notify(this.versionListeners, outcome, "version");
    };
  }

  get task(): TaskSpec {
    return this.engine.task;
  }

  get runId(): string {
    return this.engine.task.runId;
  }

  clients(): string[] {
    return this.transport.available();
  }

  weights(): Weights {
    return this.engine.weights();
  }

  downlinkModel(): Weights | null {
    return this.engine.downlinkModel();
  }

  versions(): VersionStore | null {
    return this.engine.versions();
  }

  status(): StatusSnapshot {
    return this.tracker.snapshot();
  }

  run(): Promise<RunSummary> {
    return this.engine.run();
  }

  on<E extends keyof CoordinatorEvents>(event: E, listener: CoordinatorEvents[E]): void {
    if (event === "round") this.roundListeners.push(listener as CoordinatorEvents["round"]);
    else if (event === "version") {
      this.versionListeners.push(listener as CoordinatorEvents["version"]);
    } else
      this.transport.on(
        event as keyof SocketTransportEvents,
        listener as SocketTransportEvents[keyof SocketTransportEvents],
      );
  }

  close(reason?: CohortError): Promise<void> {
    this.closing ??= (async () => {
      this.engine.stop(reason);
      if (reason === undefined) {
        this.transport.finish({ runId: this.runId, rounds: this.engine.completedRounds });
      }
      await this.transport.close();
      this.http.closeAllConnections?.();
      this.models.dispose();
    })();
    return this.closing;
  }
}

/** Call each listener with `value`; one that throws is logged and the others still run. */
function notify<T>(listeners: readonly ((value: T) => void)[], value: T, what: string): void {
  for (const listener of listeners) {
    try {
      listener(value);
    } catch (error) {
      debug("%s listener threw: %O", what, error);
    }
  }
}

/** PEM text from a string or bytes. */
function pem(value: string | Uint8Array): string {
  return typeof value === "string" ? value : new TextDecoder().decode(value);
}
