/** A coordinator that deviates from the protocol, tried against real clients over socket.io. */
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { CohortClient, type CohortClientOptions } from "../client/index.js";
import { checkTaskCost } from "../client/task-limits.js";
import { DEFAULT_TASK_LIMITS } from "../client/options.js";
import { encode } from "../protocol/codec.js";
import type { Dataset } from "../protocol/dataset.js";
import type { Json, TaskSpec } from "../protocol/messages.js";
import type { Reply } from "../protocol/errors.js";
import { generateIdentity } from "../aggregation/secure/index.js";
import { makeSetup } from "./secure/harness.js";
import { expectCohortError } from "./helpers/errors.js";
import { mnistShards } from "./helpers/federation.js";
import { startRogue, until, type RogueCoordinator } from "./helpers/rogue-coordinator.js";

let data: Dataset;
let rogue: RogueCoordinator | null = null;
let clients: CohortClient[] = [];

beforeAll(async () => {
  data = (await mnistShards(1, 40, 10)).shards[0]!;
});

afterEach(async () => {
  await Promise.all(clients.map((c) => c.close()));
  clients = [];
  await rogue?.close();
  rogue = null;
});

function client(url: string, options: Partial<CohortClientOptions> = {}): CohortClient {
  const c = new CohortClient({
    url,
    data,
    backend: "wasm",
    log: () => undefined,
    reconnectDelayMs: 50,
    ...options,
  });
  clients.push(c);
  return c;
}

/** A Dense layer's topology entry. */
const dense = (units: number, input?: number): Json => ({
  class_name: "Dense",
  config: { units, use_bias: true, ...(input ? { batch_input_shape: [null, input] } : {}) },
});

describe("downgrade: a plain round:fit to a client that must stay secure", () => {
  /** A rogue coordinator with `rogueOptions` sends a plain round 1 to a client with `options`. */
  async function plainRoundTo(
    rogueOptions: Parameters<typeof startRogue>[0],
    options: (r: RogueCoordinator) => Partial<CohortClientOptions>,
  ) {
    rogue = await startRogue({ model: "mlp", ...rogueOptions });
    const victim = rogue.victim();
    await client(rogue.url, options(rogue)).start();
    const v = await victim;
    v.socket.emit("round:fit", rogue.signedFit(1));
    await until(() => v.failures.length + v.results.length > 0, 20_000, "an answer");
    return v;
  }

  it("a coordinator that sends a plain round to a require-secure client gets a refusal, never the delta", async () => {
    const v = await plainRoundTo({}, () => ({ requireSecure: true }));
    expect(v.failures[0]).toMatchObject({ round: 1, code: "SECURE_REQUIRED" });
    expect(v.results).toEqual([]);
  });

  it("a client pinned to the coordinator's key refuses plain rounds of a run whose signed task says secure", async () => {
    const v = await plainRoundTo({ secure: true }, (r) => ({ coordinatorKey: r.key }));
    expect(v.failures[0]).toMatchObject({ round: 1, code: "SECURE_REQUIRED" });
    expect(v.results).toEqual([]);
  });

  it("a pinned client refuses a task whose mode was changed after signing", async () => {
    rogue = await startRogue(
      { model: "mlp", secure: true },
      (t) => ({ ...t, secure: false }),
      false,
    );
    const c = client(rogue.url, { coordinatorKey: rogue.key });
    await c.start();
    await expect(c.done).rejects.toMatchObject({ code: "MODEL_SIGNATURE" });
  });

  it("the honest path: a plain run trains and sends its update", async () => {
    const v = await plainRoundTo({}, (r) => ({ coordinatorKey: r.key }));
    expect(v.results).toHaveLength(1);
    expect(v.failures).toEqual([]);
  });
});

