/** A protocol-level test client without tfjs: speaks (or abuses) the wire protocol directly. */
import { io, type Socket } from "socket.io-client";
import { decode, encode } from "../../protocol/codec.js";
import type { Reply } from "../../protocol/errors.js";
import {
  openEnvelope,
  signChallenge,
  toBase64,
  type HandshakeChallenge,
} from "../../aggregation/signing.js";
import type { KeyPair } from "../../aggregation/crypto.js";
import { parseFitMessage, parseTaskSpec } from "../../protocol/guards.js";
import { HeldModel } from "../../client/downlink.js";
import { toCohortError, type CohortError } from "../../protocol/errors.js";
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
  /** The challenges this client answered, with its answers (what an eavesdropper captures). */
  answers: { challenge: HandshakeChallenge; signature: string }[];
  /** Resolves with the next fit request broadcast to this client (patches rebuilt). */
  nextFit(): Promise<FitRequest>;
  /** The model this client holds (compressed downlink), as a client keeps it. */
  held: HeldModel;
  /** Every `round:fit` it got: a patch (from which base) or a full model, its size. */
  received: { round: number; patch: boolean; base: number | null; bytes: number }[];
  /** Requests it could not rebuild (`BASE_MISMATCH`, a payload the codec refused). */
  refused: CohortError[];
  /** Emit `fit:result` with any payload and wait for the coordinator's reply. */
  send(payload: unknown): Promise<Reply<UpdateReceipt>>;
  close(): void;
}

/** How a raw client answers the handshake challenge. */
export interface RawIdentity {
  keys: KeyPair;
  /** Sign something else than the challenge (a replay, a forgery). @default the honest answer */
  answer?: (challenge: HandshakeChallenge) => { signature: string };
}

/**
 * Connect with a valid handshake (overridable) and wait until admitted (the task arrived);
 * rejects with the refusal (`data.code`) of the handshake or of the challenge.
 */
export async function connectRaw(
  url: string,
  clientId: string,
  auth: Record<string, unknown> = {},
  identity?: RawIdentity,
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
  const answers: { challenge: HandshakeChallenge; signature: string }[] = [];
  socket.on("auth:challenge", (challenge: HandshakeChallenge, ack: (a: unknown) => void) => {
    if (identity === undefined) return;
    const answer = identity.answer?.(challenge) ?? {
      signature: toBase64(
        signChallenge(identity.keys.secretKey, challenge, clientId, identity.keys.publicKey),
      ),
    };
    answers.push({ challenge, signature: answer.signature });
    ack(answer);
  });
  const fits: FitRequest[] = [];
  const waiters: ((f: FitRequest) => void)[] = [];
  const held = new HeldModel();
  const received: RawClient["received"] = [];
  const refused: CohortError[] = [];
  let known: TaskSpec | null = null;
  socket.on("round:fit", (payload: unknown) => {
    const body = openEnvelope(payload).body;
    let request: FitRequest;
    try {
      const message = parseFitMessage(decode(body));
      const patch = "patch" in message;
      received.push({
        round: message.round,
        patch,
        base: patch ? message.patch.base : null,
        bytes: body.byteLength,
      });
      request = held.receive(known!, message);
    } catch (error) {
      const e = toCohortError(error);
      refused.push(e);
      socket.emit("fit:error", {
        round: received.at(-1)?.round ?? 1,
        code: e.code,
        message: e.message,
      });
      return;
    }
    const waiter = waiters.shift();
    if (waiter) waiter(request);
    else fits.push(request);
  });
  const task = new Promise<TaskSpec>((resolve) =>
    socket.once("task", (t: unknown) => {
      known = parseTaskSpec(t);
      resolve(known);
    }),
  );
  await new Promise<void>((resolve, reject) => {
    void task.then(() => resolve());
    socket.once("connect_error", reject);
    socket.once("notice", (n: { code: string; message: string }) =>
      reject(Object.assign(new Error(n.message), { data: { code: n.code } })),
    );
  });
  return {
    socket,
    task,
    answers,
    held,
    received,
    refused,
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

/** An update of `request` whose delta is `value` everywhere, claiming `numExamples`. */
export function constantUpdate(request: FitRequest, value: number, numExamples = 10): Uint8Array {
  return updateFor(request, {
    numExamples,
    delta: request.weights.map((w) => new Float32Array(w.length).fill(value)),
  });
}

/**
 * A client that answers every round with a negligible update, except destructive ones in
 * rounds `from` … `to`, each claiming `numExamples`.
 */
export function vandal(raw: RawClient, from: number, numExamples = 1000, to = from): void {
  void (async () => {
    for (;;) {
      const request = await raw.nextFit().catch(() => null);
      if (request === null) return;
      const value = request.round >= from && request.round <= to ? 5 : 1e-6;
      await raw.send(constantUpdate(request, value, numExamples)).catch(() => undefined);
    }
  })();
}
