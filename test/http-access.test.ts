/** Attacks on the coordinator's HTTP surface: no token, other origins, anonymous demo data, slow and numerous connections. */
import { connect, type Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Coordinator } from "../coordinator/index.js";
import { decode } from "../protocol/codec.js";
import { parseDataset } from "../protocol/guards.js";
import { startCoordinator } from "./helpers/federation.js";
import { connectRaw } from "./helpers/raw-client.js";

const TOKEN = "s3cret-token-of-24-chars";
const LISTED = "https://ops.example";

/** Open a raw TCP connection to the coordinator, reading (and dropping) what it answers. */
function openSocket(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, "127.0.0.1", () => resolve(socket));
    socket.once("error", reject);
    socket.resume(); // a paused socket never reads the server's close
  });
}

/** Resolves with the milliseconds from now until the socket closes. */
function closeTime(socket: Socket): Promise<number> {
  const start = Date.now();
  return new Promise((resolve) => socket.once("close", () => resolve(Date.now() - start)));
}

/** A well-formed request on a fresh raw socket; resolves with the status line. */
async function rawStatusLine(port: number, path: string): Promise<string> {
  const socket = await openSocket(port);
  return new Promise((resolve, reject) => {
    let text = "";
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => (text += chunk));
    socket.once("error", reject);
    socket.once("close", () => resolve(text.split("\r\n")[0] ?? ""));
    socket.write(`GET ${path} HTTP/1.1\r\nHost: coordinator\r\nConnection: close\r\n\r\n`);
  });
}

describe("with an API token", () => {
  let guarded: Coordinator;
  beforeAll(async () => {
    guarded = await startCoordinator({
      runDir: null,
      apiToken: TOKEN,
      corsOrigins: [LISTED],
      serveDemoData: true,
    });
  });
  afterAll(() => guarded.close());

  const get = (path: string, init: RequestInit = {}) => fetch(`${guarded.url}${path}`, init);
  const bearer = (token: string) => ({ headers: { Authorization: `Bearer ${token}` } });
  const DATA_ROUTES = [
    "/api/status",
    "/api/rounds",
    "/metrics",
    "/data/mnist-shard?index=0&count=4&limit=5",
  ];

  it("a request without the bearer token gets 401 from /api/status, /api/rounds and /metrics", async () => {
    for (const path of DATA_ROUTES) {
      const response = await get(path);
      expect(response.status, path).toBe(401);
      expect(response.headers.get("www-authenticate"), path).toBe('Bearer realm="cohort"');
      const body = (await response.json()) as { status: number; error: string };
      expect(body).toEqual({ status: 401, error: expect.stringMatching(/Bearer token/) });
      expect((await get(path, { method: "HEAD" })).status, `HEAD ${path}`).toBe(401);
    }
    // Refused before the query is parsed: no probing the routes without the token.
    expect((await get("/api/rounds?since=abc")).status).toBe(401);
  });

  it("a wrong token, another scheme or a prefix of the token gets 401; the right one 200", async () => {
    const refused: [string, RequestInit][] = [
      ["wrong", bearer("x".repeat(TOKEN.length))],
      ["prefix", bearer(TOKEN.slice(0, -1))],
      ["longer", bearer(`${TOKEN}x`)],
      ["basic", { headers: { Authorization: `Basic ${btoa(`u:${TOKEN}`)}` } }],
      ["bare", { headers: { Authorization: TOKEN } }],
    ];
    for (const [name, init] of refused) {
      const response = await get("/api/status", init);
      expect(response.status, name).toBe(401);
      await response.body?.cancel();
    }
    const wrong = await get("/metrics", bearer("not-the-token-at-all"));
    expect(wrong.headers.get("www-authenticate")).toBe(
      'Bearer realm="cohort", error="invalid_token"',
    );
    for (const path of DATA_ROUTES) {
      const response = await get(path, bearer(TOKEN));
      expect(response.status, path).toBe(200);
      if (path.startsWith("/data/")) {
        const data = parseDataset(decode(new Uint8Array(await response.arrayBuffer())));
        expect(data.labels.length).toBe(5);
      } else await response.body?.cancel();
    }
    const lower = await get("/api/status", { headers: { Authorization: `bearer ${TOKEN}` } });
    expect(lower.status).toBe(200); // the scheme is case-insensitive (RFC 7235)
    await lower.body?.cancel();
  });

  it("the dashboard page, the client page and their static files load without the token", async () => {
    for (const path of ["/", "/client", "/static/dashboard.js", "/static/style.css"]) {
      const response = await get(path);
      expect(response.status, path).toBe(200);
      expect(response.headers.get("www-authenticate"), path).toBeNull();
      await response.body?.cancel();
    }
  });

  it("a listed origin may read a 401 and the answer with the token", async () => {
    const refused = await get("/api/status", { headers: { Origin: LISTED } });
    expect(refused.status).toBe(401);
    expect(refused.headers.get("access-control-allow-origin")).toBe(LISTED);
    await refused.body?.cancel();
    const preflight = await get("/metrics", {
      method: "OPTIONS",
      headers: {
        Origin: LISTED,
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization",
      },
    });
    expect(preflight.status).toBe(204); // preflights carry no credentials: answered before auth
    expect(preflight.headers.get("access-control-allow-headers")).toBe("Authorization");
  });
});