describe("replayed rounds", () => {
  it("a client that trained round 5 refuses round 3 of the same run", async () => {
    rogue = await startRogue({ model: "mlp" });
    const victim = rogue.victim();
    const c = client(rogue.url);
    await c.start();
    const v = await victim;
    v.socket.emit("round:fit", rogue.signedFit(5));
    await until(() => v.results.length === 1, 20_000, "round 5's update");
    v.socket.emit("round:fit", rogue.signedFit(3));
    await until(() => v.failures.length > 0, 20_000, "a refusal");
    expect(v.failures[0]).toMatchObject({ round: 3, code: "STALE_ROUND" });
    expect(v.results).toHaveLength(1);
    v.socket.emit("round:fit", rogue.signedFit(5)); // the same round again (a retried round) is fine
    await until(() => v.results.length === 2, 20_000, "round 5 again");
    // … but not with another model: two updates of one round to difference.
    const other = rogue.task.model.weightSpecs.map((spec) =>
      new Float32Array(spec.shape.reduce((a, b) => a * b, 1)).fill(0.01),
    );
    v.socket.emit("round:fit", rogue.signedFit(5, other));
    await until(() => v.failures.length > 1, 20_000, "a second refusal");
    expect(v.failures[1]).toMatchObject({
      round: 5,
      code: "STALE_ROUND",
      message: expect.stringMatching(/another model/),
    });
    expect(v.results).toHaveLength(2);
  });
});

describe("secure rounds below the client's floors", () => {
  it("a 3-member secure round (the sybil attack's shape) is refused before any key leaves", async () => {
    rogue = await startRogue({ model: "mlp", secure: true });
    const victim = rogue.victim();
    const c = client(rogue.url);
    await c.start();
    const v = await victim;
    const setup = { ...makeSetup({ n: 3, k: 2, t: 2, round: 1 }), session: rogue.task.runId };
    const step = { phase: "advertise-keys", setup, index: 0, model: rogue.signedFit(1) };
    const reply = (await v.socket
      .timeout(20_000)
      .emitWithAck("secagg:step", encode(step))) as Reply<Uint8Array>;
    expect(reply).toMatchObject({ ok: false, code: "SECAGG_UNSAFE" });
    expect(!reply.ok && reply.message).toMatch(/cohort size 3 < 5.*threshold 2 < 3/);
    const bigger = { ...makeSetup({ n: 6, k: 5, t: 4, round: 1 }), session: rogue.task.runId };
    const ok = (await v.socket
      .timeout(20_000)
      .emitWithAck(
        "secagg:step",
        encode({ phase: "advertise-keys", setup: bigger, index: 0, model: rogue.signedFit(1) }),
      )) as Reply<Uint8Array>;
    expect(ok.ok).toBe(true);
  });
});

