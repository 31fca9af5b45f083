/** Client options and reports, shared by the Node and browser builds. */
import type { Dataset } from "../protocol/dataset.js";
import { CohortError } from "../protocol/errors.js";
import { checkJoinToken, fromBase64, toBase64, type JoinToken } from "../aggregation/signing.js";
import type { MemberCredential } from "../aggregation/secure/messages.js";
import type { ClientMod } from "./fit-handler.js";
import type { MetricFn } from "../models/task.js";
import type { CodecMemoryStore } from "./codec-memory.js";

/** A started tfjs backend: `name` goes into every update's metrics, `label` into the handshake. */
export interface ClientBackend {
  name: string;
  label: string;
}

/** Starts the tfjs backend a client trains on (Node: `selectBackend`; browsers: `selectBrowserBackend`). */
export type BackendSelector<R extends string> = (request: R) => Promise<ClientBackend>;

/** Options of a client; `R` is the backend names the platform knows. */
export interface ClientOptions<R extends string> {
  /**
   * Coordinator URL, e.g. `http://localhost:8080`. Required. Nodes of one cluster may be
   * listed comma-separated (`http://a:8080,http://b:8080`): after a lost connection the client
   * tries the same node once, then each next one in turn; the reconnection delay doubles once
   * per pass over all of them.
   */
  url: string;
  /**
   * The local training data. Required. Float64Array and number-array features or labels are
   * converted (plain-array labels are class ids when `numClasses` is given, float targets
   * otherwise); anything else is refused with `DATASET_INVALID`.
   */
  data: Dataset;
  /**
   * Your own metric functions, by the name the task's `metrics` gives them; federated
   * evaluation reports the task's metrics this client knows. @default {}
   */
  metricFunctions: Record<string, MetricFn>;
  /** Stable id across reconnects. @default a random UUID */
  clientId: string;
  /**
   * tfjs backend. @default "auto" (Node: tfjs-node-gpu → webgpu → tfjs-node → wasm → cpu;
   * browsers: webgpu → webgl → wasm → cpu)
   */
  backend: R;
  /** How the backend is started. @default the platform's selector */
  selectBackend: BackendSelector<R>;
  /** First reconnection delay; doubles up to `reconnectDelayMaxMs`, with jitter. @default 500 */
  reconnectDelayMs: number;
  /** @default 10000 */
  reconnectDelayMaxMs: number;
  /** How long to wait for the coordinator to acknowledge an update. @default 120000 */
  ackTimeoutMs: number;
  /** Where progress lines go. @default a `debug("cohort:client")` logger */
  log: (line: string) => void;
  /**
   * Where failures go: a fit that failed, a coordinator that cannot be reached.
   * @default `log` when it is given, else standard error (the console in a browser)
   */
  logError: (line: string) => void;
  /**
   * Give up connecting after this long without reaching the coordinator: `start()` and `run()`
   * reject with `CONNECTION_FAILED`, naming the last error. @default undefined (keep trying)
   */
  connectTimeoutMs: number | undefined;
  /**
   * Seed of the local shuffles (round r uses seed + r), for reproducible runs.
   * @default undefined (a fresh random order every epoch)
   */
  seed: number | undefined;
  /** Ed25519 identity that authenticates this client and signs its updates. @default undefined */
  identity: { publicKey: Uint8Array; secretKey: Uint8Array } | undefined;
  /**
   * The coordinator's API token, sent as `Authorization: Bearer …` where the client reads its
   * HTTP API (`promotedModel()`); never logged. @default undefined (an open API)
   */
  apiToken: string | undefined;
  /** A join token for `identity`, from the coordinator's trusted issuer. @default undefined */
  joinToken: JoinToken | undefined;
  /**
   * Base64 Ed25519 key the coordinator must sign models with (pinned). Without it the key in
   * the task is trusted. A coordinator with another key is refused. @default undefined
   */
  coordinatorKey: string | undefined;
  /**
   * PEM certificate(s) of the authority that signed the coordinator's TLS certificate (Node;
   * browsers use their own trust store). @default the platform's trust store
   */
  ca: string | Uint8Array | undefined;
  /**
   * Held-out data the client evaluates global models on when the coordinator asks (federated
   * evaluation). @default undefined (see `evalFraction`)
   */
  evalData: Dataset | undefined;
  /**
   * Hold out this share of `data` (seeded by `seed`, or 0) for federated evaluation instead of
   * training on it; ignored when `evalData` is given. @default 0 (no held-out split)
   */
  evalFraction: number;
  /**
   * Take part in secure (SecAgg+) rounds only: every plain fit request is refused with
   * `SECURE_REQUIRED`, whatever the task says. Without it, a client still refuses plain fit
   * requests in a run whose task says it is secure. @default false
   */
  requireSecure: boolean;
  /**
   * Take part only in secure rounds whose members add distributed DP noise of at least this
   * multiplier z (`--dp-mode distributed` on the coordinator): plain rounds are refused with
   * `SECURE_REQUIRED`, and secure setups with less or no noise with `SECAGG_UNSAFE` before any
   * key is sent. Without it, a coordinator could quietly turn the noise off. See
   * docs/privacy.md. @default undefined (no noise required)
   */
  requireNoise: number | undefined;
  /**
   * Who may be a member of this client's secure rounds, decided by someone other than the
   * coordinator: `issuerKey`, the base64 Ed25519 key of an issuer whose join tokens admit
   * members, and/or `keys`, members' base64 identity keys. Set, the client checks every
   * neighbour's credential, that its keys are signed by that identity, and (the consistency
   * check) that its neighbourhood signed the same survivors; it refuses a round otherwise, so a
   * coordinator cannot invent members. Needs `identity`. @default undefined (the coordinator's
   * word is taken for who the members are)
   */
  trustedMembers: { issuerKey?: string; keys?: string[] } | undefined;
  /**
   * The least cohort size n, neighbour degree k and threshold t this client accepts in a secure
   * round; a setup below any of them is refused with `SECAGG_UNSAFE` before any key is sent.
   * With fewer members, fewer colluders (or members the coordinator invented) suffice to learn
   * this client's update; see docs/security.md. @default { cohort: 5, neighbours: 4, threshold: 3 }
   */
  secureFloors: { cohort: number; neighbours: number; threshold: number };
  /**
   * What a task may cost this client, checked before its model is built: parameters in all
   * (as its topology implies them, whatever its weight specs say), and units (or filters,
   * embedding rows) of any one layer. A bigger model is refused with `MODEL_TOO_LARGE`; one
   * with a layer class whose size the client cannot tell beforehand with `INVALID_MODEL`,
   * unless `allowUnknownLayers`. @default { maxParameters: 25000000, maxLayerSize: 65536,
   * allowUnknownLayers: false }
   */
  taskLimits: { maxParameters: number; maxLayerSize: number; allowUnknownLayers: boolean };
  /**
   * Your own links around local training, after the built-in ones (FedProx): each sees the
   * round's request (its `config.extra` holds the coordinator's own keys) and may change what
   * goes in or comes out. @default []
   */
  mods: ClientMod[];
  /**
   * Keeps the codec's memory (top-k's residual) across restarts of this client; the Node
   * client's `stateDir` sets a file store. @default undefined (in memory, for the process)
   */
  codecMemoryStore: CodecMemoryStore | undefined;
}

