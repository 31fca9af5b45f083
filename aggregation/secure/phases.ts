/** The ordered phases of a SecAgg+ round and the phase and round checks every state machine applies. */
import { CohortError } from "../../protocol/errors.js";

/** The phases of one round, in order. */
export const SECAGG_PHASES = [
  "advertise-keys",
  "share-keys",
  "collect-masked",
  "consistency",
  "unmask",
] as const;

/** One phase of a round. */
export type SecAggPhase = (typeof SECAGG_PHASES)[number];

/** Where a state machine stands: the phase it expects next, or a terminal state. */
export type SecAggState = SecAggPhase | "done" | "aborted";

/**
 * The state after `phase` completes. The consistency check (members sign the survivors they
 * were told of) runs only in rounds whose setup asks for it (`consistency`).
 */
export function nextState(phase: SecAggPhase, consistency = false): SecAggState {
  switch (phase) {
    case "advertise-keys":
      return "share-keys";
    case "share-keys":
      return "collect-masked";
    case "collect-masked":
      return consistency ? "consistency" : "unmask";
    case "consistency":
      return "unmask";
    case "unmask":
      return "done";
    default: {
      const _exhaustive: never = phase;
      return _exhaustive;
    }
  }
}

/** Throw `SECAGG_PHASE` unless the machine is in `expected` (nothing is changed either way). */
export function expectPhase(state: SecAggState, expected: SecAggPhase, what: string): void {
  if (state !== expected) {
    throw new CohortError(
      "SECAGG_PHASE",
      `${what} belongs to phase ${expected} but the round is in ${state}`,
    );
  }
}

/** Throw `STALE_ROUND` / `FUTURE_ROUND` unless a message is for the machine's round. */
export function expectRound(round: number, got: number, what: string): void {
  if (got < round)
    throw new CohortError("STALE_ROUND", `${what} is for round ${got}, not ${round}`);
  if (got > round)
    throw new CohortError("FUTURE_ROUND", `${what} is for round ${got}, not ${round}`);
}
