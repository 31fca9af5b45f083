/** The run directory: `run.json`, `metrics.jsonl` (one line per completed round) and checkpoints. */
import { appendFile, mkdir, open } from "node:fs/promises";
import { join } from "node:path";
import type { ModelSpec } from "../protocol/messages.js";
import type { Weights } from "../aggregation/weights.js";
import { writeAtomic, writeModelFiles } from "../models/model-file.js";
import { CHECKPOINTS, checkpointDir } from "../models/checkpoints.js";

/** What each client reported in a round. */
export interface ClientRoundMetrics {
  clientId: string;
  numExamples: number;
  loss: number;
  accuracy: number | null;
  trainMs: number;
  backend: string;
  bytesUp: number;
}

/** One line of `metrics.jsonl`. */
export interface RoundMetrics {
  round: number;
  /** Attempts this round took (more than 1 when a try had too few results). */
  attempt: number;
  cohortSize: number;
  participants: number;
  failures: number;
  failureReasons: { clientId: string; code: string; message: string }[];
  totalExamples: number;
  durationMs: number;
  aggregationMs: number;
  evaluationMs: number;
  bytesUp: number;
  bytesDown: number;
  /**
   * In a cluster, what the leader received from its followers this round: their partial sums,
   * the bytes those arrived in, and the update bytes the followers received from their clients
   * (within `bytesUp`, which counts every client's). The leader's own inbound is
   * `bytesUp − clientBytes + bytes`.
   */
  partials?: { nodes: number; bytes: number; clientBytes: number };
  secure: boolean;
  /**
   * Centralised evaluation of the new global model, when evaluated: the task's loss, its
   * accuracy (when the task has one) and every metric by name.
   */
  accuracy?: number;
  loss?: number;
  metrics?: Record<string, number>;
  /** Federated evaluation after the round: example-weighted over the clients that answered. */
  federatedAccuracy?: number;
  federatedLoss?: number;
  federatedMetrics?: Record<string, number>;
  /** Examples and clients of the federated evaluation, and the clients left out (with why). */
  federatedExamples?: number;
  federatedClients?: number;
  evaluationFailures?: { clientId: string; code: string; message: string }[];
  /** Differential privacy: ε at `delta` spent by the run after this round, and its noise. */
  epsilon?: number;
  delta?: number;
  noiseMultiplier?: number;
  /** The clip of the next round (it moves with adaptive clipping). */
  dpClip?: number;
  /** Updates the coordinator had to clip to `dpClip` (clients clip their own first). */
  clippedUpdates?: number;
  /** Clients whose example count was above `maxExamplesPerClient`: what each claimed. */
  clippedClaims?: { clientId: string; claimed: number }[];
  /** Example-weighted mean of the clients' training loss (null in secure rounds: not revealed). */
  trainLoss: number | null;
  /** A secure round that aborted (fewer than t members left) changes nothing; this says why. */
  aborted?: boolean;
  abortReason?: string;
  /** The update codec of the round (`q8`, `topk:0.01`); plain rounds, and secure rounds of a quantizer. */
  codec?: string;
  /**
   * Float32 bytes of the accepted updates over the bytes they were sent in (null: none
   * accepted); in secure rounds of a quantizer, 32-bit masked words over the packed ones.
   */
  compressionRatio?: number | null;
  /** Mean milliseconds clients took to encode an update (null: float32, nothing to encode). */
  encodeMs?: number | null;
  /** Mean milliseconds the coordinator took to decode an update. */
  decodeMs?: number | null;
  /** How the model was sent (`--downlink-codec`); plain rounds. */
  downlinkCodec?: string;
  /** Members sent a patch of the model they held / the full model (plain rounds). */
  downlinkPatched?: number;
  downlinkFull?: number;
  /** Largest quantization error of any coordinate of a secure round's mean delta. */
  secureErrorBound?: number;
  /**
   * Secure rounds of a quantizing codec: each member's bits (32 in a calibrating round), the
   * shared clip of the rotated coordinates and the weight cap, the masked words' width on the
   * wire, and the cohort's mean update RMS learned from the sum (the next round's clip follows
   * it).
   */
  secureBits?: number;
  secureClip?: number;
  secureMaxWeight?: number;
  secureWordBits?: number;
  secureRms?: number;
  /** The clip and weight cap the next secure round takes (what a resumed run goes on with). */
  secureNext?: { clip: number; maxWeight: number };
  /**
   * Asynchronous mode (FedBuff): the line is one buffer's server step; `staleness[s]` of its
   * updates were s steps old; clients still training when it was made.
   */
  mode?: "async";
  staleness?: number[];
  inFlight?: number;
  /** Simulated milliseconds since the run began, where the simulator simulates time. */
  simulatedMs?: number;
  /** The version this round's model became, what became of it, and the promoted version after. */
  modelVersion?: number;
  versionStatus?: "candidate" | "promoted" | "rejected";
  versionReason?: string;
  promotedVersion?: number;
  /** The round's model was rejected: training went back to version `to`. */
  rollback?: { from: number; to: number; reason: string };
  clients: ClientRoundMetrics[];
  timestamp: string;
}

/** Appends round metrics and writes checkpoints; each write is durable before it returns. */
export class RunStore {
  private constructor(readonly dir: string) {}

  /** Create the run directory and write `run.json` describing the run. */
  static async create(dir: string, run: Record<string, unknown>): Promise<RunStore> {
    await mkdir(join(dir, CHECKPOINTS), { recursive: true });
    await writeAtomic(join(dir, "run.json"), JSON.stringify(run, null, 2) + "\n");
    return new RunStore(dir);
  }

  /** Reopen an existing run directory (a resumed run) without touching `run.json`. */
  static async open(dir: string): Promise<RunStore> {
    await mkdir(join(dir, CHECKPOINTS), { recursive: true });
    return new RunStore(dir);
  }

  /** Append one round to `metrics.jsonl` and fsync it. */
  async appendRound(metrics: RoundMetrics): Promise<void> {
    const path = join(this.dir, "metrics.jsonl");
    await appendFile(path, JSON.stringify(metrics) + "\n");
    const handle = await open(path, "r");
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
  }

  /** Write the global model of a round to `checkpoints/round-NNNN/`. */
  async checkpoint(round: number, spec: ModelSpec, weights: Weights): Promise<string> {
    const dir = checkpointDir(this.dir, round);
    await writeModelFiles(dir, spec, weights);
    return dir;
  }
}
