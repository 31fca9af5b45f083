/** `cohort coordinator`: start a coordinator, run the rounds, exit 0 (or keep serving the dashboard). */
import { readFile } from "node:fs/promises";
import { createCoordinator } from "../coordinator/index.js";
import { ClusterNode, DEFAULT_LEASE_TTL_MS } from "../coordinator/cluster/node.js";
import { Follower, type FollowerEnd } from "../coordinator/cluster/follower.js";
import { linkSecret } from "../coordinator/cluster/link.js";
import { resolveOptions, type CoordinatorOptions } from "../coordinator/options.js";
import { hostname } from "node:os";
import { checkApiToken } from "../coordinator/options.js";
import { CohortError, toCohortError } from "../protocol/errors.js";
import { readIdentity, readKeyList } from "./keys.js";
import { loadDataset } from "../models/datasets/index.js";
import { parseFlags, helpText, type CommandSpec } from "./args.js";
import {
  fitConfigFlag,
  fitConfigFromFlag,
  flagGiven,
  strategyFlags,
  strategyFromFlags,
} from "./strategy-flags.js";
import { sharedFlags, sharedFromFlags } from "../coordinator/option-schema.js";
import { takeExamples } from "../models/datasets/index.js";

export const coordinatorCommand = {
  name: "coordinator",
  summary:
    "Start a coordinator (socket.io) and run the rounds; prints its URL, then one line per round.",
  flags: {
    port: { type: "number", default: 8080, description: "TCP port; 0 picks a free one" },
    host: { type: "string", default: "0.0.0.0", description: "interface to listen on" },
    "min-clients": {
      type: "number",
      default: 2,
      description: "connected clients needed before a round starts",
    },
    ...sharedFlags("coordinator"),
    "min-fit-clients": {
      type: "number",
      defaultText: "min(2, --min-clients)",
      description: "least clients sampled, and least updates a round needs",
    },
    ...strategyFlags(),
    "fit-config": fitConfigFlag,
    "eval-dataset": {
      type: "string",
      placeholder: "mnist|fashion-mnist|idx:DIR|csv:FILE",
      description: "held-out test split for centralised evaluation",
    },
    "eval-size": {
      type: "number",
      defaultText: "whole test split",
      description: "evaluate on the first N test examples",
    },
    "max-upload-mb": {
      type: "number",
      default: 64,
      description: "largest update accepted from a client, in MiB",
    },
    "tls-cert": {
      type: "string",
      placeholder: "FILE",
      description: "PEM certificate: serve https and wss",
    },
    "tls-key": {
      type: "string",
      placeholder: "FILE",
      description: "PEM private key of --tls-cert",
    },
    "auth-keys": {
      type: "string",
      placeholder: "FILE",
      description:
        "admit only these client public keys (base64, one per line); updates must be signed",
    },
    "token-issuer": {
      type: "string",
      placeholder: "BASE64",
      description: "also admit holders of join tokens signed by this key",
    },
    "signing-key": {
      type: "string",
      placeholder: "FILE",
      defaultText: "a fresh key per start",
      description: "identity file whose key signs model broadcasts",
    },
    "api-token": {
      type: "string",
      placeholder: "FILE",
      defaultText: "open",
      description:
        "file holding the bearer token that /api/*, /metrics and /data/* require (16+ characters)",
    },
    "cors-origin": {
      type: "string",
      multiple: true,
      placeholder: "ORIGIN",
      defaultText: "none",
      description:
        "origin whose pages may read /api/*, /metrics and /data/* (repeatable or comma-separated)",
    },
    "serve-demo-data": {
      type: "boolean",
      default: false,
      description: "serve MNIST digit shards at /data/mnist-shard for the demo client page",
    },
    "keep-serving": {
      type: "boolean",
      default: false,
      description:
        "after the last round, keep serving the dashboard, /api/* and /metrics until SIGINT or SIGTERM",
    },
    "headers-timeout": {
      type: "number",
      default: 10,
      placeholder: "SECONDS",
      description: "a connection must send a request's headers within this time",
    },
    "request-timeout": {
      type: "number",
      default: 30,
      placeholder: "SECONDS",
      description: "a connection must send a whole request (headers and body) within this time",
    },
    "max-connections-per-address": {
      type: "number",
      default: 1024,
      placeholder: "N",
      description: "open connections one remote address may hold",
    },
    resume: {
      type: "string",
      placeholder: "RUN_DIR",
      description: "continue a crashed run from its ledger (same flags as the first start)",
    },
    "run-dir": {
      type: "string",
      defaultText: "runs/<timestamp>; with --redis runs/<cluster>",
      placeholder: "DIR",
      description:
        "where metrics.jsonl and checkpoints go (the nodes of a cluster share one directory)",
    },
    redis: {
      type: "string",
      placeholder: "redis://HOST:PORT",
      description:
        "join a cluster of nodes on this Redis: the lease holder leads the run, the others serve their own clients for it and take over if it dies",
    },
    cluster: {
      type: "string",
      default: "cohort",
      placeholder: "NAME",
      description: "with --redis: the cluster's name (the prefix of its Redis keys)",
    },
    node: {
      type: "string",
      defaultText: "<hostname>-<pid>",
      placeholder: "NAME",
      description: "with --redis: this node's name, unique in the cluster",
    },
    advertise: {
      type: "string",
      placeholder: "URL",
      defaultText: "the listening URL (the host's name for 0.0.0.0)",
      description: "with --redis: the URL other nodes reach this node at when it leads",
    },
    "lead-only": {
      type: "boolean",
      default: false,
      description:
        "with --redis: while this node leads, it serves no clients (they connect to the followers, and the leader receives only their partial sums)",
    },
    "lease-ttl": {
      type: "number",
      default: DEFAULT_LEASE_TTL_MS / 1000,
      placeholder: "SECONDS",
      description:
        "with --redis: how long the leader's lease holds unrenewed (a follower takes over within it)",
    },
  },
} satisfies CommandSpec<Record<string, import("./args.js").FlagSpec>>;

