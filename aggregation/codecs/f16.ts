/** `f16`: the delta in IEEE half precision, rounded to nearest even (half the bytes). */
import type { TensorSpec } from "../../protocol/messages.js";
import type { UpdateCodec } from "../codec.js";
import { decodeHalves, encodeHalves } from "./half.js";
import { flatten, payloadObject, totalSize, typedField, unflatten } from "./layout.js";
import type { CodecDefinition } from "./registry.js";

const BOUND =
  "|x̂ − x| ≤ 2⁻¹¹·|x| for 2⁻¹⁴ ≤ |x| ≤ 65504, ≤ 2⁻²⁵ below; larger values saturate at ±65504";

/** Half precision: 2 bytes a value, relative error at most 2⁻¹¹. */
export const f16: CodecDefinition<Record<string, never>> = {
  name: "f16",
  summary: "half precision, round-to-nearest-even, 2×",
  linear: false,
  defaults: {},
  create: (params, label): UpdateCodec => ({
    name: "f16",
    params,
    label,
    // A sum of halves is not a half: secure aggregation cannot add them.
    linear: false,
    bound: BOUND,
    encode: (delta) => ({ values: encodeHalves(flatten(delta)) }),
    decode(payload: unknown, specs: readonly TensorSpec[]) {
      const o = payloadObject(payload, "f16");
      const n = totalSize(specs);
      const halves = typedField(o, "values", Uint16Array, n, "f16");
      const flat = new Float32Array(n);
      decodeHalves(halves, flat);
      return unflatten(flat, specs);
    },
  }),
};
