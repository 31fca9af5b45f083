/** HTTP responses of the coordinator's web routes: one shape, isolation headers on every answer. */
import type { IncomingMessage, ServerResponse } from "node:http";

/** What a route answers. */
export interface HttpResponse {
  status: number;
  contentType: string;
  body: string | Uint8Array;
}

/**
 * Sent with every response: COOP + COEP make our pages cross-origin isolated, which browsers
 * require before they give wasm threads a `SharedArrayBuffer`. Everything served is public and
 * read-only, so CORP and CORS let pages on other origins (isolated or not) embed the bundle, the
 * wasm files and the JSON, as the socket.io endpoint already allows.
 */
export const ISOLATION_HEADERS: Readonly<Record<string, string>> = {
  "Cross-Origin-Opener-Policy": "same-origin",
  "Cross-Origin-Embedder-Policy": "require-corp",
  "Cross-Origin-Resource-Policy": "cross-origin",
  "Access-Control-Allow-Origin": "*",
  "X-Content-Type-Options": "nosniff",
  "Cache-Control": "no-cache",
};

/** A request the route refuses: its status and a message for people. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
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

/** The JSON body of an error: `{ "status": 400, "error": "…" }`. */
export function errorResponse(status: number, message: string): HttpResponse {
  return json({ status, error: message }, status);
}

/** Write a response (headers only for HEAD). */
export function send(req: IncomingMessage, res: ServerResponse, r: HttpResponse): void {
  const body = typeof r.body === "string" ? Buffer.from(r.body, "utf8") : r.body;
  res.writeHead(r.status, {
    ...ISOLATION_HEADERS,
    "Content-Type": r.contentType,
    "Content-Length": String(body.byteLength),
    ...(r.status === 405 ? { Allow: "GET, HEAD" } : {}),
  });
  res.end(req.method === "HEAD" ? undefined : body);
}