describe("a task that would exhaust the client", () => {
  const huge = (t: TaskSpec): TaskSpec => ({
    ...t,
    model: {
      ...t.model,
      topology: {
        class_name: "Sequential",
        config: { name: "huge", layers: [dense(1_000_000, 784), dense(10)] },
      },
    },
  });

  it("a model with a 10⁶-unit layer is refused before it is built, with a clear error", async () => {
    rogue = await startRogue({ model: "mlp" }, huge);
    const before = process.memoryUsage().rss;
    const c = client(rogue.url);
    await c.start();
    await expect(c.done).rejects.toMatchObject({
      code: "MODEL_TOO_LARGE",
      message: expect.stringMatching(/units = 1000000; this client takes at most 65536/),
    });
    expect(process.memoryUsage().rss - before).toBeLessThan(300 * 2 ** 20);
  });

  it("a topology bigger than its weight specs claim is refused by what the topology implies", () => {
    const task = {
      model: {
        name: "liar",
        topology: {
          class_name: "Sequential",
          config: { name: "liar", layers: [dense(60_000, 60_000), dense(10)] },
        },
        weightSpecs: [{ name: "k", shape: [10, 10] }],
        numParameters: 100,
      },
    } as unknown as TaskSpec;
    expectCohortError(
      () => checkTaskCost(task, DEFAULT_TASK_LIMITS),
      "MODEL_TOO_LARGE",
      /implies 3600660010 parameters/,
    );
  });

  it("a model above socket.io's 100 MiB message limit is refused at the task, not in a reconnect loop", () => {
    const task = {
      model: {
        name: "big",
        topology: {
          class_name: "Sequential",
          config: { name: "big", layers: [dense(30_000, 1_000)] },
        },
        weightSpecs: [
          { name: "k", shape: [1_000, 30_000] },
          { name: "b", shape: [30_000] },
        ],
        numParameters: 30_030_000,
      },
    } as unknown as TaskSpec;
    expectCohortError(
      () =>
        checkTaskCost(task, {
          maxParameters: 40_000_000,
          maxLayerSize: 65_536,
          allowUnknownLayers: false,
        }),
      "MODEL_TOO_LARGE",
      /socket.io delivers at most 100.0 MiB/,
    );
  });

  it("a huge layer is found behind a layer class without weights, in a functional model, and in a wide kernel", () => {
    const model = (topology: Record<string, Json>) =>
      ({
        model: {
          name: "m",
          topology,
          weightSpecs: [{ name: "k", shape: [10] }],
          numParameters: 10,
        },
      }) as unknown as TaskSpec;
    const sequential = (layers: Json[]) => model({ class_name: "Sequential", config: { layers } });
    const noise = { class_name: "GaussianNoise", config: { stddev: 0.1 } };
    expectCohortError(
      () => checkTaskCost(sequential([dense(65_536, 65_536), noise]), DEFAULT_TASK_LIMITS),
      "MODEL_TOO_LARGE",
      /implies 4295032832 parameters/,
    );
    const functional = model({
      class_name: "Model",
      config: {
        layers: [
          { class_name: "InputLayer", name: "in", config: { batch_input_shape: [null, 65_536] } },
          {
            class_name: "Dense",
            name: "d",
            config: { units: 65_536 },
            inbound_nodes: [[["in", 0, 0, {}]]],
          },
        ],
      },
    });
    expectCohortError(
      () => checkTaskCost(functional, DEFAULT_TASK_LIMITS),
      "MODEL_TOO_LARGE",
      /implies 4295032832 parameters/,
    );
    const conv = {
      class_name: "Conv2D",
      config: { filters: 60_000, kernel_size: [28, 28], batch_input_shape: [null, 28, 28, 1] },
    };
    expectCohortError(
      () => checkTaskCost(sequential([conv]), DEFAULT_TASK_LIMITS),
      "MODEL_TOO_LARGE",
      /implies 47100000 parameters/,
    );
    const custom = sequential([dense(10, 4), { class_name: "MyOwnLayer", config: {} }]);
    expectCohortError(
      () => checkTaskCost(custom, DEFAULT_TASK_LIMITS),
      "INVALID_MODEL",
      /cannot tell what layer class MyOwnLayer costs/,
    );
    expect(() =>
      checkTaskCost(custom, { ...DEFAULT_TASK_LIMITS, allowUnknownLayers: true }),
    ).not.toThrow();
  });

  it("the built-in models pass with the default limits, and what a topology implies equals their specs", async () => {
    for (const model of ["mlp", "cnn"]) {
      const r = await startRogue({ model });
      expect(() => checkTaskCost(r.task, DEFAULT_TASK_LIMITS)).not.toThrow();
      await r.close();
    }
  });
});

describe("malformed messages from the coordinator", () => {
  it("a malformed handshake challenge ends the client with a clear error, never a crash", async () => {
    rogue = await startRogue({ model: "mlp" });
    const victim = rogue.victim();
    const c = client(rogue.url, { identity: generateIdentity() });
    await c.start();
    const v = await victim;
    v.socket.emit("notice", null);
    v.socket.emit("notice", { code: 5, message: { nested: true } });
    v.socket.emit("auth:challenge", { nonce: "%%%" }, () => undefined);
    await expect(c.done).rejects.toMatchObject({ code: "INVALID_MESSAGE" });
  });

  it("a malformed run:done still ends the run cleanly", async () => {
    rogue = await startRogue({ model: "mlp" });
    const victim = rogue.victim();
    const c = client(rogue.url);
    await c.start();
    (await victim).socket.emit("run:done", null);
    await expect(c.done).resolves.toEqual({ runId: "(unnamed)", rounds: 0 });
  });
});
