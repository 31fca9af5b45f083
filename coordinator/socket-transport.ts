/** The socket.io transport: handshake checks, the client registry, and update routing. */
import type { Server as HttpServer } from "node:http";
import { Server, type Socket } from "socket.io";
import createDebug from "debug";
import { byteLengthOf } from "../protocol/codec.js";
import { CohortError, isErrorCode, toCohortError, type Reply } from "../protocol/errors.js";
import {
  fromBase64,
  openEnvelope,
  sealEnvelope,
  signModel,
  toBase64,
  verifyUpdate,
} from "../aggregation/signing.js";
import { ClientBindings, type Authenticator, type RateLimiter } from "./auth.js";
import type { ClientToServerEvents, ServerToClientEvents, SocketData } from "../protocol/events.js";
import { parseFitFailure, parseHandshakeAuth } from "../protocol/guards.js";
import type { RunDone, SessionGrant, TaskSpec, UpdateReceipt } from "../protocol/messages.js";
import type { MemberCredential } from "../aggregation/secure/messages.js";
import { PROTOCOL_VERSION } from "../protocol/version.js";
import { ClientRegistry } from "./registry.js";
import type { UpdateSink, CohortTransport, RequestKind } from "./transport.js";
import type { RoundBroadcast } from "./downlink.js";

const debug = createDebug("cohort:coordinator:socket");

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

/** What the transport enforces: who may join, signed broadcasts, rate limits. */
export interface TransportSecurity {
  authenticator: Authenticator | null;
  /** Signs each model broadcast; null sends them unsigned. */
  signingKey: Uint8Array | null;
  rateLimiter: RateLimiter | null;
  /**
   * Why this node admits no clients (a cluster's leader started with `--lead-only`): each is
   * refused with `NODE_NOT_SERVING` and this message, and tries its next URL. Absent: admitted.
   */
  refuse?: string;
}

/** Events of the socket transport. */
export interface SocketTransportEvents {
  join: (client: { clientId: string; platform: string; backend: string }) => void;
  leave: (client: { clientId: string; reason: string }) => void;
  rejected: (info: { clientId: string; code: string; message: string }) => void;
}

/** Serves a task to socket.io clients and feeds their updates to the open round. */
export class SocketTransport implements CohortTransport {
  readonly io: IoServer;
  private readonly registry = new ClientRegistry<IoSocket>();
  private readonly bindings = new ClientBindings();
  private collector: UpdateSink | null = null;
  /** The model version each connection (by socket id) was last sent, and its chain. */
  private readonly held = new Map<string, { chain: number | null; version: number }>();
  private done: RunDone | null = null;
  private readonly listeners: { [E in keyof SocketTransportEvents]: SocketTransportEvents[E][] } = {
    join: [],
    leave: [],
    rejected: [],
  };

  constructor(
    http: HttpServer,
    private readonly task: TaskSpec,
    private readonly log: (line: string) => void,
    private readonly security: TransportSecurity = {
      authenticator: null,
      signingKey: null,
      rateLimiter: null,
    },
  ) {
    this.io = new Server(http, {
      // Headroom over the update limit so an over-limit update reaches the handler and gets a
      // PAYLOAD_TOO_LARGE answer instead of a silent transport close.
      maxHttpBufferSize: task.limits.maxUploadBytes + 1024 * 1024,
      perMessageDeflate: false,
      httpCompression: false,
      // Clients train between messages; a busy event loop must not look like a dead client.
      pingTimeout: 60_000,
      cors: { origin: true },
    });
    this.io.use((socket, next) => {
      try {
        if (this.security.refuse !== undefined) {
          throw new CohortError("NODE_NOT_SERVING", this.security.refuse);
        }
        const auth = parseHandshakeAuth(socket.handshake.auth);
        if (auth.protocolVersion !== PROTOCOL_VERSION) {
          throw new CohortError(
            "PROTOCOL_VERSION",
            `client speaks protocol version ${auth.protocolVersion}; this coordinator speaks ${PROTOCOL_VERSION}`,
          );
        }
        const identity = (socket.handshake.auth as { identity?: unknown } | undefined)?.identity;
        const authenticator = this.security.authenticator;
        const admitted = authenticator === null ? null : authenticator.admit(identity);
        const publicKey = admitted === null ? null : toBase64(admitted.publicKey);
        if (publicKey === null) {
          this.bindings.checkSecret(auth.clientId, auth.secret, this.registry.has(auth.clientId));
        } else {
          this.bindings.checkKey(auth.clientId, publicKey);
        }
        socket.data = {
          clientId: auth.clientId,
          platform: auth.platform,
          backend: auth.backend,
          publicKey,
          token: admitted?.token ?? null,
        };
        next();
      } catch (error) {
        const e =
          error instanceof CohortError ? error : new CohortError("INVALID_MESSAGE", String(error));
        debug("refused connection: %s", e.message);
        next(Object.assign(new Error(e.message), { data: { code: e.code } }));
      }
    });
    this.io.on("connection", (socket) => void this.admit(socket));
  }

