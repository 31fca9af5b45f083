/** HTTP responses of the coordinator's web routes: one shape, isolation headers on every answer. */
import type { IncomingMessage, ServerResponse } from "node:http";
import type { ErrorCode } from "../../protocol/errors.js";

/** What a route answers. */
export interface HttpResponse {
  status: number;
  contentType: string;
  body: string | Uint8Array;
  /** Headers of this answer beside the isolation headers (CORS, `WWW-Authenticate`). */
  headers?: Readonly<Record<string, string>>;
}

/**
 * Sent with every response: COOP + COEP make our pages cross-origin isolated, which browsers
 * require before they give wasm threads a `SharedArrayBuffer`. CORP lets isolated pages on other
 * origins embed the bundle and the wasm files; it lets no page *read* a data route, which takes
 * CORS, granted per route and origin by the router (`access.ts`).
 */
export const ISOLATION_HEADERS: Readonly<Record<string, string>> = {
  "Cross-Origin-Opener-Policy": "same-origin",
  "Cross-Origin-Embedder-Policy": "require-corp",
  "Cross-Origin-Resource-Policy": "cross-origin",
  "X-Content-Type-Options": "nosniff",
  "Cache-Control": "no-cache",
};

/** A request the route refuses: its status and a message for people. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    /** The error code the body names, where one applies (`PAYLOAD_TOO_LARGE`). */
    readonly code?: ErrorCode,
  ) {
    super(message);
  }
}

/** A JSON response. */
export function json(value: unknown, status = 200): HttpResponse {
  return {
    status,
    contentType: "application/json; charset=utf-8",
    body: JSON.stringify(value) + "\n",
  };
}

/** The JSON body of an error: `{ "status": 400, "error": "…" }`, and its `code` where it has one. */
export function errorResponse(status: number, message: string, code?: ErrorCode): HttpResponse {
  return json({ status, error: message, ...(code === undefined ? {} : { code }) }, status);
}

/** Write a response (headers only for HEAD; no length on a 204, which has no body). */
export function send(req: IncomingMessage, res: ServerResponse, r: HttpResponse): void {
  const body = typeof r.body === "string" ? Buffer.from(r.body, "utf8") : r.body;
  res.writeHead(r.status, {
    ...ISOLATION_HEADERS,
    ...r.headers,
    "Content-Type": r.contentType,
    ...(r.status === 204 || r.status === 304 ? {} : { "Content-Length": String(body.byteLength) }),
    ...(r.status === 405 && r.headers?.Allow === undefined ? { Allow: "GET, HEAD" } : {}),
  });
  res.end(req.method === "HEAD" ? undefined : body);
}
