/**
 * Evaluation-gated promotion: is a new version good enough to serve, bad enough to roll back
 * from, or neither? Pure: the engine measures, this decides.
 */
import { CohortError } from "../protocol/errors.js";
import type { CoordinatorOptions } from "./options.js";
import type { VersionEvaluation } from "./versions.js";

/** What happens to a candidate version. */
export type Decision =
  | { action: "promote"; reason: string }
  /** It stays a candidate: training goes on from it, the promoted version is still served. */
  | { action: "keep"; reason: string }
  /** Rejected: training rolls back to the promoted version. */
  | { action: "reject"; reason: string };

/** The options that gate versions. */
export type PromotionOptions = Pick<
  CoordinatorOptions,
  "promoteThreshold" | "rollbackDrop" | "canaryFraction"
>;

/** Whether versions are gated at all (off: every version is promoted, as plain runs expect). */
export function gated(o: PromotionOptions): boolean {
  return o.promoteThreshold !== undefined || o.rollbackDrop !== undefined;
}

/**
 * Refuse, at start, gating nothing could measure (no held-out set and no canaries). Under
 * differential privacy a rollback keeps the privacy spent (`keepPrivacySpent`).
 */
export function checkPromotion(o: PromotionOptions, context: { evaluates: boolean }): void {
  if (!gated(o)) {
    if (o.canaryFraction > 0) {
      throw new CohortError(
        "INVALID_OPTION",
        "canaryFraction needs promoteThreshold or rollbackDrop: canaries decide promotions",
      );
    }
    return;
  }
  if (!context.evaluates && o.canaryFraction === 0) {
    throw new CohortError(
      "INVALID_OPTION",
      "promoteThreshold and rollbackDrop need an evaluation: an evalDataset (--eval-dataset) or canaryFraction > 0",
    );
  }
}

/** The score a decision compares: accuracy where the task has it, else −loss; null: unmeasured. */
export function score(e: VersionEvaluation | null): number | null {
  if (e === null) return null;
  if (e.accuracy !== null && Number.isFinite(e.accuracy)) return e.accuracy;
  return e.loss === null ? null : -e.loss;
}

function describe(e: VersionEvaluation): string {
  return e.accuracy !== null ? `accuracy ${e.accuracy.toFixed(4)}` : `loss ${e.loss?.toFixed(4)}`;
}

/**
 * Decide a candidate's fate against the promoted version, both measured the same way (the
 * canaries' evaluation when there are canaries, else the centralised one).
 */
export function decide(
  candidate: VersionEvaluation | null,
  promoted: VersionEvaluation | null,
  o: PromotionOptions,
  promotedVersion: number,
): Decision {
  if (!gated(o)) return { action: "promote", reason: "versions are not gated" };
  if (candidate !== null && candidate.loss !== null && !Number.isFinite(candidate.loss)) {
    return { action: "reject", reason: `its loss is ${candidate.loss}` };
  }
  const c = score(candidate);
  if (c === null) return { action: "keep", reason: "no evaluation answered" };
  const p = score(promoted);
  if (p === null) return { action: "promote", reason: `v${promotedVersion} was never measured` };
  const drop = p - c;
  const against = `${describe(candidate!)} vs ${describe(promoted!)} of v${promotedVersion}`;
  if (o.rollbackDrop !== undefined && drop > o.rollbackDrop) {
    return { action: "reject", reason: `${against}: worse by more than ${o.rollbackDrop}` };
  }
  if (o.promoteThreshold === undefined) return { action: "promote", reason: against };
  if (drop <= o.promoteThreshold) return { action: "promote", reason: against };
  return { action: "keep", reason: `${against}: worse by more than ${o.promoteThreshold}` };
}
