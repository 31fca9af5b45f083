/** The coordinator's web side: dashboard, demo client page, JSON status, Prometheus metrics. */
export { createHttpHandler, type HttpContext } from "./router.js";
export { accessPolicy, type AccessPolicy } from "./access.js";
export { limitConnectionsPerAddress, serverTimeouts, type ServerTimeouts } from "./limits.js";
export { locateAssets, WASM_FILES, type Assets } from "./assets.js";
export { StatusTracker } from "./status.js";
export type {
  StatusSnapshot,
  ClientStatus,
  ClusterStatus,
  ClusterNodeStatus,
  FailureStatus,
  RoundPoint,
  RunInfo,
} from "./status.js";
export {
  exposition,
  statusFamilies,
  PROMETHEUS_CONTENT_TYPE,
  type MetricFamily,
} from "./prometheus.js";
export { ISOLATION_HEADERS } from "./respond.js";
