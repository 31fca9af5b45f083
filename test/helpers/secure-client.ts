/** A protocol-level secure client for tests: a fixed delta, real SecAgg+, real socket.io. */
import { io, type Socket } from "socket.io-client";
import { SecureSession } from "../../client/secure-session.js";
import { decode, encode } from "../../protocol/codec.js";
import { parseFitRequest } from "../../protocol/guards.js";
import { openEnvelope } from "../../aggregation/signing.js";
import { toCohortError } from "../../protocol/errors.js";
import { PROTOCOL_VERSION } from "../../protocol/version.js";
import { NO_SECURE_FLOORS, type ClientOptions } from "../../client/options.js";

/** What a fixed-delta secure client does at each step. */
export interface SecureBehaviour {
  /** Disconnect instead of answering this phase. */
  vanishAt?: "share-keys" | "collect-masked" | "unmask";
  /** Advertise all-zero X25519 keys (a point of small order) instead of its own. */
  weakKeys?: boolean;
  /** Rewrite the masked-input reply before it leaves (a member that deviates). */
  bendMasked?: (reply: Record<string, unknown>) => Record<string, unknown>;
  /** The client's floors. @default none */
  floors?: ClientOptions<string>["secureFloors"];
}

export interface SecureTestClient {
  socket: Socket;
  /** Every binary buffer this client sent: all the coordinator ever receives from it. */
  sent: Uint8Array[];
  close(): void;
}

/** Connect a client that contributes `delta` with weight `numExamples` to secure rounds. */
export async function connectSecure(
  url: string,
  clientId: string,
  delta: Float32Array[],
  numExamples: number,
  behaviour: SecureBehaviour = {},
): Promise<SecureTestClient> {
  const socket = io(url, {
    auth: { protocolVersion: PROTOCOL_VERSION, clientId, platform: "test", backend: "none" },
    transports: ["websocket"],
    reconnection: false,
  });
  const sent: Uint8Array[] = [];
  // Models arrive signed; this test client takes the body without checking the signature.
  const session = new SecureSession(
    async () => ({ delta, numExamples }),
    (payload) => parseFitRequest(decode(openEnvelope(payload).body)),
    { floors: behaviour.floors ?? NO_SECURE_FLOORS },
  );
  socket.on("secagg:step", async (payload: Uint8Array, ack: (reply: unknown) => void) => {
    const phase = peekPhase(payload);
    if (behaviour.vanishAt !== undefined && phase === behaviour.vanishAt) {
      socket.disconnect();
      return;
    }
    try {
      const value = await session.step(payload);
      if (behaviour.bendMasked !== undefined && phase === "collect-masked") {
        ack({
          ok: true,
          value: encode(behaviour.bendMasked(decode(value) as Record<string, unknown>)),
        });
        return;
      }
      if (behaviour.weakKeys && phase === "advertise-keys") {
        const ad = decode(value) as Record<string, unknown>;
        const zero = new Uint8Array(32);
        ack({ ok: true, value: encode({ ...ad, cPublicKey: zero, sPublicKey: zero }) });
        return;
      }
      ack({ ok: true, value });
    } catch (error) {
      ack(toCohortError(error).toReply());
    }
  });
  await new Promise<void>((resolve, reject) => {
    socket.once("connect", () => resolve());
    socket.once("connect_error", reject);
  });
  // Capture at the engine: every packet and binary attachment that leaves this client.
  socket.io.engine.on("packetCreate", (packet: { data?: unknown }) => {
    const d = packet.data;
    if (d instanceof Uint8Array) sent.push(d);
    else if (d instanceof ArrayBuffer) sent.push(new Uint8Array(d));
    else if (typeof d === "string") sent.push(new TextEncoder().encode(d));
  });
  return { socket, sent, close: () => socket.disconnect() };
}

function peekPhase(payload: Uint8Array): string {
  const phase = (decode(payload) as { phase?: unknown }).phase;
  return typeof phase === "string" ? phase : "";
}
