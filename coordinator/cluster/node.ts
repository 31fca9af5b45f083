/**
 * One coordinator node of a cluster on Redis. Every node of a cluster runs the same command;
 * the one holding the cluster's lease leads: it runs the round engine, and each round commits
 * to Redis under its fencing token. The others follow it (`follower.ts`: they serve their own
 * clients for it) and keep trying the lease: when the leader dies (or is paused past its
 * lease), one of them takes it, restores the last committed round and runs the unfinished one
 * again, and the dead leader's clients reconnect to a live node (a client lists the nodes'
 * URLs, or a load balancer fronts them).
 *
 * A leader that loses its lease — renewal refused, or Redis out of reach for a whole TTL, after
 * which another node may lead — stops at once with `FENCED`, and tells its clients nothing: they
 * move on to the new leader. Its commits could not land anyway: Redis refuses a stale token.
 */
import { hostname } from "node:os";
import { createClient } from "@redis/client";
import { CohortError, toCohortError } from "../../protocol/errors.js";
import type { TensorSpec } from "../../protocol/messages.js";
import type { Coordinator } from "../coordinator.js";
import type { SharedState } from "../state-store.js";
import { FencedStore, leaseKeys, RedisLease, type RedisCommands } from "./lease.js";
import { RedisStateStore } from "./redis-state.js";
import { LeaderTransport } from "./leader-transport.js";
import { LINK_NAMESPACE, parseLinkRecord, type LinkRecord } from "./link.js";
import { replyEntries, Roster, type NodeReport } from "./roster.js";
import type { ClusterRole } from "../coordinator.js";
import type { CoordinatorOptions } from "../options.js";
import { resolveStrategy } from "../../aggregation/strategies/index.js";

/** How a node joins its cluster. */
export interface ClusterOptions {
  /** The cluster's Redis: `redis://[user:password@]host:port[/db]`. */
  redis: string;
  /** The cluster's name: the prefix of its Redis keys. @default "cohort" */
  name: string;
  /** This node's name, unique in the cluster (no colon). @default `<hostname>-<pid>` */
  node: string;
  /** How long the leader's lease holds without renewal; renewed every third of it. @default 10000 */
  leaseTtlMs: number;
  /**
   * While leading, serve no clients (they connect to the followers): the leader then receives
   * only the followers' partials, one model's bytes each. @default false
   */
  leadOnly: boolean;
}

export const DEFAULT_LEASE_TTL_MS = 10_000;

/** The options with their defaults, checked. */
export function clusterOptions(
  options: Partial<ClusterOptions> & Pick<ClusterOptions, "redis">,
): ClusterOptions {
  const resolved: ClusterOptions = {
    name: "cohort",
    node: `${hostname()}-${process.pid}`,
    leaseTtlMs: DEFAULT_LEASE_TTL_MS,
    leadOnly: false,
    ...options,
  };
  let url: URL;
  try {
    url = new URL(resolved.redis);
  } catch {
    throw new CohortError(
      "INVALID_OPTION",
      `--redis ${JSON.stringify(resolved.redis)} is not a URL`,
    );
  }
  if (url.protocol !== "redis:" && url.protocol !== "rediss:") {
    throw new CohortError(
      "INVALID_OPTION",
      `--redis must be a redis:// or rediss:// URL, not ${url.protocol}//`,
    );
  }
  if (!/^[A-Za-z0-9_.-]+$/.test(resolved.name)) {
    throw new CohortError(
      "INVALID_OPTION",
      `a cluster name is letters, digits, "_", "." and "-", got "${resolved.name}"`,
    );
  }
  return resolved;
}

/** A Redis URL fit for a log line: its password replaced. */
export function shownRedisUrl(redis: string): string {
  const url = new URL(redis);
  if (url.password !== "") url.password = "***";
  return url.toString();
}

/** What a node uses of its node-redis client. */
interface RedisClient extends RedisCommands {
  quit(): Promise<unknown>;
  destroy(): void;
}

