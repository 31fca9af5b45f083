/** Bounds on slow and numerous connections: request timeouts that bite, and open sockets per address. */
import type { Server as NetServer, Socket } from "node:net";
import createDebug from "debug";

const debug = createDebug("cohort:coordinator:http");

/**
 * How often Node checks open connections against the timeouts. Its default (30 s) let a
 * connection that drips header lines live for up to 30 s past `headersTimeout`.
 */
export const CONNECTIONS_CHECK_MS = 1000;

/** The timeouts of the coordinator's http(s) server. */
export interface ServerTimeouts {
  headersTimeoutMs: number;
  requestTimeoutMs: number;
}

/**
 * `http.createServer` / `https.createServer` options: the request must arrive within the
 * timeouts (Node answers 408 and closes), checked every `CONNECTIONS_CHECK_MS` (or every
 * `headersTimeoutMs`, when shorter). Slow responses
 * (socket.io's long polls) and upgraded websockets are not bound by them; idle keep-alive
 * connections keep Node's 5 s `keepAliveTimeout`.
 */
export function serverTimeouts(o: ServerTimeouts): {
  headersTimeout: number;
  requestTimeout: number;
  connectionsCheckingInterval: number;
} {
  return {
    headersTimeout: o.headersTimeoutMs,
    requestTimeout: o.requestTimeoutMs,
    connectionsCheckingInterval: Math.min(CONNECTIONS_CHECK_MS, o.headersTimeoutMs),
  };
}

/**
 * Close every connection beyond `max` open ones from the same remote address, as it is
 * accepted (a socket.io client holds one; each tab or process its own). Counted on the raw TCP
 * `connection` event, so it holds before any TLS handshake, and released when a socket closes.
 */
export function limitConnectionsPerAddress(server: NetServer, max: number): void {
  const open = new Map<string, number>();
  server.on("connection", (socket: Socket) => {
    const address = socket.remoteAddress;
    if (address === undefined) return; // already gone: nothing to count
    const count = (open.get(address) ?? 0) + 1;
    if (count > max) {
      debug("closing a connection from %s: it already holds %d", address, max);
      socket.destroy();
      return;
    }
    open.set(address, count);
    socket.once("close", () => {
      const left = (open.get(address) ?? 1) - 1;
      if (left === 0) open.delete(address);
      else open.set(address, left);
    });
  });
}