describe("with the default options", () => {
  let open: Coordinator;
  beforeAll(async () => {
    open = await startCoordinator({ runDir: null });
  });
  afterAll(() => open.close());

  const get = (path: string, init: RequestInit = {}) => fetch(`${open.url}${path}`, init);

  it("the demo data route is off unless serveDemoData", async () => {
    const response = await get("/data/mnist-shard?index=0&count=2");
    expect(response.status).toBe(404);
    const body = (await response.json()) as { error: string };
    expect(body.error).toMatch(/demo data is off.*--serve-demo-data/);
    // The rest stays open without a token.
    expect((await get("/api/status")).status).toBe(200);
  });

  it("no origin gets a CORS header from the data routes; static files stay embeddable", async () => {
    for (const path of ["/api/status", "/api/rounds", "/metrics"]) {
      const response = await get(path, { headers: { Origin: "https://evil.example" } });
      expect(response.status, path).toBe(200);
      expect(response.headers.get("access-control-allow-origin"), path).toBeNull();
      await response.body?.cancel();
    }
    const preflight = await get("/api/status", {
      method: "OPTIONS",
      headers: { Origin: "https://evil.example", "Access-Control-Request-Method": "GET" },
    });
    expect(preflight.status).toBe(403);
    expect(preflight.headers.get("access-control-allow-origin")).toBeNull();
    // The bundle holds no data; pages elsewhere import it as a module, which takes CORS.
    const bundle = await get("/static/cohort.js", { method: "HEAD" });
    expect(bundle.headers.get("access-control-allow-origin")).toBe("*");
  });
});

describe("CORS origins", () => {
  let c: Coordinator;
  beforeAll(async () => {
    c = await startCoordinator({ runDir: null, corsOrigins: [LISTED, "http://localhost:3000"] });
  });
  afterAll(() => c.close());

  const request = (path: string, init: RequestInit) => fetch(`${c.url}${path}`, init);

  it("a listed origin gets its CORS header and an unlisted one none", async () => {
    for (const path of ["/api/status", "/metrics"]) {
      const listed = await request(path, { headers: { Origin: "http://localhost:3000" } });
      expect(listed.headers.get("access-control-allow-origin"), path).toBe("http://localhost:3000");
      expect(listed.headers.get("vary"), path).toBe("Origin");
      await listed.body?.cancel();
      for (const origin of ["https://evil.example", `${LISTED}.evil`, "null"]) {
        const other = await request(path, { headers: { Origin: origin } });
        expect(other.status).toBe(200);
        expect(other.headers.get("access-control-allow-origin"), origin).toBeNull();
        expect(other.headers.get("vary")).toBe("Origin");
        await other.body?.cancel();
      }
    }
  });

  it("a preflight is answered for listed origins and GET only; other OPTIONS get 403 or 405", async () => {
    const preflight = (origin: string | null, method: string | null) => {
      const headers: Record<string, string> = {};
      if (origin !== null) headers.Origin = origin;
      if (method !== null) headers["Access-Control-Request-Method"] = method;
      return request("/api/rounds", { method: "OPTIONS", headers });
    };
    const ok = await preflight(LISTED, "GET");
    expect(ok.status).toBe(204);
    expect(ok.headers.get("access-control-allow-origin")).toBe(LISTED);
    expect(ok.headers.get("access-control-allow-methods")).toBe("GET, HEAD");
    expect(ok.headers.get("access-control-allow-headers")).toBe("Authorization");
    expect((await preflight("https://evil.example", "GET")).status).toBe(403);
    expect((await preflight(LISTED, "DELETE")).status).toBe(405);
    expect((await preflight(null, null)).status).toBe(405);
    expect((await preflight(LISTED, null)).status).toBe(405);
    // Pages are not data routes: no preflight there.
    expect((await request("/", { method: "OPTIONS" })).status).toBe(405);
  });
});

