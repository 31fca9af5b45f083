/** The in-process transport: the real round engine drives virtual devices by direct calls. */
import createDebug from "debug";
import { NO_SECURE_FLOORS } from "../client/options.js";
import type {
  CohortTransport,
  RequestKind,
  SimulatedTime,
  UpdateSink,
} from "../coordinator/transport.js";
import { SimClock } from "./clock.js";
import type { RoundBroadcast } from "../coordinator/downlink.js";
import { decode, encode } from "../protocol/codec.js";
import { CohortError, toCohortError, type ErrorCode } from "../protocol/errors.js";
import { parseSecureStep } from "../aggregation/secure/steps.js";
import { SecureSession } from "../client/secure-session.js";
import { parseFitRequest } from "../protocol/guards.js";
import type { FitOutcome } from "../client/trainer.js";
import { deviceId, deviceIndex } from "./device.js";
import { drawFate, type FaultConfig } from "./faults.js";
import type { Partition } from "./partition.js";

const debug = createDebug("cohort:simulations:transport");

/** Trains one virtual device on an encoded fit request (in this thread or in a worker). */
export interface DeviceTrainer {
  /** How many devices it can train at once. */
  readonly concurrency: number;
  train(device: number, request: Uint8Array, shuffleSeed: number): Promise<FitOutcome>;
  /**
   * The device is sent a `round:fit`: it checks it and rebuilds the model it patches (a
   * compressed downlink), and returns the full request to train on. Absent: requests are
   * always full.
   *
   * @throws CohortError `BASE_MISMATCH` and the codec's codes, as a client would fail.
   */
  receive?(device: number, request: Uint8Array): Uint8Array;
  /** The device's held model can no longer be patched: free it. */
  release?(device: number): void;
  /** Answer an encoded `EvaluateRequest` with the device's encoded `EvaluateResult`. */
  evaluate(device: number, request: Uint8Array): Promise<Uint8Array>;
}

/** Options of the in-process transport. */
export interface InProcessOptions {
  partition: Partition;
  trainer: DeviceTrainer;
  faults: FaultConfig;
  seed: number;
  /** The round deadline: a straggler whose simulated latency exceeds it misses the round. */
  deadlineMs: number;
  /**
   * Simulated time: how long each device takes to train, and who moves the clock. Absent:
   * updates arrive as soon as they are trained, in cohort order.
   */
  timing?: SimulatedTiming;
}

/** Simulated device speeds and who drives the simulated clock. */
export interface SimulatedTiming {
  /** A device's time to train its local data once, in simulated ms. */
  trainMs(device: number): number;
  /** Local epochs (a fit takes `epochs × trainMs`). */
  epochs: number;
  /**
   * `driver`: asynchronous rounds take arrivals one at a time (`simulated.deliverNext`);
   * `round`: each round's arrivals are delivered, in simulated order, once its devices trained.
   */
  clock: "driver" | "round";
}

/**
 * Every device with data is always available; only the sampled cohort trains. Updates go
 * through the collector's checks exactly as socket updates do.
 */
export class InProcessTransport implements CohortTransport {
  private readonly ids: string[];
  /** The devices' SecAgg+ sessions of secure round `sessionRound`. */
  private readonly sessions = new Map<string, SecureSession>();
  private sessionRound = 0;
  private readonly secureSlots: Slots;
  /** The model version each device was last sent, and its chain (compressed downlink). */
  private readonly held = new Map<string, { chain: number | null; version: number }>();

  /** Simulated time, where the options simulate it. */
  readonly simulated?: SimulatedTime;
  private readonly clock: SimClock | null;

  constructor(private readonly options: InProcessOptions) {
    this.clock = options.timing === undefined ? null : new SimClock();
    if (this.clock !== null) this.simulated = this.clock;
    const { partition } = options;
    this.secureSlots = new Slots(Math.max(1, options.trainer.concurrency));
    this.ids = [];
    for (let d = 0; d < partition.devices; d++) {
      if (partition.sizeOf(d) > 0) this.ids.push(deviceId(d, partition.devices));
    }
  }

  available(): string[] {
    return this.ids;
  }

  waitForAvailable(n: number): Promise<void> {
    if (this.ids.length >= n) return Promise.resolve();
    // A simulated population never grows: waiting would hang.
    return Promise.reject(
      toCohortError(
        new Error(`only ${this.ids.length} devices hold data; ${n} needed`),
        "INVALID_OPTION",
      ),
    );
  }

