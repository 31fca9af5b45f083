/** The coordinator's web routes: JSON status, Prometheus metrics, static files, strict queries. */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Coordinator, RunSummary } from "../coordinator/index.js";
import { exposition, statusFamilies, type StatusSnapshot } from "../coordinator/index.js";
import { CohortClient } from "../client/index.js";
import { decode } from "../protocol/codec.js";
import { parseDataset } from "../protocol/guards.js";
import { mnistShards, startClients, startCoordinator } from "./helpers/federation.js";
import { parsePrometheus, sampleValue } from "./helpers/prometheus.js";

let coordinator: Coordinator;
let clients: CohortClient[];
let summary: RunSummary;

beforeAll(async () => {
  const { shards, evalSet } = await mnistShards(2, 100, 300);
  coordinator = await startCoordinator({
    model: "mlp",
    rounds: 2,
    minAvailableClients: 2,
    runDir: null,
    codec: "q8", // a compressing codec, so the codec's figures mean something
    evalDataset: evalSet,
    serveDemoData: true,
  });
  clients = await startClients(coordinator.url, shards);
  summary = await coordinator.run();
});

afterAll(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await coordinator.close();
});

const get = (path: string, init?: RequestInit) => fetch(`${coordinator.url}${path}`, init);

describe("/metrics", () => {
  it("parses as Prometheus text exposition and matches the run", async () => {
    const response = await get("/metrics");
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toMatch(/^text\/plain; version=0\.0\.4/);
    const families = parsePrometheus(await response.text());
    expect(families.get("cohort_rounds_completed_total")?.type).toBe("counter");
    expect(families.get("cohort_round_duration_seconds")?.type).toBe("summary");
    expect(sampleValue(families, "cohort_rounds_completed_total")).toBe(2);
    expect(sampleValue(families, "cohort_round_duration_seconds_count")).toBe(2);
    const seconds = summary.rounds.reduce((s, r) => s + r.durationMs, 0) / 1000;
    expect(sampleValue(families, "cohort_round_duration_seconds_sum")).toBeCloseTo(seconds, 6);
    const bytesUp = summary.rounds.reduce((s, r) => s + r.bytesUp, 0);
    expect(sampleValue(families, "cohort_bytes_up_total")).toBe(bytesUp);
    expect(sampleValue(families, "cohort_global_accuracy")).toBe(summary.rounds[1]!.accuracy);
    expect(sampleValue(families, "cohort_phase", { phase: "done" })).toBe(1);
    expect(sampleValue(families, "cohort_phase", { phase: "training" })).toBe(0);
    expect(sampleValue(families, "cohort_clients_connected")).toBe(
      coordinator.status().clients.length,
    );
  });

  it("has the last round's bytes per direction and the codec's ratio and timings", async () => {
    const families = parsePrometheus(await (await get("/metrics")).text());
    const last = summary.rounds.at(-1)!;
    expect(sampleValue(families, "cohort_last_round_bytes_up")).toBe(last.bytesUp);
    expect(sampleValue(families, "cohort_last_round_bytes_down")).toBe(last.bytesDown);
    expect(sampleValue(families, "cohort_update_codec_info", { codec: "q8" })).toBe(1);
    const ratio = families.get("cohort_last_round_compression_ratio")!;
    expect(ratio.type).toBe("gauge");
    expect(ratio.help).toMatch(/^Float32 bytes of the accepted updates over the bytes/);
    expect(ratio.samples.map((x) => x.value)).toEqual([last.compressionRatio]);
    // 8 bits a coordinate instead of 32, less the per-layer scales and the msgpack framing.
    expect(last.compressionRatio!).toBeGreaterThan(3.5);
    expect(last.compressionRatio!).toBeLessThan(4);
    for (const [name, ms] of [
      ["cohort_last_round_encode_seconds", last.encodeMs],
      ["cohort_last_round_decode_seconds", last.decodeMs],
    ] as const) {
      expect(families.get(name)?.type, name).toBe("gauge");
      expect(ms, name).toBeGreaterThan(0);
      expect(sampleValue(families, name), name).toBeCloseTo(ms! / 1000, 12);
    }
  });

  it("takes the codec's figures from the last round that reported them", () => {
    const status = coordinator.status();
    const [first, second] = status.history;
    const secure = {
      ...second!,
      round: 3,
      secure: true,
      codec: null,
      compressionRatio: null,
      encodeMs: null,
      decodeMs: null,
    };
    const names = (history: StatusSnapshot["history"]) =>
      statusFamilies({ ...status, history }).map((f) => f.name);
    // A secure round reports none: the gauges keep round 2's figures.
    const families = parsePrometheus(
      exposition(statusFamilies({ ...status, history: [first!, second!, secure] })),
    );
    expect(sampleValue(families, "cohort_last_round_compression_ratio")).toBe(
      second!.compressionRatio,
    );
    expect(sampleValue(families, "cohort_last_round_bytes_up")).toBe(secure.bytesUp);
    // Before any round, and in runs that never report them, the families are absent.
    for (const history of [[], [secure]]) {
      expect(names(history)).not.toContain("cohort_update_codec_info");
      expect(names(history)).not.toContain("cohort_last_round_compression_ratio");
      expect(names(history)).not.toContain("cohort_last_round_encode_seconds");
      expect(names(history)).not.toContain("cohort_last_round_decode_seconds");
    }
    expect(names([])).toContain("cohort_last_round_bytes_up");
  });

  it("escapes label values and help text", () => {
    const text = exposition([
      {
        name: "x_info",
        help: 'a \\ back\nslash "help"',
        type: "gauge",
        samples: [{ labels: { a: 'q"uote', b: "back\\slash", c: "new\nline" }, value: NaN }],
      },
    ]);
    const f = parsePrometheus(text).get("x_info")!;
    expect(f.help).toBe('a \\ back\nslash "help"');
    expect(f.samples[0]!.labels).toEqual({ a: 'q"uote', b: "back\\slash", c: "new\nline" });
    expect(f.samples[0]!.value).toBeNaN();
  });

  it("the parser is strict", () => {
    const bad = [
      "x 1", // no newline at the end
      "x 1\n", // no TYPE
      "# TYPE x gauge\nx{a=1} 1\n", // unquoted label
      "# TYPE x gauge\nx one\n", // bad value
      "# TYPE x gauge\nx 1\nx 2\n", // duplicate series
      "# TYPE x gauge\nx 1\n# TYPE y gauge\ny 1\n# TYPE x gauge\n", // split family
      "# TYPE x gauge\nx_sum 1\n", // suffix on a gauge
      '# TYPE x gauge\nx{a="\\t"} 1\n', // bad escape
      "# TYPE x kind\n", // bad type
    ];
    for (const text of bad) expect(() => parsePrometheus(text), text).toThrow();
  });
});

