/** `cohort client`: join a coordinator with a shard of a dataset, train until the run ends. */
import { CohortError } from "../protocol/errors.js";
import { readFile } from "node:fs/promises";
import { CohortClient } from "../client/index.js";
import { parseFloors } from "../client/options.js";
import { readIdentity, readJoinToken, readKeyList } from "./keys.js";
import { parseBackendRequest } from "../models/backend.js";
import { loadDataset, shardDataset, takeExamples } from "../models/datasets/index.js";
import { helpText, parseFlags, type CommandSpec, type FlagSpec } from "./args.js";

export const clientCommand = {
  name: "client",
  summary:
    "Join a coordinator with a shard of a dataset and train every round this client is sampled for; exits 0 when the run ends.",
  flags: {
    url: {
      type: "string",
      default: "http://localhost:8080",
      description:
        "coordinator URL, or nodes of one cluster comma-separated (reconnections try them in turn)",
    },
    dataset: {
      type: "string",
      default: "mnist",
      placeholder: "mnist|fashion-mnist|idx:DIR|csv:FILE",
      description: "training data (train split)",
    },
    "client-index": {
      type: "number",
      default: 0,
      description: "which shard of the dataset this client holds",
    },
    "num-clients": {
      type: "number",
      default: 1,
      description: "number of shards the dataset is cut into",
    },
    "max-examples": {
      type: "number",
      defaultText: "whole shard",
      description: "keep at most N examples of the shard",
    },
    backend: {
      type: "string",
      default: "auto",
      placeholder: "auto|tfjs-node-gpu|tfjs-node|wasm|cpu",
      description: "tfjs backend",
    },
    identity: {
      type: "string",
      placeholder: "FILE",
      description:
        "identity file (cohort keygen) that authenticates this client and signs its updates",
    },
    "state-dir": {
      type: "string",
      placeholder: "DIR",
      defaultText: "none: kept in memory",
      description:
        "this client's own state (the codec's residual under top-k), kept across restarts",
    },
    "join-token": {
      type: "string",
      placeholder: "FILE",
      description: "join token (cohort token) for the identity",
    },
    "coordinator-key": {
      type: "string",
      placeholder: "BASE64",
      defaultText: "the key in the task",
      description: "pin the key that must sign the models",
    },
    "connect-timeout": {
      type: "string",
      placeholder: "SECONDS",
      defaultText: "unset: keep trying",
      description: "give up (exit 1) when the coordinator cannot be reached for this long",
    },
    ca: {
      type: "string",
      placeholder: "FILE",
      description: "PEM of the authority that signed the coordinator's TLS certificate",
    },
    "require-secure": {
      type: "boolean",
      default: false,
      description: "take part in secure (SecAgg+) rounds only: refuse every plain round",
    },
    "require-dp-noise": {
      type: "string",
      placeholder: "Z",
      description:
        "take part only in secure rounds whose members add distributed DP noise of multiplier ≥ Z (docs/privacy.md)",
    },
    "trust-issuer": {
      type: "string",
      placeholder: "KEY",
      defaultText: "unset: the coordinator's word for who the members are",
      description:
        "in secure rounds, accept only neighbours with a join token of this issuer (base64 key; needs --identity)",
    },
    "trust-members": {
      type: "string",
      placeholder: "FILE",
      defaultText: "unset",
      description:
        "in secure rounds, accept only neighbours whose identity key is in FILE (base64, one per line; with or without --trust-issuer)",
    },
    "secure-floors": {
      type: "string",
      placeholder: "N,K,T",
      defaultText: "5,4,3",
      description:
        "refuse secure rounds with fewer than N members, K neighbours or threshold T (docs/security.md)",
    },
    "eval-fraction": {
      type: "number",
      default: 0,
      description:
        "share of the data held out (not trained on) to evaluate global models when asked",
    },
    seed: {
      type: "number",
      defaultText: "unset (fresh random shuffles)",
      description: "seed of the local shuffles, for reproducible runs",
    },
    "client-id": {
      type: "string",
      defaultText: "a random UUID",
      description: "stable id, kept across reconnects",
    },
  },
} satisfies CommandSpec<Record<string, FlagSpec>>;

/** Run the command; resolves with the process exit code. */
export async function runClient(argv: string[]): Promise<number> {
  const flags = parseFlags(clientCommand, argv);
  if (flags === null) {
    console.log(helpText(clientCommand));
    return 0;
  }
  const backend = parseBackendRequest(flags.backend);
  const full = await loadDataset(flags.dataset, "train");
  let data = shardDataset(full, flags["client-index"], flags["num-clients"]);
  if (flags["max-examples"] !== undefined) data = takeExamples(data, flags["max-examples"]);
  const client = new CohortClient({
    url: flags.url,
    data,
    backend,
    clientId: flags["client-id"],
    ...(flags["state-dir"] === undefined ? {} : { stateDir: flags["state-dir"] }),
    seed: flags.seed,
    evalFraction: flags["eval-fraction"],
    identity: flags.identity === undefined ? undefined : await readIdentity(flags.identity),
    joinToken:
      flags["join-token"] === undefined ? undefined : await readJoinToken(flags["join-token"]),
    coordinatorKey: flags["coordinator-key"],
    requireSecure: flags["require-secure"],
    ...(flags["require-dp-noise"] === undefined
      ? {}
      : { requireNoise: Number(flags["require-dp-noise"]) }),
    ...(flags["trust-issuer"] === undefined && flags["trust-members"] === undefined
      ? {}
      : {
          trustedMembers: {
            ...(flags["trust-issuer"] === undefined ? {} : { issuerKey: flags["trust-issuer"] }),
            ...(flags["trust-members"] === undefined
              ? {}
              : { keys: await readKeyList(flags["trust-members"]) }),
          },
        }),
    ...(flags["secure-floors"] === undefined
      ? {}
      : { secureFloors: parseFloors(flags["secure-floors"], "--secure-floors") }),
    ca: flags.ca === undefined ? undefined : await readFile(flags.ca, "utf8"),
    ...(flags["connect-timeout"] === undefined
      ? {}
      : { connectTimeoutMs: seconds(flags["connect-timeout"], "--connect-timeout") }),
    log: (line) => console.log(line),
  });
  const stop = () => void client.close().then(() => process.exit(130));
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
  await client.run();
  return 0;
}

/** Milliseconds from a flag in seconds; throws `INVALID_OPTION` unless it is a positive number. */
function seconds(text: string, flag: string): number {
  const v = Number(text);
  if (!(v > 0) || !Number.isFinite(v)) {
    throw new CohortError(
      "INVALID_OPTION",
      `${flag} takes a positive number of seconds, got ${JSON.stringify(text)}`,
    );
  }
  return v * 1000;
}