  startRound(collector: UpdateSink, broadcast: RoundBroadcast): number {
    const { faults, seed, deadlineMs, trainer } = this.options;
    const requests = new Map<string, Uint8Array | CohortError>();
    let bytes = 0;
    for (const id of collector.cohort) {
      const device = deviceIndex(id);
      const had = this.held.get(id);
      const { payload } = broadcast.requestFor(had?.chain ?? null, had?.version ?? null);
      bytes += payload.byteLength;
      if (drawFate(faults, seed, collector.round, device, deadlineMs).kind === "disconnect") {
        // Its connection is gone: what it held is not known any more.
        this.forget(id);
        continue;
      }
      if (broadcast.version !== null) {
        this.held.set(id, { chain: broadcast.chain, version: broadcast.version });
      }
      // Received in send order, here, even by a device that then drops out or straggles: a
      // device holds the model it was last sent, as a socket client does.
      try {
        requests.set(id, trainer.receive?.(device, payload) ?? payload);
      } catch (error) {
        // As a socket client reports it: the next request is the full model.
        this.forget(id);
        requests.set(id, toCohortError(error));
      }
    }
    this.forgetUnpatchable(broadcast);
    const training = this.train(collector, requests);
    this.clock?.track(training);
    if (this.options.timing?.clock === "round") void training.then(() => this.clock!.drain());
    else void training;
    return bytes;
  }

  modelFor(clientId: string, broadcast: RoundBroadcast): Uint8Array {
    if (this.lastBroadcast !== broadcast) {
      this.lastBroadcast = broadcast;
      this.forgetUnpatchable(broadcast);
    }
    const had = this.held.get(clientId);
    const { payload } = broadcast.requestFor(had?.chain ?? null, had?.version ?? null);
    if (broadcast.version !== null) {
      this.held.set(clientId, { chain: broadcast.chain, version: broadcast.version });
    }
    return payload;
  }

  forgetModel(clientId: string): void {
    this.forget(clientId);
  }

  private lastBroadcast: RoundBroadcast | null = null;

  /** Free the held models no patch of `broadcast` can build on. */
  private forgetUnpatchable(broadcast: RoundBroadcast): void {
    if (broadcast.version === null) return;
    for (const [id, had] of this.held) {
      if (had.version !== broadcast.version && !broadcast.canPatch(had.chain, had.version)) {
        this.forget(id);
      }
    }
  }

  private forget(id: string): void {
    if (this.held.delete(id)) this.options.trainer.release?.(deviceIndex(id));
  }

  private async train(
    collector: UpdateSink,
    requests: Map<string, Uint8Array | CohortError>,
  ): Promise<void> {
    const { faults, seed, deadlineMs, trainer, timing } = this.options;
    const queue = [...collector.cohort];
    const start = this.clock?.now() ?? 0;
    // Ties land in cohort order, whichever device's training finishes first.
    const first = this.clock?.reserve(queue.length) ?? 0;
    const place = new Map(queue.map((id, i) => [id, first + i]));
    // Each outcome lands at its simulated time where time is simulated, else now.
    const at = (id: string, offsetMs: number, land: () => void) =>
      this.clock === null ? land() : this.clock.at(start + offsetMs, land, place.get(id));
    const fitMs = (device: number) =>
      timing === undefined ? 0 : timing.epochs * timing.trainMs(device);
    const worker = async () => {
      for (let id = queue.shift(); id !== undefined; id = queue.shift()) {
        const device = deviceIndex(id);
        const fate = drawFate(faults, seed, collector.round, device, deadlineMs);
        const payload = requests.get(id);
        const drop = (offsetMs: number, code: ErrorCode, message: string) =>
          at(id, offsetMs, () => collector.drop(id, { code, message }));
        if (fate.kind === "drop-before") {
          drop(0, "DEADLINE_EXCEEDED", "dropped out before training (simulated)");
          continue;
        }
        if (fate.kind === "disconnect") {
          drop(0, "CLIENT_DISCONNECTED", "disconnected (simulated)");
          continue;
        }
        const arrivesMs = fitMs(device) + ("latencyMs" in fate ? fate.latencyMs : 0);
        if (fate.kind === "straggler" || arrivesMs > deadlineMs) {
          drop(
            deadlineMs,
            "DEADLINE_EXCEEDED",
            `straggler: ${Math.round(arrivesMs)} ms over a ${deadlineMs} ms deadline (simulated)`,
          );
          continue;
        }
        if (payload === undefined || payload instanceof CohortError) {
          const e = payload ?? new CohortError("INTERNAL", "no request for this device");
          drop(0, e.code, e.message);
          continue;
        }
        try {
          const shuffleSeed = (seed * 31 + collector.round * 1_000_003 + device) >>> 0;
          const outcome = await trainer.train(device, payload, shuffleSeed);
          if (fate.kind === "drop-after") {
            drop(arrivesMs, "DEADLINE_EXCEEDED", "dropped out after training (simulated)");
            continue;
          }
          at(id, arrivesMs, () => {
            const reply = collector.submit(id, outcome.payload);
            if (!reply.ok) debug("device %s rejected: %s", id, reply.message);
          });
        } catch (error) {
          const e = toCohortError(error);
          drop(arrivesMs, e.code, e.message);
        }
      }
    };
    await Promise.all(Array.from({ length: Math.max(1, trainer.concurrency) }, worker));
  }