describe("JSON status", () => {
  it("/api/status is the coordinator's status", async () => {
    const status = (await (await get("/api/status")).json()) as StatusSnapshot;
    expect(status).toEqual(JSON.parse(JSON.stringify(coordinator.status())));
    expect(status.roundsCompleted).toBe(2);
    expect(status.phase).toBe("done");
    expect(status.history.map((p) => p.accuracy)).toEqual(summary.rounds.map((r) => r.accuracy));
  });

  it("each round of the history has its bytes per direction and its codec's figures", async () => {
    const status = (await (await get("/api/status")).json()) as StatusSnapshot;
    const pick = (p: StatusSnapshot["history"][number] | RunSummary["rounds"][number]) => ({
      bytesUp: p.bytesUp,
      bytesDown: p.bytesDown,
      codec: p.codec,
      compressionRatio: p.compressionRatio,
      encodeMs: p.encodeMs,
      decodeMs: p.decodeMs,
    });
    expect(status.history.map(pick)).toEqual(summary.rounds.map(pick));
    for (const p of status.history) {
      expect(p.codec).toBe("q8");
      expect(p.bytesUp).toBeGreaterThan(0);
      // Down is the float32 model to each client, up their q8 updates: about a quarter of it.
      expect(p.bytesDown / p.bytesUp).toBeCloseTo(p.compressionRatio!, 0);
    }
  });

  it("/api/rounds lists round metrics, from ?since", async () => {
    const all = (await (await get("/api/rounds")).json()) as { round: number }[];
    expect(all.map((r) => r.round)).toEqual([1, 2]);
    const later = (await (await get("/api/rounds?since=1")).json()) as { round: number }[];
    expect(later.map((r) => r.round)).toEqual([2]);
  });
});

