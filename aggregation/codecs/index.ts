/** The built-in update codecs, registered by name. A new codec is one file plus one line here. */
import { registerCodec } from "./registry.js";
import { f16 } from "./f16.js";
import { float32 } from "./float32.js";
import { q2, q4, q8 } from "./stochastic.js";
import { topk } from "./topk.js";

registerCodec(float32);
registerCodec(f16);
registerCodec(q8);
registerCodec(q4);
registerCodec(q2);
registerCodec(topk);

export { f16, float32, q2, q4, q8, topk };
export {
  checkCodec,
  codecDefinitions,
  codecRef,
  DEFAULT_CODEC,
  parseCodecSpec,
  registerCodec,
  resolveCodec,
  type CodecDefinition,
} from "./registry.js";
export { HALF_MAX, toHalf } from "./half.js";
export type {
  CodecContext,
  CodecMemory,
  CodecParams,
  CodecRef,
  EncodeContext,
  UpdateCodec,
} from "../codec.js";