  /**
   * A secure-round step for a virtual device: each device keeps its SecAgg+ session for the
   * round. Faults map onto phases: a device that drops before training never advertises, one
   * that disconnects leaves after advertising, one that drops after training never sends its
   * masked input, and a straggler misses the masked-input deadline.
   */
  async request(
    clientId: string,
    payload: Uint8Array,
    _timeoutMs: number,
    kind: RequestKind = "secure",
  ): Promise<Uint8Array> {
    const device = deviceIndex(clientId);
    // Federated evaluation is not subject to the simulated faults.
    if (kind === "evaluate") return this.options.trainer.evaluate(device, payload);
    const step = parseSecureStep(decode(payload));
    const round = step.phase === "advertise-keys" ? step.setup.round : step.message.round;
    const { faults, seed, deadlineMs, trainer } = this.options;
    const fate = drawFate(faults, seed, round, device, deadlineMs);
    const refuse = (code: "DEADLINE_EXCEEDED" | "CLIENT_DISCONNECTED", why: string) => {
      throw new CohortError(code, `${why} (simulated)`);
    };
    if (step.phase === "advertise-keys") {
      if (round !== this.sessionRound) {
        // A new round: the last one's sessions, and the updates they trained, are done with.
        this.sessions.clear();
        this.sessionRound = round;
      }
      if (fate.kind === "drop-before") refuse("DEADLINE_EXCEEDED", "dropped out before training");
      const shuffleSeed = (seed * 31 + round * 1_000_003 + device) >>> 0;
      // The simulated coordinator is this process: its devices need no floors against it.
      const session = new SecureSession(
        async (request) => {
          const outcome = await this.secureSlots.run(() =>
            trainer.train(device, encode(request), shuffleSeed),
          );
          return { delta: outcome.result.delta, numExamples: outcome.result.numExamples };
        },
        // Under a compressed downlink the device rebuilds the model from its patch.
        (model) => parseFitRequest(decode(trainer.receive?.(device, model) ?? model)),
        { floors: NO_SECURE_FLOORS },
      );
      this.sessions.set(clientId, session);
    } else if (step.phase === "share-keys" && fate.kind === "disconnect") {
      this.forget(clientId); // its connection is gone, and what it held with it
      refuse("CLIENT_DISCONNECTED", "disconnected after advertising keys");
    } else if (
      step.phase === "collect-masked" &&
      (fate.kind === "drop-after" || fate.kind === "straggler")
    ) {
      refuse(
        "DEADLINE_EXCEEDED",
        fate.kind === "straggler" ? "straggler" : "dropped out after training",
      );
    }
    const session = this.sessions.get(clientId);
    if (session === undefined)
      throw new CohortError("SECAGG_PHASE", `${clientId} has no secure session`);
    return session.step(payload);
  }

  sealModel(_round: number, request: Uint8Array): Uint8Array {
    // In one process there is no one to impersonate the coordinator.
    return request;
  }

  finish(): void {
    // Virtual devices need no goodbye.
    this.sessions.clear();
  }
}

/** At most `n` tasks at once; the rest wait in order. */
class Slots {
  private waiting: (() => void)[] = [];
  private busy = 0;
  constructor(private readonly n: number) {}
  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.busy >= this.n) await new Promise<void>((resolve) => this.waiting.push(resolve));
    this.busy++;
    try {
      return await task();
    } finally {
      this.busy--;
      this.waiting.shift()?.();
    }
  }
}
