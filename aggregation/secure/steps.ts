/** The envelope of a secure round on the wire: one coordinator request per phase, and its guard. */
import { describe } from "../../protocol/codec.js";
import { CohortError } from "../../protocol/errors.js";
import {
  parseConsistencyRequest,
  parseMaskRequest,
  parseNeighbourKeys,
  parseSecAggSetup,
  parseUnmaskRequest,
  type ConsistencyRequest,
  type MaskRequest,
  type NeighbourKeys,
  type SecAggSetup,
  type UnmaskRequest,
} from "./messages.js";

/**
 * What the coordinator asks a cohort member in a secure round. The first step carries the
 * setup, the member's index and the global weights, so training starts while keys are agreed.
 */
export type SecureStep =
  | {
      phase: "advertise-keys";
      setup: SecAggSetup;
      index: number;
      /** The encoded `FitRequest`, as a signed envelope where the coordinator signs models. */
      model: Uint8Array;
    }
  | { phase: "share-keys"; message: NeighbourKeys }
  | { phase: "collect-masked"; message: MaskRequest }
  | { phase: "consistency"; message: ConsistencyRequest }
  | { phase: "unmask"; message: UnmaskRequest };

/** Validate a decoded secure step. */
export function parseSecureStep(raw: unknown): SecureStep {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    throw new CohortError(
      "INVALID_MESSAGE",
      `secure step: expected an object, got ${describe(raw)}`,
    );
  }
  const o = raw as Record<string, unknown>;
  switch (o.phase) {
    case "advertise-keys": {
      const setup = parseSecAggSetup(o.setup);
      const index = o.index;
      if (typeof index !== "number" || !Number.isInteger(index) || index < 0 || index >= setup.n) {
        throw new CohortError("INVALID_MESSAGE", `secure step: index must be in [0, ${setup.n})`);
      }
      if (!(o.model instanceof Uint8Array)) {
        throw new CohortError(
          "INVALID_MESSAGE",
          "secure step: `model` must be the encoded fit request",
        );
      }
      return { phase: "advertise-keys", setup, index, model: o.model };
    }
    case "share-keys":
      return { phase: "share-keys", message: parseNeighbourKeys(o.message) };
    case "collect-masked":
      return { phase: "collect-masked", message: parseMaskRequest(o.message) };
    case "consistency":
      return { phase: "consistency", message: parseConsistencyRequest(o.message) };
    case "unmask":
      return { phase: "unmask", message: parseUnmaskRequest(o.message) };
    default:
      throw new CohortError("INVALID_MESSAGE", `secure step: unknown phase ${describe(o.phase)}`);
  }
}