  on<E extends keyof SocketTransportEvents>(event: E, listener: SocketTransportEvents[E]): void {
    this.listeners[event].push(listener);
  }

  private emit<E extends keyof SocketTransportEvents>(
    event: E,
    ...args: Parameters<SocketTransportEvents[E]>
  ): void {
    for (const listener of this.listeners[event]) {
      try {
        (listener as (...a: Parameters<SocketTransportEvents[E]>) => void)(...args);
      } catch (error) {
        debug("listener of %s threw: %O", event, error);
      }
    }
  }

  /** Connected clients, less those whose join token expired (they are told so and let go). */
  available(): string[] {
    const now = Date.now();
    const ids: string[] = [];
    for (const { clientId, socket } of this.registry.entries()) {
      const token = socket.data.token;
      if (token !== null && token.expiresAt < now) {
        // Its neighbours would refuse it in a secure round: it leaves before it is sampled.
        socket.emit("notice", { code: "UNAUTHORIZED", message: "join token expired" });
        socket.disconnect(true);
        continue;
      }
      ids.push(clientId);
    }
    return ids;
  }

  /** How many clients are connected: at least `available().length`, and O(1). */
  connectedCount(): number {
    return this.registry.size;
  }

  waitForAvailable(n: number): Promise<void> {
    return this.registry.waitFor(n);
  }

  credentialOf(clientId: string): MemberCredential | null {
    const data = this.registry.get(clientId)?.socket.data;
    if (data?.publicKey == null) return null;
    const { token } = data;
    return {
      identityKey: fromBase64(data.publicKey),
      token:
        token === null
          ? null
          : { expiresAt: token.expiresAt, signature: fromBase64(token.signature) },
    };
  }

  sealModel(round: number, request: Uint8Array): Uint8Array {
    const key = this.security.signingKey;
    if (key === null) return request;
    return sealEnvelope(request, signModel(key, { runId: this.task.runId, round }, request));
  }

  /** The sealed requests of the last secure round's broadcast, by the base they patch. */
  private sealed: { broadcast: RoundBroadcast; byBase: Map<number | null, Uint8Array> } | null =
    null;

  modelFor(clientId: string, broadcast: RoundBroadcast): Uint8Array {
    const socket = this.registry.get(clientId)?.socket;
    const held = socket === undefined ? undefined : this.held.get(socket.id);
    const { key, payload } = broadcast.requestFor(held?.chain ?? null, held?.version ?? null);
    if (this.sealed?.broadcast !== broadcast) this.sealed = { broadcast, byBase: new Map() };
    let sealed = this.sealed.byBase.get(key);
    if (sealed === undefined) {
      sealed = this.sealModel(broadcast.round, payload);
      this.sealed.byBase.set(key, sealed);
    }
    if (socket !== undefined && broadcast.version !== null) {
      this.held.set(socket.id, { chain: broadcast.chain, version: broadcast.version });
    }
    return sealed;
  }

  forgetModel(clientId: string): void {
    const socket = this.registry.get(clientId)?.socket;
    if (socket !== undefined) this.held.delete(socket.id);
  }

  startRound(collector: UpdateSink, broadcast: RoundBroadcast): number {
    this.collector = collector;
    // Members holding the same version get the same bytes: one sealed payload, one emit each.
    const groups = new Map<number | null, { payload: Uint8Array; sockets: string[] }>();
    for (const id of collector.cohort) {
      const socket = this.registry.get(id)?.socket;
      if (socket === undefined) continue;
      const held = this.held.get(socket.id);
      const { key, payload } = broadcast.requestFor(held?.chain ?? null, held?.version ?? null);
      let group = groups.get(key);
      if (group === undefined) {
        group = { payload: this.sealModel(collector.round, payload), sockets: [] };
        groups.set(key, group);
      }
      group.sockets.push(socket.id);
      if (broadcast.version !== null) {
        this.held.set(socket.id, { chain: broadcast.chain, version: broadcast.version });
      }
    }
    let bytes = 0;
    for (const { payload, sockets } of groups.values()) {
      this.io.to(sockets).emit("round:fit", payload);
      bytes += payload.byteLength * sockets.length;
    }
    debug(
      "round %d: sent %d bytes to %d clients (%d patched)",
      collector.round,
      bytes,
      [...groups.values()].reduce((n, g) => n + g.sockets.length, 0),
      broadcast.patched,
    );
    return bytes;
  }

