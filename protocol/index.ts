/** Wire protocol of Cohort: messages, socket.io event maps, msgpack codec, guards and errors. */
export * from "./errors.js";
export * from "./version.js";
export * from "./codec.js";
export * from "./messages.js";
export * from "./events.js";
export * from "./guards.js";
export * from "./dataset.js";
export * from "./dataset-check.js";
export * from "./task.js";
export * from "./options.js";
