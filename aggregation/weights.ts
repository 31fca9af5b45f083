/** Model weights as plain typed arrays: checks and arithmetic, no tfjs. */
import { CohortError } from "../protocol/errors.js";
import type { TensorSpec } from "../protocol/messages.js";

/** A model's weights: one flat Float32Array per tensor, in `model.getWeights()` order. */
export type Weights = readonly Float32Array[];

/** Number of values a tensor of this shape holds. */
export function sizeOf(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** Total number of parameters of a model. */
export function countParameters(specs: readonly TensorSpec[]): number {
  return specs.reduce((n, s) => n + sizeOf(s.shape), 0);
}

/**
 * Check weights against their specs: same tensor count, same sizes, every value finite.
 * Throws `SHAPE_MISMATCH` or `NON_FINITE` naming the first offending tensor.
 */
export function checkWeights(
  weights: Weights,
  specs: readonly TensorSpec[],
  what = "weights",
): void {
  if (weights.length !== specs.length) {
    throw new CohortError(
      "SHAPE_MISMATCH",
      `${what} has ${weights.length} tensors but the model has ${specs.length}`,
    );
  }
  for (let i = 0; i < specs.length; i++) {
    const spec = specs[i]!;
    const tensor = weights[i]!;
    const expected = sizeOf(spec.shape);
    if (tensor.length !== expected) {
      throw new CohortError(
        "SHAPE_MISMATCH",
        `${what}[${i}] (${spec.name}) has ${tensor.length} values but shape [${spec.shape.join(", ")}] needs ${expected}`,
      );
    }
    for (let j = 0; j < tensor.length; j++) {
      if (!Number.isFinite(tensor[j]!)) {
        throw new CohortError(
          "NON_FINITE",
          `${what}[${i}] (${spec.name}) holds ${tensor[j]} at index ${j}`,
        );
      }
    }
  }
}

/** `a − b`, tensor by tensor. Both must have the same layout. */
export function subtract(a: Weights, b: Weights): Float32Array[] {
  assertSameLayout(a, b);
  return a.map((t, i) => {
    const u = b[i]!;
    const out = new Float32Array(t.length);
    for (let j = 0; j < t.length; j++) out[j] = t[j]! - u[j]!;
    return out;
  });
}

/** `base + scale · delta`, tensor by tensor, as new arrays. */
export function addScaled(base: Weights, delta: Weights, scale = 1): Float32Array[] {
  assertSameLayout(base, delta);
  return base.map((t, i) => {
    const d = delta[i]!;
    const out = new Float32Array(t.length);
    for (let j = 0; j < t.length; j++) out[j] = t[j]! + scale * d[j]!;
    return out;
  });
}

/** Total byte size of the weights' values. */
export function byteSize(weights: Weights): number {
  return weights.reduce((n, t) => n + t.byteLength, 0);
}

function assertSameLayout(a: Weights, b: Weights): void {
  if (a.length !== b.length || a.some((t, i) => t.length !== b[i]!.length)) {
    throw new CohortError("SHAPE_MISMATCH", "weights have different layouts");
  }
}