describe("errors", () => {
  it("answers unknown paths 404, bad queries 400 with a message, other methods 405", async () => {
    const cases: [string, number, RegExp][] = [
      ["/nope", 404, /no route \/nope/],
      ["/static/../package.json", 404, /no route|no file/],
      ["/static/wasm/other.wasm", 404, /no wasm file other\.wasm/],
      ["/api/rounds?since=abc", 400, /"since" must be an integer in \[0, /],
      ["/api/status?verbose=1", 400, /unknown query parameter "verbose"/],
      ["/data/mnist-shard?count=3", 400, /"index" is required/],
      ["/data/mnist-shard?index=3&count=3", 400, /index must be below count \(3\), got 3/],
      ["/data/mnist-shard?index=0&count=0", 400, /"count" must be an integer in \[1, 1000\]/],
      ["/data/mnist-shard?index=0&count=2&index=1", 400, /given twice/],
    ];
    for (const [path, status, message] of cases) {
      const response = await get(path);
      expect(response.status, path).toBe(status);
      const body = (await response.json()) as { status: number; error: string };
      expect(body.status).toBe(status);
      expect(body.error, path).toMatch(message);
    }
    const post = await get("/api/status", { method: "POST" });
    expect(post.status).toBe(405);
    expect(post.headers.get("allow")).toBe("GET, HEAD");
  });
});

describe("static files", () => {
  it("serves pages, the bundle and the wasm binaries with cross-origin isolation", async () => {
    const expected: [string, RegExp][] = [
      ["/", /^text\/html/],
      ["/client?backend=wasm", /^text\/html/],
      ["/static/cohort.js", /^text\/javascript/],
      ["/static/dashboard.js", /^text\/javascript/],
      ["/static/style.css", /^text\/css/],
      ["/static/wasm/tfjs-backend-wasm-threaded-simd.wasm", /^application\/wasm$/],
    ];
    for (const [path, type] of expected) {
      const response = await get(path);
      expect(response.status, path).toBe(200);
      expect(response.headers.get("content-type"), path).toMatch(type);
      expect(response.headers.get("cross-origin-opener-policy")).toBe("same-origin");
      expect(response.headers.get("cross-origin-embedder-policy")).toBe("require-corp");
      const body = new Uint8Array(await response.arrayBuffer());
      if (path.endsWith(".wasm")) expect([...body.subarray(0, 4)]).toEqual([0, 0x61, 0x73, 0x6d]);
    }
    const head = await get("/static/cohort.js", { method: "HEAD" });
    expect(head.status).toBe(200);
    expect(Number(head.headers.get("content-length"))).toBeGreaterThan(0);
  });

  it("/data/mnist-shard is a msgpack dataset", async () => {
    const response = await get("/data/mnist-shard?index=1&count=4&limit=50");
    expect(response.headers.get("content-type")).toBe("application/msgpack");
    const data = parseDataset(decode(new Uint8Array(await response.arrayBuffer())));
    expect(data.name).toBe("mnist:train[1/4]");
    expect(data.labels.length).toBe(50);
    expect(data.features.length).toBe(50 * 784);
    expect(data.sampleShape).toEqual([28, 28, 1]);
  });
});
