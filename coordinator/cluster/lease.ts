/**
 * The cluster's leader lease on Redis, with a fencing token. One node holds the lease at a time
 * (a key with a TTL, renewed while the node lives); each new holder gets the next token of a
 * counter that only grows. Everything the leader writes to the shared state goes through
 * {@link FencedStore.commit}, which Redis applies only while the writer's token is the newest
 * and its lease still stands — so a leader that was paused past its TTL (a GC stop, SIGSTOP, a
 * partition) and wakes up believing it still leads cannot overwrite its successor's state.
 */
import { CohortError } from "../../protocol/errors.js";

/** The Redis command a lease needs; a node-redis client's `sendCommand` is one. */
export interface RedisCommands {
  sendCommand(args: string[]): Promise<unknown>;
}

/** Where a cluster keeps its lease and its fencing counter. */
export interface LeaseKeys {
  /** The lease: `<node>:<token>` while held, with the TTL. */
  lease: string;
  /** The fencing counter: the last token handed out. */
  fence: string;
}

/** The keys of cluster `name`. */
export function leaseKeys(name: string): LeaseKeys {
  return { lease: `cohort:${name}:lease`, fence: `cohort:${name}:fence` };
}

// Take the lease if nobody holds it: the holder is named with the next token.
const ACQUIRE = `
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. token, 'PX', ARGV[2])
return token`;

// Extend the lease only if this holder still has it.
const RENEW = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0`;

// Let the lease go only if this holder still has it.
const RELEASE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`;

/** Options of a {@link RedisLease}. */
export interface LeaseOptions {
  keys: LeaseKeys;
  /** This node's name (no colon). */
  node: string;
  /** How long the lease holds without renewal. */
  ttlMs: number;
}

/** One node's side of the leader lease. */
export class RedisLease {
  private held: number | null = null;
  /** Until when (monotonic ms) the lease surely stands: a TTL after the last grant was sent. */
  private validUntil = 0;

  constructor(
    private readonly redis: RedisCommands,
    readonly options: LeaseOptions,
  ) {
    if (options.node.length === 0 || options.node.includes(":")) {
      throw new CohortError(
        "INVALID_OPTION",
        `a node name must be non-empty without ":", got "${options.node}"`,
      );
    }
    if (!Number.isInteger(options.ttlMs) || options.ttlMs < 10) {
      throw new CohortError(
        "INVALID_OPTION",
        `the lease TTL must be an integer ≥ 10 ms, got ${options.ttlMs}`,
      );
    }
  }

  /** The token of the lease this node holds (as far as it knows), or null. */
  token(): number | null {
    return this.held;
  }

  /** What the lease key holds while this node has it. */
  holder(token: number): string {
    return `${this.options.node}:${token}`;
  }

  /**
   * Whether this node surely still holds the lease: it was granted or renewed less than a TTL
   * ago, counted from before the request was sent (a node paused past that may have lost it
   * without knowing yet).
   */
  surelyHeld(): boolean {
    return this.held !== null && performance.now() < this.validUntil;
  }

  /** Take the lease if it is free: the new fencing token, or null (another node holds it). */
  async acquire(): Promise<number | null> {
    const { keys, node, ttlMs } = this.options;
    const sent = performance.now();
    const reply = await this.redis.sendCommand([
      "EVAL",
      ACQUIRE,
      "2",
      keys.lease,
      keys.fence,
      node,
      String(ttlMs),
    ]);
    this.held = reply === null ? null : Number(reply);
    if (this.held !== null) this.validUntil = sent + ttlMs;
    return this.held;
  }

  /** Extend the lease: false when it was lost (expired, or taken by another node). */
  async renew(): Promise<boolean> {
    if (this.held === null) return false;
    const { keys, ttlMs } = this.options;
    const sent = performance.now();
    const reply = await this.redis.sendCommand([
      "EVAL",
      RENEW,
      "1",
      keys.lease,
      this.holder(this.held),
      String(ttlMs),
    ]);
    if (Number(reply) === 1) {
      this.validUntil = sent + ttlMs;
      return true;
    }
    this.held = null;
    return false;
  }

  /** Give the lease up now (a clean shutdown), so another node need not wait for the TTL. */
  async release(): Promise<void> {
    if (this.held === null) return;
    const { keys } = this.options;
    await this.redis.sendCommand(["EVAL", RELEASE, "1", keys.lease, this.holder(this.held)]);
    this.held = null;
  }

  /** Who holds the lease now (`node:token`) and for how many more ms; null when free. */
  async current(): Promise<{ holder: string; ttlMs: number } | null> {
    const { keys } = this.options;
    const holder = await this.redis.sendCommand(["GET", keys.lease]);
    if (typeof holder !== "string") return null;
    const ttl = Number(await this.redis.sendCommand(["PTTL", keys.lease]));
    return { holder, ttlMs: Math.max(0, ttl) };
  }
}

// Write the fields only under the newest token and a standing lease.
const COMMIT = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if redis.call('GET', KEYS[2]) ~= ARGV[2] then return 0 end
for i = 3, #KEYS do redis.call('SET', KEYS[i], ARGV[i]) end
return 1`;

/**
 * The cluster's shared state, a few Redis keys written together and only by the leader: a
 * commit names the writer's lease and token, and Redis refuses it (`FENCED`) unless that token
 * is the newest and its lease still stands. The keys change in one script, so a reader (`MGET`)
 * sees one commit or the next, never a mix. Durability is Redis's: run it with `appendonly yes`
 * and `appendfsync always`, so an acknowledged commit survives a crash of Redis itself.
 */
export class FencedStore {
  constructor(
    private readonly redis: RedisCommands,
    private readonly keys: LeaseKeys,
    /** The keys the state is written to, in the order of {@link commit}'s values. */
    private readonly fields: readonly string[],
  ) {
    if (fields.length === 0) throw new CohortError("INVALID_OPTION", "a fenced store needs a key");
  }

  /**
   * Write `values` (one per key) as the leader holding `lease` with `token`.
   *
   * @throws CohortError `FENCED` when a newer leader exists or the lease has lapsed.
   */
  async commit(lease: RedisLease, token: number, values: readonly string[]): Promise<void> {
    if (values.length !== this.fields.length) {
      throw new CohortError(
        "INTERNAL",
        `${values.length} values for ${this.fields.length} keys of the fenced store`,
      );
    }
    const reply = await this.redis.sendCommand([
      "EVAL",
      COMMIT,
      String(2 + this.fields.length),
      this.keys.lease,
      this.keys.fence,
      ...this.fields,
      lease.holder(token),
      String(token),
      ...values,
    ]);
    if (Number(reply) !== 1) {
      throw new CohortError(
        "FENCED",
        `commit refused: token ${token} of ${lease.options.node} is no longer the leader's (its lease lapsed or a newer leader took over)`,
      );
    }
  }

  /** The last committed values (null for a key never written). */
  async read(): Promise<(string | null)[]> {
    const reply = await this.redis.sendCommand(["MGET", ...this.fields]);
    const values = Array.isArray(reply) ? (reply as unknown[]) : [];
    return this.fields.map((_, i) =>
      typeof values[i] === "string" ? (values[i] as string) : null,
    );
  }
}
