/**
 * The version gate: after each server step the new global model becomes a version; it is
 * measured (centrally, or on canary clients), then promoted, kept as a candidate, or rejected
 * with training rolled back to the promoted version. Both drivers (rounds and FedBuff) use it.
 */
import type { StateRecord } from "../aggregation/state.js";
import { CohortError } from "../protocol/errors.js";
import type { EvalStats } from "../models/adapter.js";
import { decide, type Decision, type PromotionOptions } from "./promotion.js";
import type { RoundMetrics } from "./run-store.js";
import { VersionStore, type ModelVersion, type VersionEvaluation } from "./versions.js";

/** Where the versions stand, as the ledger commits it. */
export interface VersionPointers {
  /** The newest version recorded. */
  latest: number;
  /** The version the global weights are (the promoted one after a rollback). */
  current: number;
  promoted: number;
}

/** What became of a new version. */
export interface GateOutcome {
  version: ModelVersion;
  decision: Decision;
  /** After a rejection: the promoted version's weights and strategy state to go on from. */
  rollback: { weights: Float32Array[]; strategy: StateRecord; to: number } | null;
}

/** A version's evaluation from the engine's centralised figures. */
export function centralEvaluation(
  e: Pick<RoundMetrics, "accuracy" | "loss" | "metrics"> | EvalStats | null,
): VersionEvaluation | null {
  if (e === null || e.loss === undefined) return null;
  return { loss: e.loss, accuracy: e.accuracy ?? null, metrics: { ...(e.metrics ?? {}) } };
}

export class VersionGate {
  private current = 0;

  private constructor(
    readonly store: VersionStore,
    private readonly opts: PromotionOptions,
    private readonly strategy: string,
    /** Evaluates weights on canary clients (null when none answered or there are none). */
    private readonly canary: (
      version: number,
      weights: readonly Float32Array[],
    ) => Promise<VersionEvaluation | null>,
  ) {}

  /**
   * The gate of a run: its store opened (cut back to `resumed.latest` on resume) and, when it
   * holds nothing, the current weights recorded as the first version.
   */
  static async open(
    store: VersionStore,
    opts: PromotionOptions,
    strategy: string,
    canary: VersionGate["canary"],
    first: {
      round: number;
      weights: readonly Float32Array[];
      state: StateRecord;
      central: VersionEvaluation | null;
      resumed: VersionPointers | null;
    },
  ): Promise<VersionGate> {
    const gate = new VersionGate(store, opts, strategy, canary);
    if (first.resumed !== null && store.latest() >= 0) {
      gate.current = first.resumed.current;
      return gate;
    }
    const v = await store.add(
      {
        parent: null,
        round: first.round,
        strategy,
        contributors: [],
        central: first.central,
        federated: null,
      },
      first.weights,
      first.state,
    );
    // A resumed run from before versions: its weights are the first version it knows.
    if (v.version !== store.promoted()) await store.promote(v.version);
    gate.current = v.version;
    return gate;
  }

  pointers(): VersionPointers {
    return { latest: this.store.latest(), current: this.current, promoted: this.store.promoted() };
  }

  /** Record the model a server step made, measure it and decide its fate. */
  async next(step: {
    round: number;
    weights: readonly Float32Array[];
    state: StateRecord;
    central: VersionEvaluation | null;
    contributors: string[];
  }): Promise<GateOutcome> {
    const { store, opts } = this;
    const added = await store.add(
      {
        parent: this.current,
        round: step.round,
        strategy: this.strategy,
        contributors: step.contributors,
        central: step.central,
        federated: null,
      },
      step.weights,
      step.state,
    );
    const promoted = store.promoted();
    let candidate = step.central;
    let incumbent = store.get(promoted)?.central ?? null;
    if (opts.canaryFraction > 0) {
      // The promoted version is measured by canaries once (the first, before any had joined).
      if ((store.get(promoted)?.federated ?? null) === null) {
        const weights = await store.weightsOf(promoted);
        const fed = weights === null ? null : await this.canary(promoted, weights);
        if (fed !== null) await store.setFederated(promoted, fed);
      }
      candidate = await this.canary(added.version, step.weights);
      if (candidate !== null) await store.setFederated(added.version, candidate);
      incumbent = store.get(promoted)?.federated ?? null;
    }
    const decision = decide(candidate, incumbent, opts, promoted);
    let rollback: GateOutcome["rollback"] = null;
    switch (decision.action) {
      case "promote":
        await store.promote(added.version);
        this.current = added.version;
        break;
      case "keep":
        await store.note(added.version, decision.reason);
        this.current = added.version;
        break;
      case "reject": {
        await store.reject(added.version, decision.reason);
        const back = await store.restore(promoted);
        if (back === null) {
          throw new CohortError("INTERNAL", `the promoted version ${promoted} has no weights`);
        }
        rollback = { ...back, to: promoted };
        this.current = promoted;
        break;
      }
      default: {
        const exhaustive: never = decision;
        throw new CohortError("INTERNAL", `unknown decision ${JSON.stringify(exhaustive)}`);
      }
    }
    return { version: store.get(added.version)!, decision, rollback };
  }
}
