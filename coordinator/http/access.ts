/** Who may read the data routes: the API bearer token, checked in constant time, and CORS by origin. */
import { createHash, timingSafeEqual } from "node:crypto";
import type { IncomingMessage } from "node:http";
import { errorResponse, type HttpResponse } from "./respond.js";

/** The data routes' access rules, built once from the options. */
export interface AccessPolicy {
  /** SHA-256 of the API token, or null when the data routes are open; the token is not kept. */
  tokenDigest: Buffer | null;
  /** Origins whose pages may read the data routes. */
  corsOrigins: ReadonlySet<string>;
  /** Whether `/data/mnist-shard` serves the demo digits. */
  serveDemoData: boolean;
}

/** The policy of a coordinator's options. */
export function accessPolicy(o: {
  apiToken: string | undefined;
  corsOrigins: readonly string[];
  serveDemoData: boolean;
}): AccessPolicy {
  return {
    tokenDigest: o.apiToken === undefined ? null : sha256(o.apiToken),
    corsOrigins: new Set(o.corsOrigins),
    serveDemoData: o.serveDemoData,
  };
}

const sha256 = (text: string) => createHash("sha256").update(text, "utf8").digest();

/** What `Authorization: Bearer …` holds; anything else (another scheme, no header) is null. */
const BEARER = /^Bearer +(\S+) *$/i;

/**
 * Null when `req` may read a data route, else the 401 to answer. Digests of equal length make
 * `timingSafeEqual` applicable whatever the caller sent, so the time taken says nothing about
 * how much of the token matched.
 */
export function unauthorized(policy: AccessPolicy, req: IncomingMessage): HttpResponse | null {
  if (policy.tokenDigest === null) return null;
  const header = req.headers.authorization;
  const given = header === undefined ? null : (BEARER.exec(header)?.[1] ?? null);
  if (given !== null && timingSafeEqual(sha256(given), policy.tokenDigest)) return null;
  const response = errorResponse(
    401,
    given === null
      ? "this coordinator's API needs an Authorization: Bearer token (its --api-token)"
      : "the bearer token is wrong",
  );
  return {
    ...response,
    headers: {
      // RFC 6750 §3: name the scheme, and say when a token was given but is not valid.
      "WWW-Authenticate":
        given === null ? 'Bearer realm="cohort"' : 'Bearer realm="cohort", error="invalid_token"',
    },
  };
}

/**
 * The CORS headers of a data-route answer: none while no origin is listed; otherwise
 * `Vary: Origin` (the answer depends on it, for caches) and the request's origin when listed.
 */
export function corsHeaders(policy: AccessPolicy, req: IncomingMessage): Record<string, string> {
  if (policy.corsOrigins.size === 0) return {};
  const origin = req.headers.origin;
  return origin !== undefined && policy.corsOrigins.has(origin)
    ? { "Access-Control-Allow-Origin": origin, Vary: "Origin" }
    : { Vary: "Origin" };
}

/** How long browsers may cache a preflight answer, in seconds. */
const PREFLIGHT_MAX_AGE_S = 600;

/**
 * The answer to `OPTIONS` on a data route: a preflight from a listed origin asking for GET or
 * HEAD gets 204 with what it may send (the Authorization header); an unlisted origin 403; an
 * `OPTIONS` that is no preflight, or asks for another method, 405.
 */
export function preflight(
  policy: AccessPolicy,
  req: IncomingMessage,
  methods: readonly string[] = ["GET", "HEAD"],
): HttpResponse {
  const origin = req.headers.origin;
  const method = req.headers["access-control-request-method"];
  if (origin === undefined || method === undefined) {
    return errorResponse(405, "OPTIONS is answered only as a CORS preflight");
  }
  const cors = corsHeaders(policy, req);
  if (cors["Access-Control-Allow-Origin"] === undefined) {
    return {
      ...errorResponse(403, `origin ${origin} may not read this API (list it with --cors-origin)`),
      headers: cors,
    };
  }
  if (method !== "GET" && method !== "HEAD") {
    return { ...errorResponse(405, `${method}: only GET and HEAD are allowed`), headers: cors };
  }
  return {
    status: 204,
    contentType: "text/plain; charset=utf-8",
    body: "",
    headers: {
      ...cors,
      "Access-Control-Allow-Methods": methods.join(", "),
      // A predict request names its body's type (JSON or msgpack).
      "Access-Control-Allow-Headers": methods.includes("POST")
        ? "Authorization, Content-Type"
        : "Authorization",
      "Access-Control-Max-Age": String(PREFLIGHT_MAX_AGE_S),
    },
  };
}
