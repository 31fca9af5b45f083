/** `float32`: the delta as it is, today's wire format (the default, exact, linear). */
import type { TensorSpec } from "../../protocol/messages.js";
import type { UpdateCodec } from "../codec.js";
import { CohortError } from "../../protocol/errors.js";
import { describe } from "../../protocol/codec.js";
import type { CodecDefinition } from "./registry.js";

/** The identity: what the client trained is what the coordinator gets. */
export const float32: CodecDefinition<Record<string, never>> = {
  name: "float32",
  summary: "exact; today's wire format",
  linear: true,
  defaults: {},
  create: (params, label): UpdateCodec => ({
    name: "float32",
    params,
    label,
    linear: true,
    bound: "exact",
    encode: (delta) => delta,
    decode(payload: unknown, specs: readonly TensorSpec[]) {
      if (!Array.isArray(payload) || !payload.every((t) => t instanceof Float32Array)) {
        throw new CohortError(
          "INVALID_MESSAGE",
          `float32 update: \`delta\` must be an array of Float32Array, got ${describe(payload)}`,
        );
      }
      // Shapes and finiteness are the collector's checks of every decoded delta.
      void specs;
      return payload as Float32Array[];
    },
  }),
};