/** Run the command; resolves with the process exit code. */
export async function runCoordinator(argv: string[]): Promise<number> {
  const flags = parseFlags(coordinatorCommand, argv);
  if (flags === null) {
    console.log(helpText(coordinatorCommand));
    return 0;
  }
  let evalDataset;
  if (flags["eval-dataset"] !== undefined) {
    evalDataset = await loadDataset(flags["eval-dataset"], "test");
    if (flags["eval-size"] !== undefined)
      evalDataset = takeExamples(evalDataset, flags["eval-size"]);
  }
  const minClients = flags["min-clients"];
  const log = (line: string) => console.log(line);
  const node = await joinCluster(flags, log);
  const options: Partial<CoordinatorOptions> = {
    ...sharedFromFlags(flags),
    port: flags.port,
    host: flags.host,
    minAvailableClients: minClients,
    minFitClients: flags["min-fit-clients"] ?? Math.min(2, minClients),
    strategy: strategyFromFlags(flags, flagGiven(argv)),
    fitConfig: fitConfigFromFlag(flags["fit-config"]),
    maxUploadBytes: Math.round(flags["max-upload-mb"] * 1024 * 1024),
    evalDataset,
    runDir: flags["run-dir"] ?? (node === null ? undefined : `runs/${node.options.name}`),
    resume: flags.resume,
    tls:
      flags["tls-cert"] === undefined && flags["tls-key"] === undefined
        ? undefined
        : await readTls(flags["tls-cert"], flags["tls-key"]),
    auth:
      flags["auth-keys"] === undefined && flags["token-issuer"] === undefined
        ? undefined
        : {
            allowedKeys:
              flags["auth-keys"] === undefined ? [] : await readKeyList(flags["auth-keys"]),
            tokenIssuerKey: flags["token-issuer"],
          },
    signingKey:
      flags["signing-key"] === undefined
        ? undefined
        : (await readIdentity(flags["signing-key"])).secretKey,
    apiToken: flags["api-token"] === undefined ? undefined : await readApiToken(flags["api-token"]),
    corsOrigins: flags["cors-origin"],
    serveDemoData: flags["serve-demo-data"],
    headersTimeoutMs: Math.round(flags["headers-timeout"] * 1000),
    requestTimeoutMs: Math.round(flags["request-timeout"] * 1000),
    maxConnectionsPerAddress: flags["max-connections-per-address"],
    log,
  };
  const secret = linkSecret();
  let orphan: Follower | null = null;
  if (node !== null) {
    const followed = await followUntilLeading(node, options);
    if (typeof followed === "number") return followed;
    orphan = followed.orphan;
  }
  const coordinator = await createCoordinator(
    options,
    node === null ? undefined : node.role(secret, log, () => orphan?.close() ?? Promise.resolve()),
  ).catch(async (error: unknown) => {
    await orphan?.close();
    throw error;
  });
  if (node !== null) {
    node.guard(coordinator);
    const url = flags.advertise ?? advertisedUrl(coordinator.url, flags.host);
    await node.advertise(url, secret);
    node.reportAs(() => ({
      role: "leader",
      url: coordinator.url,
      clients: coordinator.clients().length,
      partial: null,
    }));
  }
  console.log(`backend ${coordinator.backend.name}; waiting for ${minClients} clients`);
  // An interrupt during the run is a failure (130); once the last round is recorded it is not.
  let finished = false;
  const stop = () => {
    console.log("interrupted; closing");
    // A cluster's leader hands the run over: its clients are not told the run is over.
    const handOver =
      node === null || finished
        ? undefined
        : new CohortError("CLOSED", "node interrupted; another node of the cluster goes on");
    void coordinator
      .close(handOver)
      .then(() => node?.close())
      .then(() => process.exit(finished ? 0 : 130));
  };
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
  try {
    const summary = await coordinator.run();
    finished = true;
    if (summary.runDir !== null) console.log(`run directory: ${summary.runDir}`);
    // Give clients (and followers, which tell theirs) a moment to receive run:done and
    // disconnect on their own.
    const deadline = Date.now() + 3000;
    const linked = () => coordinator.clients().length + (node?.followersLinked() ?? 0);
    while (linked() > 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
    }
    if (flags["keep-serving"]) {
      process.off("SIGINT", stop);
      process.off("SIGTERM", stop);
      console.log(
        `run finished; still serving the dashboard and API at ${coordinator.url} until interrupted (Ctrl-C)`,
      );
      console.log(`${await nextSignal()}; closing`);
    }
    return 0;
  } finally {
    process.off("SIGINT", stop);
    process.off("SIGTERM", stop);
    await coordinator.close();
    await node?.close();
  }
}

