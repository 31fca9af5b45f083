/** The model API over real HTTP: the version index, versions as tfjs models, predictions. */
import { describe, expect, it } from "vitest";
import { decode, encode } from "../protocol/codec.js";
import { loadModel } from "../models/files.js";
import { predictExamples } from "../models/predict.js";
import { MAX_PREDICT_EXAMPLES } from "../coordinator/model-service.js";
import {
  closeAfterEach,
  mnistShards,
  startClients,
  startCoordinator,
} from "./helpers/federation.js";

const started = closeAfterEach();
const TOKEN = "model-api-token-0123456789";

/** A finished 4-round run of two clients (promotion off: the last version is promoted). */
async function finishedRun(extra: Record<string, unknown> = {}) {
  const { shards, evalSet } = await mnistShards(2, 100, 200);
  const coordinator = await startCoordinator({
    model: "mlp",
    rounds: 4,
    minAvailableClients: 2,
    minFitClients: 2,
    evalDataset: evalSet,
    runDir: null,
    keepVersions: 1,
    ...extra,
  });
  started.coordinator = coordinator;
  started.clients = await startClients(coordinator.url, shards);
  const summary = await coordinator.run();
  return { coordinator, summary, evalSet };
}

describe("GET /api/models", () => {
  it("answers 503 before the run, then lists every version with an ETag and 304s when unchanged", async () => {
    const coordinator = await startCoordinator({ model: "mlp", runDir: null, rounds: 1 });
    started.coordinator = coordinator;
    const early = await fetch(`${coordinator.url}/api/models`);
    expect(early.status).toBe(503);
    expect(await early.json()).toMatchObject({ code: "NO_ACTIVE_ROUND" });
    await coordinator.close();
    const { coordinator: c } = await finishedRun();
    const first = await fetch(`${c.url}/api/models`);
    expect(first.status).toBe(200);
    const etag = first.headers.get("etag")!;
    const index = (await first.json()) as {
      promoted: number;
      latest: number;
      versions: { version: number; status: string; checksum: string; weightsKept: boolean }[];
    };
    expect(index.latest).toBe(4);
    expect(index.promoted).toBe(4);
    expect(index.versions.map((v) => v.version)).toEqual([0, 1, 2, 3, 4]);
    // The promoted (= latest) and one more: --keep-versions 1.
    expect(index.versions.map((v) => v.weightsKept)).toEqual([false, false, false, true, true]);
    const again = await fetch(`${c.url}/api/models`, { headers: { "If-None-Match": etag } });
    expect(again.status).toBe(304);
    expect(await again.text()).toBe("");
  });
});

describe("GET /api/models/:version", () => {
  it("serves each kept version as a model the project's loadModel reads, with its checksum as ETag", async () => {
    const { coordinator, summary } = await finishedRun();
    const store = coordinator.versions()!;
    const model = await loadModel(`${coordinator.url}/api/models/3`);
    const weights = model.getWeights().map((t) => t.dataSync());
    expect(weights).toEqual(await store.weightsOf(3));
    model.dispose();
    const promoted = await loadModel(`${coordinator.url}/api/models/promoted`);
    expect(promoted.getWeights().map((t) => t.dataSync())).toEqual(summary.weights);
    promoted.dispose();
    const head = await fetch(`${coordinator.url}/api/models/promoted`);
    expect(head.headers.get("etag")).toBe(`"${store.get(4)!.checksum}"`);
    expect(head.headers.get("x-cohort-version")).toBe("4");
    const cached = await fetch(`${coordinator.url}/api/models/4/weights.bin`, {
      headers: { "If-None-Match": head.headers.get("etag")! },
    });
    expect(cached.status).toBe(304);
    // Through the client library too.
    const viaClient = await started.clients[0]!.promotedModel();
    expect(viaClient.getWeights().map((t) => t.dataSync())).toEqual(summary.weights);
    viaClient.dispose();
  });

  it("answers 404 for an unknown version, 400 for a malformed one and 410 for pruned weights", async () => {
    const { coordinator } = await finishedRun();
    const status = async (path: string) => {
      const r = await fetch(`${coordinator.url}${path}`);
      return [r.status, ((await r.json()) as { error: string }).error] as const;
    };
    expect(await status("/api/models/99")).toEqual([404, "no version 99"]);
    for (const bad of ["abc", "-1", "1.5", "01", "99999999999"]) {
      expect((await status(`/api/models/${bad}`))[0]).toBe(400);
    }
    expect((await status("/api/models/3/other.bin"))[0]).toBe(404);
    const [code, why] = await status("/api/models/1/weights.bin");
    expect(code).toBe(410);
    expect(why).toMatch(/pruned/);
    // The version's model.json is still served: its index entry stays.
    expect((await fetch(`${coordinator.url}/api/models/1`)).status).toBe(200);
  });
});

