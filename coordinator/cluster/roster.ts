/**
 * Every node of a cluster reports itself to the cluster's Redis (a hash, one field per node)
 * every third of the lease's TTL: its role, where its clients connect, how many it holds and
 * what it last sent the leader. Each node reads the hash back at the same pace, so the
 * dashboard and `/metrics` of any node show the whole cluster, whichever node leads.
 */
import type { ClusterNodeStatus, ClusterStatus } from "../http/status.js";
import type { RedisCommands } from "./lease.js";

/** What a node says of itself. */
export type NodeReport = Omit<ClusterNodeStatus, "node" | "seenMsAgo"> & {
  /** When the leader took its lease (ms since the epoch). */
  leaseSince?: number;
};

/** The hash where a cluster's nodes report themselves. */
export function rosterKey(name: string): string {
  return `cohort:${name}:nodes`;
}

/** A node silent for this many TTLs is left off the view (and its field removed). */
const SILENT_TTLS = 3;

export class Roster {
  private timer: NodeJS.Timeout | null = null;
  private report: () => NodeReport = () => ({
    role: "standby",
    url: null,
    clients: 0,
    partial: null,
  });
  private current: ClusterStatus | null = null;

  constructor(
    private readonly redis: RedisCommands,
    private readonly options: { name: string; node: string; leaseTtlMs: number; leaseKey: string },
  ) {}

  /** Report `report()` from now on (at once, then every third of the TTL). */
  reportAs(report: () => NodeReport): void {
    this.report = report;
    if (this.timer === null) {
      this.timer = setInterval(() => void this.tick(), Math.max(50, this.options.leaseTtlMs / 3));
      this.timer.unref();
    }
    void this.tick();
  }

  /** The cluster as last read (null before the first read). */
  view(): ClusterStatus | null {
    return this.current;
  }

  /** Write this node's report and read everyone's; Redis out of reach keeps the last view. */
  async tick(): Promise<void> {
    const { name, node, leaseTtlMs, leaseKey } = this.options;
    const key = rosterKey(name);
    try {
      const now = Date.now();
      await this.redis.sendCommand([
        "HSET",
        key,
        node,
        JSON.stringify({ ...this.report(), at: now }),
      ]);
      const [all, holder, pttl] = await Promise.all([
        this.redis.sendCommand(["HGETALL", key]),
        this.redis.sendCommand(["GET", leaseKey]),
        this.redis.sendCommand(["PTTL", leaseKey]),
      ]);
      const nodes: ClusterNodeStatus[] = [];
      let leaseSince: number | null = null;
      const leader = typeof holder === "string" ? holder.replace(/:\d+$/, "") : null;
      for (const [field, raw] of replyEntries(all)) {
        const r = parseReport(raw);
        if (r === null || now - r.at > SILENT_TTLS * leaseTtlMs) {
          if (field !== node) await this.redis.sendCommand(["HDEL", key, field]);
          continue;
        }
        if (field === leader && r.leaseSince !== undefined) leaseSince = r.leaseSince;
        const { at, leaseSince: _since, ...status } = r;
        nodes.push({ node: field, ...status, seenMsAgo: Math.max(0, now - at) });
      }
      nodes.sort((a, b) => a.node.localeCompare(b.node));
      const ttl = typeof pttl === "number" && pttl >= 0 ? pttl : null;
      this.current = {
        name,
        node,
        leader,
        leaseHeldMs: leader !== null && leaseSince !== null ? Math.max(0, now - leaseSince) : null,
        leaseRenewedMsAgo: leader !== null && ttl !== null ? Math.max(0, leaseTtlMs - ttl) : null,
        leaseTtlMs,
        nodes,
      };
    } catch {
      // Out of reach for now: the next tick tries again.
    }
  }

  /** Stop reporting and take this node off the roster. */
  async stop(): Promise<void> {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    await this.redis
      .sendCommand(["HDEL", rosterKey(this.options.name), this.options.node])
      .catch(() => undefined);
  }
}

/** A Redis reply of pairs (HGETALL, CONFIG GET: a flat list, or a map under RESP3) as entries. */
export function replyEntries(reply: unknown): [string, unknown][] {
  if (Array.isArray(reply)) {
    const out: [string, unknown][] = [];
    for (let i = 0; i + 1 < reply.length; i += 2) out.push([String(reply[i]), reply[i + 1]]);
    return out;
  }
  if (reply instanceof Map) return [...reply].map(([k, v]) => [String(k), v]);
  if (typeof reply === "object" && reply !== null) return Object.entries(reply);
  return [];
}

/** A node's report as stored, checked (null: not one). */
function parseReport(raw: unknown): (NodeReport & { at: number }) | null {
  try {
    const o = JSON.parse(String(raw)) as Partial<NodeReport & { at: number }>;
    const roles = ["leader", "follower", "standby"];
    if (
      typeof o.at !== "number" ||
      typeof o.role !== "string" ||
      !roles.includes(o.role) ||
      typeof o.clients !== "number" ||
      !(o.url === null || typeof o.url === "string")
    ) {
      return null;
    }
    const p = o.partial;
    const partial =
      p != null &&
      typeof p.round === "number" &&
      typeof p.bytes === "number" &&
      typeof p.clientBytes === "number"
        ? { round: p.round, bytes: p.bytes, clientBytes: p.clientBytes }
        : null;
    return {
      role: o.role,
      url: o.url,
      clients: o.clients,
      partial,
      at: o.at,
      ...(typeof o.leaseSince === "number" ? { leaseSince: o.leaseSince } : {}),
    };
  } catch {
    return null;
  }
}
