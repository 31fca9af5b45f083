/** FedBuff in the simulator: equivalence with synchronous FedAvg, simulated time, determinism. */
import { describe, expect, it } from "vitest";
import { simulate } from "../simulations/index.js";
import { deviceRates } from "../simulations/speeds.js";
import { tempRunDir } from "./helpers/federation.js";

const base = {
  model: "mlp",
  dataset: "mnist",
  examplesPerDevice: 30,
  evalSize: 200,
  baselineEpochs: 0,
  devices: 4,
  rounds: 3,
  seed: 5,
} as const;

describe("FedBuff in the simulator", () => {
  it("with K = C = the population and no staleness, each version is the synchronous FedAvg round", async () => {
    const sync = await simulate(
      { ...base, fractionFit: 1, minFitClients: 4, runDir: await tempRunDir() },
      { progress: null },
    );
    const async = await simulate(
      {
        ...base,
        mode: "async",
        buffer: 4,
        asyncConcurrency: 4,
        maxStaleness: 0,
        runDir: await tempRunDir(),
      },
      { progress: null },
    );
    expect(async.rounds.map((r) => r.mode)).toEqual(["async", "async", "async"]);
    expect(async.rounds.map((r) => r.staleness)).toEqual([[4], [4], [4]]);
    expect(async.rounds.map((r) => r.accuracy)).toEqual(sync.rounds.map((r) => r.accuracy));
    expect(async.weights).toEqual(sync.weights);
  });

  it("simulates time from seeded device speeds: deterministic, stale updates discounted, faster than waiting for the slowest", async () => {
    const speeds = { deviceSpeed: { samplesPerSecond: 50, spread: 10 }, devices: 12 };
    const run = async () =>
      simulate(
        {
          ...base,
          ...speeds,
          mode: "async",
          buffer: 3,
          asyncConcurrency: 6,
          rounds: 6,
          runDir: await tempRunDir(),
        },
        { progress: null },
      );
    const a = await run();
    const b = await run();
    expect(b.weights).toEqual(a.weights);
    expect(b.rounds.map((r) => r.simulatedMs)).toEqual(a.rounds.map((r) => r.simulatedMs));
    const times = a.rounds.map((r) => r.simulatedMs!);
    expect(times.every((t, i) => i === 0 || t >= times[i - 1]!)).toBe(true);
    expect(a.rounds.some((r) => r.staleness!.slice(1).some((n) => n > 0))).toBe(true);
    expect(a.summary.simulatedMs).toBe(times.at(-1));
    // A synchronous run of 6 rounds of 3 waits for each round's slowest member.
    const sync = await simulate(
      {
        ...base,
        ...speeds,
        fractionFit: 0.25,
        minFitClients: 3,
        rounds: 6,
        runDir: await tempRunDir(),
      },
      { progress: null },
    );
    expect(sync.summary.simulatedMs!).toBeGreaterThan(a.summary.simulatedMs!);
  });

  it.each(["off", "auto"] as const)(
    "ties in simulated time land in dispatch order, whichever worker finishes first (batched %s)",
    async (batched) => {
      // Equal speeds and equal data: every arrival of a dispatch ties with the others.
      const run = async () =>
        simulate(
          {
            ...base,
            devices: 8,
            deviceSpeed: { samplesPerSecond: 50, spread: 1 },
            mode: "async",
            buffer: 3,
            asyncConcurrency: 6,
            rounds: 5,
            workers: 2,
            batched,
            batchGroup: 2,
            runDir: await tempRunDir(),
          },
          { progress: null },
        );
      const a = await run();
      const b = await run();
      expect(b.rounds.map((r) => r.staleness)).toEqual(a.rounds.map((r) => r.staleness));
      expect(b.weights).toEqual(a.weights);
    },
  );

  it("after a rollback, updates trained on the abandoned versions are refused, not applied", async () => {
    // Three attackers nudge steps 3–6: versions 5 and 6 are kept as candidates, 7 is rejected
    // and training goes back to version 4; fits sent versions 5 and 6 are still in flight.
    const { rounds } = await simulate(
      {
        ...base,
        devices: 12,
        deviceSpeed: { samplesPerSecond: 50, spread: 10 },
        mode: "async",
        buffer: 3,
        asyncConcurrency: 6,
        rounds: 10,
        promoteThreshold: 0.001,
        rollbackDrop: 0.05,
        attack: { devices: 3, kind: "sign-flip", scale: 2, steps: [3, 6] },
        runDir: await tempRunDir(),
      },
      { progress: null },
    );
    const back = rounds.find(
      (r) => r.rollback !== undefined && r.rollback.from > r.rollback.to + 1,
    );
    expect(back).toBeDefined();
    const { from, to } = back!.rollback!;
    const refused = rounds
      .filter((r) => r.round > back!.round)
      .flatMap((r) => r.failureReasons)
      .filter((f) => f.code === "STALE_UPDATE" && /abandoned when version/.test(f.message));
    expect(refused.length).toBeGreaterThan(0);
    for (const f of refused) {
      const base = Number(/trained on version (\d+)/.exec(f.message)![1]);
      expect(base).toBeGreaterThan(to);
      expect(base).toBeLessThan(from);
      expect(f.message).toContain(
        `version ${from} was rejected and training rolled back to version ${to}`,
      );
    }
  });

  it("device rates are log-normal with the asked 5th–95th percentile spread", () => {
    const rates = [...deviceRates({ samplesPerSecond: 100, spread: 10 }, 20_000, 3)].sort(
      (x, y) => x - y,
    );
    const q = (p: number) => rates[Math.floor(p * rates.length)]!;
    expect(q(0.95) / q(0.05)).toBeGreaterThan(9);
    expect(q(0.95) / q(0.05)).toBeLessThan(11);
    expect(q(0.5)).toBeGreaterThan(95);
    expect(q(0.5)).toBeLessThan(105);
    expect(deviceRates({ samplesPerSecond: 100, spread: 10 }, 5, 3)).toEqual(
      deviceRates({ samplesPerSecond: 100, spread: 10 }, 5, 3),
    );
  });
});
