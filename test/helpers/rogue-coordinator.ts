/**
 * A coordinator that deviates from the protocol, for attack tests: a bare socket.io server that
 * holds a real signing key and task, and sends whatever the test tells it to.
 */
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { Server, type Socket } from "socket.io";
import { prepareTask } from "../../coordinator/coordinator.js";
import type { CoordinatorOptions } from "../../coordinator/options.js";
import { encode } from "../../protocol/codec.js";
import type { FitFailure, FitRequest, TaskSpec } from "../../protocol/messages.js";
import { sealEnvelope, signModel, signTask, toBase64 } from "../../aggregation/signing.js";

/** A connected victim, with what it sent back. */
export interface Victim {
  socket: Socket;
  results: Uint8Array[];
  failures: FitFailure[];
}

/** The rogue coordinator. */
export interface RogueCoordinator {
  url: string;
  task: TaskSpec;
  /** The coordinator's public key (base64), for clients that pin it. */
  key: string;
  /** Resolves with the next client that connects (after it got `task`). */
  victim(): Promise<Victim>;
  /** A fit request signed by the coordinator's key, as the honest coordinator sends it. */
  signedFit(round: number, weights?: Float32Array[]): Uint8Array;
  /** Sign `payload` as the model of `round`. */
  seal(round: number, body: Uint8Array): Uint8Array;
  close(): Promise<void>;
}

/**
 * Start a rogue coordinator whose task is built from `options` and then changed by `edit`
 * (re-signed with its own key unless `resign` is false).
 */
export async function startRogue(
  options: Partial<CoordinatorOptions> = {},
  edit: (task: TaskSpec) => TaskSpec = (t) => t,
  resign = true,
): Promise<RogueCoordinator> {
  const prepared = await prepareTask({ runDir: null, ...options }, () => undefined);
  const task = edit(structuredClone(prepared.task));
  if (resign) task.signature = toBase64(signTask(prepared.signing.secretKey, task));
  const http = createServer();
  const io = new Server(http, { maxHttpBufferSize: 64 * 1024 * 1024 });
  const waiting: ((v: Victim) => void)[] = [];
  io.on("connection", (socket) => {
    const victim: Victim = { socket, results: [], failures: [] };
    socket.on("fit:result", (payload: Uint8Array, ack: (r: unknown) => void) => {
      victim.results.push(payload);
      ack({ ok: true, value: { round: 0 } });
    });
    socket.on("fit:error", (report: FitFailure) => victim.failures.push(report));
    socket.emit("task", task);
    waiting.shift()?.(victim);
  });
  await new Promise<void>((resolve) => http.listen(0, "127.0.0.1", resolve));
  const seal = (round: number, body: Uint8Array) =>
    sealEnvelope(body, signModel(prepared.signing.secretKey, { runId: task.runId, round }, body));
  return {
    url: `http://127.0.0.1:${(http.address() as AddressInfo).port}`,
    task,
    key: toBase64(prepared.signing.publicKey),
    victim: () => new Promise((resolve) => waiting.push(resolve)),
    seal,
    signedFit: (round, weights = prepared.weights) => {
      const request: FitRequest = {
        round,
        weights,
        config: {
          learningRate: 0.1,
          localEpochs: 1,
          batchSize: 10,
          proximalMu: 0,
          extra: {},
        },
      };
      return seal(round, encode(request));
    },
    close: () => new Promise<void>((resolve) => io.close(() => resolve())),
  };
}

/** Wait until `check` holds, polling; throws after `ms`. */
export async function until(check: () => boolean, ms = 10_000, what = "condition"): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