/** The default `secureFloors`: a 3-member cohort with t = 2, as a sybil attack needs, is refused. */
export const DEFAULT_SECURE_FLOORS: ClientOptions<string>["secureFloors"] = {
  cohort: 5,
  neighbours: 4,
  threshold: 3,
};

/** Floors from `N,K,T` text (a flag or a page's query), or `INVALID_OPTION` naming `what`. */
export function parseFloors(text: string, what: string): ClientOptions<string>["secureFloors"] {
  const parts = text.split(",").map((p) => Number(p.trim()));
  if (parts.length !== 3 || !parts.every((v) => Number.isInteger(v) && v >= 1)) {
    throw new CohortError(
      "INVALID_OPTION",
      `${what} must be N,K,T (three positive integers), got "${text}"`,
    );
  }
  const [cohort, neighbours, threshold] = parts as [number, number, number];
  return { cohort, neighbours, threshold };
}

/** No floors: for the simulator, whose coordinator runs in the same process. */
export const NO_SECURE_FLOORS: ClientOptions<string>["secureFloors"] = {
  cohort: 2,
  neighbours: 1,
  threshold: 1,
};

/** The default `taskLimits` (McMahan's CNN has 1.66 M parameters and 2,048 units at most). */
export const DEFAULT_TASK_LIMITS: ClientOptions<string>["taskLimits"] = {
  maxParameters: 25_000_000,
  maxLayerSize: 65_536,
  allowUnknownLayers: false,
};

/** Local training progress of a round, after each batch. */
export interface ClientProgress {
  round: number;
  batchesDone: number;
  batchesTotal: number;
}

/** What a client reports after each round it trained. */
export interface ClientRoundReport {
  round: number;
  numExamples: number;
  loss: number;
  accuracy: number | null;
  trainMs: number;
  /** Whether the coordinator accepted the update, and its error code otherwise. */
  accepted: boolean;
  code?: string;
}

/** `node VERSION OS ARCH`, or the browser's user agent. */
export function platformName(): string {
  const nav = (globalThis as { navigator?: { userAgent?: string } }).navigator;
  if (typeof process !== "undefined" && process.versions?.node) {
    return `node ${process.version} ${process.platform} ${process.arch}`;
  }
  return nav?.userAgent ?? "unknown";
}

/** The bytes of a base64 Ed25519 public key given as option `what`; `INVALID_OPTION` otherwise. */
export function publicKeyOption(text: unknown, what: string): Uint8Array {
  let k: Uint8Array | null = null;
  try {
    k = typeof text === "string" ? fromBase64(text, what) : null;
  } catch {
    // reported below
  }
  if (k === null || k.length !== 32) {
    throw new CohortError("INVALID_OPTION", `${what} must be a base64 Ed25519 public key`);
  }
  return k;
}

/**
 * The check of a neighbour's credential under `trustedMembers`: null to accept, or why not.
 * Throws `INVALID_OPTION` for keys that are not base64 Ed25519 keys.
 */
export function membershipCheck(
  trust: NonNullable<ClientOptions<string>["trustedMembers"]>,
): (credential: MemberCredential) => string | null {
  const key = publicKeyOption;
  const issuer =
    trust.issuerKey === undefined ? null : key(trust.issuerKey, "trustedMembers.issuerKey");
  const members = new Set((trust.keys ?? []).map((k) => toBase64(key(k, "trustedMembers.keys"))));
  if (issuer === null && members.size === 0) {
    throw new CohortError("INVALID_OPTION", "trustedMembers needs an issuerKey or keys");
  }
  return (credential) => {
    if (members.has(toBase64(credential.identityKey))) return null;
    if (issuer !== null && credential.token !== null) {
      const verdict = checkJoinToken(issuer, credential.identityKey, credential.token, Date.now());
      return verdict === "ok" ? null : `has a join token that is ${verdict}`;
    }
    return "is not a member this client trusts (no valid join token, not on its list)";
  };
}
