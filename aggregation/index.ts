/** Pure aggregation maths on typed arrays: strategies, aggregators, server optimizers, weight checks. No I/O, no tfjs. */
export * from "./weights.js";
export * from "./fedavg.js";
export * from "./random.js";
export * from "./state.js";
export * from "./aggregator.js";
export * from "./optimizer.js";
export * from "./strategy.js";
export * from "./strategies/index.js";
export * from "./codecs/index.js";
export * as secure from "./secure/index.js";
export * from "./server-step.js";
export * from "./schedule.js";
export * from "./signing.js";
export { generateIdentity, identityFromSecret, type KeyPair } from "./crypto.js";
