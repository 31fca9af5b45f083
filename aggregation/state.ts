/** Server-side strategy state as plain data: named float arrays and scalars, saved in the run ledger. */
import { CohortError } from "../protocol/errors.js";
import type { Weights } from "./weights.js";

import type { Scalar } from "../protocol/messages.js";

/** A scalar that travels in JSON, msgpack and `run.json`. */
export type { Scalar };

/**
 * A strategy's state between rounds (optimizer moments, momentum buffers, counters): arrays
 * by name, each in the model's tensor layout, and scalars. Pure data, so the ledger can commit
 * it and a resumed run continues bit for bit.
 */
export interface StateRecord {
  arrays: Record<string, Float32Array[]>;
  values: Record<string, Scalar>;
}

/** A state with nothing in it (plain FedAvg). */
export function emptyState(): StateRecord {
  return { arrays: {}, values: {} };
}

/** Arrays shaped like `w`, each value `fill`. */
export function filledLike(w: Weights, fill = 0): Float32Array[] {
  return w.map((t) => new Float32Array(t.length).fill(fill));
}

/** The arrays `name` of a state, checked against the model's layout. */
export function stateArrays(s: StateRecord, name: string, layout: Weights): Float32Array[] {
  const a = s.arrays[name];
  if (
    a === undefined ||
    a.length !== layout.length ||
    a.some((t, i) => t.length !== layout[i]!.length)
  ) {
    throw new CohortError(
      "SHAPE_MISMATCH",
      `strategy state "${name}" is missing or does not match the model's layout`,
    );
  }
  return a;
}
