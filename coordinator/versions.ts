/**
 * Model versions: every new global model is a version — its parent, the round or buffer that
 * made it, who contributed, how it evaluated, a checksum — and one of them is promoted, the
 * model applications are served. In a run directory: `versions/index.json` (written atomically
 * on every change) and `versions/vNNNNNN.bin` (the weights, then the strategy's state arrays, so
 * a rollback restores the optimizer too); without one, the same in memory. The ledger is the
 * commit point: on resume, versions newer than the ledger's are dropped.
 */
import { createHash } from "node:crypto";
import { mkdir, readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { CohortError } from "../protocol/errors.js";
import type { TensorSpec } from "../protocol/messages.js";
import type { Scalar, StateRecord } from "../aggregation/state.js";
import { packWeights, writeAtomic } from "../models/model-file.js";
import { unpackState } from "./ledger.js";

/** Where a version stands. */
export type VersionStatus = "candidate" | "promoted" | "rejected";

/** A version's evaluation (centralised on the coordinator's held-out set, or federated). */
export interface VersionEvaluation {
  loss: number | null;
  accuracy: number | null;
  metrics: Record<string, number>;
  /** Federated (canary) evaluations only: clients and examples that answered. */
  clients?: number;
  examples?: number;
}

/** One version, as `GET /api/models` lists it. */
export interface ModelVersion {
  version: number;
  /** The version it was trained from (null for the initial model). */
  parent: number | null;
  /** The round (or, in asynchronous mode, the buffer) that made it; 0 for the initial model. */
  round: number;
  strategy: string;
  /** Clients whose updates made it. */
  contributors: string[];
  central: VersionEvaluation | null;
  federated: VersionEvaluation | null;
  /** SHA-256 of its float32 weights in `weights.bin` order, hex. */
  checksum: string;
  createdAt: string;
  status: VersionStatus;
  /** Why it was rejected, or why it was not promoted. */
  reason?: string;
  /** Whether its weights are still kept (old candidates' are pruned: `keepVersions`). */
  weightsKept: boolean;
}

/** `versions/index.json`. */
interface IndexFile {
  format: 1;
  runId: string;
  promoted: number;
  versions: (ModelVersion & { stateValues: Record<string, Scalar>; stateArrays: string[] })[];
}

/** What `add` takes: the record without what the store computes. */
export type NewVersion = Omit<
  ModelVersion,
  "version" | "checksum" | "createdAt" | "status" | "weightsKept"
>;

const INDEX = "index.json";
const binName = (v: number) => `v${String(v).padStart(6, "0")}.bin`;

/** Hex SHA-256 of weights in `weights.bin` layout. */
export function weightsChecksum(weights: readonly Float32Array[]): string {
  return createHash("sha256").update(packWeights(weights)).digest("hex");
}

/** The versions of one run, on disk (a run directory) or in memory. */
export class VersionStore {
  private readonly records: IndexFile["versions"] = [];
  private promotedVersion = 0;
  /** Versions whose weights are kept until the next `add`, whatever `keep` says. */
  private pinned = new Set<number>();
  /** Weights + state arrays by version, when there is no run directory. */
  private readonly memory = new Map<number, Uint8Array>();
  /** Bumped on every change: the index's ETag. */
  private revision = 0;

  private constructor(
    private readonly dir: string | null,
    readonly runId: string,
    private readonly specs: readonly TensorSpec[],
    /** Candidates whose weights are kept beside the promoted and the latest. */
    private readonly keep: number,
  ) {}

  /**
   * A new store for a new run (`resumeAt` undefined), or the store of a resumed run cut back
   * to the ledger's last version (a crash may have written versions the ledger never committed).
   */
  static async open(
    runDir: string | null,
    runId: string,
    specs: readonly TensorSpec[],
    options: {
      keep: number;
      resumeAt?: number;
      /** The promoted version the ledger committed (a resumed run's; the index may be newer). */
      promoted?: number;
    },
  ): Promise<VersionStore> {
    const dir = runDir === null ? null : join(runDir, "versions");
    const store = new VersionStore(dir, runId, specs, options.keep);
    if (dir === null) return store;
    await mkdir(dir, { recursive: true });
    if (options.resumeAt === undefined) return store;
    let parsed: IndexFile;
    try {
      parsed = JSON.parse(await readFile(join(dir, INDEX), "utf8")) as IndexFile;
    } catch (cause) {
      if ((cause as NodeJS.ErrnoException).code === "ENOENT") return store; // predates versions
      throw new CohortError("INVALID_OPTION", `${dir}/${INDEX} is not a version index`, { cause });
    }
    if (parsed.format !== 1 || parsed.runId !== runId || !Array.isArray(parsed.versions)) {
      throw new CohortError("INVALID_OPTION", `${dir}/${INDEX} is not this run's version index`);
    }
    store.records.push(...parsed.versions.filter((v) => v.version <= options.resumeAt!));
    // The ledger's pointer wins: a promotion written to the index after the ledger's last
    // commit belongs to the round the resumed run does again.
    const promoted = options.promoted ?? parsed.promoted;
    store.promotedVersion = store.records.some((r) => r.version === promoted)
      ? promoted
      : ([...store.records].reverse().find((r) => r.status === "promoted")?.version ?? 0);
    for (const r of parsed.versions) {
      if (r.version > options.resumeAt) await rm(join(dir, binName(r.version)), { force: true });
    }
    await store.writeIndex();
    return store;
  }

  /** Every version, oldest first (without their state bookkeeping). */
  list(): ModelVersion[] {
    return this.records.map(publicRecord);
  }

  /** One version, or undefined. */
  get(version: number): ModelVersion | undefined {
    const r = this.records.find((v) => v.version === version);
    return r === undefined ? undefined : publicRecord(r);
  }

  /** The newest version's number (-1 before the first). */
  latest(): number {
    return this.records.at(-1)?.version ?? -1;
  }

  /** The promoted version's number. */
  promoted(): number {
    return this.promotedVersion;
  }

  /** An ETag of the index: it changes with every change. */
  etag(): string {
    return `"${this.runId}-${this.revision}"`;
  }

  /**
   * Record a new version with its weights and the strategy state it leaves, numbered after the
   * latest; the first one is the initial model (version 0), promoted.
   */
  async add(
    next: NewVersion,
    weights: readonly Float32Array[],
    state: StateRecord,
  ): Promise<ModelVersion> {
    const version = this.latest() + 1;
    const stateArrays = Object.keys(state.arrays).sort();
    const bin = packWeights([...weights, ...stateArrays.flatMap((n) => state.arrays[n]!)]);
    const record: IndexFile["versions"][number] = {
      ...next,
      version,
      checksum: weightsChecksum(weights),
      createdAt: new Date().toISOString(),
      status: version === 0 ? "promoted" : "candidate",
      weightsKept: true,
      stateValues: state.values,
      stateArrays,
    };
    if (this.dir === null) this.memory.set(version, bin);
    else await writeAtomic(join(this.dir, binName(version)), bin);
    // What the ledger's last commit points to stays until the next version: a crash before
    // this round's commit resumes from those.
    this.pinned = new Set([this.promotedVersion, this.latest()]);
    this.records.push(record);
    if (version === 0) this.promotedVersion = 0;
    await this.prune();
    await this.writeIndex();
    return publicRecord(record);
  }

  /** Promote `version` (a candidate): applications are served it from now on. */
  async promote(version: number): Promise<void> {
    const r = this.record(version);
    if (r.status === "rejected") {
      throw new CohortError("INVALID_OPTION", `version ${version} was rejected: not promoted`);
    }
    r.status = "promoted";
    delete r.reason;
    this.promotedVersion = version;
    await this.prune();
    await this.writeIndex();
  }

  /** Mark `version` rejected, saying why. */
  async reject(version: number, reason: string): Promise<void> {
    const r = this.record(version);
    if (this.promotedVersion === version) {
      throw new CohortError("INTERNAL", `the promoted version ${version} cannot be rejected`);
    }
    r.status = "rejected";
    r.reason = reason;
    await this.prune();
    await this.writeIndex();
  }

  /** Note why a candidate stays a candidate. */
  async note(version: number, reason: string): Promise<void> {
    this.record(version).reason = reason;
    await this.writeIndex();
  }

  /** Add a federated (canary) evaluation to a version's record. */
  async setFederated(version: number, federated: VersionEvaluation): Promise<void> {
    this.record(version).federated = federated;
    await this.writeIndex();
  }

  /** A version's weights, or null when they were pruned. */
  async weightsOf(version: number): Promise<Float32Array[] | null> {
    return (await this.restore(version))?.weights ?? null;
  }

  /** A version's weights and the strategy state it left (a rollback's target), or null if pruned. */
  async restore(
    version: number,
  ): Promise<{ weights: Float32Array[]; strategy: StateRecord } | null> {
    const r = this.record(version);
    if (!r.weightsKept) return null;
    const bytes =
      this.dir === null
        ? this.memory.get(version)!
        : await readFile(join(this.dir, binName(version)));
    const { weights, arrays } = unpackState(bytes, this.specs, r.stateArrays, `version ${version}`);
    if (weightsChecksum(weights) !== r.checksum) {
      throw new CohortError(
        "MALFORMED_PAYLOAD",
        `version ${version}'s weights fail their checksum`,
      );
    }
    return { weights, strategy: { arrays, values: { ...r.stateValues } } };
  }

  private record(version: number): IndexFile["versions"][number] {
    const r = this.records.find((v) => v.version === version);
    if (r === undefined) throw new CohortError("INVALID_OPTION", `no version ${version}`);
    return r;
  }

  /**
   * Drop the weights of versions past `keep` that are neither promoted nor the latest, nor
   * pinned (what the promoted and the latest were when the round's version was added).
   */
  private async prune(): Promise<void> {
    const latest = this.latest();
    const held = this.records.filter(
      (r) => r.weightsKept && r.version !== latest && r.version !== this.promotedVersion,
    );
    for (const r of held.slice(0, Math.max(0, held.length - this.keep))) {
      if (this.pinned.has(r.version)) continue;
      r.weightsKept = false;
      if (this.dir === null) this.memory.delete(r.version);
      else await rm(join(this.dir, binName(r.version)), { force: true });
    }
  }

  private async writeIndex(): Promise<void> {
    this.revision++;
    if (this.dir === null) return;
    const file: IndexFile = {
      format: 1,
      runId: this.runId,
      promoted: this.promotedVersion,
      versions: this.records,
    };
    await writeAtomic(join(this.dir, INDEX), JSON.stringify(file) + "\n");
  }
}

function publicRecord(r: IndexFile["versions"][number]): ModelVersion {
  const { stateValues: _values, stateArrays: _arrays, ...rest } = r;
  return { ...rest, contributors: [...rest.contributors] };
}