/**
 * A cluster node until it leads: while another node leads, serve that leader's clients as its
 * follower; when the lease is free, take it. Resolves once this node leads (with its last
 * follower, if any, still holding its clients: close it just before the coordinator listens),
 * or with the exit code when the run ended while it followed.
 *
 * A follower whose leader is gone keeps its server and its clients' sockets until this node's
 * next role: the dead leader's clients find a live node at once, and come back at once when
 * this node leads or follows the next leader, instead of backing off through the lease's TTL.
 */
async function followUntilLeading(
  node: ClusterNode,
  options: Partial<CoordinatorOptions>,
): Promise<number | { orphan: Follower | null }> {
  const opts = resolveOptions(options, options.log!);
  const standby = () => ({ role: "standby" as const, url: null, clients: 0, partial: null });
  node.reportAs(standby);
  let orphan: Follower | null = null;
  /** The fencing token of the leader the orphan served. */
  let orphanOf = 0;
  const letGo = async () => {
    await orphan?.close();
    orphan = null;
    node.reportAs(standby);
  };
  for (;;) {
    if ((await node.tryLead()) !== null) return { orphan };
    const record = await node.leaderLink();
    if (record === null) {
      await node.pause();
      continue;
    }
    let follower: Follower;
    try {
      follower = await Follower.start(
        record,
        opts,
        node.options.node,
        () => node.roster.view(),
        letGo,
      );
    } catch (error) {
      opts.log(`cannot follow the leader: ${toCohortError(error).message}`);
      // Another node leads, but this one cannot reach it: its clients had better go elsewhere.
      if (orphan !== null && record.token !== orphanOf) await letGo();
      await node.pauseForLease();
      continue;
    }
    node.reportAs(() => follower.report());
    let onSignal = () => undefined as void;
    const interrupted = new Promise<FollowerEnd>((resolve) => {
      onSignal = () => resolve({ lost: "interrupted" });
      process.once("SIGINT", onSignal);
      process.once("SIGTERM", onSignal);
    });
    const how = await Promise.race([
      follower.ended,
      node.leaderGone(record).then((lost): FollowerEnd => ({ lost })),
      interrupted,
    ]);
    // Each turn of the loop listens anew: let this turn's listeners go.
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    if ("done" in how) {
      // Give clients a moment to receive run:done and disconnect on their own.
      await new Promise((r) => setTimeout(r, 1000));
      await follower.close();
      opts.log(`run ${how.done.runId} done after ${how.done.rounds} rounds`);
      await node.close();
      return 0;
    }
    if (how.lost === "interrupted") {
      await follower.close();
      opts.log(`stopped following: ${how.lost}`);
      await node.close();
      return 130;
    }
    follower.unlink();
    orphan = follower;
    orphanOf = record.token;
    opts.log(
      `stopped following: ${how.lost}; holding ${follower.report().clients} client(s) until a node leads`,
    );
  }
}

