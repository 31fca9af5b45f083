/**
 * Load benchmark (`npm run bench:load`, after `npm run build`): 1,000 concurrent socket.io
 * clients (a load-generator process; each answers with a zero delta of a tiny model) against one
 * coordinator, 5 % of them dropping their connection in each round and coming back. Reports
 * connect time, round time, failures and the coordinator's peak memory.
 */
import { fork } from "node:child_process";
import { fileURLToPath } from "node:url";
import { io, type Socket } from "socket.io-client";
import { createCoordinator } from "../coordinator/index.js";
import { decode, encode } from "../protocol/codec.js";
import {
  openEnvelope,
  sealEnvelope,
  signChallenge,
  signUpdate,
  toBase64,
  type HandshakeChallenge,
} from "../aggregation/signing.js";
import { identityFromSeed, type KeyPair } from "../aggregation/crypto.js";
import { parseFitRequest } from "../protocol/guards.js";
import { PROTOCOL_VERSION } from "../protocol/version.js";
import { selectBackend } from "../models/index.js";
import { tinyModelFile } from "./tiny-model.js";
import { createRng } from "../aggregation/random.js";

const CLIENTS = Number(process.env.LOAD_CLIENTS ?? 1000);
const ROUNDS = Number(process.env.LOAD_ROUNDS ?? 5);
/** `LOAD_AUTH=1`: every client has an Ed25519 identity and answers the handshake challenge. */
const AUTH = process.env.LOAD_AUTH === "1";
const DROP = 0.05;

/** The identity of load client `i` (deterministic, so both processes derive the same keys). */
function loadIdentity(i: number): KeyPair {
  const seed = new Uint8Array(32);
  new DataView(seed.buffer).setUint32(0, i + 1);
  return identityFromSeed(seed);
}

/** The load generator: CLIENTS sockets; prints one JSON line when all are connected. */
async function generator(url: string): Promise<void> {
  const rng = createRng(7);
  let runId: string | null = null;
  // Derived before the clock starts: a real client holds its key already.
  const identities = AUTH ? Array.from({ length: CLIENTS }, (_, i) => loadIdentity(i)) : [];
  const started = performance.now();
  const connect = (i: number): Promise<Socket> =>
    new Promise((resolve) => {
      const clientId = `load-${i}`;
      const identity = identities[i] ?? null;
      let secret: string | null = null;
      const base = {
        protocolVersion: PROTOCOL_VERSION,
        clientId,
        platform: "load",
        backend: "none",
        ...(identity ? { identity: { publicKey: toBase64(identity.publicKey) } } : {}),
      };
      const socket = io(url, {
        // A reconnect under the same id carries the secret the coordinator issued at first join.
        auth: (cb: (data: object) => void) => cb(secret === null ? base : { ...base, secret }),
        transports: ["websocket"],
        reconnection: true,
        reconnectionDelay: 500,
        reconnectionDelayMax: 2000,
      });
      socket.on(
        "auth:challenge",
        (challenge: HandshakeChallenge, ack: (a: { signature: string }) => void) => {
          const signature = signChallenge(
            identity!.secretKey,
            challenge,
            clientId,
            identity!.publicKey,
          );
          ack({ signature: toBase64(signature) });
        },
      );
      socket.on("round:fit", (payload: Uint8Array) => {
        const request = parseFitRequest(decode(openEnvelope(payload).body));
        if (rng() < DROP) {
          // Drop the connection mid-round; socket.io-client reconnects by itself.
          socket.io.engine.close();
          return;
        }
        const body = encode({
          round: request.round,
          numExamples: 10,
          delta: request.weights.map((w) => new Float32Array(w.length)),
          metrics: { loss: 1, accuracy: null, trainMs: 1, backend: "none" },
        });
        const update =
          identity === null
            ? body
            : sealEnvelope(
                body,
                signUpdate(
                  identity.secretKey,
                  { runId: runId!, round: request.round, clientId },
                  body,
                ),
              );
        setTimeout(() => socket.emit("fit:result", update, () => undefined), rng() * 200);
      });
      socket.on("task", (task: { runId: string }, grant?: { secret: string }) => {
        runId = task.runId;
        if (grant !== undefined) secret = grant.secret;
      });
      socket.on("run:done", () => socket.disconnect());
      socket.once("connect", () => resolve(socket));
    });
  const sockets: Socket[] = [];
  for (let i = 0; i < CLIENTS; i += 100) {
    sockets.push(
      ...(await Promise.all(
        Array.from({ length: Math.min(100, CLIENTS - i) }, (_, j) => connect(i + j)),
      )),
    );
  }
  process.send?.({ connectedMs: performance.now() - started });
  await new Promise<void>((resolve) => process.once("disconnect", () => resolve()));
  sockets.forEach((s) => s.disconnect());
}

async function main(): Promise<void> {
  if (process.argv[2] === "generate") return generator(process.argv[3]!);
  await selectBackend("wasm");
  const modelFile = await tinyModelFile("cohort-load-");
  let peak = 0;
  const timer = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 25);
  const coordinator = await createCoordinator({
    host: "127.0.0.1",
    model: modelFile,
    rounds: ROUNDS,
    minAvailableClients: Math.floor(CLIENTS * 0.9),
    minFitClients: Math.floor(CLIENTS * 0.8),
    roundTimeoutMs: 20_000,
    // Every client connects from 127.0.0.1, and reconnecting ones may briefly hold two sockets.
    maxConnectionsPerAddress: 2 * CLIENTS,
    ...(AUTH
      ? {
          auth: {
            allowedKeys: Array.from({ length: CLIENTS }, (_, i) =>
              toBase64(loadIdentity(i).publicKey),
            ),
          },
        }
      : {}),
    runDir: null,
    log: () => undefined,
  });
  const child = fork(fileURLToPath(import.meta.url), ["generate", coordinator.url], {
    stdio: "inherit",
  });
  const connected = await new Promise<{ connectedMs: number }>((resolve) =>
    child.once("message", (m) => resolve(m as { connectedMs: number })),
  );
  const heapAtConnect = process.memoryUsage().rss;
  const summary = await coordinator.run();
  clearInterval(timer);
  child.disconnect();
  await coordinator.close();
  console.log(
    `# load: ${CLIENTS} socket.io clients${AUTH ? " with identities (challenge-response handshakes, signed updates)" : ""}, ${ROUNDS} rounds, ${DROP * 100} % dropping each round`,
  );
  console.log(
    `connect: ${CLIENTS} clients in ${connected.connectedMs.toFixed(0)} ms (${((CLIENTS / connected.connectedMs) * 1000).toFixed(0)} clients/s)`,
  );
  for (const r of summary.rounds) {
    console.log(
      `round ${r.round}: ${r.durationMs.toFixed(0)} ms, cohort ${r.cohortSize}, ${r.participants} updates, ${r.failures} failures, up ${(r.bytesUp / 2 ** 20).toFixed(1)} MiB, down ${(r.bytesDown / 2 ** 20).toFixed(1)} MiB`,
    );
  }
  console.log(
    `coordinator RSS: ${(heapAtConnect / 2 ** 20).toFixed(0)} MiB with all connected, peak ${(peak / 2 ** 20).toFixed(0)} MiB`,
  );
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
