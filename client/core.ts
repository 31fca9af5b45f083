/**
 * The platform-neutral client core: joins a coordinator, trains each round it is sampled for,
 * sends its delta. Node (`client.ts`) and browsers (`browser.ts`) differ only in how they start
 * a tfjs backend, so nothing here imports a Node module.
 */
import { io, type Socket } from "socket.io-client";
import createDebug from "debug";
import { datasetSize } from "../protocol/dataset.js";
import { checkedDataset } from "../protocol/dataset-check.js";
import { CohortError, isErrorCode, toCohortError } from "../protocol/errors.js";
import type { ClientToServerEvents, ServerToClientEvents } from "../protocol/events.js";
import type { HandshakeAuth, RunDone } from "../protocol/messages.js";
import {
  fromBase64,
  keyClientId,
  signChallenge,
  toBase64,
  type HandshakeChallenge,
} from "../aggregation/signing.js";
import { withDefaults } from "../protocol/options.js";
import { PROTOCOL_VERSION } from "../protocol/version.js";
import { toTensors, type TensorData } from "../models/adapter.js";
import { LocalTrainer } from "./trainer.js";
import { loadRemoteModel, type RemoteModel } from "../models/remote.js";
import { ClientRounds } from "./rounds.js";
import { holdOut } from "./held-out.js";
import {
  DEFAULT_SECURE_FLOORS,
  DEFAULT_TASK_LIMITS,
  membershipCheck,
  publicKeyOption,
  platformName,
  type ClientBackend,
  type ClientOptions,
  type ClientProgress,
  type ClientRoundReport,
} from "./options.js";

export type {
  BackendSelector,
  ClientBackend,
  ClientOptions,
  ClientProgress,
  ClientRoundReport,
} from "./options.js";

const debug = createDebug("cohort:client");

type ClientSocket = Socket<ServerToClientEvents, ClientToServerEvents>;

/**
 * A federated-learning client on any platform; `CohortClient` (Node or browser build) is this
 * with the platform's backend selector as default.
 */
export class ClientCore<R extends string> {
  readonly options: ClientOptions<R>;
  private socket: ClientSocket | null = null;
  private backend: ClientBackend | null = null;
  private trainer: LocalTrainer | null = null;
  private rounds: ClientRounds<R> | null = null;
  private tensors: TensorData | null = null;
  private closed = false;
  /** The id's secret, once the coordinator issued it (coordinators without authentication). */
  private secret: string | null = null;
  /** Closures by the coordinator in a row, and when the last was (backoff of `reconnectLater`). */
  private serverClosures = 0;
  private lastServerClosure = 0;
  private readonly roundListeners: ((report: ClientRoundReport) => void)[] = [];
  private readonly progressListeners: ((progress: ClientProgress) => void)[] = [];
  /** The coordinator URLs (`url`, comma-separated), and the one tried last. */
  private readonly urls: string[];
  private urlIndex = 0;
  private settle!: { resolve: (done: RunDone) => void; reject: (error: CohortError) => void };
  /** Resolves when the coordinator ends the run; rejects on a fatal refusal. */
  readonly done: Promise<RunDone>;

