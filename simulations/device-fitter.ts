/** The simulator's virtual devices: each trains through the client's own fit handler and mods. */
import { LocalTrainer, decodeFitRequest, encodeOutcome } from "../client/trainer.js";
import {
  DEFAULT_MODS,
  fitIns,
  localFit,
  localTraining,
  withMods,
  type FitHandler,
} from "../client/fit-handler.js";
import { HeldModel } from "../client/downlink.js";
import type { TrainPool } from "../models/train-pool.js";
import { checkWeights } from "../aggregation/weights.js";
import type { CodecMemory } from "../aggregation/codecs/index.js";
import { createRng, permutation } from "../aggregation/random.js";
import { subsetDataset } from "../models/datasets/index.js";
import { datasetSize, type Dataset } from "../protocol/dataset.js";
import type { TaskSpec } from "../protocol/messages.js";
import { decode, encode } from "../protocol/codec.js";
import { parseEvaluateRequest, parseFitMessage } from "../protocol/guards.js";
import { CohortError } from "../protocol/errors.js";
import type { DeviceTrainer } from "./in-process.js";
import type { CohortBatcher } from "./batched-fitter.js";

/**
 * Trains virtual devices through the client's own fit handler and mods, one handler per slot:
 * in this thread (one model per slot; with `concurrency` > 1 their GPU work interleaves on one
 * device) or in worker threads (`TrainPool`, each worker with its own wasm backend), device by
 * device or in batched groups (`CohortBatcher`). Results do not depend on which slot trains a
 * device.
 */
export class DeviceFitter implements DeviceTrainer {
  private readonly free: FitHandler[];
  readonly concurrency: number;
  /** Evaluates in this thread, with a model of its own. */
  private readonly evaluator: LocalTrainer;
  constructor(
    private readonly task: TaskSpec,
    private readonly split: (device: number) => { train: Dataset; evaluate: Dataset | null },
    handlers: FitHandler[],
    backend: string,
    /** Devices that do only part of their local work each round. */
    private readonly partial: (device: number) => boolean = () => false,
    /** Gathers the handlers' devices into batched groups, where the model batches. */
    private readonly batcher: CohortBatcher | null = null,
  ) {
    this.free = handlers.map((h) => withMods(h, DEFAULT_MODS));
    this.concurrency = handlers.length;
    this.evaluator = new LocalTrainer(backend);
  }
  async evaluate(device: number, payload: Uint8Array): Promise<Uint8Array> {
    const request = parseEvaluateRequest(decode(payload));
    const data = this.split(device).evaluate;
    if (data === null)
      throw new CohortError("NO_EVAL_DATA", `device ${device} holds no evaluation data`);
    return encode(await this.evaluator.evaluate(this.task, request, data));
  }
  dispose(): void {
    this.evaluator.dispose();
  }
  /** Each device's codec memory (top-k's residual), kept across the rounds it is sampled for. */
  private readonly memories = new Map<number, CodecMemory>();
  private memoryOf(device: number): CodecMemory {
    let memory = this.memories.get(device);
    if (memory === undefined) {
      memory = { residual: null };
      this.memories.set(device, memory);
    }
    return memory;
  }
  /** Each device's held model (compressed downlink), kept while it can still be patched. */
  private readonly held = new Map<number, HeldModel>();
  receive(device: number, payload: Uint8Array): Uint8Array {
    // A float32 downlink's requests are full models: nothing to rebuild or keep.
    if (this.task.downlink === undefined) return payload;
    let held = this.held.get(device);
    if (held === undefined) {
      held = new HeldModel();
      this.held.set(device, held);
    }
    return encode(held.receive(this.task, parseFitMessage(decode(payload))));
  }
  release(device: number): void {
    this.held.delete(device);
  }
  train(device: number, payload: Uint8Array, shuffleSeed: number) {
    const fit = () => this.fit(device, payload, shuffleSeed);
    return this.batcher === null ? fit() : this.batcher.around(fit);
  }
  private async fit(device: number, payload: Uint8Array, shuffleSeed: number) {
    const handler = this.free.pop();
    if (handler === undefined)
      throw new CohortError("INTERNAL", "more devices in flight than trainers");
    try {
      const request = decodeFitRequest(payload);
      let local = this.split(device).train;
      if (this.partial(device)) local = partialWork(local, shuffleSeed);
      return encodeOutcome(
        this.task,
        await handler(fitIns(this.task, request, local, shuffleSeed)),
        {
          seed: request.seed,
          // The device's rounding noise follows the run's seed, so a simulation repeats exactly.
          noiseSeed: (shuffleSeed ^ 0x27d4eb2f) >>> 0,
          memory: this.memoryOf(device),
        },
      );
    } finally {
      this.free.push(handler);
    }
  }
}

/** A random fraction U(0, 1] of the device's examples, drawn from its round's seed. */
function partialWork(local: Dataset, shuffleSeed: number): Dataset {
  const rng = createRng((shuffleSeed ^ 0x5bd1e995) >>> 0);
  const n = datasetSize(local);
  const keep = Math.max(1, Math.ceil(rng() * n));
  const order = permutation(n, rng);
  return { ...subsetDataset(local, order.subarray(0, keep).sort()), name: local.name };
}

/** A fit handler that trains in the worker pool, through the same training code. */
export function poolHandler(pool: TrainPool, backend: string): FitHandler {
  return async (ins) => {
    checkWeights(ins.request.weights, ins.task.model.weightSpecs, "global weights");
    const { weights, stats } = await pool.train({
      spec: ins.task.model,
      weights: ins.request.weights,
      data: ins.data,
      config: localTraining(ins),
      ...(ins.shuffleSeed === undefined ? {} : { shuffleSeed: ins.shuffleSeed }),
    });
    return localFit(ins, weights, stats, backend);
  };
}