/** One node's membership of its cluster: the Redis connection, the lease and its renewal. */
export class ClusterNode {
  readonly lease: RedisLease;
  /** Where this node reports itself and reads the others (dashboard, `/metrics`). */
  readonly roster: Roster;
  private leaseSince: number | null = null;
  private leading: LeaderTransport | null = null;
  private renewal: NodeJS.Timeout | null = null;
  private lastRenewed = 0;
  private lost: CohortError | null = null;
  private readonly lostListeners: ((error: CohortError) => void)[] = [];
  private closed = false;
  /** The last line said about who leads (said again only when it changes). */
  private said = "";

  private constructor(
    private readonly redis: RedisClient,
    readonly options: ClusterOptions,
    private readonly log: (line: string) => void,
  ) {
    this.lease = new RedisLease(commands(redis), {
      keys: leaseKeys(options.name),
      node: options.node,
      ttlMs: options.leaseTtlMs,
    });
    this.roster = new Roster(commands(redis), {
      name: options.name,
      node: options.node,
      leaseTtlMs: options.leaseTtlMs,
      leaseKey: leaseKeys(options.name).lease,
    });
  }

  /** Report this node as `report()` says (the leader's report adds when it took the lease). */
  reportAs(report: () => NodeReport): void {
    this.roster.reportAs(() => {
      const r = report();
      return r.role === "leader" && this.leaseSince !== null
        ? { ...r, leaseSince: this.leaseSince }
        : r;
    });
  }

  /**
   * Connect to the cluster's Redis (and say when it is not durable).
   *
   * @throws CohortError `CONNECTION_FAILED` when Redis cannot be reached
   */
  static async join(
    options: Partial<ClusterOptions> & Pick<ClusterOptions, "redis">,
    log: (line: string) => void,
  ): Promise<ClusterNode> {
    const resolved = clusterOptions(options);
    const shown = shownRedisUrl(resolved.redis);
    let lastError = "";
    const redis = createClient({
      url: resolved.redis,
      // Keep trying while Redis restarts; commands wait for the connection meanwhile.
      socket: { reconnectStrategy: (retries) => Math.min(100 * 2 ** retries, 1000) },
    });
    redis.on("error", (error: Error) => {
      // One line per kind of failure, not one per reconnection attempt.
      if (error.message === lastError) return;
      lastError = error.message;
      log(`redis ${shown}: ${error.message}`);
    });
    redis.on("ready", () => {
      if (lastError !== "") log(`redis ${shown}: connected again`);
      lastError = "";
    });
    try {
      await withTimeout(redis.connect(), 10_000, `no connection to redis ${shown} within 10 s`);
    } catch (error) {
      redis.destroy();
      throw new CohortError(
        "CONNECTION_FAILED",
        `cannot reach redis ${shown}: ${toCohortError(error, "CONNECTION_FAILED").message}`,
      );
    }
    const node = new ClusterNode(redis, resolved, log);
    await node.checkDurability();
    return node;
  }

  /** Warn when Redis would lose acknowledged commits in a crash of its own. */
  private async checkDurability(): Promise<void> {
    let reply: unknown;
    try {
      reply = await this.redis.sendCommand(["CONFIG", "GET", "append*"]);
    } catch {
      return; // CONFIG is disabled on some managed Redis: nothing to check
    }
    const config = configMap(reply);
    if (config.appendonly !== "yes" || config.appendfsync !== "always") {
      this.log(
        `warning: redis runs with appendonly ${config.appendonly ?? "?"}, appendfsync ${config.appendfsync ?? "?"}: ` +
          "a crash of Redis itself may lose committed rounds (start it with --appendonly yes --appendfsync always)",
      );
    }
  }

  /**
   * Take the lease if it is free, and keep it renewed: the fencing token, or null (another node
   * leads, or Redis did not answer: said once per change).
   */
  async tryLead(): Promise<number | null> {
    const { name, node, leaseTtlMs } = this.options;
    if (this.closed) throw new CohortError("CLOSED", "cluster node closed");
    let said: string;
    try {
      const token = await withTimeout(this.lease.acquire(), leaseTtlMs, "redis did not answer");
      if (token !== null) {
        this.log(`cluster ${name}: node ${node} leads (lease token ${token})`);
        this.lastRenewed = Date.now();
        this.leaseSince = this.lastRenewed;
        this.renewal = setInterval(() => void this.renew(), Math.max(5, leaseTtlMs / 3));
        return token;
      }
      const holder = (await this.lease.current())?.holder.replace(/:\d+$/, "");
      said = holder === undefined ? "" : `cluster ${name}: node ${holder} leads`;
    } catch (error) {
      said = `cluster ${name}: ${toCohortError(error, "CONNECTION_FAILED").message}`;
    }
    if (said !== this.said && said !== "") this.log(said);
    this.said = said;
    return null;
  }

