/** The coordinator: a socket.io server that runs FedAvg rounds over connected clients. */
import { createServer, type Server as HttpServer } from "node:http";
import type { AddressInfo } from "node:net";
import { randomUUID } from "node:crypto";
import createDebug from "debug";
import type { Weights } from "../aggregation/weights.js";
import { CohortError } from "../protocol/errors.js";
import type { TaskSpec } from "../protocol/messages.js";
import { selectBackend, type SelectedBackend } from "../models/backend.js";
import { loadModel } from "../models/model-file.js";
import { resolveOptions, type CoordinatorOptions } from "./options.js";
import { makeTask, RoundEngine, type RunSummary } from "./engine.js";
import { SocketTransport, type SocketTransportEvents } from "./socket-transport.js";
import type { RoundMetrics } from "./run-store.js";

const debug = createDebug("cohort:coordinator");

export type { RunSummary } from "./engine.js";

/** Events a coordinator reports while it runs. */
export interface CoordinatorEvents extends SocketTransportEvents {
  round: (metrics: RoundMetrics) => void;
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

/** Check the options, load the model and build the task. */
export async function prepareTask(
  options: Partial<CoordinatorOptions>,
  defaultLog: (line: string) => void,
): Promise<{
  opts: CoordinatorOptions;
  task: TaskSpec;
  weights: Float32Array[];
  backend: SelectedBackend;
}> {
  const opts = resolveOptions(options, defaultLog);
  const backend = await selectBackend("auto");
  const initial = await loadModel(opts.model, { seed: opts.seed });
  const modelBytes = initial.spec.numParameters * 4;
  if (modelBytes + 4096 > opts.maxUploadBytes) {
    throw new CohortError(
      "INVALID_OPTION",
      `maxUploadBytes (${opts.maxUploadBytes}) is below one update of ${opts.model} (${modelBytes} bytes)`,
    );
  }
  return {
    opts,
    task: makeTask(opts, randomUUID(), initial.spec),
    weights: initial.weights,
    backend,
  };
}

/** Start a coordinator listening for clients; call `run()` to run the rounds. */
export async function createCoordinator(
  options: Partial<CoordinatorOptions> = {},
): Promise<Coordinator> {
  const { opts, task, weights, backend } = await prepareTask(options, (line) => debug(line));
  const http = createServer();
  const transport = new SocketTransport(http, task, opts.log);
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
  const engine = new RoundEngine(opts, task, weights, transport, { backend: backend.name });
  return new SocketCoordinator(
    engine,
    transport,
    http,
    backend,
    `http://${shownHost}:${port}`,
    port,
  );
}

class SocketCoordinator implements Coordinator {
  private readonly roundListeners: ((m: RoundMetrics) => void)[] = [];
  private closing: Promise<void> | null = null;

  constructor(
    private readonly engine: RoundEngine,
    private readonly transport: SocketTransport,
    private readonly http: HttpServer,
    readonly backend: SelectedBackend,
    readonly url: string,
    readonly port: number,
  ) {
    engine.onRound = (m) => {
      for (const listener of this.roundListeners) {
        try {
          listener(m);
        } catch (error) {
          debug("round listener threw: %O", error);
        }
      }
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

  run(): Promise<RunSummary> {
    return this.engine.run();
  }

  on<E extends keyof CoordinatorEvents>(event: E, listener: CoordinatorEvents[E]): void {
    if (event === "round") this.roundListeners.push(listener as CoordinatorEvents["round"]);
    else
      this.transport.on(
        event as keyof SocketTransportEvents,
        listener as SocketTransportEvents[keyof SocketTransportEvents],
      );
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      this.engine.stop();
      this.transport.finish({ runId: this.runId, rounds: this.engine.completedRounds });
      await this.transport.close();
      this.http.closeAllConnections?.();
    })();
    return this.closing;
  }
}
