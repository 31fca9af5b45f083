/** Secure aggregation (SecAgg+, Bell et al. 2020; k = n − 1 is Bonawitz et al. 2017): the public API. */
export * from "./phases.js";
export * from "./messages.js";
export {
  SecAggClient,
  type SecAggClientOptions,
  type ClientUpdate,
  type ShareRejection,
} from "./client.js";
export { SecAggServer, type SecAggServerOptions } from "./server.js";
export type { SecAggDropout, SecAggResult } from "./recover.js";
export { ShareLedger, checkUnmaskRequest, type ShareKind } from "./ledger.js";
export {
  neighbourGraph,
  checkThreshold,
  majorityThreshold,
  logarithmicDegree,
  pruneToDegree,
  type NeighbourGraph,
  type GraphInput,
  type ThresholdPolicy,
} from "./graph.js";
export {
  MAX_COHORT,
  secureParams,
  maxQuantizationError,
  quantizeUpdate,
  decodeSum,
  encodedLength,
  encodedWords,
  signedBits,
  clientWeight,
  sumMultiplier,
  type DistributedNoise,
  type NoiseParams,
  type SecureParams,
  type SecureParamsInput,
  type SecureQuantizer,
  type DecodedAggregate,
} from "./quantize.js";
export { SHAMIR_MAX_SHARES, split, combine, type ShamirShare } from "./shamir.js";
export { expandSeed, applyMasks, type Mask } from "./prg.js";
export { packMasked, addMasked, packedBytes } from "./packing.js";
export {
  generateIdentity,
  identityFromSecret,
  getKeyAgreement,
  cryptoRng,
  type KeyPair,
  type KeyAgreement,
} from "../crypto.js";
export * from "./steps.js";
export * from "../signing.js";