  async request(
    clientId: string,
    payload: Uint8Array,
    timeoutMs: number,
    kind: RequestKind = "secure",
  ): Promise<Uint8Array> {
    const socket = this.registry.get(clientId)?.socket;
    if (socket === undefined) {
      throw new CohortError("CLIENT_DISCONNECTED", `client ${clientId} is not connected`);
    }
    let onDisconnect: (() => void) | undefined;
    const lost = new Promise<never>((_, reject) => {
      onDisconnect = () =>
        reject(new CohortError("CLIENT_DISCONNECTED", `client ${clientId} disconnected`));
      socket.once("disconnect", onDisconnect);
    });
    let reply: unknown;
    try {
      reply = await Promise.race([
        socket
          .timeout(timeoutMs)
          .emitWithAck(kind === "secure" ? "secagg:step" : "round:evaluate", payload),
        lost,
      ]);
    } catch (error) {
      if (error instanceof CohortError) throw error;
      throw new CohortError(
        "DEADLINE_EXCEEDED",
        `client ${clientId}: no answer within ${timeoutMs} ms`,
      );
    } finally {
      socket.off("disconnect", onDisconnect!);
    }
    return this.checkReply(clientId, reply);
  }

  private checkReply(clientId: string, reply: unknown): Uint8Array {
    const r = reply as { ok?: unknown; value?: unknown; code?: unknown; message?: unknown } | null;
    if (typeof r !== "object" || r === null || typeof r.ok !== "boolean") {
      throw new CohortError("INVALID_MESSAGE", `client ${clientId}: malformed reply`);
    }
    if (!r.ok) {
      const code = isErrorCode(r.code) ? r.code : "INVALID_MESSAGE";
      throw new CohortError(
        code,
        `client ${clientId} refused: ${typeof r.message === "string" ? r.message.slice(0, 500) : code}`,
      );
    }
    const bytes = byteLengthOf(r.value);
    if (bytes < 0)
      throw new CohortError("MALFORMED_PAYLOAD", `client ${clientId}: reply is not binary`);
    if (bytes > this.task.limits.maxUploadBytes) {
      throw new CohortError(
        "PAYLOAD_TOO_LARGE",
        `client ${clientId}: reply of ${bytes} bytes exceeds ${this.task.limits.maxUploadBytes}`,
      );
    }
    return r.value instanceof Uint8Array ? r.value : new Uint8Array(r.value as ArrayBuffer);
  }

  finish(info: RunDone): void {
    this.done = info;
    this.io.emit("run:done", info);
  }

  /**
   * Let a handshake in: where clients authenticate, only after it answered a fresh challenge
   * with its key (so a captured handshake replays nothing); the id is then bound to that key.
   */
  private async admit(socket: IoSocket): Promise<void> {
    const { authenticator } = this.security;
    const { clientId, publicKey } = socket.data;
    if (authenticator !== null && publicKey !== null) {
      const challenge = authenticator.challenge(this.task.coordinatorKey);
      try {
        const answer: unknown = await socket
          .timeout(authenticator.challengeTimeoutMs)
          .emitWithAck("auth:challenge", challenge);
        authenticator.verify(fromBase64(publicKey), challenge, clientId, answer);
        // Checked again: another connection of this key may have been let in meanwhile.
        this.bindings.checkKey(clientId, publicKey);
      } catch (error) {
        const e =
          error instanceof CohortError
            ? error
            : new CohortError("UNAUTHORIZED", "no answer to the handshake challenge in time");
        debug("refused %s after the challenge: %s", clientId, e.message);
        if (socket.connected) {
          socket.emit("notice", { code: e.code, message: e.message });
          socket.disconnect(true);
        }
        return;
      }
      if (!socket.connected) return;
      this.bindings.bindKey(clientId, publicKey);
    }
    // Without authentication, a new id's secret travels with the task (one message, not two).
    let secret: string | null = null;
    if (authenticator === null) {
      // Checked again: another connection may have taken the id while this one was let in.
      const presented = (socket.handshake.auth as { secret?: unknown }).secret;
      const mine = typeof presented === "string" ? presented : undefined;
      try {
        this.bindings.checkSecret(clientId, mine, this.registry.has(clientId));
      } catch (error) {
        const e = toCohortError(error, "UNAUTHORIZED");
        socket.emit("notice", { code: e.code, message: e.message });
        socket.disconnect(true);
        return;
      }
      secret = this.bindings.issueSecret(clientId, mine);
    }
    this.onConnection(socket, secret === null ? undefined : { secret });
  }

