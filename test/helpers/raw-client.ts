/** A protocol-level test client without tfjs: speaks (or abuses) the wire protocol directly. */
import { io, type Socket } from "socket.io-client";
import { decode, encode } from "../../protocol/codec.js";
import type { Reply } from "../../protocol/errors.js";
import { openEnvelope } from "../../aggregation/signing.js";
import { parseFitRequest, parseTaskSpec } from "../../protocol/guards.js";
import type {
  FitRequest,
  FitResult,
  RoundConfig,
  TaskSpec,
  UpdateReceipt,
} from "../../protocol/messages.js";
import { PROTOCOL_VERSION } from "../../protocol/version.js";

export interface RawClient {
  socket: Socket;
  task: Promise<TaskSpec>;
  /** Resolves with the next fit request broadcast to this client. */
  nextFit(): Promise<FitRequest>;
  /** Emit `fit:result` with any payload and wait for the coordinator's reply. */
  send(payload: unknown): Promise<Reply<UpdateReceipt>>;
  close(): void;
}

/** Connect with a valid handshake (overridable) and wait until connected. */
export async function connectRaw(
  url: string,
  clientId: string,
  auth: Record<string, unknown> = {},
): Promise<RawClient> {
  const socket = io(url, {
    auth: {
      protocolVersion: PROTOCOL_VERSION,
      clientId,
      platform: "test",
      backend: "none",
      ...auth,
    },
    transports: ["websocket"],
    reconnection: false,
  });
  const fits: FitRequest[] = [];
  const waiters: ((f: FitRequest) => void)[] = [];
  socket.on("round:fit", (payload: unknown) => {
    const request = parseFitRequest(decode(openEnvelope(payload).body));
    const waiter = waiters.shift();
    if (waiter) waiter(request);
    else fits.push(request);
  });
  const task = new Promise<TaskSpec>((resolve) =>
    socket.once("task", (t: unknown) => resolve(parseTaskSpec(t))),
  );
  await new Promise<void>((resolve, reject) => {
    socket.once("connect", () => resolve());
    socket.once("connect_error", reject);
  });
  return {
    socket,
    task,
    nextFit: () => {
      const ready = fits.shift();
      return ready ? Promise.resolve(ready) : new Promise((resolve) => waiters.push(resolve));
    },
    send: (payload) => socket.timeout(10_000).emitWithAck("fit:result", payload),
    close: () => socket.disconnect(),
  };
}

/** A valid round configuration, for hand-built fit requests. */
export const roundConfig = (): RoundConfig => ({
  learningRate: 0.1,
  localEpochs: 1,
  batchSize: 10,
  proximalMu: 0,
  extra: {},
});

/** A well-formed update for `request` with a zero delta (or the given tensors). */
export function updateFor(request: FitRequest, overrides: Partial<FitResult> = {}): Uint8Array {
  const result: FitResult = {
    round: request.round,
    numExamples: 10,
    delta: request.weights.map((w) => new Float32Array(w.length)),
    metrics: { loss: 1, accuracy: null, trainMs: 1, backend: "none" },
    ...overrides,
  };
  return encode(result);
}
