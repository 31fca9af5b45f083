/** The coordinator's web routes, served beside socket.io on the same http server. */
import type { IncomingMessage, ServerResponse } from "node:http";
import createDebug from "debug";
import { assetFile, wasmFile, type Assets } from "./assets.js";
import { mnistShard } from "./data.js";
import { exposition, PROMETHEUS_CONTENT_TYPE, statusFamilies } from "./prometheus.js";
import { intQuery } from "./query.js";
import { errorResponse, HttpError, json, send, type HttpResponse } from "./respond.js";
import type { StatusTracker } from "./status.js";

const debug = createDebug("cohort:coordinator:http");

/** What the routes read. */
export interface HttpContext {
  status: StatusTracker;
  assets: Assets;
}

type Route = (url: URL, ctx: HttpContext) => HttpResponse | Promise<HttpResponse>;

/** Routes without a query; a query on them is a 400 (`intQuery` with no parameters). */
const noQuery =
  (route: Route): Route =>
  (url, ctx) => {
    intQuery(url, {});
    return route(url, ctx);
  };

/** Exact paths; `/static/…` is matched by prefix below. */
const ROUTES: Record<string, Route> = {
  "/": noQuery((_, ctx) => assetFile(ctx.assets, "index.html")),
  "/client": (_, ctx) => assetFile(ctx.assets, "client.html"), // its query configures the page
  "/api/status": noQuery((_, ctx) => json(ctx.status.snapshot())),
  "/api/rounds": (url, ctx) => {
    const { since } = intQuery(url, { since: { min: 0, max: 1e9, default: 0 } });
    return json(ctx.status.roundMetrics(since));
  },
  "/metrics": noQuery((_, ctx) => ({
    status: 200,
    contentType: PROMETHEUS_CONTENT_TYPE,
    body: exposition(statusFamilies(ctx.status.snapshot())),
  })),
  "/data/mnist-shard": (url) => mnistShard(url),
  // Browsers ask for it on every page; an empty answer keeps their consoles free of 404s.
  "/favicon.ico": () => ({ status: 204, contentType: "image/x-icon", body: "" }),
};

function route(url: URL): Route | undefined {
  const exact = ROUTES[url.pathname];
  if (exact !== undefined) return exact;
  if (url.pathname.startsWith("/static/wasm/")) {
    return (u, ctx) => wasmFile(ctx.assets, u.pathname.slice("/static/wasm/".length));
  }
  if (url.pathname.startsWith("/static/")) {
    return (u, ctx) => assetFile(ctx.assets, u.pathname.slice("/static/".length));
  }
  return undefined;
}

/** The request listener: GET/HEAD only, JSON errors, isolation headers on every answer. */
export function createHttpHandler(
  ctx: HttpContext,
): (req: IncomingMessage, res: ServerResponse) => void {
  return (req, res) => {
    void answer(req, ctx).then(
      (r) => send(req, res, r),
      (error: unknown) => {
        debug("%s %s failed: %O", req.method, req.url, error);
        if (!res.headersSent) send(req, res, errorResponse(500, "internal error"));
        else res.destroy();
      },
    );
  };
}

async function answer(req: IncomingMessage, ctx: HttpContext): Promise<HttpResponse> {
  let url: URL;
  try {
    url = new URL(req.url ?? "/", "http://coordinator");
  } catch {
    return errorResponse(400, "malformed request URL");
  }
  const handler = route(url);
  if (handler === undefined) return errorResponse(404, `no route ${url.pathname}`);
  if (req.method !== "GET" && req.method !== "HEAD") {
    return errorResponse(405, `${req.method} ${url.pathname}: only GET and HEAD are allowed`);
  }
  try {
    return await handler(url, ctx);
  } catch (error) {
    if (error instanceof HttpError) return errorResponse(error.status, error.message);
    throw error;
  }
}
