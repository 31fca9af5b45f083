/**
 * The round engine keeps nothing of a finished round: its outcome (every update's delta) can be
 * collected once the next round has run. A `Promise.race` against a promise pending for the
 * whole run used to hold every round's outcome until the run ended (~75 MB a round at 100
 * updates of the 2NN).
 */
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { describe, expect, it } from "vitest";
import { prepareTask } from "../coordinator/coordinator.js";
import { RoundEngine } from "../coordinator/engine.js";
import type { RoundCollector, RoundOutcome } from "../coordinator/round.js";
import type { CohortTransport } from "../coordinator/transport.js";
import { encode } from "../protocol/codec.js";
import type { FitResult, TaskSpec } from "../protocol/messages.js";
import type { RoundBroadcast } from "../coordinator/downlink.js";

setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;

const CLIENTS = ["c0", "c1", "c2", "c3"];
const ROUNDS = 5;

/** Every client answers at once with a zero update; a weak reference to each round's outcome. */
class InstantTransport implements CohortTransport {
  readonly outcomes: WeakRef<RoundOutcome>[] = [];
  constructor(private readonly task: TaskSpec) {}
  available(): string[] {
    return CLIENTS;
  }
  waitForAvailable(): Promise<void> {
    return Promise.resolve();
  }
  startRound(collector: RoundCollector, broadcast: RoundBroadcast): number {
    const { payload } = broadcast.requestFor(null, null);
    void collector.done.then((outcome) => this.outcomes.push(new WeakRef(outcome)));
    for (const id of collector.cohort) {
      const result: FitResult = {
        round: collector.round,
        numExamples: 10,
        delta: this.task.model.weightSpecs.map(
          (s) => new Float32Array(s.shape.reduce((a, b) => a * b, 1)),
        ),
        metrics: { loss: 1, accuracy: 0.5, trainMs: 1, backend: "test" },
      };
      collector.submit(id, encode(result));
    }
    return payload.byteLength * collector.cohort.length;
  }
  request(): Promise<Uint8Array> {
    return Promise.reject(new Error("no requests in this test"));
  }
  sealModel(_round: number, request: Uint8Array): Uint8Array {
    return request;
  }
  modelFor(_clientId: string, broadcast: RoundBroadcast): Uint8Array {
    return broadcast.requestFor(null, null).payload;
  }
  forgetModel(): void {}
  finish(): void {}
}

describe("round engine memory", () => {
  it("a round's outcome is collectable once later rounds have run", async () => {
    const { opts, task, weights } = await prepareTask(
      {
        model: "mlp",
        rounds: ROUNDS,
        fractionFit: 1,
        minFitClients: 2,
        minAvailableClients: 2,
        runDir: null,
        log: () => undefined,
      },
      () => undefined,
    );
    const transport = new InstantTransport(task);
    const engine = new RoundEngine(opts, task, weights, transport);
    const summary = await engine.run();
    expect(summary.rounds).toHaveLength(ROUNDS);
    expect(transport.outcomes).toHaveLength(ROUNDS);
    await new Promise((resolve) => setImmediate(resolve));
    gc();
    // The last round's collector is still the engine's; the rounds before it are gone.
    const kept = transport.outcomes.slice(0, -1).filter((ref) => ref.deref() !== undefined);
    expect(kept).toHaveLength(0);
    // The engine itself is still alive: what it holds was counted.
    expect(engine.completedRounds).toBe(ROUNDS);
  });
});