  constructor(
    options: Partial<ClientOptions<R>> & Pick<ClientOptions<R>, "url" | "data">,
    platform: Pick<ClientOptions<R>, "backend" | "selectBackend">,
  ) {
    this.urls = coordinatorUrls(options.url);
    const data = checkedDataset(options.data);
    this.options = withDefaults<ClientOptions<R>>(
      {
        url: options.url,
        data,
        // With an identity, the id its key stands for (stable across restarts); otherwise
        // WebCrypto's UUID, so browsers need no polyfill (pages on http:// need localhost).
        clientId:
          options.identity === undefined
            ? globalThis.crypto.randomUUID()
            : keyClientId(options.identity.publicKey),
        backend: platform.backend,
        selectBackend: platform.selectBackend,
        reconnectDelayMs: 500,
        reconnectDelayMaxMs: 10_000,
        ackTimeoutMs: 120_000,
        log: (line) => debug(line),
        logError: options.log ?? ((line) => console.error(`cohort client: ${line}`)),
        connectTimeoutMs: undefined,
        seed: undefined,
        identity: undefined,
        apiToken: undefined,
        joinToken: undefined,
        coordinatorKey: undefined,
        ca: undefined,
        mods: [],
        codecMemoryStore: undefined,
        evalData: undefined,
        evalFraction: 0,
        metricFunctions: {},
        requireSecure: false,
        requireNoise: undefined,
        trustedMembers: undefined,
        secureFloors: DEFAULT_SECURE_FLOORS,
        taskLimits: DEFAULT_TASK_LIMITS,
      },
      { ...options, data },
    );
    const o = this.options;
    // Limits and floors given in part keep the defaults of the rest.
    o.taskLimits = { ...DEFAULT_TASK_LIMITS, ...options.taskLimits };
    o.secureFloors = { ...DEFAULT_SECURE_FLOORS, ...options.secureFloors };
    if (o.requireNoise !== undefined && !(o.requireNoise > 0 && Number.isFinite(o.requireNoise))) {
      throw new CohortError(
        "INVALID_OPTION",
        `requireNoise must be a finite number > 0, got ${String(o.requireNoise)}`,
      );
    }
    if (o.evalData === undefined && o.evalFraction !== 0) {
      // The held-out share never trains: it stands for data the model has not seen.
      const split = holdOut(o.data, o.evalFraction, o.seed ?? 0);
      o.data = split.train;
      o.evalData = split.evaluate;
    }
    if (o.evalData !== undefined) o.evalData = checkedDataset(o.evalData);
    // A pinned key that is no key would refuse every coordinator: say so now, not at connection.
    if (o.coordinatorKey !== undefined) publicKeyOption(o.coordinatorKey, "coordinatorKey");
    if (o.trustedMembers !== undefined) {
      membershipCheck(o.trustedMembers); // refuses bad keys now, not in the first secure round
      if (o.identity === undefined) {
        throw new CohortError(
          "INVALID_OPTION",
          "trustedMembers needs an identity: members sign their keys and the survivors",
        );
      }
    }
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
    const progress = { round: this.rounds?.trainingRound ?? 0, batchesDone, batchesTotal };
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
      options.metricFunctions,
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
    const token = options.joinToken;
    if (identity !== undefined) {
      auth.identity = {
        publicKey: toBase64(identity.publicKey),
        ...(token
          ? { token: { expiresAt: token.expiresAt, signature: toBase64(token.signature) } }
          : {}),
      };
    }
    const socket: ClientSocket = io(this.url, {
      // A function, so each (re)connection carries the id's secret once the coordinator issued it.
      auth: (cb: (data: object) => void) =>
        cb(this.secret === null ? { ...auth } : { ...auth, secret: this.secret }),
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
    if (this.urls.length > 1) {
      // Nodes of one cluster: reconnections try the URLs in turn (below). The manager's `uri`
      // is what its next attempt opens (the way socket.io's maintainers point to).
      // The first attempt after a lost connection goes back to the same node (one that
      // restarts its server, as a follower does when it becomes the leader, is back at once);
      // the next ones try the other nodes in turn, each at the current delay, which grows once
      // per pass over them all: one dead node does not slow the way to a live one.
      let retriedSame = false;
      socket.on("connect", () => (retriedSame = false));
      socket.io.on("reconnect_attempt", () => {
        if (!retriedSame) {
          retriedSame = true;
          return;
        }
        this.nextUrl(socket);
        if (this.urlIndex !== 0) undoBackoffStep(socket);
      });
    }
    const rounds = new ClientRounds(
      options,
      this.trainer,
      this.tensors,
      {
        sendUpdate: (upload) =>
          socket.timeout(options.ackTimeoutMs).emitWithAck("fit:result", upload),
        reportFailure: (round, error) =>
          socket.emit("fit:error", { round, code: error.code, message: error.message }),
        fatal: (error) => {
          options.logError(`${error.code}: ${error.message}`);
          this.settle.reject(error);
          void this.close();
        },
        closed: () => this.closed || this.socket === null,
      },
      (report) => {
        for (const listener of this.roundListeners) listener(report);
      },
    );
    this.rounds = rounds;
    socket.on("auth:challenge", (challenge: unknown, ack: unknown) => {
      if (identity === undefined || typeof ack !== "function") return;
      try {
        ack(this.answer(identity, challenge));
      } catch (error) {
        // A coordinator that sends a malformed challenge is not one to train for.
        this.fail(toCohortError(error, "INVALID_MESSAGE"));
      }
    });
    socket.on("notice", (notice: unknown) => {
      const n = (typeof notice === "object" && notice !== null ? notice : {}) as {
        code?: unknown;
        message?: unknown;
      };
      const message = typeof n.message === "string" ? n.message.slice(0, 500) : "(no message)";
      if (isErrorCode(n.code)) {
        // Refused after the handshake (the challenge failed): retrying cannot help.
        this.fail(new CohortError(n.code, `coordinator refused the connection: ${message}`));
      } else {
        options.log(`coordinator: ${message}`);
      }
    });
    socket.on("task", (raw, grant) => {
      if (typeof grant?.secret === "string") this.secret = grant.secret;
      rounds.onTask(raw);
    });
    socket.on("round:fit", (payload) => rounds.onFit(payload));
    socket.on("round:evaluate", (payload, ack) => {
      void rounds.onEvaluate(payload).then((reply) => {
        if (typeof ack === "function") ack(reply);
      });
    });
    socket.on("secagg:step", (payload, ack) => {
      void rounds.onSecureStep(payload).then((reply) => {
        if (typeof ack === "function") ack(reply);
      });
    });
    socket.on("run:done", (raw: unknown) => {
      const o = (typeof raw === "object" && raw !== null ? raw : {}) as Partial<RunDone>;
      const info: RunDone = {
        runId: typeof o.runId === "string" ? o.runId.slice(0, 256) : "(unnamed)",
        rounds: typeof o.rounds === "number" && Number.isFinite(o.rounds) ? o.rounds : 0,
      };
      options.log(`run ${info.runId} done after ${info.rounds} rounds`);
      this.settle.resolve(info);
      void this.close();
    });
    socket.on("disconnect", (reason) => {
      if (this.closed) return;
      options.log(`disconnected (${reason}); reconnecting`);
      // socket.io does not reconnect after the server closed the socket (a newer connection
      // displaced this one, or a restart): come back by itself, with a growing delay.
      if (reason === "io server disconnect") this.reconnectLater(socket);
    });
    await new Promise<void>((resolve, reject) => {
      let lastError = "no answer";
      const giveUp = (error: CohortError) => {
        clearTimeout(deadline);
        this.settle.reject(error);
        void this.close();
        reject(error);
      };
      const wait = options.connectTimeoutMs;
      const deadline =
        wait === undefined
          ? undefined
          : setTimeout(() => {
              const error = new CohortError(
                "CONNECTION_FAILED",
                `could not reach the coordinator at ${this.urls.join(" or ")} within ${Math.round(wait / 1000)} s (last error: ${lastError})`,
              );
              giveUp(error);
            }, wait);
      socket.once("connect", () => {
        clearTimeout(deadline);
        resolve();
      });
      socket.on("connect_error", (err: Error & { data?: { code?: unknown } }) => {
        const code = err.data?.code;
        if (code === "NODE_NOT_SERVING" && this.urls.length > 1) {
          // A cluster's node that takes no clients: try the next one.
          lastError = err.message;
          options.log(`${this.url} serves no clients (${err.message}); trying the next node`);
          setTimeout(
            () => {
              if (this.closed || this.socket !== socket || socket.connected) return;
              this.nextUrl(socket);
              socket.connect();
            },
            options.reconnectDelayMs * (0.5 + Math.random()),
          );
        } else if (isErrorCode(code)) {
          // The coordinator refused us: retrying cannot help.
          const error = new CohortError(code, `coordinator refused the connection: ${err.message}`);
          options.logError(error.message);
          giveUp(error);
        } else if (this.socket !== null && !socket.connected) {
          // One line per attempt, with the cause (a wrong port, a server that is not Cohort's).
          lastError = connectCause(err);
          options.logError(`cannot reach the coordinator at ${this.url}: ${lastError}; retrying`);
        }
      });
    });
    options.log(`connected to ${this.url}`);
  }

  /** The coordinator URL the client is connected to, or tries next. */
  get url(): string {
    return this.urls[this.urlIndex]!;
  }

  /** Start and wait until the coordinator ends the run. */
  async run(): Promise<RunDone> {
    await this.start();
    return this.done;
  }

  /** The client cannot go on: say why, reject `done` and close. */
  private fail(error: CohortError): void {
    this.options.log(error.message);
    this.settle.reject(error);
    void this.close();
  }

  /**
   * Sign the coordinator's challenge. Throws `INVALID_MESSAGE` for a malformed one and
   * `MODEL_SIGNATURE` for one that names another coordinator than the pinned one.
   */
  private answer(
    identity: { publicKey: Uint8Array; secretKey: Uint8Array },
    raw: unknown,
  ): { signature: string } {
    const c = (typeof raw === "object" && raw !== null ? raw : {}) as Partial<HandshakeChallenge>;
    const nonce = typeof c.nonce === "string" ? fromBase64(c.nonce, "challenge nonce") : null;
    const coordinatorKey = c.coordinatorKey;
    if (
      nonce === null ||
      nonce.length !== 32 ||
      (coordinatorKey !== null && typeof coordinatorKey !== "string")
    ) {
      throw new CohortError("INVALID_MESSAGE", "malformed handshake challenge");
    }
    const challenge: HandshakeChallenge = { nonce: c.nonce!, coordinatorKey };
    const pinned = this.options.coordinatorKey;
    if (pinned !== undefined && coordinatorKey !== pinned) {
      // An answer is valid for the coordinator it names: never sign for another one.
      throw new CohortError(
        "MODEL_SIGNATURE",
        `the challenge names coordinator key ${coordinatorKey ?? "(none)"}, not the pinned key`,
      );
    }
    return {
      signature: toBase64(
        signChallenge(identity.secretKey, challenge, this.options.clientId, identity.publicKey),
      ),
    };
  }

  /** Point the socket's next connection attempt at the next URL (when there are several). */
  private nextUrl(socket: ClientSocket): void {
    if (this.urls.length < 2) return;
    this.urlIndex = (this.urlIndex + 1) % this.urls.length;
    (socket.io as unknown as { uri: string }).uri = this.url;
  }

  private reconnectLater(socket: ClientSocket): void {
    const { reconnectDelayMs, reconnectDelayMaxMs } = this.options;
    // The delay grows with every closure by the coordinator within a minute of the last one (two
    // processes with one key displace each other ever more slowly), and starts over after.
    const now = Date.now();
    if (now - this.lastServerClosure > 60_000) this.serverClosures = 0;
    this.lastServerClosure = now;
    const delay = Math.min(reconnectDelayMaxMs, reconnectDelayMs * 2 ** this.serverClosures);
    this.serverClosures++;
    setTimeout(
      () => {
        if (this.closed || this.socket !== socket || socket.connected) return;
        this.nextUrl(socket);
        socket.connect();
      },
      delay * (0.5 + Math.random()),
    );
  }

  /**
   * The coordinator's promoted model version (`GET /api/models/promoted` on the client's
   * coordinator), for local inference; the caller disposes it.
   *
   * @throws CohortError `INVALID_MODEL` naming why it could not be fetched (no run yet: 503)
   */
  async promotedModel(): Promise<RemoteModel> {
    const base = new URL(this.url);
    base.protocol =
      base.protocol === "wss:" ? "https:" : base.protocol === "ws:" ? "http:" : base.protocol;
    const url = new URL("/api/models/promoted", base).toString();
    const token = this.options.apiToken;
    return loadRemoteModel(url, token === undefined ? {} : { Authorization: `Bearer ${token}` });
  }

  /** Disconnect and free the model and data tensors. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.socket?.disconnect();
    this.socket = null;
    // Let an in-flight training step finish before freeing what it uses.
    while (this.rounds?.busy) await new Promise((r) => setTimeout(r, 10));
    this.trainer?.dispose();
    this.trainer = null;
    this.tensors?.dispose();
    this.tensors = null;
    this.settle.reject(new CohortError("CLOSED", "client closed before the run ended"));
  }
}

/**
 * The coordinator URLs of a client's `url` option: one, or several nodes of one cluster
 * separated by commas.
 *
 * @throws CohortError `INVALID_OPTION` unless each is an http(s) or ws(s) URL.
 */
export function coordinatorUrls(url: unknown): string[] {
  if (typeof url !== "string" || url.trim().length === 0) {
    throw new CohortError("INVALID_OPTION", "url is required");
  }
  const urls = url.split(",").map((u) => u.trim());
  for (const u of urls) checkUrl(u);
  return urls;
}

/** Throw `INVALID_OPTION` unless `url` is an http(s) or ws(s) URL. */
function checkUrl(url: string): void {
  if (url.length === 0) {
    throw new CohortError("INVALID_OPTION", "url has an empty entry between commas");
  }
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new CohortError("INVALID_OPTION", `url ${JSON.stringify(url)} is not a URL`);
  }
  if (!["http:", "https:", "ws:", "wss:"].includes(parsed.protocol)) {
    throw new CohortError(
      "INVALID_OPTION",
      `url ${JSON.stringify(url)} must be http://, https://, ws:// or wss://, not ${parsed.protocol}//`,
    );
  }
}

/** What a failed connection attempt says, with the network error beneath socket.io's. */
function connectCause(err: Error & { description?: unknown; context?: unknown }): string {
  const description = err.description as
    { message?: unknown; error?: { message?: unknown } } | undefined;
  const inner =
    typeof description?.message === "string"
      ? description.message
      : typeof description?.error?.message === "string"
        ? description.error.message
        : undefined;
  return inner !== undefined && inner !== err.message ? `${err.message} (${inner})` : err.message;
}

/**
 * Take back the step the socket's reconnection delay grew by on its last attempt (the
 * manager's backoff counter is not in socket.io-client's typings; left alone if absent).
 */
function undoBackoffStep(socket: ClientSocket): void {
  const backoff = (socket.io as unknown as { backoff?: { attempts?: unknown } }).backoff;
  if (backoff !== undefined && typeof backoff.attempts === "number" && backoff.attempts > 0) {
    backoff.attempts -= 1;
  }
}