  private onConnection(socket: IoSocket, grant: SessionGrant | undefined): void {
    const { clientId, platform, backend } = socket.data;
    const previous = this.registry.add({
      clientId,
      socket,
      platform,
      backend,
      connectedAt: Date.now(),
    });
    if (previous !== undefined && previous.socket.id !== socket.id) {
      // The same client (its key, or its secret, proved it) on a new connection.
      debug("client %s reconnected; closing its old socket", clientId);
      previous.socket.emit("notice", {
        code: "DISPLACED",
        message: `a newer connection of ${clientId} replaced this one`,
      });
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
    if (grant === undefined) socket.emit("task", this.task);
    else socket.emit("task", this.task, grant);
    if (this.done !== null) socket.emit("run:done", this.done);
    socket.on("fit:result", (payload, ack) => {
      const reply = this.onUpdate(clientId, socket.data.publicKey, payload);
      if (!reply.ok) {
        this.log(`rejected update from ${clientId}: ${reply.code}: ${reply.message}`);
        this.emit("rejected", { clientId, code: reply.code, message: reply.message });
      }
      if (typeof ack === "function") ack(reply);
    });
    socket.on("fit:error", (raw) => {
      try {
        const limiter = this.security.rateLimiter;
        if (limiter !== null && !limiter.take(socket.data.publicKey ?? clientId)) return;
        const report = parseFitFailure(raw);
        debug("client %s failed round %d: %s", clientId, report.round, report.message);
        // It may not hold the model it was sent (BASE_MISMATCH, a patch it could not decode):
        // its next request is the full model.
        this.held.delete(socket.id);
        this.collector?.fail(clientId, report);
      } catch (error) {
        debug(
          "ignored a malformed fit failure from %s: %s",
          clientId,
          toCohortError(error).message,
        );
      }
    });
    socket.on("disconnect", (reason) => {
      this.held.delete(socket.id);
      if (!this.registry.remove(clientId, socket.id)) return;
      this.bindings.forgetSecret(clientId);
      debug("client %s left: %s", clientId, reason);
      this.collector?.drop(clientId, {
        code: "CLIENT_DISCONNECTED",
        message: `disconnected: ${reason}`,
      });
      this.emit("leave", { clientId, reason });
    });
  }

  private onUpdate(
    clientId: string,
    publicKey: string | null,
    payload: unknown,
  ): Reply<UpdateReceipt> {
    const limiter = this.security.rateLimiter;
    // Per key where clients authenticate, so a key's new ids and reconnects share one bucket.
    if (limiter !== null && !limiter.take(publicKey ?? clientId)) {
      return new CohortError(
        "RATE_LIMITED",
        `client ${clientId} sends faster than the coordinator accepts`,
      ).toReply();
    }
    if (this.security.authenticator !== null) {
      // Every update must be signed by the key the client authenticated with, for this round.
      try {
        const envelope = openEnvelope(payload);
        const round = this.collector?.roundFor?.(clientId) ?? this.collector?.round ?? 0;
        const ctx = { runId: this.task.runId, round, clientId };
        if (
          publicKey === null ||
          !verifyUpdate(fromBase64(publicKey), ctx, envelope.body, envelope.signature)
        ) {
          throw new CohortError(
            "BAD_SIGNATURE",
            `update of ${clientId} is not signed by its key for round ${round}`,
          );
        }
        payload = envelope.body;
      } catch (error) {
        return toCohortError(error, "BAD_SIGNATURE").toReply();
      }
    }
    if (this.collector !== null) return this.collector.submit(clientId, payload);
    return new CohortError("NO_ACTIVE_ROUND", "no round has started yet").toReply();
  }

  /** Close every socket and the server. */
  close(): Promise<void> {
    return new Promise<void>((resolve) => this.io.close(() => resolve()));
  }
}
