import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { describe, expect, it } from "vitest";
import { CohortClient } from "../client/index.js";
import { expectCohortError } from "./helpers/errors.js";
import { mnistShards, startCoordinator } from "./helpers/federation.js";
import { freePort } from "./helpers/redis.js";
import { until } from "./helpers/wait.js";
import { digitsClientArgs, runCli } from "./helpers/cli.js";

describe("a client says what went wrong", () => {
  it("refuses a URL it could never connect to at construction", async () => {
    const { shards } = await mnistShards(1, 10, 10);
    const make = (url: string) => () => new CohortClient({ url, data: shards[0]!, backend: "cpu" });
    expectCohortError(make("not a url"), "INVALID_OPTION", /"not a url" is not a URL/);
    expectCohortError(make("htp://localhost:1"), "INVALID_OPTION", /must be http:\/\/.*not htp:/);
    expectCohortError(make(""), "INVALID_OPTION", /url is required/);
    // A cluster's nodes, comma-separated: each entry is checked.
    expectCohortError(
      make("http://a:1,ftp://b:2"),
      "INVALID_OPTION",
      /"ftp:\/\/b:2" must be http:\/\/.*not ftp:/,
    );
    expectCohortError(make("http://a:1,,http://b:2"), "INVALID_OPTION", /empty entry/);
  });

  it("tries the URLs of a list in turn until a node answers", async () => {
    const { shards } = await mnistShards(1, 10, 10);
    const coordinator = await startCoordinator({
      minAvailableClients: 1,
      minFitClients: 1,
      rounds: 1,
    });
    const dead = `http://127.0.0.1:${await freePort()}`;
    const client = new CohortClient({
      url: `${dead}, ${coordinator.url}`,
      data: shards[0]!,
      backend: "cpu",
      reconnectDelayMs: 20,
      reconnectDelayMaxMs: 50,
      log: () => undefined,
      logError: () => undefined,
    });
    try {
      await client.start();
      expect(client.url).toBe(coordinator.url);
      await until(() => coordinator.clients().length === 1);
    } finally {
      await client.close();
      await coordinator.close();
    }
  });

  it("after a failed attempt tries the same node once more, then each node of its list in turn", async () => {
    const { shards } = await mnistShards(1, 10, 10);
    const [a, b] = [await freePort(), await freePort()].map((p) => `http://127.0.0.1:${p}`);
    const tried: string[] = [];
    const client = new CohortClient({
      url: `${a},${b}`,
      data: shards[0]!,
      backend: "cpu",
      reconnectDelayMs: 20,
      reconnectDelayMaxMs: 100,
      log: () => undefined,
      logError: (line) => tried.push(/coordinator at (\S+):/.exec(line)?.[1] ?? line),
    });
    void client.start().catch(() => undefined);
    try {
      await until(() => tried.length >= 6, 10_000);
      expect(tried.slice(0, 6)).toEqual([a, a, b, a, b, a]);
    } finally {
      await client.close();
    }
  });

  it("checks its data at construction: NaN and ∞ named by example, Float64 and plain arrays converted, other arrays refused clearly", async () => {
    const { shards } = await mnistShards(1, 10, 10);
    const data = shards[0]!;
    const make = (d: object) => () =>
      new CohortClient({ url: "http://localhost:1", data: d as typeof data, backend: "cpu" });
    const features = Float32Array.from(data.features);
    features[3 * 784 + 5] = Number.NaN;
    expectCohortError(
      make({ ...data, features }),
      "DATASET_INVALID",
      /example 3 holds NaN \(feature 5\)/,
    );
    features[3 * 784 + 5] = 0;
    features[9 * 784] = Infinity;
    expectCohortError(make({ ...data, features }), "DATASET_INVALID", /example 9 holds Infinity/);
    // Float64Array and plain arrays are converted; the client trains on float32 copies.
    const converted = make({
      ...data,
      features: Float64Array.from(data.features),
      labels: [...data.labels],
    })();
    expect(converted.options.data.features).toBeInstanceOf(Float32Array);
    expect(converted.options.data.labels).toBeInstanceOf(Int32Array);
    expect([...converted.options.data.labels]).toEqual([...data.labels]);
    const nanList = [...data.features];
    nanList[2 * 784 + 1] = Number.NaN;
    expectCohortError(
      make({ ...data, features: nanList }),
      "DATASET_INVALID",
      /example 2 holds NaN \(feature 1\)/,
    );
    expectCohortError(
      make({ ...data, features: Int8Array.from(data.features) }),
      "DATASET_INVALID",
      /features must be a Float32Array \(Float64Array and number arrays are converted\), got Int8Array/,
    );
    expectCohortError(
      make({ ...data, labels: Uint32Array.from(data.labels) }),
      "DATASET_INVALID",
      /labels must be class ids in a Uint8Array, Uint16Array or Int32Array, or float targets in a Float32Array, got Uint32Array/,
    );
    expectCohortError(
      make({ ...data, labels: Int32Array.from(data.labels, (y) => y + 10) }),
      "DATASET_INVALID",
      /label 1\d of example 0 is outside \[0, numClasses 10\)/,
    );
    expectCohortError(
      make({ ...data, labels: Int32Array.from(data.labels, (y, i) => (i === 4 ? -1 : y)) }),
      "DATASET_INVALID",
      /label -1 of example 4 is outside \[0, numClasses 10\)/,
    );
    // Class ids in a float array become Int32 ids; a fraction there is refused.
    const floatIds = make({ ...data, labels: Float64Array.from(data.labels) })();
    expect(floatIds.options.data.labels).toBeInstanceOf(Int32Array);
    expectCohortError(
      make({ ...data, labels: Float32Array.from(data.labels, (y, i) => (i === 2 ? 0.5 : y)) }),
      "DATASET_INVALID",
      /numClasses is given but label 2 is 0.5, not a class id/,
    );
    const { numClasses: _classes, ...noClasses } = data;
    expectCohortError(
      make({ ...noClasses }),
      "DATASET_INVALID",
      /class-id labels \(Uint8Array\) need numClasses/,
    );
    const { name: _name, ...unnamed } = data;
    expectCohortError(make(unnamed), "DATASET_INVALID", /`name` must be a string/);
  });

  it("logs every failed attempt with its cause, and gives up at the connect deadline", async () => {
    // A server that is not Cohort's: every attempt is answered with a 404.
    const server = createServer((_, res) => res.writeHead(404).end("not here"));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const { port } = server.address() as AddressInfo;
    const { shards } = await mnistShards(1, 10, 10);
    const lines: string[] = [];
    const client = new CohortClient({
      url: `http://127.0.0.1:${port}`,
      data: shards[0]!,
      backend: "cpu",
      reconnectDelayMs: 50,
      reconnectDelayMaxMs: 100,
      connectTimeoutMs: 1500,
      log: (l) => lines.push(l),
    });
    const started = Date.now();
    try {
      await expect(client.run()).rejects.toMatchObject({
        code: "CONNECTION_FAILED",
        message: expect.stringMatching(/within 2 s \(last error: .+\)/),
      });
      expect(Date.now() - started).toBeLessThan(10_000);
      const attempts = lines.filter((l) =>
        /^cannot reach the coordinator at .*; retrying$/.test(l),
      );
      expect(attempts.length).toBeGreaterThanOrEqual(2);
    } finally {
      await client.close();
      server.close();
    }
  });

  it("the CLI exits 1 with the code and the reason when the coordinator cannot be reached", async () => {
    // A port nobody listens on: bind one, note it, free it.
    const probe = createServer();
    await new Promise<void>((resolve) => probe.listen(0, "127.0.0.1", resolve));
    const { port } = probe.address() as AddressInfo;
    await new Promise<void>((resolve) => probe.close(() => resolve()));
    const out = await runCli(
      digitsClientArgs(`http://127.0.0.1:${port}`, 0, 1, 10, ["--connect-timeout", "1"]),
    );
    expect(out.code).toBe(1);
    expect(out.output).toMatch(/cannot reach the coordinator .*; retrying/);
    expect(out.output).toMatch(/error CONNECTION_FAILED: could not reach the coordinator/);
    const bad = await runCli(["client", "--url", "not a url"]);
    expect(bad.code).toBe(1);
    expect(bad.output).toMatch(/error INVALID_OPTION: url "not a url" is not a URL/);
  }, 60_000);
});