describe("POST /api/predict", () => {
  it("runs the promoted model on a batch, in JSON and in msgpack, as predictExamples does", async () => {
    const { coordinator, evalSet } = await finishedRun();
    const size = evalSet.sampleShape.reduce((a, b) => a * b, 1);
    const rows = Array.from({ length: 5 }, (_, i) =>
      Array.from(evalSet.features.subarray(i * size, (i + 1) * size)),
    );
    const local = await loadModel(`${coordinator.url}/api/models/promoted`);
    const expected = await predictExamples(local, {
      rows: rows.map((r) => Float64Array.from(r)),
      names: rows.map((_, i) => `${i}`),
    });
    local.dispose();
    const viaJson = await fetch(`${coordinator.url}/api/predict`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ inputs: rows }),
    });
    expect(viaJson.status).toBe(200);
    const answer = (await viaJson.json()) as { version: number; predictions: unknown[] };
    expect(answer.version).toBe(4);
    expect(answer.predictions).toEqual(expected);
    const viaPack = await fetch(`${coordinator.url}/api/predict`, {
      method: "POST",
      headers: { "Content-Type": "application/msgpack" },
      body: Buffer.from(encode({ inputs: rows.map((r) => Float32Array.from(r)) })),
    });
    expect(viaPack.headers.get("content-type")).toBe("application/msgpack");
    const packed = decode(new Uint8Array(await viaPack.arrayBuffer())) as typeof answer;
    expect(packed.predictions.map((p) => (p as { argmax: number }).argmax)).toEqual(
      expected.map((p) => p.argmax),
    );
  });

  it("refuses malformed batches with a status and a code, and goes on serving", async () => {
    const { coordinator } = await finishedRun({ apiToken: TOKEN });
    const auth = { Authorization: `Bearer ${TOKEN}` };
    const post = async (
      body: string | Uint8Array,
      type = "application/json",
      headers: Record<string, string> = auth,
    ) => {
      const r = await fetch(`${coordinator.url}/api/predict`, {
        method: "POST",
        headers: { "Content-Type": type, ...headers },
        body: typeof body === "string" ? body : Buffer.from(body),
      });
      const text = await r.text();
      return { status: r.status, body: JSON.parse(text) as { code?: string; error: string } };
    };
    const row = new Array(784).fill(0.5);
    expect((await post(JSON.stringify({ inputs: [row] }), "application/json", {})).status).toBe(
      401,
    );
    expect(await post("{not json")).toMatchObject({
      status: 400,
      body: { code: "MALFORMED_PAYLOAD" },
    });
    expect(await post(new Uint8Array([0xc1, 0xff]), "application/msgpack")).toMatchObject({
      status: 400,
      body: { code: "MALFORMED_PAYLOAD" },
    });
    expect(await post(JSON.stringify({ rows: [row] }))).toMatchObject({
      status: 400,
      body: { code: "INVALID_MESSAGE" },
    });
    expect(await post(JSON.stringify({ inputs: [row, row.slice(1)] }))).toMatchObject({
      status: 400,
      body: { code: "SHAPE_MISMATCH", error: expect.stringMatching(/inputs\[1\] has 783 values/) },
    });
    expect(
      await post(
        encode({ inputs: [Float32Array.from(row).fill(Number.NaN, 3, 4)] }),
        "application/msgpack",
      ),
    ).toMatchObject({
      status: 400,
      body: { code: "NON_FINITE", error: "inputs[0][3] is not a finite number" },
    });
    expect(
      await post(JSON.stringify({ inputs: new Array(MAX_PREDICT_EXAMPLES + 1).fill([1]) })),
    ).toMatchObject({ status: 413, body: { code: "PAYLOAD_TOO_LARGE" } });
    expect(await post(new Uint8Array(9 * 1024 * 1024), "application/msgpack")).toMatchObject({
      status: 413,
      body: { code: "PAYLOAD_TOO_LARGE" },
    });
    const get = await fetch(`${coordinator.url}/api/predict`, { headers: auth });
    expect(get.status).toBe(405);
    expect(get.headers.get("allow")).toBe("POST");
    // Still serving, and still right.
    expect((await post(JSON.stringify({ inputs: [row] }))).status).toBe(200);
    expect((await fetch(`${coordinator.url}/api/status`, { headers: auth })).status).toBe(200);
  });
});
