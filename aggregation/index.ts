/** Pure aggregation maths on typed arrays: FedAvg and weight checks. No I/O, no tfjs. */
export * from "./weights.js";
export * from "./fedavg.js";
export * from "./random.js";
export * as secure from "./secure/index.js";
