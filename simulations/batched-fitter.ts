/**
 * Cohort-batched training in the simulator. Devices reach the fit handler one by one, through
 * the client's own mods; this handler holds each device's training until every device in flight
 * is waiting for it, then trains them as one batched computation (`trainBatched`) — in this
 * thread, or split across the worker pool — and hands each device its own result. What the
 * mods do before and after training (FedProx's μ, DP clipping) stays per device.
 */
import { checkWeights } from "../aggregation/weights.js";
import {
  localFit,
  localTraining,
  type FitHandler,
  type FitIns,
  type LocalFit,
} from "../client/fit-handler.js";
import {
  batchPlan,
  trainBatched,
  type BatchPlan,
  type BatchedDevice,
  type BatchedResult,
} from "../models/batched-training.js";
import { modelFromSpec } from "../models/adapter.js";
import type { TrainPool } from "../models/train-pool.js";
import type { TaskSpec } from "../protocol/messages.js";
import { toCohortError } from "../protocol/errors.js";

/** Trains a group of devices at once: in this thread or on one pool worker. */
export type GroupRunner = (devices: BatchedDevice[]) => Promise<BatchedResult[]>;

/** The batched plan of the task's model, or why it keeps the per-device path. */
export async function taskBatchPlan(task: TaskSpec): Promise<BatchPlan | string> {
  const model = await modelFromSpec(task.model);
  try {
    return batchPlan(model, {
      optimizer: task.training.optimizer,
      loss: task.training.loss,
      learningRate: 0,
      localEpochs: 1,
      batchSize: 1,
    });
  } finally {
    model.dispose();
  }
}

/** Groups trained in this thread, on the selected backend. */
export function inThread(plan: BatchPlan): GroupRunner {
  return (devices) => trainBatched(plan, devices);
}

/** Groups trained on the pool's workers, one group per worker at a time. */
export function onPool(pool: TrainPool, task: TaskSpec): GroupRunner {
  return (devices) =>
    pool.trainBatch(
      task.model,
      devices.map((d) => ({ ...d, weights: [...d.weights] })),
    );
}

interface Waiting {
  ins: FitIns;
  device: BatchedDevice;
  resolve: (fit: LocalFit) => void;
  reject: (error: Error) => void;
}

/**
 * Gathers the devices in flight into batched groups. Wrap each device's whole fit in
 * {@link around}, and give the mods {@link handler} as their innermost handler; up to
 * `groupSize × lanes` devices may be in flight, and `lanes` groups train at once.
 */
export class CohortBatcher {
  private readonly waiting: Waiting[] = [];
  private active = 0;
  private scheduled = false;

  constructor(
    private readonly run: GroupRunner,
    readonly groupSize: number,
    readonly lanes: number,
    private readonly backend: string,
  ) {}

  /** The most devices in flight at once. */
  get capacity(): number {
    return this.groupSize * this.lanes;
  }

  /** One device's fit, counted in flight from its start to its end. */
  async around<T>(fit: () => Promise<T>): Promise<T> {
    this.active++;
    try {
      return await fit();
    } finally {
      this.active--;
      this.schedule();
    }
  }

  /** The innermost fit handler: the device waits for its group. */
  handler(): FitHandler {
    return (ins) => {
      checkWeights(ins.request.weights, ins.task.model.weightSpecs, "global weights");
      const device: BatchedDevice = {
        weights: ins.request.weights,
        data: ins.data,
        config: localTraining(ins),
        shuffleSeed: ins.shuffleSeed ?? Math.floor(Math.random() * 2 ** 32),
      };
      return new Promise<LocalFit>((resolve, reject) => {
        this.waiting.push({ ins, device, resolve, reject });
        this.schedule();
      });
    };
  }

  /** Train once every device in flight waits, after this turn's arrivals. */
  private schedule(): void {
    if (this.scheduled || this.waiting.length === 0 || this.waiting.length < this.active) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      if (this.waiting.length > 0 && this.waiting.length >= this.active) this.flush();
    });
  }

  private flush(): void {
    const all = this.waiting.splice(0);
    // Devices group by what the batched computation must share: epochs and batch size.
    const byShape = new Map<string, Waiting[]>();
    for (const w of all) {
      const key = `${w.device.config.localEpochs}/${w.device.config.batchSize}`;
      byShape.set(key, [...(byShape.get(key) ?? []), w]);
    }
    for (const same of byShape.values()) {
      const groups = Math.max(
        Math.ceil(same.length / this.groupSize),
        Math.min(this.lanes, same.length),
      );
      const size = Math.ceil(same.length / groups);
      for (let i = 0; i < same.length; i += size) void this.train(same.slice(i, i + size));
    }
  }

  private async train(group: Waiting[]): Promise<void> {
    let results: BatchedResult[];
    try {
      results = await this.run(group.map((w) => w.device));
    } catch (error) {
      const e = toCohortError(error);
      for (const w of group) w.reject(e);
      return;
    }
    group.forEach((w, k) => {
      try {
        w.resolve(localFit(w.ins, results[k]!.weights, results[k]!.stats, this.backend));
      } catch (error) {
        w.reject(toCohortError(error));
      }
    });
  }
}