  /** Wait, a third of the lease's TTL. */
  pause(): Promise<void> {
    return this.sleep(null);
  }

  /**
   * Wait a third of the lease's TTL, or less: until just after the lease lapses when it will
   * sooner (a dead leader's lease is taken as soon as Redis lets it go, not up to a third of a
   * TTL later).
   */
  async pauseForLease(): Promise<void> {
    let current: { ttlMs: number } | null = null;
    try {
      current = await withTimeout(this.lease.current(), this.thirdOfTtl(), "");
    } catch {
      // Redis out of reach: the plain pause
    }
    await this.sleep(current);
  }

  private thirdOfTtl(): number {
    return Math.max(5, this.options.leaseTtlMs / 3);
  }

  /** A third of the TTL, or until just after `lease` (as last read) lapses, if sooner. */
  private sleep(lease: { ttlMs: number } | null): Promise<void> {
    const third = this.thirdOfTtl();
    const wait = lease === null ? third : Math.min(third, lease.ttlMs + 5);
    return new Promise((r) => setTimeout(r, wait));
  }

  /**
   * As the leader: tell followers where to link (`url`) and with what `secret`, under this
   * node's fencing token (a stale leader cannot redirect them).
   */
  async advertise(url: string, secret: string): Promise<void> {
    const token = this.lease.token();
    if (token === null) throw new CohortError("FENCED", "only the leader advertises its link");
    const record: LinkRecord = { url, secret, token };
    await new FencedStore(commands(this.redis), leaseKeys(this.options.name), [
      linkKey(this.options.name),
    ]).commit(this.lease, token, [JSON.stringify(record)]);
  }

  /** Where the current leader takes followers; null when no leader has advertised yet. */
  async leaderLink(): Promise<LinkRecord | null> {
    try {
      const [raw, current] = await withTimeout(
        Promise.all([
          this.redis.sendCommand(["GET", linkKey(this.options.name)]),
          this.lease.current(),
        ]),
        this.options.leaseTtlMs,
        "redis did not answer",
      );
      const record = parseLinkRecord(raw);
      // A record of an earlier leader leads nowhere.
      return record !== null && current?.holder.endsWith(`:${record.token}`) ? record : null;
    } catch {
      return null;
    }
  }

  /** Resolves once the leader of `record` no longer holds the lease. */
  async leaderGone(record: LinkRecord): Promise<string> {
    // Each turn reads the lease once: whether it lapsed, and how long to wait for the next look.
    let current: { holder: string; ttlMs: number } | null = null;
    for (;;) {
      await this.sleep(current);
      if (this.closed) return "closed";
      try {
        current = await withTimeout(this.lease.current(), this.options.leaseTtlMs, "");
        if (!current?.holder.endsWith(`:${record.token}`)) return "the leader's lease lapsed";
      } catch {
        // Redis out of reach: the leader may well still lead
        current = null;
      }
    }
  }

  /** What a coordinator leading this cluster takes from it. */
  role(
    secret: string,
    log: (line: string) => void,
    /** Let this node's previous server go (its port is the leader's next). */
    beforeListen: () => Promise<void> = async () => undefined,
  ): ClusterRole {
    return {
      beforeListen,
      sharedState: (specs) => this.sharedState(specs),
      view: () => this.roster.view(),
      ...(this.options.leadOnly
        ? {
            refuseClients: `node ${this.options.node} leads cluster ${this.options.name} and serves no clients (--lead-only): connect to another of its nodes`,
          }
        : {}),
      transport: (local, task, opts) => {
        checkClusterable(opts);
        const run = { strategy: resolveStrategy(opts.strategy).name, rounds: opts.rounds };
        this.leading = new LeaderTransport(local, local.io.of(LINK_NAMESPACE), {
          secret,
          task,
          run,
          log,
        });
        return this.leading;
      },
    };
  }