/** The URL followers reach this node at: the listening URL, with the host's name for a wildcard. */
function advertisedUrl(url: string, host: string): string {
  if (host !== "0.0.0.0" && host !== "::") return url;
  const u = new URL(url);
  u.hostname = hostname();
  return u.toString().replace(/\/$/, "");
}

/** With `--redis`, this node's membership of its cluster (null without). */
async function joinCluster(
  flags: {
    redis?: string;
    cluster: string;
    node?: string;
    "lease-ttl": number;
    "lead-only": boolean;
    resume?: string;
  },
  log: (line: string) => void,
): Promise<ClusterNode | null> {
  if (flags.redis === undefined) return null;
  if (flags.resume !== undefined) {
    throw new CohortError(
      "INVALID_OPTION",
      "--resume and --redis go apart: a cluster's node resumes from the state in Redis by itself",
    );
  }
  const ttl = flags["lease-ttl"];
  if (!(ttl >= 0.05 && ttl <= 3600)) {
    throw new CohortError("INVALID_OPTION", `--lease-ttl must be 0.05 to 3600 seconds, got ${ttl}`);
  }
  return ClusterNode.join(
    {
      redis: flags.redis,
      name: flags.cluster,
      ...(flags.node === undefined ? {} : { node: flags.node }),
      leaseTtlMs: Math.round(ttl * 1000),
      leadOnly: flags["lead-only"],
    },
    log,
  );
}

/** Resolves with the first SIGINT or SIGTERM the process gets. */
function nextSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const on = (signal: NodeJS.Signals) => {
      process.off("SIGINT", on);
      process.off("SIGTERM", on);
      resolve(signal);
    };
    process.on("SIGINT", on);
    process.on("SIGTERM", on);
  });
}

/** `--api-token FILE`: the token is the file's content, trimmed (a trailing newline is no part of it). */
async function readApiToken(file: string): Promise<string> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (cause) {
    throw new CohortError(
      "INVALID_OPTION",
      `--api-token: cannot read ${file}: ${(cause as Error).message}`,
      { cause },
    );
  }
  const token = text.trim();
  checkApiToken(token, `--api-token ${file}`);
  return token;
}

async function readTls(
  cert: string | undefined,
  key: string | undefined,
): Promise<{ cert: string; key: string }> {
  if (cert === undefined || key === undefined) {
    throw new CohortError("INVALID_OPTION", "--tls-cert and --tls-key go together");
  }
  try {
    return { cert: await readFile(cert, "utf8"), key: await readFile(key, "utf8") };
  } catch (cause) {
    throw new CohortError(
      "INVALID_OPTION",
      `cannot read the TLS files: ${(cause as Error).message}`,
      { cause },
    );
  }
}
