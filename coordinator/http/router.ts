/** The coordinator's web routes, served beside socket.io on the same http server. */
import type { IncomingMessage, ServerResponse } from "node:http";
import createDebug from "debug";
import { corsHeaders, preflight, unauthorized, type AccessPolicy } from "./access.js";
import { assetFile, wasmFile, type Assets } from "./assets.js";
import { mnistShard } from "./data.js";
import { exposition, PROMETHEUS_CONTENT_TYPE, statusFamilies } from "./prometheus.js";
import { intQuery } from "./query.js";
import { errorResponse, HttpError, json, send, type HttpResponse } from "./respond.js";
import type { StatusTracker } from "./status.js";
import type { ModelService } from "../model-service.js";
import { modelFiles, modelIndex, predict } from "./models.js";

const debug = createDebug("cohort:coordinator:http");

/** What the routes read. */
export interface HttpContext {
  status: StatusTracker;
  assets: Assets;
  access: AccessPolicy;
  /** The run's model versions; null: no model routes (404). */
  models: ModelService | null;
}

type Route = (
  url: URL,
  ctx: HttpContext,
  req: IncomingMessage,
) => HttpResponse | Promise<HttpResponse>;

/**
 * Who may read a route: `page` and `asset` hold no data and stay public (the dashboard page
 * must load to ask for the token); assets also carry `Access-Control-Allow-Origin: *`, as pages
 * on other origins import the bundle as a module. `data` takes the bearer token and CORS by origin.
 */
type Access = "page" | "asset" | "data";

interface Entry {
  access: Access;
  serve: Route;
  /** @default GET and HEAD */
  methods?: readonly string[];
}

/** Routes without a query; a query on them is a 400 (`intQuery` with no parameters). */
const noQuery =
  (route: Route): Route =>
  (url, ctx, req) => {
    intQuery(url, {});
    return route(url, ctx, req);
  };

const page = (serve: Route): Entry => ({ access: "page", serve });
const data = (serve: Route): Entry => ({ access: "data", serve });

/** Exact paths; `/static/…` is matched by prefix below. */
const ROUTES: Record<string, Entry> = {
  "/": page(noQuery((_, ctx) => assetFile(ctx.assets, "index.html"))),
  "/client": page((_, ctx) => assetFile(ctx.assets, "client.html")), // its query configures the page
  "/api/status": data(noQuery((_, ctx) => json(ctx.status.snapshot()))),
  "/api/rounds": data((url, ctx) => {
    const { since } = intQuery(url, { since: { min: 0, max: 1e9, default: 0 } });
    return json(ctx.status.roundMetrics(since));
  }),
  "/api/models": data(noQuery((_, ctx, req) => modelIndex(req, ctx.models))),
  "/api/predict": {
    access: "data",
    methods: ["POST"],
    serve: noQuery((_, ctx, req) => predict(req, ctx.models)),
  },
  "/metrics": data(
    noQuery((_, ctx) => ({
      status: 200,
      contentType: PROMETHEUS_CONTENT_TYPE,
      body: exposition(statusFamilies(ctx.status.snapshot())),
    })),
  ),
  "/data/mnist-shard": data((url, ctx) => {
    if (!ctx.access.serveDemoData) {
      throw new HttpError(
        404,
        "the demo data is off: start the coordinator with --serve-demo-data (option serveDemoData)",
      );
    }
    return mnistShard(url);
  }),
  // Browsers ask for it on every page; an empty answer keeps their consoles free of 404s.
  "/favicon.ico": page(() => ({ status: 204, contentType: "image/x-icon", body: "" })),
};

function route(url: URL): Entry | undefined {
  const exact = ROUTES[url.pathname];
  if (exact !== undefined) return exact;
  if (url.pathname.startsWith("/api/models/")) {
    return data(
      noQuery((u, ctx, req) =>
        modelFiles(req, ctx.models, u.pathname.slice("/api/models/".length)),
      ),
    );
  }
  if (url.pathname.startsWith("/static/wasm/")) {
    return {
      access: "asset",
      serve: (u, ctx) => wasmFile(ctx.assets, u.pathname.slice("/static/wasm/".length)),
    };
  }
  if (url.pathname.startsWith("/static/")) {
    return {
      access: "asset",
      serve: (u, ctx) => assetFile(ctx.assets, u.pathname.slice("/static/".length)),
    };
  }
  return undefined;
}

/** The request listener: GET/HEAD (and preflights) only, JSON errors, isolation headers on every answer. */
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
  const entry = route(url);
  if (entry === undefined) return errorResponse(404, `no route ${url.pathname}`);
  const methods = entry.methods ?? ["GET", "HEAD"];
  if (entry.access === "data" && req.method === "OPTIONS") {
    return preflight(ctx.access, req, methods);
  }
  // Every answer of the route carries its CORS headers, errors included, so a page allowed to
  // read the route can read why it failed.
  const cors: Record<string, string> =
    entry.access === "data"
      ? corsHeaders(ctx.access, req)
      : entry.access === "asset"
        ? { "Access-Control-Allow-Origin": "*" }
        : {};
  const withCors = (r: HttpResponse): HttpResponse => ({
    ...r,
    headers: { ...r.headers, ...cors },
  });
  if (!methods.includes(req.method ?? "")) {
    const allowed = methods.join(", ");
    return withCors({
      ...errorResponse(405, `${req.method} ${url.pathname}: only ${allowed} allowed`),
      headers: { Allow: allowed },
    });
  }
  if (entry.access === "data") {
    const refused = unauthorized(ctx.access, req);
    if (refused !== null) return withCors(refused);
  }
  try {
    return withCors(await entry.serve(url, ctx, req));
  } catch (error) {
    if (error instanceof HttpError) {
      return withCors(errorResponse(error.status, error.message, error.code));
    }
    throw error;
  }
}