  /** Followers linked to this node while it leads (they leave once told the run is done). */
  followersLinked(): number {
    return this.leading?.nodes().length ?? 0;
  }

  /** Extend the lease; declare it lost when refused, or when Redis stayed silent for a TTL. */
  private async renew(): Promise<void> {
    if (this.lost !== null || this.closed) return;
    const { leaseTtlMs } = this.options;
    let kept: boolean | null = null;
    try {
      kept = await withTimeout(this.lease.renew(), leaseTtlMs / 3, "redis did not answer");
    } catch {
      // Out of reach for now: the lease may still stand until a TTL after the last renewal.
    }
    if (kept === true) {
      this.lastRenewed = Date.now();
      return;
    }
    if (kept === false) {
      this.fail(`lost the lease of cluster ${this.options.name}: another node leads now`);
    } else if (Date.now() - this.lastRenewed >= leaseTtlMs) {
      this.fail(
        `lost the lease of cluster ${this.options.name}: redis out of reach for ${leaseTtlMs} ms, so another node may lead`,
      );
    }
  }

  private fail(message: string): void {
    if (this.lost !== null) return;
    this.lost = new CohortError("FENCED", message);
    this.stopRenewal();
    this.log(message);
    for (const listener of this.lostListeners) listener(this.lost);
  }

  /** Called once if the lease is lost (at once, if it already was). */
  onLost(listener: (error: CohortError) => void): void {
    if (this.lost !== null) listener(this.lost);
    else this.lostListeners.push(listener);
  }

  /** The state every node of the cluster shares, for a model of `specs`. */
  sharedState(specs: readonly TensorSpec[]): SharedState {
    return new RedisStateStore(commands(this.redis), this.options.name, this.lease, specs);
  }

  /** Close `coordinator` with `FENCED` (clients not told the run is over) if the lease is lost. */
  guard(coordinator: Coordinator): void {
    this.onLost((error) => void coordinator.close(error));
  }

  private stopRenewal(): void {
    if (this.renewal !== null) clearInterval(this.renewal);
    this.renewal = null;
  }

  /** Give the lease up (so a follower need not wait for its TTL) and disconnect. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.stopRenewal();
    await withTimeout(this.roster.stop(), 2000, "").catch(() => undefined);
    try {
      if (this.lost === null) {
        await withTimeout(this.lease.release(), 2000, "redis did not answer");
      }
      await withTimeout(this.redis.quit(), 2000, "redis did not answer");
    } catch {
      this.redis.destroy();
    }
  }
}

/** The key where the leader advertises its link. */
export function linkKey(name: string): string {
  return `cohort:${name}:link`;
}

/**
 * Refuse what cannot run across nodes: asynchronous rounds (one buffer, on the leader) and
 * aggregators that need every update (the followers send sums).
 */
export function checkClusterable(opts: CoordinatorOptions): void {
  if (opts.mode === "async") {
    throw new CohortError(
      "INVALID_OPTION",
      "--mode async runs on one node: asynchronous rounds do not run in a cluster (--redis) yet",
    );
  }
  const { name, aggregator } = resolveStrategy(opts.strategy);
  if (!aggregator.linear) {
    throw new CohortError(
      "INVALID_OPTION",
      `strategy ${name} aggregates with ${aggregator.name}, which needs every update: in a cluster (--redis) followers send partial sums, so only linear aggregators (mean) run`,
    );
  }
}

/** The command interface the lease and the state store use, on a node-redis client. */
function commands(redis: RedisClient): RedisCommands {
  return { sendCommand: (args) => redis.sendCommand(args) };
}

/** `CONFIG GET`'s reply (a flat list, or a map under RESP3) as an object. */
function configMap(reply: unknown): Record<string, string> {
  return Object.fromEntries(replyEntries(reply).map(([k, v]) => [k, String(v)]));
}

/** `work`, or a `CONNECTION_FAILED` rejection after `ms`. */
function withTimeout<T>(work: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new CohortError("CONNECTION_FAILED", message)), ms);
  });
  return Promise.race([work, timeout]).finally(() => clearTimeout(timer));
}