describe("options", () => {
  it("refuses a short API token, an origin with a path and headers outlasting the request", async () => {
    const cases: [Parameters<typeof startCoordinator>[0], RegExp][] = [
      [{ apiToken: "short" }, /apiToken: the API token has 5 characters; it needs at least 16/],
      [{ apiToken: "sixteen chars ok?" }, /visible ASCII without spaces/],
      [{ corsOrigins: ["https://ops.example/"] }, /not an origin; did you mean https:\/\/ops/],
      [{ corsOrigins: ["*"] }, /"\*" is not an origin/],
      [{ headersTimeoutMs: 5000, requestTimeoutMs: 1000 }, /cannot exceed requestTimeoutMs/],
      [{ maxConnectionsPerAddress: 0 }, /maxConnectionsPerAddress must be an integer/],
    ];
    for (const [options, message] of cases) {
      await expect(startCoordinator({ runDir: null, ...options })).rejects.toThrow(message);
    }
  });
});

describe("slow and numerous connections", () => {
  it("a connection dripping header lines is cut after headersTimeoutMs, a websocket client is not", async () => {
    const c = await startCoordinator({
      runDir: null,
      headersTimeoutMs: 1000,
      requestTimeoutMs: 1500,
    });
    const timers: NodeJS.Timeout[] = [];
    try {
      const ws = await connectRaw(c.url, "steady");
      const dripping = await Promise.all(Array.from({ length: 5 }, () => openSocket(c.port)));
      const silent = await openSocket(c.port);
      const closes = [...dripping, silent].map(closeTime);
      for (const socket of dripping) {
        socket.on("error", () => undefined);
        socket.write("GET / HTTP/1.1\r\n");
        let n = 0;
        timers.push(setInterval(() => socket.write(`X-Drip-${n++}: 1\r\n`), 200));
      }
      const waited = await Promise.all(closes);
      // Cut at the timeout plus at most one check interval (1 s), well before Node's 60 s + 30 s.
      for (const ms of waited) expect(ms).toBeLessThan(3000);
      // Past both timeouts, the upgraded socket.io connection is still there.
      await new Promise((r) => setTimeout(r, Math.max(0, 2000 - Math.min(...waited))));
      expect(ws.socket.connected).toBe(true);
      expect(c.clients()).toEqual(["steady"]);
      ws.close();
      expect(await rawStatusLine(c.port, "/favicon.ico")).toBe("HTTP/1.1 204 No Content");
    } finally {
      timers.forEach(clearInterval);
      await c.close();
    }
  });

  it("connections beyond maxConnectionsPerAddress from one address are closed", async () => {
    const c = await startCoordinator({ runDir: null, maxConnectionsPerAddress: 3 });
    try {
      const held = await Promise.all([0, 1, 2].map(() => openSocket(c.port)));
      const extra = await openSocket(c.port);
      const received: Buffer[] = [];
      extra.on("data", (d: Buffer) => received.push(d));
      extra.on("error", () => undefined);
      expect(await closeTime(extra)).toBeLessThan(1000);
      expect(received).toEqual([]); // closed before any HTTP was spoken
      for (const socket of held) expect(socket.destroyed).toBe(false);
      // A closed connection frees its place for the next one.
      const freed = closeTime(held[0]!);
      held[0]!.end();
      await freed;
      // The server counts the close a moment after the client sees it: retry a few times.
      let line = "";
      for (let i = 0; i < 20 && line === ""; i++) {
        line = await rawStatusLine(c.port, "/favicon.ico");
        if (line === "") await new Promise((r) => setTimeout(r, 50));
      }
      expect(line).toBe("HTTP/1.1 204 No Content");
      held.forEach((s) => s.destroy());
    } finally {
      await c.close();
    }
  });
});
